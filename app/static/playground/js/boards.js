// The three boards. Each one edits its puzzle, turns it into the request's `puzzle`, and draws an answer
// (a step's or the final one) over it. Interface: payload(), showPuzzle(), showAnswer(answer, previous),
// load(text), example(), clear(), setLocked(bool), plus pasteHint and onEdit.

const SUDOKU_EXAMPLES = [
  "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79",
  "..9748...7.........2.1.9.....7...24..64.1.59..98...3.....8.3.2.........6...2759..",
  "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......",
];

export const ARC_COLOURS = ["#000000", "#0074d9", "#ff4136", "#2ecc40", "#ffdc00",
  "#aaaaaa", "#f012be", "#ff851b", "#7fdbff", "#870c25"];

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ------------------------------------------------------------------------------------------- Sudoku

/** Cell indices that break a row, column or box rule (two equal digits in one unit). */
function clashes(values) {
  const bad = new Set();
  const units = [];
  for (let k = 0; k < 9; k++) {
    units.push([...Array(9).keys()].map((c) => k * 9 + c));
    units.push([...Array(9).keys()].map((r) => r * 9 + k));
    const br = Math.floor(k / 3) * 3, bc = (k % 3) * 3;
    units.push([...Array(9).keys()].map((j) => (br + Math.floor(j / 3)) * 9 + bc + (j % 3)));
  }
  for (const unit of units) {
    const seen = new Map();
    for (const i of unit) {
      const v = values[i];
      if (!v) continue;
      if (seen.has(v)) { bad.add(i); bad.add(seen.get(v)); } else seen.set(v, i);
    }
  }
  return bad;
}

/** 81 cells from text: a single 81-character line or 9 rows; '.', '0', '_' are blanks; separators ignored. */
export function parseSudokuText(text) {
  const cells = text.replace(/[|+\-\s,]/g, "").split("");
  if (cells.length !== 81) throw new Error(`expected 81 cells, found ${cells.length}`);
  return cells.map((ch, i) => {
    if (/[1-9]/.test(ch)) return Number(ch);
    if (ch === "." || ch === "0" || ch === "_") return 0;
    throw new Error(`bad character '${ch}' at cell ${i + 1}: use digits 1-9 and '.' or '0' for blanks`);
  });
}

export class SudokuBoard {
  constructor(root) {
    this.root = root;
    this.given = Array(81).fill(0);
    this.shown = null;
    this.onEdit = () => {};
    this.pasteHint = "81 characters or 9 rows; '.' or '0' for blanks.";
    this.exampleIndex = 0;
    const grid = el("div", "sudoku");
    grid.setAttribute("role", "grid");
    this.inputs = [];
    for (let i = 0; i < 81; i++) {
      const r = Math.floor(i / 9), c = i % 9;
      const input = el("input", `r${r} c${c}`);
      input.inputMode = "numeric";
      input.maxLength = 2;
      input.autocomplete = "off";
      input.setAttribute("aria-label", `row ${r + 1} column ${c + 1}`);
      input.addEventListener("input", () => this.#typed(i));
      input.addEventListener("keydown", (e) => this.#key(e, i));
      input.addEventListener("paste", (e) => this.#paste(e));
      input.addEventListener("focus", () => input.select());
      grid.append(input);
      this.inputs.push(input);
    }
    root.replaceChildren(grid);
  }

  #typed(i) {
    const digits = this.inputs[i].value.replace(/[^1-9]/g, "");
    this.given[i] = digits ? Number(digits.at(-1)) : 0;
    if (this.shown) this.showPuzzle(); else this.#paint(i);
    if (digits && i < 80) this.inputs[i + 1].focus();
    this.onEdit();
  }

  #key(e, i) {
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -9, ArrowDown: 9 };
    if (e.key in moves) {
      const j = i + moves[e.key];
      if (j >= 0 && j < 81) this.inputs[j].focus();
      e.preventDefault();
    } else if (e.key === "Backspace" && !this.inputs[i].value && i > 0) {
      this.inputs[i - 1].focus();
    } else if (e.key === "." || e.key === "0" || e.key === " ") {
      this.given[i] = 0;
      this.#paint(i);
      if (i < 80) this.inputs[i + 1].focus();
      e.preventDefault();
      this.onEdit();
    }
  }

