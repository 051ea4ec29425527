"""Maze codec in the Maze-Hard text form: rows of '#', ' ', 'S', 'G'; an answer marks its path with 'o'.

Official vocabulary (official-trm-hrm.md §4.2): 0 PAD, 1 '#', 2 ' ', 3 'S', 4 'G', 5 'o'; the official
mazes are 30x30 = seq_len 900. Smaller mazes (square, 5..30 a side) sit in the top-left corner of the
side x side canvas with PAD around them, so one model can serve several sizes.

An answer is correct when walls, S and G are unchanged and the 'o' cells, with S and G, connect S to
G through open cells in exactly BFS-shortest-distance - 1 cells (a connected set that holds S and G
with that few cells can only be a shortest path).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from puzzles.base import (
    ExactFacts,
    PuzzleError,
    Verification,
    as_tokens,
    at_most,
    describe_type,
    lists_accepted,
)
from puzzles.dihedral import dihedral, inverse_dihedral
from puzzles.grid_text import clip, is_int
from puzzles.llm_text import extract, find_json, has_words, normalise_newlines, render_table, table_cells

CHARSET = "# SGo"  # token = index + 1
TOKEN_OF = {ch: i + 1 for i, ch in enumerate(CHARSET)}
CHAR_OF = {i + 1: ch for i, ch in enumerate(CHARSET)}
MIN_SIDE, MAX_SIDE = 5, 30
PUZZLE_CHARS = frozenset("# SG")
_ROLE = {"#": "wall", " ": "open cell", "S": "start", "G": "goal"}
# Text markers in the common conventions -> the Maze-Hard characters. 'o' is never a goal: it is the
# official path mark (an answer's), and reading it as a goal would be a guess.
CANON = {"#": "#", "X": "#", " ": " ", ".": " ", "S": "S", "@": "S", "G": "G", "E": "G"}
MARKERS = "'#' or 'X' (wall), ' ' or '.' (open), 'S' or '@' (start), 'G' or 'E' (goal)"
INT_CODES = {0: " ", 1: "#", 2: "S", 3: "G"}  # answer path: 4
TOKEN_CODES = {t: ch for t, ch in CHAR_OF.items() if ch != "o"}  # the official token ids of a puzzle's cells
INT_FORM = "0 open, 1 wall, 2 start, 3 goal"
TOKEN_FORM = "the Maze-Hard token ids 1 wall, 2 open, 3 start, 4 goal"
START_HINT = "'S' or '@', or give \"start\": [row, col]"
GOAL_HINT = "'G' or 'E' ('o' is a path mark, 'X' a wall), or give \"goal\": [row, col]"
# One form a line, with a short example: the 422 for any bad payload lists these (and the API docs show them).
ACCEPTED_FORMS: tuple[str, ...] = (
    f"square text rows (5..30 a side), {MARKERS}: \"#####\\n#S..#\\n###.#\\n#G..#\\n#####\"",
    'a list of row strings: ["#####", "#S  #", "### #", "#G  #", "#####"]',
    'one line of side x side characters: "######S  #### ##G  ######"',
    f"a grid of integers, {INT_FORM}: [[1,1,1,1,1],[1,2,0,0,1],[1,1,1,0,1],[1,3,0,0,1],[1,1,1,1,1]]",
    f"a grid of {TOKEN_FORM}: [[1,1,1,1,1],[1,3,2,2,1],[1,1,1,2,1],[1,4,2,2,1],[1,1,1,1,1]]",
    'a grid of one-character strings: [["#","#","#","#","#"],["#","S"," "," ","#"], ...]',
    '{"maze": <grid>, "start": [row, col], "goal": [row, col]} (0-based) for a grid without start/goal marks',
    "a markdown table of cells, or any text form inside a ``` code block or after a sentence",
    "'o' marks an answer's path: it is not accepted in a puzzle",
)

__all__ = ["CODEC", "MazeAnswer", "MazeCodec", "MazePuzzle", "augment", "generate", "parse", "shortest_path", "solve"]


@dataclass(frozen=True)
class MazePuzzle:
    """The maze rows ('#', ' ', 'S', 'G'), where S and G are, and the caller's form ("text", "rows", "flat",
    "table", "chars", "ints" or "tokens") with its own cells, so the answer comes back in the caller's markers."""

    rows: tuple[str, ...]
    start: tuple[int, int]
    goal: tuple[int, int]
    form: str = "text"
    solution: tuple[str, ...] | None = None  # rows with the shortest path marked 'o'
    original: tuple[Any, ...] | None = None  # the caller's rows (strings) or integer rows, as sent
    path_mark: Any = "o"  # what marks the path in the answer: 'o', or 4 / 5 for integer grids
    header: str | None = None  # a markdown table's header row

    @property
    def side(self) -> int:
        return len(self.rows)

    @cached_property
    def distances(self) -> np.ndarray:
        """BFS step distances from S, read-only (-1: unreachable). Worked out once per puzzle: a request reads
        them for its reachability check, the engine's verifier fact, the exact facts and the verdict."""
        dist = bfs_distances(self.rows, self.start)
        dist.flags.writeable = False
        return dist

    @property
    def path_len(self) -> int:
        """Steps from S to G along a shortest path (-1: G cannot be reached)."""
        return int(self.distances[self.goal])


