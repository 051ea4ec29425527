"""Maze codec in the Maze-Hard text form: rows of '#', ' ', 'S', 'G'; an answer marks its path with 'o'.

Official vocabulary (official-trm-hrm.md §4.2): 0 PAD, 1 '#', 2 ' ', 3 'S', 4 'G', 5 'o'; the official
mazes are 30x30 = seq_len 900. Smaller mazes (square, 5..30 a side) sit in the top-left corner of the
side x side canvas with PAD around them, so one model can serve several sizes.

An answer is correct when walls, S and G are unchanged and the 'o' cells, with S and G, connect S to
G through open cells in exactly BFS-shortest-distance - 1 cells (a connected set that holds S and G
with that few cells can only be a shortest path).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from puzzles.base import ExactFacts, PuzzleError, Verification, as_tokens, describe_type
from puzzles.dihedral import dihedral, inverse_dihedral
from puzzles.grid_text import clip

CHARSET = "# SGo"  # token = index + 1
TOKEN_OF = {ch: i + 1 for i, ch in enumerate(CHARSET)}
CHAR_OF = {i + 1: ch for i, ch in enumerate(CHARSET)}
MIN_SIDE, MAX_SIDE = 5, 30
PUZZLE_CHARS = frozenset("# SG")
MAX_REASONS = 20
_ROLE = {"#": "wall", " ": "open cell", "S": "start", "G": "goal"}

__all__ = ["CODEC", "MazeAnswer", "MazeCodec", "MazePuzzle", "augment", "generate", "parse", "shortest_path", "solve"]


@dataclass(frozen=True)
class MazePuzzle:
    """The maze rows, where S and G are, and the caller's form ("text", "rows" or "flat")."""

    rows: tuple[str, ...]
    start: tuple[int, int]
    goal: tuple[int, int]
    form: str = "text"
    solution: tuple[str, ...] | None = None  # rows with the shortest path marked 'o'

    @property
    def side(self) -> int:
        return len(self.rows)

    @property
    def path_len(self) -> int:
        """Steps from S to G along a shortest path."""
        return len(shortest_path(self.rows, self.start, self.goal)) - 1


@dataclass(frozen=True)
class MazeAnswer:
    rows: tuple[str, ...]


# ---------------------------------------------------------------------------------------------- parse