  #paste(e) {
    const text = e.clipboardData?.getData("text") ?? "";
    if (text.replace(/\s/g, "").length < 81) return;
    e.preventDefault();
    try { this.load(text); } catch (err) { this.onError?.(err.message); }
  }

  #paint(i) {
    const v = this.given[i];
    const input = this.inputs[i];
    input.value = v ? String(v) : "";
    input.className = `r${Math.floor(i / 9)} c${i % 9}${v ? " given" : ""}`;
  }

  payload() {
    const count = this.given.filter(Boolean).length;
    if (count === 0) throw new Error("the grid is empty: type some digits, paste a puzzle or load the example");
    return this.given.map((v) => (v ? String(v) : ".")).join("");
  }

  showPuzzle() {
    this.shown = null;
    for (let i = 0; i < 81; i++) this.#paint(i);
  }

  /** `answer`: the 81-character string the API returns for a string puzzle. */
  showAnswer(answer, previous) {
    if (typeof answer !== "string" || answer.length !== 81) return;
    const values = answer.split("").map((ch) => (/[1-9]/.test(ch) ? Number(ch) : 0));
    const bad = clashes(values);
    for (let i = 0; i < 81; i++) {
      const input = this.inputs[i];
      const given = this.given[i];
      const v = given || values[i];
      const cls = [`r${Math.floor(i / 9)}`, `c${i % 9}`];
      if (given) cls.push("given");
      else if (v) cls.push("pred");
      if (!given && bad.has(i)) cls.push("clash");
      if (!given && previous && previous[i] !== answer[i]) cls.push("changed");
      input.value = v ? String(v) : "";
      input.className = cls.join(" ");
    }
    this.shown = answer;
  }

  load(text) {
    this.given = parseSudokuText(text);
    this.showPuzzle();
    this.onEdit();
  }

  example() {
    this.load(SUDOKU_EXAMPLES[this.exampleIndex++ % SUDOKU_EXAMPLES.length]);
  }

  clear() {
    this.given = Array(81).fill(0);
    this.showPuzzle();
    this.onEdit();
  }

  setLocked(locked) {
    for (const input of this.inputs) input.readOnly = locked;
  }
}

// --------------------------------------------------------------------------------------------- Maze

/** A perfect maze carved by a randomised depth-first search on the odd lattice, plus a few loops. */
function carveMaze(size, loops = 0, rand = Math.random) {
  const odd = size % 2 ? size : size - 1;
  const cells = (odd - 1) / 2;
  const grid = Array.from({ length: size }, () => Array(size).fill("#"));
  const seen = Array.from({ length: cells }, () => Array(cells).fill(false));
  const start = [Math.floor(rand() * cells), Math.floor(rand() * cells)];
  const stack = [start];
  seen[start[0]][start[1]] = true;
  grid[2 * start[0] + 1][2 * start[1] + 1] = " ";
  while (stack.length) {
    const [r, c] = stack.at(-1);
    const options = [[1, 0], [-1, 0], [0, 1], [0, -1]].map(([dr, dc]) => [r + dr, c + dc])
      .filter(([nr, nc]) => nr >= 0 && nr < cells && nc >= 0 && nc < cells && !seen[nr][nc]);
    if (!options.length) { stack.pop(); continue; }
    const [nr, nc] = options[Math.floor(rand() * options.length)];
    seen[nr][nc] = true;
    grid[r + nr + 1][c + nc + 1] = " ";
    grid[2 * nr + 1][2 * nc + 1] = " ";
    stack.push([nr, nc]);
  }
  for (let r = 1; r < odd - 1; r++) {
    for (let c = 1; c < odd - 1; c++) {
      if ((r + c) % 2 === 1 && grid[r][c] === "#" && rand() < loops) grid[r][c] = " ";
    }
  }
  return grid;
}

/** Shortest-path distance from `from` to every open cell (-1: wall or unreachable). */
function bfs(grid, from) {
  const n = grid.length;
  const dist = Array.from({ length: n }, () => Array(n).fill(-1));
  dist[from[0]][from[1]] = 0;
  const queue = [from];
  while (queue.length) {
    const [r, c] = queue.shift();
    for (const [dr, dc] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
      const nr = r + dr, nc = c + dc;
      if (nr >= 0 && nr < n && nc >= 0 && nc < n && grid[nr][nc] !== "#" && dist[nr][nc] < 0) {
        dist[nr][nc] = dist[r][c] + 1;
        queue.push([nr, nc]);
      }
    }
  }
  return dist;
}

const MAZE_CLASS = { "#": "wall", " ": "", S: "start", G: "goal", o: "path" };

export class MazeBoard {
  constructor(root) {
    this.root = root;
    this.brush = "#";
    this.onEdit = () => {};
    this.pasteHint = "Rows of '#' (wall), ' ' (open), 'S' (start), 'G' (goal); square, 5 to 30 a side.";
    this.painting = false;
    window.addEventListener("pointerup", () => { this.painting = false; });
    this.resize(9);
  }