@dataclass(frozen=True)
class MazeAnswer:
    rows: tuple[str, ...]


# ---------------------------------------------------------------------------------------------- parse


def _split_text(text: str) -> tuple[list[str], str]:
    text = normalise_newlines(text)
    if "\n" not in text:
        return _split_flat(text), "flat"
    lines = text.split("\n")
    while lines and lines[-1] == "":  # a trailing newline is not a row
        lines.pop()
    while lines and lines[0] == "":
        lines.pop(0)
    return lines, "text"


def _split_flat(text: str) -> list[str]:
    n = len(text)
    side = math.isqrt(n)
    if side * side != n:
        raise PuzzleError(f"single-line maze of {n} characters is not a square; separate rows with newlines",
                          code="wrong_size")
    return [text[i * side:(i + 1) * side] for i in range(side)]


def _find(rows: Sequence[str], ch: str) -> list[tuple[int, int]]:
    return [(r, c) for r, row in enumerate(rows) for c, x in enumerate(row) if x == ch]


def _where(cells: list[tuple[int, int]]) -> str:
    return " and ".join(f"row {r + 1}, col {c + 1}" for r, c in cells[:3])


def _is_maze_line(text: str) -> bool:
    """A row of the maze, not a sentence (``XXXXX`` and a stray letter are rows; see has_words)."""
    return not has_words(text, "SGEXo")


def _from_text(text: str) -> tuple[list[str], str, str | None]:
    """(rows in the caller's characters, form, table header) of a text payload, wherever the maze sits in it."""
    if not text.strip("\n"):
        raise PuzzleError("empty maze: expected rows of '#', ' ', 'S', 'G'", code="wrong_size")
    block = extract(text, _is_maze_line)
    if not block.lines:  # nothing but prose: report it as the plain text it is
        return (*_split_text(text), None)
    if block.table:
        rows = []
        for line in block.lines:
            cells = table_cells(line.text)
            for col, content in cells:
                if len(content) > 1:
                    raise PuzzleError(f"maze table cell {content!r} holds {len(content)} characters, expected one",
                                      f"line {line.number}, char {line.offset + col}", code="bad_character")
            rows.append("".join(content or " " for _, content in cells))
        return rows, "table", block.header
    if not block.trimmed:
        return (*_split_text(text), None)
    lines = [x.text for x in block.lines]
    if len(lines) == 1:
        return _split_flat(lines[0]), "flat", None
    return lines, "text", None


