// Playground wiring: models and options -> POST /v1/solve/stream -> the board, stats, chart and trajectories.
import { ArcBoard, MazeBoard, SudokuBoard } from "./boards.js";
import { errorOf, streamSolve } from "./sse.js";
import { StepPlayer, confidenceChart, trajectoryColour } from "./steps.js";

const $ = (id) => document.getElementById(id);
const TITLES = { sudoku: "Sudoku", maze: "Maze", arc: "ARC task" };
const OPTIONS = ["max_steps", "halting", "trajectories", "noise", "selection", "seed"];

const boards = {
  sudoku: new SudokuBoard($("board-sudoku")),
  maze: new MazeBoard($("board-maze")),
  arc: new ArcBoard($("board-arc")),
};
const state = { task: "sudoku", models: [], defaults: {}, frames: [], result: null, abort: null, lastBody: null };
const player = new StepPlayer((i) => showFrame(i));

// ------------------------------------------------------------------------------------------ models

async function loadModels() {
  try {
    const resp = await fetch("v1/models");
    if (!resp.ok) {  // 401 with RECURSOLVE_API_KEYS set: the playground sends no key, so say so and stop
      const err = await errorOf(resp);
      $("server-state").dataset.state = "down";
      $("server-state").textContent = `${err.status} ${err.code}: ${err.message}`;
      if (resp.status !== 401 && resp.status !== 403) setTimeout(loadModels, 3000);
      return;
    }
    const body = await resp.json();
    state.models = body.models ?? [];
    state.defaults = body.defaults ?? {};
    const sever = $("server-state");
    sever.dataset.state = body.ready ? "ready" : "not_ready";
    sever.textContent = body.ready ? `ready · ${state.models.length} model${state.models.length === 1 ? "" : "s"}`
      : "loading models…";
    if (!body.ready) setTimeout(loadModels, 1500);
  } catch {
    $("server-state").dataset.state = "down";
    $("server-state").textContent = "server unreachable";
    setTimeout(loadModels, 3000);
  }
  fillModels();
}

function fillModels() {
  const select = $("model");
  const previous = select.value;
  const served = state.models.filter((m) => m.task === state.task);
  select.replaceChildren(...served.map((m) => {
    const opt = document.createElement("option");
    opt.value = m.name;
    opt.textContent = m.default_for_task ? `${m.name} (default)` : m.name;
    return opt;
  }));
  if (!served.length) {
    const opt = document.createElement("option");
    opt.textContent = `no ${state.task} model served`;
    opt.value = "";
    select.append(opt);
  }
  const pick = served.find((m) => m.name === previous) ?? served.find((m) => m.default_for_task) ?? served[0];
  if (pick) select.value = pick.name;
  showModelInfo();
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value) ?? null;
}

function showModelInfo() {
  const m = currentModel();
  const info = $("model-info");
  if (!m) {
    info.textContent = state.models.length ? "Serve a model for this task to solve it here." : "";
  } else {
    const params = m.parameters >= 1e6 ? `${(m.parameters / 1e6).toFixed(2)} M` : `${Math.round(m.parameters / 1e3)} k`;
    info.textContent = `${(m.architecture ?? "").toUpperCase()} · ${params} params · ${m.backend} ${m.device} ` +
      `${m.dtype} · up to ${m.config?.halt_max_steps ?? "?"} steps`;
    if (state.task === "maze" && m.config?.seq_len && !boards.maze.touched) {
      const side = Math.round(Math.sqrt(m.config.seq_len));
      if (side >= 5 && side <= 30 && side !== boards.maze.size) {
        $("maze-size").value = side;
        boards.maze.resize(side);
        boards.maze.random();
      }
    }
  }
  $("solve").disabled = !m || !!state.abort;
  updateRequestPreview();
}

// ------------------------------------------------------------------------------------------ request

function options() {
  const out = {};
  for (const name of OPTIONS) {
    const input = $(`opt-${name}`);
    const raw = input.value.trim();
    if (raw === "") continue;
    out[name] = input.type === "number" ? Number(raw) : raw;
  }
  out.cache = $("opt-cache").checked;
  return out;
}