  resize(size) {
    this.size = Math.max(5, Math.min(30, size | 0));
    this.cells = Array.from({ length: this.size }, (_, r) => Array.from({ length: this.size },
      (_, c) => (r === 0 || c === 0 || r === this.size - 1 || c === this.size - 1 ? "#" : " ")));
    this.#build();
    this.onEdit();
  }

  #build() {
    const grid = el("div", "maze");
    grid.style.gridTemplateColumns = `repeat(${this.size}, 1fr)`;
    grid.style.gridTemplateRows = `repeat(${this.size}, 1fr)`;
    this.divs = [];
    for (let r = 0; r < this.size; r++) {
      for (let c = 0; c < this.size; c++) {
        const cell = el("div");
        cell.addEventListener("pointerdown", (e) => { e.preventDefault(); this.painting = true; this.#paint(r, c); });
        cell.addEventListener("pointerenter", () => { if (this.painting) this.#paint(r, c); });
        grid.append(cell);
        this.divs.push(cell);
      }
    }
    this.root.replaceChildren(grid);
    this.shown = null;
    this.showPuzzle();
  }

  #paint(r, c) {
    if (this.locked) return;
    if (this.shown) this.showPuzzle();
    if (this.brush === "S" || this.brush === "G") {
      for (const row of this.cells) {
        for (let k = 0; k < row.length; k++) if (row[k] === this.brush) row[k] = " ";
      }
    }
    this.cells[r][c] = this.brush;
    this.showPuzzle();
    this.onEdit();
  }

  /** The maze as drawn, with an answer's path laid over it; a cell where the answer changed the maze itself
   * (a wall, S or G moved) is flagged, since the verifier will reject it. */
  #draw(answerRows, previous) {
    for (let r = 0; r < this.size; r++) {
      for (let c = 0; c < this.size; c++) {
        const base = this.cells[r][c];
        const got = answerRows ? answerRows[r]?.[c] ?? " " : base;
        const div = this.divs[r * this.size + c];
        const cls = [MAZE_CLASS[base]];
        if (base === " " && got === "o") cls.push("path");
        else if (got !== base) cls.push("wrong");
        if (previous && (previous[r]?.[c] ?? " ") !== got) cls.push("changed");
        div.className = cls.filter(Boolean).join(" ");
        div.textContent = base === "S" || base === "G" ? base : "";
      }
    }
  }

  payload() {
    const text = this.cells.map((row) => row.join("")).join("\n");
    if (!text.includes("S")) throw new Error("place a start: pick the Start brush and click a cell");
    if (!text.includes("G")) throw new Error("place a goal: pick the Goal brush and click a cell");
    return text;
  }

  showPuzzle() {
    this.shown = null;
    this.#draw(null);
  }

  /** `answer`: the maze text with the path marked 'o' (the API answers in the form it was given). */
  showAnswer(answer, previous) {
    if (typeof answer !== "string") return;
    const rows = answer.split("\n");
    this.#draw(rows, typeof previous === "string" ? previous.split("\n") : null);
    this.shown = answer;
  }

  load(text) {
    const rows = text.replace(/\r/g, "").split("\n").filter((row, i, all) => row.length || (i > 0 && i < all.length - 1));
    const n = rows.length;
    if (n < 5 || n > 30) throw new Error(`a maze needs 5 to 30 rows, found ${n}`);
    rows.forEach((row, i) => {
      if (row.length !== n) throw new Error(`row ${i + 1} has ${row.length} characters; a ${n}-row maze needs ${n}`);
      const bad = row.search(/[^# SGo]/);
      if (bad >= 0) throw new Error(`bad character '${row[bad]}' in row ${i + 1}: use '#', ' ', 'S', 'G'`);
    });
    this.size = n;
    this.cells = rows.map((row) => row.replace(/o/g, " ").split(""));
    this.#build();
    this.onEdit();
  }

  /** A perfect maze (as the shipped model was trained on) with the goal a short to medium walk from the start. */
  random() {
    const grid = carveMaze(this.size);
    const open = [];
    grid.forEach((row, r) => row.forEach((ch, c) => { if (ch === " ") open.push([r, c]); }));
    const pick = (cells) => cells[Math.floor(Math.random() * cells.length)];
    const s = pick(open);
    const dist = bfs(grid, s);
    const span = Math.max(...open.map(([r, c]) => dist[r][c]));
    const lo = Math.min(4, span), hi = Math.max(lo, Math.min(2 * this.size, span));
    const g = pick(open.filter(([r, c]) => dist[r][c] >= lo && dist[r][c] <= hi));
    grid[s[0]][s[1]] = "S";
    grid[g[0]][g[1]] = "G";
    this.cells = grid;
    this.showPuzzle();
    this.onEdit();
  }

  example() { this.random(); }

  clear() { this.resize(this.size); }

  setLocked(locked) { this.locked = locked; }
}

// ---------------------------------------------------------------------------------------------- ARC

const ARC_EXAMPLE = {
  id: "playground-mirror",
  train: [
    { input: [[1, 0, 0], [2, 2, 0], [0, 3, 0]], output: [[0, 0, 1], [0, 2, 2], [0, 3, 0]] },
    { input: [[4, 4, 0, 0], [0, 5, 0, 0], [6, 0, 0, 7]], output: [[0, 0, 4, 4], [0, 0, 5, 0], [7, 0, 0, 6]] },
  ],
  test: [{ input: [[8, 0, 0], [8, 8, 0], [0, 0, 9]], output: [[0, 0, 8], [0, 8, 8], [9, 0, 0]] }],
};

function arcGrid(grid, cell = 18) {
  const node = el("div", "arc-grid");
  const cols = grid[0]?.length ?? 0;
  node.style.gridTemplateColumns = `repeat(${cols}, var(--cell))`;
  node.style.setProperty("--cell", `${cell}px`);
  for (const row of grid) {
    for (const v of row) {
      const c = el("div");
      c.style.background = ARC_COLOURS[v] ?? "#fff";
      node.append(c);
    }
  }
  return node;
}

/** A captioned grid; with no grid, an empty box the size of `like` (the prediction before a solve). */
function figure(caption, grid, cell, like = null) {
  const fig = el("div", "arc-fig");
  let body = grid ? arcGrid(grid, cell) : el("div", "arc-empty");
  if (!grid && like) {
    body.style.width = `${like[0].length * (cell + 1) + 1}px`;
    body.style.height = `${like.length * (cell + 1) + 1}px`;
  }
  fig.append(body, el("span", "", caption));
  return fig;
}

export class ArcBoard {
  constructor(root) {
    this.root = root;
    this.task = null;
    this.onEdit = () => {};
    this.pasteHint = "An ARC task JSON: {\"train\": [{\"input\", \"output\"}, …], \"test\": [{\"input\"}], \"test_index\"?}.";
    this.showPuzzle();
  }

  payload() {
    if (!this.task) throw new Error("paste an ARC task JSON below (or load the example)");
    return this.task;
  }

  #testPair() {
    const i = this.task?.test_index ?? 0;
    return this.task?.test?.[i] ?? null;
  }

  #cell(grid) {
    const side = Math.max(grid?.length ?? 1, grid?.[0]?.length ?? 1);
    return Math.max(6, Math.min(28, Math.floor(240 / side)));
  }

  showPuzzle(prediction = null) {
    if (!this.task) {
      this.root.replaceChildren(el("div", "empty-note", "Paste an ARC task below, or load the example."));
      return;
    }
    const train = el("div", "arc-train");
    for (const pair of this.task.train ?? []) {
      const box = el("div", "arc-pair");
      const small = Math.max(4, Math.floor(this.#cell(pair.input) / 2));
      box.append(arcGrid(pair.input, small), el("span", "arrow", "→"), arcGrid(pair.output, small));
      train.append(box);
    }
    const test = this.#testPair();
    const row = el("div", "arc-row");
    const cell = this.#cell(test?.input);
    row.append(figure("test input", test?.input, cell), figure("prediction", prediction, cell, test?.input));
    if (test?.output) row.append(figure("expected", test.output, cell));
    this.root.replaceChildren(train, row);
  }

  showAnswer(answer) {
    if (Array.isArray(answer) && Array.isArray(answer[0])) this.showPuzzle(answer);
  }

  load(text) {
    let task;
    try { task = JSON.parse(text); } catch (err) { throw new Error(`not valid JSON: ${err.message}`); }
    if (!task || typeof task !== "object" || !Array.isArray(task.train) || !Array.isArray(task.test)) {
      throw new Error("an ARC task is an object with 'train' and 'test' lists");
    }
    this.task = task;
    this.showPuzzle();
    this.onEdit();
  }

  example() { this.load(JSON.stringify(ARC_EXAMPLE)); }

  exampleText() { return JSON.stringify(ARC_EXAMPLE, null, 1); }

  clear() { this.task = null; this.showPuzzle(); this.onEdit(); }

  setLocked() {}
}