def _from_cells(grid: Sequence[Any]) -> tuple[list[str], str, Any, dict[Any, str]]:
    """A list of rows of cells -> (rows in canonical characters, form, path mark, code -> character).

    Characters (``[["#", "S", ...], ...]``) keep the text markers; integers use 0 open / 1 wall / 2 start /
    3 goal, or the Maze-Hard token ids 1 wall / 2 open / 3 start / 4 goal (never both: see below).
    """
    for r, row in enumerate(grid):
        if not isinstance(row, list | tuple):
            raise PuzzleError(f"maze row {r + 1} must be a list of cells like row 1, got {describe_type(row)}",
                              f"row {r + 1}", code="bad_type")
    cells = [(r, c, v) for r, row in enumerate(grid) for c, v in enumerate(row)]
    if cells and all(isinstance(v, str) and len(v) == 1 for _, _, v in cells):
        return ["".join(row) for row in grid], "chars", "o", {}
    for r, c, v in cells:
        if not is_int(v):
            raise PuzzleError(f"maze cell must be one character or an integer ({INT_FORM}), got {v!r}",
                              f"row {r + 1}, col {c + 1}", code="bad_character")
        if int(v) == 5 or not 0 <= int(v) <= 4:
            why = "a path mark in the Maze-Hard token ids; send the unsolved maze" if int(v) == 5 else "not a code"
            raise PuzzleError(f"maze cell {int(v)} is {why} ({INT_FORM}; or {TOKEN_FORM})",
                              f"row {r + 1}, col {c + 1}", code="bad_character")
    zeros = [(r, c) for r, c, v in cells if int(v) == 0]
    fours = [(r, c) for r, c, v in cells if int(v) == 4]
    if zeros and fours:
        raise PuzzleError(f"integer maze mixes 0 (open, in {INT_FORM}) and 4 (goal, in {TOKEN_FORM}); "
                          "use one convention", f"row {fours[0][0] + 1}, col {fours[0][1] + 1}", code="ambiguous_codes")
    if not zeros and not fours:
        raise PuzzleError("an integer maze with no 0 and no 4 reads two ways (2 is the start in "
                          f"{INT_FORM}, but open in {TOKEN_FORM}); mark open cells 0 or the goal 4",
                          code="ambiguous_codes")
    codes = INT_CODES if zeros else TOKEN_CODES
    rows = ["".join(codes[int(v)] for v in row) for row in grid]
    return rows, "ints" if zeros else "tokens", (4 if zeros else 5), {v: k for k, v in codes.items()}


def _canonical(rows: Sequence[str]) -> list[str]:
    """Caller characters -> '#', ' ', 'S', 'G', or a PuzzleError at the first character that is none of them."""
    out = []
    for r, row in enumerate(rows):
        for c, ch in enumerate(row):
            if ch == "o":
                raise PuzzleError("the maze contains 'o' (a path mark); send the unsolved maze",
                                  f"row {r + 1}, col {c + 1}", code="bad_character")
            if ch not in CANON:
                raise PuzzleError(f"bad character {ch!r} in maze: use {MARKERS}", f"row {r + 1}, col {c + 1}",
                                  code="bad_character")
        out.append("".join(CANON[ch] for ch in row))
    return out


def _point(value: Any, name: str, side: int) -> tuple[int, int]:
    if (not isinstance(value, list | tuple) or len(value) != 2 or not all(is_int(v) for v in value)):
        raise PuzzleError(f"'{name}' must be [row, col] (0-based integers), got {value!r}", name, code="bad_point")
    r, c = int(value[0]), int(value[1])
    if not (0 <= r < side and 0 <= c < side):
        raise PuzzleError(f"'{name}' [{r}, {c}] is outside the {side}x{side} maze (0-based [row, col])", name,
                          code="bad_point")
    return r, c


def _place(rows: list[str], fields: dict[str, Any]) -> list[str]:
    """Apply ``start``/``goal`` fields: allowed only on an open cell, and only when the grid has no such mark."""
    for name, mark in (("start", "S"), ("goal", "G")):
        if fields.get(name) is None:
            continue
        r, c = _point(fields[name], name, len(rows))
        marked = _find(rows, mark)
        if marked:
            raise PuzzleError(f"the maze already marks its {name} (at {_where(marked)}) and '{name}' is given too; "
                              "send one of the two", name, code=f"multiple_{name}s")
        if rows[r][c] != " ":
            raise PuzzleError(f"'{name}' [{r}, {c}] is not an open cell", name, code="bad_point")
        rows[r] = rows[r][:c] + mark + rows[r][c + 1:]
    return rows


def _payload_grid(payload: Any, read_json: bool = True) -> tuple[Any, dict[str, Any]]:
    """Unwrap {"maze": ..., "start"?, "goal"?} and (`read_json`) JSON sent as text."""
    fields: dict[str, Any] = {}
    for _ in range(3):  # a dict, a JSON text of it, the grid inside
        if isinstance(payload, dict):
            if "maze" not in payload:
                keys = ", ".join(sorted(map(str, payload))) or "none"
                raise PuzzleError(f"maze object needs a 'maze' field (got keys: {keys})", code="missing_field")
            fields.update({k: payload[k] for k in ("start", "goal") if k in payload})
            payload = payload["maze"]
        elif read_json and isinstance(payload, str) and ("[" in payload or "{" in payload):
            _, payload = find_json(payload)
        else:
            break
    if isinstance(payload, np.ndarray):
        payload = payload.tolist()
    return payload, fields