def _split_text(text: str) -> tuple[list[str], str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" not in text:
        n = len(text)
        side = math.isqrt(n)
        if side * side != n:
            raise PuzzleError(f"single-line maze of {n} characters is not a square; separate rows with newlines",
                              code="wrong_size")
        return [text[i * side:(i + 1) * side] for i in range(side)], "flat"
    lines = text.split("\n")
    while lines and lines[-1] == "":  # a trailing newline is not a row
        lines.pop()
    while lines and lines[0] == "":
        lines.pop(0)
    return lines, "text"


def _find(rows: Sequence[str], ch: str) -> list[tuple[int, int]]:
    return [(r, c) for r, row in enumerate(rows) for c, x in enumerate(row) if x == ch]


def _where(cells: list[tuple[int, int]]) -> str:
    return " and ".join(f"row {r + 1}, col {c + 1}" for r, c in cells[:3])


def parse(payload: Any) -> MazePuzzle:
    if isinstance(payload, dict):
        if "maze" not in payload:
            keys = ", ".join(sorted(map(str, payload))) or "none"
            raise PuzzleError(f"maze object needs a 'maze' field (got keys: {keys})", code="missing_field")
        payload = payload["maze"]
    if isinstance(payload, str):
        if not payload.strip("\n"):
            raise PuzzleError("empty maze: expected rows of '#', ' ', 'S', 'G'", code="wrong_size")
        rows, form = _split_text(payload)
    elif isinstance(payload, list | tuple):
        for i, row in enumerate(payload):
            if not isinstance(row, str):
                raise PuzzleError(f"maze row {i + 1} must be a string, got {describe_type(row)}", f"row {i + 1}",
                                  code="bad_type")
        rows, form = list(payload), "rows"
        if not rows:
            raise PuzzleError("empty maze: expected rows of '#', ' ', 'S', 'G'", code="wrong_size")
    else:
        raise PuzzleError("maze payload must be a string of newline-separated rows or a list of row strings, "
                          f"got {describe_type(payload)}", code="bad_type")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise PuzzleError(f"maze row {i + 1} has {len(row)} characters, expected {width} as in row 1 "
                              f"(row was {clip(row)!r})", f"row {i + 1}", code="not_rectangular")
    if len(rows) != width:
        raise PuzzleError(f"maze must be square: got {len(rows)} rows of {width} characters", code="not_square")
    if not MIN_SIDE <= width <= MAX_SIDE:
        raise PuzzleError(f"maze side {width} is outside {MIN_SIDE}..{MAX_SIDE}", code="wrong_size")
    for r, row in enumerate(rows):
        for c, ch in enumerate(row):
            if ch == "o":
                raise PuzzleError("the maze contains 'o' (a path mark); send the unsolved maze",
                                  f"row {r + 1}, col {c + 1}", code="bad_character")
            if ch not in PUZZLE_CHARS:
                raise PuzzleError(f"bad character {ch!r} in maze: use '#' (wall), ' ' (open), 'S' and 'G'",
                                  f"row {r + 1}, col {c + 1}", code="bad_character")
    for ch, name in (("S", "start"), ("G", "goal")):
        found = _find(rows, ch)
        if not found:
            raise PuzzleError(f"maze has no {name} {ch!r}", code=f"missing_{name}")
        if len(found) > 1:
            raise PuzzleError(f"maze has {len(found)} {name}s {ch!r}, expected exactly 1 ({_where(found)})",
                              f"row {found[1][0] + 1}, col {found[1][1] + 1}", code=f"multiple_{name}s")
    start, goal = _find(rows, "S")[0], _find(rows, "G")[0]
    if not shortest_path(rows, start, goal):
        raise PuzzleError("goal 'G' cannot be reached from start 'S' through open cells", code="unsolvable")
    return MazePuzzle(tuple(rows), start, goal, form=form)


# ----------------------------------------------------------------------------------------------- BFS


def bfs_distances(rows: Sequence[str], start: tuple[int, int]) -> np.ndarray:
    """4-neighbour step distances from ``start`` through non-wall cells (-1 = unreachable)."""
    h, w = len(rows), len(rows[0])
    dist = np.full((h, w), -1, dtype=np.int64)
    dist[start] = 0
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        d = dist[r, c] + 1
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < h and 0 <= nc < w and dist[nr, nc] < 0 and rows[nr][nc] != "#":
                dist[nr, nc] = d
                queue.append((nr, nc))
    return dist


def shortest_path(rows: Sequence[str], start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
    """One shortest path S..G inclusive (deterministic: walks back from G by BFS distance), [] if none."""
    dist = bfs_distances(rows, start)
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
                         cap: int = 2) -> int:
    """Number of distinct shortest S-G paths, counted up to ``cap`` (0 when G is unreachable).

    Paths are counted layer by layer over the BFS distances: a cell's count is the sum of its
    neighbours' one step closer to S (the classic shortest-path counting DP), clipped at ``cap``.
    """
    dist = bfs_distances(rows, start)
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
    for r, c in shortest_path(puzzle.rows, puzzle.start, puzzle.goal)[1:-1]:
        grid[r][c] = "o"
    return MazeAnswer(tuple("".join(row) for row in grid))


# ------------------------------------------------------------------------------------------- codec


def _answer_rows(answer: Any) -> tuple[str, ...]:
    if isinstance(answer, MazeAnswer):
        return answer.rows
    if isinstance(answer, MazePuzzle):
        return answer.rows
    if isinstance(answer, str):
        return tuple(_split_text(answer)[0])
    if isinstance(answer, list | tuple) and all(isinstance(r, str) for r in answer):
        return tuple(answer)
    raise PuzzleError(f"maze answer must be text or a list of row strings, got {describe_type(answer)}",
                      code="bad_type")


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
            return Verification.of(reasons[:20])
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
        best = int(bfs_distances(puzzle.rows, puzzle.start)[puzzle.goal])
        if len(path) != best - 1:
            reasons.append(f"the path marks {len(path)} cells but a shortest path has {best - 1}")
        return Verification.of(reasons)

    def exact(self, puzzle: MazePuzzle) -> ExactFacts:
        """BFS facts. ``solvable``: G is reachable from S. ``unique``: exactly one *shortest* path (the only
        answer ``verify`` accepts is a shortest path, so that is the uniqueness a client cares about);
        longer detours do not count. ``solution``: ``solve(puzzle)``. Never capped: BFS over <= 900 cells."""
        t0 = time.perf_counter()
        n_paths = count_shortest_paths(puzzle.rows, puzzle.start, puzzle.goal)
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
        if len(out) > MAX_REASONS:
            out = [*out[:MAX_REASONS], f"... and {len(out) - MAX_REASONS} more cells"]
        return out

    def canonical(self, puzzle: MazePuzzle | MazeAnswer) -> str:
        return "\n".join(_answer_rows(puzzle))

    def render(self, puzzle_or_answer: MazePuzzle | MazeAnswer) -> str:
        return "\n".join(_answer_rows(puzzle_or_answer))

    def answer_payload(self, answer: MazeAnswer, puzzle: MazePuzzle) -> Any:
        rows = _answer_rows(answer)
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