function requestBody() {
  const body = { task: state.task, puzzle: boards[state.task].payload(), options: options() };
  const model = $("model").value;
  if (model) body.model = model;
  return body;
}

function updateRequestPreview() {
  let text;
  try { text = JSON.stringify(requestBody(), null, 1); } catch (err) { text = `// ${err.message}`; }
  $("request-body").textContent = text;
}

// ------------------------------------------------------------------------------------------ solving

function setBadge(stateName, text) {
  const badge = $("badge");
  badge.dataset.state = stateName;
  badge.textContent = text;
}

function resetStatus() {
  state.frames = [];
  state.result = null;
  for (const id of ["stat-step", "stat-traj", "stat-rows", "stat-time", "stat-verified", "stat-rowsteps"]) {
    if ($(id)) $(id).textContent = "–";
  }
  $("conf-value").textContent = "–";
  $("conf-fill").style.width = "0";
  $("chart").innerHTML = "";
  $("traj-strip").replaceChildren();
  $("traj-summary").textContent = "Run with K > 1 trajectories (PTRM) to see which one leads at each step.";
  $("log-body").replaceChildren();
  for (const id of ["verification", "error", "halted", "cached", "scrubber", "board-error"]) $(id).hidden = true;
  $(`board-${state.task}`).classList.remove("verified");
}

function showError(err) {
  const box = $("error");
  box.hidden = false;
  box.replaceChildren();
  const code = document.createElement("code");
  code.textContent = err.code ?? "error";
  box.append(code, document.createTextNode(` ${err.message}`));
  if (err.location) box.append(document.createTextNode(` (at ${err.location})`));
  setBadge("error", err.status ? `Error ${err.status}` : "Error");
}

async function solve() {
  let body;
  try {
    body = requestBody();
  } catch (err) {
    $("board-error").textContent = err.message;
    $("board-error").hidden = false;
    return;
  }
  resetStatus();
  state.lastBody = body;
  const board = boards[state.task];
  board.showPuzzle();
  board.setLocked(true);
  setBadge("running", "Solving…");
  const abort = new AbortController();
  state.abort = abort;
  $("solve").disabled = true;
  $("stop").disabled = false;
  const k = body.options.trajectories ?? 1;
  $("traj-summary").textContent = k > 1
    ? `${k} trajectories running: each square is one step, coloured by the trajectory that leads it.`
    : "One trajectory (K = 1): each square is one step.";
  player.start(Number($("pace").value));
  try {
    const result = await streamSolve("v1/solve/stream", body, {
      signal: abort.signal,
      onStep: (step) => {
        state.frames.push(step);
        appendLog(step);
        player.push();
      },
    });
    state.result = result;
    await player.finish();
    finish(result);
  } catch (err) {
    player.stop();
    if (err.name === "AbortError") {
      setBadge("idle", "Stopped");
      showFrame(state.frames.length - 1);
    } else {
      showError(err);
    }
  } finally {
    state.abort = null;
    board.setLocked(false);
    $("solve").disabled = !currentModel();
    $("stop").disabled = true;
    if (state.frames.length) showScrubber();
  }
}

function appendLog(step) {
  const tr = document.createElement("tr");
  for (const v of [step.step, step.trajectory, step.confidence.toFixed(3), step.verified ? "✓" : "·", step.active_rows]) {
    const td = document.createElement("td");
    td.textContent = v;
    tr.append(td);
  }
  $("log-body").append(tr);
}