@lists_accepted(ACCEPTED_FORMS)
def parse(payload: Any) -> MazePuzzle:
    try:
        return _parse(payload)
    except PuzzleError as json_error:
        if not (isinstance(payload, str) and ("[" in payload or "{" in payload)):
            raise
        # Unless a bracket was prose ("Find the path [5x5]:", a note after the maze) and the text reader finds the
        # maze, the JSON's error.
        with contextlib.suppress(PuzzleError):
            return _parse(payload, read_json=False)
        raise json_error


def _parse(payload: Any, read_json: bool = True) -> MazePuzzle:
    payload, fields = _payload_grid(payload, read_json)
    header, mark, codes = None, "o", {}
    if isinstance(payload, str):
        original, form, header = _from_text(payload)
    elif isinstance(payload, list | tuple):
        if not payload:
            raise PuzzleError("empty maze: expected rows of '#', ' ', 'S', 'G'", code="wrong_size")
        if isinstance(payload[0], list | tuple):
            original, form, mark, codes = _from_cells(payload)
        else:
            for i, row in enumerate(payload):
                if not isinstance(row, str):
                    raise PuzzleError(f"maze row {i + 1} must be a string, got {describe_type(row)}", f"row {i + 1}",
                                      code="bad_type")
            original, form = list(payload), "rows"
    else:
        raise PuzzleError("maze payload must be a string of newline-separated rows, a list of row strings or an "
                          f"integer grid, got {describe_type(payload)}", code="bad_type")
    if not original:
        raise PuzzleError("empty maze: expected rows of '#', ' ', 'S', 'G'", code="wrong_size")
    width = len(original[0])
    for i, row in enumerate(original):
        if len(row) != width:
            unit = "cells" if codes or form == "chars" else "characters"
            raise PuzzleError(f"maze row {i + 1} has {len(row)} {unit}, expected {width} as in row 1"
                              + ("" if codes or form == "chars" else f" (row was {clip(row)!r})"), f"row {i + 1}",
                              code="not_rectangular")
    if len(original) != width:
        raise PuzzleError(f"maze must be square: got {len(original)} rows of {width} characters", code="not_square")
    if not MIN_SIDE <= width <= MAX_SIDE:
        raise PuzzleError(f"maze side {width} is outside {MIN_SIDE}..{MAX_SIDE}", code="wrong_size")
    rows = _place(original if codes else _canonical(original), fields)
    for ch, name in (("S", "start"), ("G", "goal")):
        found = _find(rows, ch)
        if not found:
            hint = (START_HINT if ch == "S" else GOAL_HINT) if not codes else (
                f"code {codes[ch]}, or give \"{name}\": [row, col]")
            raise PuzzleError(f"maze has no {name}: mark it with {hint}", code=f"missing_{name}")
        if len(found) > 1:
            raise PuzzleError(f"maze has {len(found)} {name}s, expected exactly 1 ({_where(found)})",
                              f"row {found[1][0] + 1}, col {found[1][1] + 1}", code=f"multiple_{name}s")
    start, goal = _find(rows, "S")[0], _find(rows, "G")[0]
    caller = tuple(tuple(int(v) for v in row) for row in payload) if codes else tuple(original)
    puzzle = MazePuzzle(tuple(rows), start, goal, form=form, original=caller, path_mark=mark, header=header)
    if puzzle.path_len < 0:  # (the BFS stays with the puzzle for the facts and the verdict)
        raise PuzzleError("goal 'G' cannot be reached from start 'S' through open cells", code="unsolvable")
    return puzzle


# ----------------------------------------------------------------------------------------------- BFS


def bfs_distances(rows: Sequence[str], start: tuple[int, int]) -> np.ndarray:
    """4-neighbour step distances from ``start`` through non-wall cells (-1 = unreachable).

    The walk runs over a flat Python list with a wall border (no bounds checks, no numpy scalar access, which
    cost ~1 ms per 30x30 maze here against ~0.2 ms); numpy only holds the result."""
    h, w = len(rows), len(rows[0])
    stride = w + 2  # one wall cell either side of every row, and a wall row above and below
    open_ = [False] * (stride * (h + 2))
    for r, row in enumerate(rows):
        base = (r + 1) * stride + 1
        for c, ch in enumerate(row):
            if ch != "#":
                open_[base + c] = True
    dist = [-1] * len(open_)
    first = (start[0] + 1) * stride + start[1] + 1
    dist[first] = 0
    queue = deque([first])
    steps = (-stride, stride, -1, 1)
    while queue:
        i = queue.popleft()
        d = dist[i] + 1
        for step in steps:
            j = i + step
            if open_[j] and dist[j] < 0:
                dist[j] = d
                queue.append(j)
    return np.array(dist, dtype=np.int64).reshape(h + 2, stride)[1:-1, 1:-1].copy()


def shortest_path(rows: Sequence[str], start: tuple[int, int], goal: tuple[int, int],
                  dist: np.ndarray | None = None) -> list[tuple[int, int]]:
    """One shortest path S..G inclusive (deterministic: walks back from G by BFS distance), [] if none.
    ``dist``: the BFS distances from S when already known (MazePuzzle.distances)."""
    dist = bfs_distances(rows, start) if dist is None else dist
    if dist[goal] < 0:
        return []
    path = [goal]
    r, c = goal
    while (r, c) != start:
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < dist.shape[0] and 0 <= nc < dist.shape[1] and dist[nr, nc] == dist[r, c] - 1:
                r, c = nr, nc
                break
        path.append((r, c))
    return path[::-1]


def count_shortest_paths(rows: Sequence[str], start: tuple[int, int], goal: tuple[int, int],
                         cap: int = 2, dist: np.ndarray | None = None) -> int:
    """Number of distinct shortest S-G paths, counted up to ``cap`` (0 when G is unreachable).

    Paths are counted layer by layer over the BFS distances: a cell's count is the sum of its
    neighbours' one step closer to S (the classic shortest-path counting DP), clipped at ``cap``.
    """
    dist = bfs_distances(rows, start) if dist is None else dist
    if dist[goal] < 0:
        return 0
    h, w = dist.shape
    count = np.zeros((h, w), dtype=np.int64)
    count[start] = 1
    order = sorted((int(dist[r, c]), r, c) for r in range(h) for c in range(w)
                    if 0 < dist[r, c] <= dist[goal])
    for d, r, c in order:
        total = 0
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < h and 0 <= nc < w and dist[nr, nc] == d - 1:
                total += int(count[nr, nc])
        count[r, c] = min(total, cap)
    return int(count[goal])


def solve(puzzle: MazePuzzle) -> MazeAnswer:
    """The puzzle with one shortest path marked 'o' (the label form of the official dataset)."""
    grid = [list(row) for row in puzzle.rows]
    for r, c in shortest_path(puzzle.rows, puzzle.start, puzzle.goal, puzzle.distances)[1:-1]:
        grid[r][c] = "o"
    return MazeAnswer(tuple("".join(row) for row in grid))


# ------------------------------------------------------------------------------------------- codec


_TO_CANON = str.maketrans({k: v for k, v in CANON.items() if k != v})


def _answer_rows(answer: Any) -> tuple[str, ...]:
    if isinstance(answer, MazeAnswer):
        return answer.rows
    if isinstance(answer, MazePuzzle):
        return answer.rows
    if isinstance(answer, str):  # an answer in the caller's markers verifies too
        return tuple(row.translate(_TO_CANON) for row in _split_text(answer)[0])
    if isinstance(answer, list | tuple) and all(isinstance(r, str) for r in answer):
        return tuple(row.translate(_TO_CANON) for row in answer)
    raise PuzzleError(f"maze answer must be text or a list of row strings, got {describe_type(answer)}",
                      code="bad_type")


def _caller_rows(rows: Sequence[str], puzzle: MazePuzzle) -> list[list[Any]]:
    """Answer rows in the caller's own cells: unchanged cells as sent, the path as ``path_mark``."""
    assert puzzle.original is not None
    codes = {"ints": INT_CODES, "tokens": TOKEN_CODES}.get(puzzle.form)
    back = {ch: code for code, ch in codes.items()} if codes else {}
    out = []
    for r, row in enumerate(rows):
        line: list[Any] = []
        for c, got in enumerate(row):
            if got == puzzle.rows[r][c]:
                line.append(puzzle.original[r][c])
            elif got == "o":
                line.append(puzzle.path_mark)
            else:  # the model changed a cell: show what it wrote (None for a non-maze token in an int grid)
                line.append(back.get(got) if codes else got)
        out.append(line)
    return out