/** Draw step frame `i` (or the final answer when i == frames.length, after the result). */
function showFrame(i) {
  const frames = state.frames;
  const board = boards[state.task];
  const final = state.result && i >= frames.length;
  const frame = final ? null : frames[i];
  if (!final && !frame) return;
  const prev = frames[Math.min(i, frames.length) - 1]?.answer ?? null;
  const answer = final ? state.result.answer : frame.answer;
  if (answer !== null && answer !== undefined) board.showAnswer(answer, prev);
  const confidence = final ? state.result.confidence : frame.confidence;
  $("stat-step").textContent = final ? `${state.result.steps} (final)` : String(frame.step);
  const k = state.result?.trajectories ?? state.lastBody?.options?.trajectories ?? 1;
  const traj = final ? state.result.chosen_trajectory : frame.trajectory;
  $("stat-traj").textContent = traj === null || traj === undefined ? "–" : `#${traj} of ${k}`;
  $("stat-rows").textContent = final ? "0" : String(frame.active_rows);
  $("stat-verified").textContent = (final ? state.result.verified : frame.verified) ? "yes" : "no";
  if (confidence !== null && confidence !== undefined) {
    $("conf-value").textContent = `${(confidence * 100).toFixed(1)}%`;
    $("conf-fill").style.width = `${Math.max(0, Math.min(1, confidence)) * 100}%`;
  }
  const upto = final ? frames.length : i + 1;
  $("chart").innerHTML = confidenceChart(frames.slice(0, upto), final ? frames.length - 1 : i, $("chart").clientWidth);
  drawStrip(upto, final ? -1 : i);
  if (!state.abort || final) setScrub(i);
}

function drawStrip(upto, current) {
  const strip = $("traj-strip");
  strip.replaceChildren();
  state.frames.slice(0, upto).forEach((f, j) => {
    const s = document.createElement("span");
    s.style.background = trajectoryColour(f.trajectory);
    s.textContent = f.trajectory;
    s.title = `step ${f.step}: trajectory #${f.trajectory} leads, confidence ${(f.confidence * 100).toFixed(1)}%` +
      (f.verified ? ", verified" : "");
    if (f.verified) s.classList.add("ok");
    if (j === current) s.style.outline = "2px solid #1d2433";
    s.addEventListener("click", () => { if (!state.abort) showFrame(j); });
    strip.append(s);
  });
}

function finish(result) {
  showFrame(state.frames.length);
  setBadge(result.verified ? "verified" : "unverified", result.verified ? "Verified" : "Not verified");
  if (result.verified) $(`board-${state.task}`).classList.add("verified");
  const halted = $("halted");
  halted.textContent = `halted_by: ${result.halted_by}`;
  halted.hidden = false;
  $("cached").hidden = !result.cached;
  $("stat-time").textContent = `${Math.round(result.timings.total_ms)} ms`;
  $("stat-rowsteps").textContent = String(result.row_steps);
  if (result.verification?.length) {
    const box = $("verification");
    box.hidden = false;
    box.replaceChildren(document.createTextNode("The verifier found:"));
    const ul = document.createElement("ul");
    for (const reason of result.verification) {
      const li = document.createElement("li");
      li.textContent = reason;
      ul.append(li);
    }
    box.append(ul);
  }
  summariseTrajectories(result);
}

function summariseTrajectories(result) {
  const counts = new Map();
  for (const f of state.frames) counts.set(f.trajectory, (counts.get(f.trajectory) ?? 0) + 1);
  const summary = $("traj-summary");
  summary.replaceChildren();
  const line = document.createElement("div");
  const chosen = result.chosen_trajectory;
  const selection = state.lastBody?.options?.selection ?? "default";
  line.textContent = result.escalated
    ? `Escalated (halting: auto): #0 was the plain run, #1-#${result.trajectories - 1} the noisy trajectories that ` +
      `followed it; ${result.row_steps} row-steps; #${chosen} chosen.`
    : result.trajectories > 1
    ? `K = ${result.trajectories} trajectories, ${result.row_steps} row-steps; #${chosen} chosen (selection: ${selection}).`
    : `One trajectory (K = 1): ${result.row_steps} row-steps.` + (state.frames.length ? "" : " No steps streamed (cached).");
  summary.append(line);
  if (counts.size) {
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const [t, n] of [...counts.entries()].sort((a, b) => a[0] - b[0])) {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = trajectoryColour(t);
      item.append(swatch, document.createTextNode(`#${t} led ${n} step${n === 1 ? "" : "s"}`));
      if (t === chosen) {
        const b = document.createElement("b");
        b.textContent = " · chosen";
        item.append(b);
      }
      legend.append(item);
    }
    summary.append(legend);
  }
}