def rows_to_array(rows: Sequence[str]) -> np.ndarray:
    """Rows -> [h, w] int tokens; unknown characters become PAD (0)."""
    return np.array([[TOKEN_OF.get(ch, 0) for ch in row] for row in rows], dtype=np.int32)


def array_to_rows(arr: np.ndarray) -> tuple[str, ...]:
    """[h, w] tokens -> rows; PAD and out-of-vocabulary tokens become '?' so verify can point at them."""
    return tuple("".join(CHAR_OF.get(int(t), "?") for t in row) for row in arr)


def augment(puzzle: MazePuzzle, t: int) -> MazePuzzle:
    """Dihedral transform ``t`` (0..7) of the maze and, if present, its solution."""
    rows = array_to_rows(dihedral(rows_to_array(puzzle.rows), t))
    sol = None if puzzle.solution is None else array_to_rows(dihedral(rows_to_array(puzzle.solution), t))
    return MazePuzzle(rows, _find(rows, "S")[0], _find(rows, "G")[0], puzzle.form, sol)


def deaugment_rows(rows: Sequence[str], t: int) -> tuple[str, ...]:
    """Undo ``augment``'s transform ``t`` on answer rows."""
    return array_to_rows(inverse_dihedral(rows_to_array(rows), t))


class MazeCodec:
    task = "maze"
    vocab_size = 6
    default_seq_len = 900

    def parse(self, payload: Any) -> MazePuzzle:
        return parse(payload)

    @staticmethod
    def canvas_side(seq_len: int, maze_side: int) -> int:
        side = math.isqrt(seq_len)
        if side * side != seq_len:
            raise PuzzleError(f"maze seq_len must be a square (side x side), got {seq_len}", code="bad_seq_len")
        if maze_side > side:
            raise PuzzleError(f"a {maze_side}x{maze_side} maze does not fit the model's {side}x{side} canvas "
                              f"(seq_len {seq_len})", code="too_large")
        return side

    def _canvas(self, rows: Sequence[str], seq_len: int) -> np.ndarray:
        side = self.canvas_side(seq_len, len(rows))
        canvas = np.zeros((side, side), dtype=np.int32)
        canvas[: len(rows), : len(rows[0])] = rows_to_array(rows)
        return canvas.reshape(-1)

    def encode(self, puzzle: MazePuzzle, seq_len: int = 900) -> np.ndarray:
        return self._canvas(puzzle.rows, seq_len)

    def encode_label(self, puzzle: MazePuzzle | MazeAnswer, seq_len: int = 900) -> np.ndarray:
        if isinstance(puzzle, MazeAnswer):
            return self._canvas(puzzle.rows, seq_len)
        rows = puzzle.solution if puzzle.solution is not None else solve(puzzle).rows
        return self._canvas(rows, seq_len)

    def decode(self, tokens: np.ndarray, puzzle: MazePuzzle) -> MazeAnswer:
        t = as_tokens(tokens, int(np.size(tokens)))
        side = self.canvas_side(t.shape[0], puzzle.side)
        crop = t.reshape(side, side)[: puzzle.side, : puzzle.side]
        return MazeAnswer(array_to_rows(crop))

    def verify(self, puzzle: MazePuzzle, answer: Any) -> Verification:
        try:
            rows = _answer_rows(answer)
        except PuzzleError as err:
            return Verification.of([str(err)])
        n = puzzle.side
        if len(rows) != n or any(len(r) != n for r in rows):
            return Verification.of([f"answer must be {n} rows of {n} characters"])
        reasons: list[str] = []
        path: set[tuple[int, int]] = set()
        for r in range(n):
            for c in range(n):
                want, got = puzzle.rows[r][c], rows[r][c]
                if got == "o" and want == " ":
                    path.add((r, c))
                elif got != want:
                    reasons.append(f"row {r + 1}, col {c + 1} is {got!r} but the maze has {want!r}")
        if reasons:
            return Verification.of(at_most(reasons, "cells"))
        # connected from S through path cells to G?
        allowed = path | {puzzle.start, puzzle.goal}
        seen = {puzzle.start}
        queue = deque([puzzle.start])
        while queue:
            r, c = queue.popleft()
            for nb in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if nb in allowed and nb not in seen:
                    seen.add(nb)
                    queue.append(nb)
        if puzzle.goal not in seen:
            reasons.append("the 'o' path does not connect S to G")
        best = puzzle.path_len
        if len(path) != best - 1:
            reasons.append(f"the path marks {len(path)} cells but a shortest path has {best - 1}")
        return Verification.of(reasons)

    def verify_fact(self, puzzle: MazePuzzle) -> int:
        """The shortest S-G distance (-1: G unreachable), as models.verify.maze_shortest_distance finds it on the
        tokens: worked out here, in an API process, the engine core skips that flood fill (a few hundred small
        device kernels and host syncs per admission)."""
        return puzzle.path_len

    def exact(self, puzzle: MazePuzzle) -> ExactFacts:
        """BFS facts. ``solvable``: G is reachable from S. ``unique``: exactly one *shortest* path (the only
        answer ``verify`` accepts is a shortest path, so that is the uniqueness a client cares about);
        longer detours do not count. ``solution``: ``solve(puzzle)``. Never capped: BFS over <= 900 cells."""
        t0 = time.perf_counter()
        n_paths = count_shortest_paths(puzzle.rows, puzzle.start, puzzle.goal, dist=puzzle.distances)
        solution = solve(puzzle) if n_paths else None
        return ExactFacts(solvable=n_paths > 0, unique=n_paths == 1, solution=solution,
                          ms=(time.perf_counter() - t0) * 1000.0)

    def overwritten(self, puzzle: MazePuzzle, answer: Any) -> list[str]:
        """Each cell where the answer changes the maze other than marking an open cell 'o', located, e.g.
        ``"row 5, col 4: wall '#', answer 'o' (path through a wall)"`` or ``"row 2, col 2: start 'S',
        answer 'o' (start moved)"``; '?' stands for a PAD or unknown token. [] when the maze is kept."""
        try:
            rows = _answer_rows(answer)
        except PuzzleError as err:
            return [str(err)]
        n = puzzle.side
        if len(rows) != n or any(len(r) != n for r in rows):
            return [f"answer must be {n} rows of {n} characters"]
        out: list[str] = []
        for r in range(n):
            for c in range(n):
                want, got = puzzle.rows[r][c], rows[r][c]
                if got == want or (want == " " and got == "o"):
                    continue
                if want == "#":
                    why = "path through a wall" if got == "o" else "wall removed"
                elif want in "SG":
                    why = f"{_ROLE[want]} moved"
                else:
                    why = {"#": "wall added", "S": "second start", "G": "second goal"}.get(got, "open cell changed")
                out.append(f"row {r + 1}, col {c + 1}: {_ROLE[want]} {want!r}, answer {got!r} ({why})")
        return at_most(out, "cells")

    def canonical(self, puzzle: MazePuzzle | MazeAnswer) -> str:
        return "\n".join(_answer_rows(puzzle))

    def render(self, puzzle_or_answer: MazePuzzle | MazeAnswer) -> str:
        return "\n".join(_answer_rows(puzzle_or_answer))

    def answer_payload(self, answer: MazeAnswer, puzzle: MazePuzzle) -> Any:
        rows = _answer_rows(answer)
        if puzzle.original is not None and len(rows) == puzzle.side and all(len(r) == puzzle.side for r in rows):
            cells = _caller_rows(rows, puzzle)
            if puzzle.form in ("ints", "tokens", "chars"):
                return cells
            if puzzle.form == "table":
                return render_table(cells, puzzle.header)
            rows = tuple("".join(row) for row in cells)
        if puzzle.form == "rows":
            return list(rows)
        if puzzle.form == "flat":
            return "".join(rows)
        return "\n".join(rows)


CODEC = MazeCodec()


def generate(seed: Any, size: int = 30, min_path_len: int = 0, max_path_len: int | None = None,
             loops: float = 0.1) -> MazePuzzle:
    """Seeded maze; see ``puzzles.maze_gen.generate`` (re-exported here, the name the trainer calls)."""
    from puzzles.maze_gen import generate as _generate

    return _generate(seed, size, min_path_len=min_path_len, max_path_len=max_path_len, loops=loops)