// ------------------------------------------------------------------------------------------ replay

function showScrubber() {
  const scrub = $("scrub");
  scrub.min = "0";
  scrub.max = String(state.frames.length - (state.result ? 0 : 1));
  $("scrubber").hidden = false;
  setScrub(Number(scrub.max));
}

function setScrub(i) {
  const scrub = $("scrub");
  scrub.value = String(i);
  const final = state.result && i >= state.frames.length;
  $("scrub-label").textContent = final ? "final" : `step ${state.frames[i]?.step ?? "–"}`;
}

$("scrub").addEventListener("input", (e) => showFrame(Number(e.target.value)));
$("replay").addEventListener("click", async () => {
  if (!state.frames.length || state.abort) return;
  player.start(Math.max(80, Number($("pace").value)));
  for (let i = 0; i < state.frames.length; i++) player.push();
  await player.finish();
  if (state.result) showFrame(state.frames.length);
});

// ------------------------------------------------------------------------------------------ UI events

function selectTask(task) {
  if (state.abort) return;
  state.task = task;
  for (const b of document.querySelectorAll("#task-tabs button")) b.setAttribute("aria-selected", b.dataset.task === task);
  for (const t of Object.keys(boards)) {
    $(`board-${t}`).hidden = t !== task;
    $(`tools-${t}`).hidden = t !== task;
  }
  $("board-title").textContent = TITLES[task];
  $("paste-hint").textContent = boards[task].pasteHint;
  $("paste-box").open = task === "arc";
  if (task === "arc" && !$("paste").value) $("paste").value = boards.arc.exampleText();
  resetStatus();
  setBadge("idle", "Idle");
  fillModels();
}

for (const b of document.querySelectorAll("#task-tabs button")) b.addEventListener("click", () => selectTask(b.dataset.task));
for (const tools of document.querySelectorAll(".board-tools")) {
  tools.addEventListener("click", (e) => {
    const act = e.target.closest("button[data-act]")?.dataset.act;
    if (!act || state.abort) return;
    const board = boards[state.task];
    if (act === "reset") board.showPuzzle(); else board[act]();
    resetStatus();
    setBadge("idle", "Idle");
  });
}
for (const b of document.querySelectorAll("#maze-brush button")) {
  b.addEventListener("click", () => {
    boards.maze.brush = b.dataset.brush;
    for (const o of document.querySelectorAll("#maze-brush button")) o.setAttribute("aria-selected", o === b);
  });
}
$("maze-size").addEventListener("change", (e) => { boards.maze.touched = true; boards.maze.resize(Number(e.target.value)); });
$("paste-load").addEventListener("click", () => {
  const hint = $("paste-hint");
  try {
    boards[state.task].load($("paste").value);
    if (state.task === "maze") { boards.maze.touched = true; $("maze-size").value = boards.maze.size; }
    hint.textContent = "Loaded.";
    hint.style.color = "";
  } catch (err) {
    hint.textContent = err.message;
    hint.style.color = "var(--bad)";
  }
});
for (const board of Object.values(boards)) {
  board.onEdit = () => {
    $("board-error").hidden = true;
    if (board === boards.maze) boards.maze.touched = true;
    updateRequestPreview();
  };
  board.onError = (msg) => { $("board-error").textContent = msg; $("board-error").hidden = false; };
}
$("model").addEventListener("change", showModelInfo);
for (const name of [...OPTIONS, "cache"]) $(`opt-${name}`).addEventListener("input", updateRequestPreview);
$("solve").addEventListener("click", solve);
// Stop ends the request while it streams, and the paced replay once the server has answered (it shows the
// result at once: the page stayed locked for the whole replay, up to max_steps x pace).
$("stop").addEventListener("click", () => { state.abort?.abort(); player.stop(); });
document.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === "Enter" && !$("solve").disabled) solve();
});

boards.sudoku.example();
boards.maze.random();
boards.maze.touched = false;
selectTask("sudoku");
loadModels();
