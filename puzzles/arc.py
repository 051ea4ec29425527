"""ARC-AGI codec: a task JSON plus the index of its test input is one puzzle.

Official encoding (official-trm-hrm.md §4.3): a 30x30 canvas, 0 = PAD, 1 = EOS, 2..11 = colours 0..9.
The grid sits at the top-left (test split: always offset 0,0); EOS marks the row just below it and the
column just right of it (corner left unmarked; a mark that would fall off the canvas is skipped).
Decoding crops the largest top-left rectangle of colour tokens, as the official evaluator does.
The model sees only the test input and the task's puzzle identifier, so the task ``id`` (optional
in the payload) is what a server maps through ``identifiers.json``. Augmentation and voting live in
``arc_aug``; loading ARC-AGI-1 and the dataset builder in ``arc_data``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from puzzles.base import ExactFacts, PuzzleError, Verification, as_tokens, describe_type, lists_accepted
from puzzles.grid_text import is_int
from puzzles.llm_text import find_json

CANVAS = 30
MAX_SIDE = 30
Grid = tuple[tuple[int, ...], ...]
# One form a line, with a short example: the 422 for any bad payload lists these (and the API docs show them).
ACCEPTED_FORMS: tuple[str, ...] = (
    'an ARC task object, colours 0..9, grids 1..30 a side: {"train": [{"input": [[1,0],[0,1]], "output": '
    '[[0,1],[1,0]]}], "test": [{"input": [[1,1],[0,0]]}]}',
    'optional fields: "test_index" (which test input, default 0) and "id" (the task id, e.g. "00576224")',
    "the same JSON sent as text, also inside a ``` code block or after a sentence",
)

__all__ = ["CANVAS", "CODEC", "ArcAnswer", "ArcCodec", "ArcPuzzle", "crop", "grid_to_canvas"]


@dataclass(frozen=True)
class ArcPuzzle:
    """One test input of one task. ``test`` holds (input, output or None) pairs."""

    train: tuple[tuple[Grid, Grid], ...]
    test: tuple[tuple[Grid, Grid | None], ...]
    test_index: int = 0
    task_id: str | None = None

    @property
    def input(self) -> Grid:
        return self.test[self.test_index][0]

    @property
    def expected(self) -> Grid | None:
        return self.test[self.test_index][1]

    def to_json(self) -> dict[str, Any]:
        """The task in ARC JSON form (what ``parse`` accepts)."""
        test = [{"input": _lists(i)} | ({} if o is None else {"output": _lists(o)}) for i, o in self.test]
        out: dict[str, Any] = {"train": [{"input": _lists(i), "output": _lists(o)} for i, o in self.train],
                               "test": test, "test_index": self.test_index}
        if self.task_id is not None:
            out["id"] = self.task_id
        return out


@dataclass(frozen=True)
class ArcAnswer:
    grid: Grid


def _lists(grid: Grid) -> list[list[int]]:
    return [list(row) for row in grid]


def as_grid(arr: Any) -> Grid:
    return tuple(tuple(int(v) for v in row) for row in np.asarray(arr))


# ---------------------------------------------------------------------------------------------- parse


def parse_grid(value: Any, where: str) -> Grid:
    """A rectangular 1..30 x 1..30 grid of colours 0..9, or a PuzzleError naming the exact cell."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise PuzzleError(f"{where} must be a grid (list of rows), got {describe_type(value)}", where,
                          code="bad_grid")
    if not value:
        raise PuzzleError(f"{where} is empty: a grid needs 1..{MAX_SIDE} rows", where, code="bad_grid")
    if len(value) > MAX_SIDE:
        raise PuzzleError(f"{where} has {len(value)} rows, at most {MAX_SIDE} allowed", where, code="bad_grid")
    width = None
    rows = []
    for r, row in enumerate(value):
        at = f"{where}[{r}]"
        if not isinstance(row, list | tuple):
            raise PuzzleError(f"{at} must be a list of colours, got {describe_type(row)}", at, code="bad_grid")
        if not row or len(row) > MAX_SIDE:
            raise PuzzleError(f"{at} has {len(row)} cells, a row needs 1..{MAX_SIDE}", at, code="bad_grid")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise PuzzleError(f"{at} has {len(row)} cells but row 0 has {width}: grids must be rectangular", at,
                              code="bad_grid")
        for c, v in enumerate(row):
            if not is_int(v) or not 0 <= int(v) <= 9:
                raise PuzzleError(f"colour must be an integer 0..9, got {v!r}", f"{at}[{c}]", code="bad_colour")
        rows.append(tuple(int(v) for v in row))
    return tuple(rows)


def _pairs(payload: dict[str, Any], key: str, need_output: bool) -> list[tuple[Grid, Grid | None]]:
    items = payload[key]
    if not isinstance(items, list):
        raise PuzzleError(f"'{key}' must be a list of {{'input', 'output'}} pairs, got {describe_type(items)}",
                          key, code="bad_task")
    if not items:
        raise PuzzleError(f"'{key}' is empty: it needs at least one pair", key, code="bad_task")
    out = []
    for i, pair in enumerate(items):
        at = f"{key}[{i}]"
        if not isinstance(pair, dict):
            fields = "'input' and 'output'" if need_output else "'input'"
            raise PuzzleError(f"{at} must be an object with {fields}, got {describe_type(pair)}", at,
                              code="bad_task")
        if "input" not in pair:
            raise PuzzleError(f"{at} has no 'input' grid", at, code="bad_task")
        if need_output and "output" not in pair:
            raise PuzzleError(f"{at} has no 'output' grid (demonstration pairs need both)", at, code="bad_task")
        if need_output and pair["output"] is None:  # was taken for a test pair's unknown output, then a 500
            raise PuzzleError(f"{at}.output is null: a demonstration pair needs its output grid", f"{at}.output",
                              code="bad_task")
        inp = parse_grid(pair["input"], f"{at}.input")
        outp = parse_grid(pair["output"], f"{at}.output") if pair.get("output") is not None else None
        out.append((inp, outp))
    return out


@lists_accepted(ACCEPTED_FORMS)
def parse(payload: Any) -> ArcPuzzle:
    if isinstance(payload, str):  # the task JSON as text, maybe in a code block or after a sentence
        found, value = find_json(payload)
        payload = value if found else payload
    if not isinstance(payload, dict):
        raise PuzzleError(f"ARC payload must be a task object with 'train' and 'test', got {describe_type(payload)}",
                          code="bad_type")
    for key in ("train", "test"):
        if key not in payload:
            raise PuzzleError(f"ARC task has no '{key}' list", key, code="missing_field")
    train = _pairs(payload, "train", need_output=True)
    test = _pairs(payload, "test", need_output=False)
    index = payload.get("test_index", 0)
    if not is_int(index):
        raise PuzzleError(f"test_index must be an integer, got {index!r}", "test_index", code="bad_task")
    if not 0 <= int(index) < len(test):
        raise PuzzleError(f"test_index {index} is out of range: the task has {len(test)} test input(s)",
                          "test_index", code="bad_task")
    task_id = payload.get("id", payload.get("name"))
    if task_id is not None and not isinstance(task_id, str):
        raise PuzzleError(f"task id must be a string, got {describe_type(task_id)}", "id", code="bad_task")
    return ArcPuzzle(tuple(train), tuple(test), int(index), task_id)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- canvas / crop


def grid_to_canvas(grid: Any, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """[30, 30] int32 tokens: colour + 2 at ``offset``, EOS row below and EOS column right of it."""
    g = np.asarray(grid, dtype=np.int32)
    nrow, ncol = g.shape
    r0, c0 = offset
    if r0 + nrow > CANVAS or c0 + ncol > CANVAS:
        raise ValueError(f"a {nrow}x{ncol} grid at offset {offset} does not fit the {CANVAS}x{CANVAS} canvas")
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.int32)
    canvas[r0:r0 + nrow, c0:c0 + ncol] = g + 2
    if r0 + nrow < CANVAS:
        canvas[r0 + nrow, c0:c0 + ncol] = 1
    if c0 + ncol < CANVAS:
        canvas[r0:r0 + nrow, c0 + ncol] = 1
    return canvas


def crop(tokens: Any) -> np.ndarray:
    """Largest top-left rectangle of colour tokens (2..11), minus 2: the official ``_crop``.

    Walks the rows; each row can only shrink the usable width (at its first non-colour token); the
    rectangle with the largest area seen wins (first one on ties). May be empty (0 x 0).
    """
    canvas = np.asarray(tokens).reshape(CANVAS, CANVAS)
    is_colour = (canvas >= 2) & (canvas <= 11)
    width = CANVAS
    best_area, best = 0, (0, 0)
    for r in range(CANVAS):
        bad = np.flatnonzero(~is_colour[r, :width])
        if bad.size:
            width = int(bad[0])
        area = (r + 1) * width
        if area > best_area:
            best_area, best = area, (r + 1, width)
    return (canvas[: best[0], : best[1]] - 2).astype(np.int64)


# ------------------------------------------------------------------------------------------- codec


def _grid_text(grid: Grid) -> str:
    return "\n".join(" ".join(str(v) for v in row) for row in grid)


def _answer_grid(answer: Any) -> Grid:
    if isinstance(answer, ArcAnswer):
        return answer.grid
    if isinstance(answer, dict) and "output" in answer:
        answer = answer["output"]
    return parse_grid(answer, "answer")


class ArcCodec:
    task = "arc"
    vocab_size = 12
    default_seq_len = 900

    def parse(self, payload: Any) -> ArcPuzzle:
        return parse(payload)

    def _check_len(self, seq_len: int) -> None:
        if seq_len != CANVAS * CANVAS:
            raise PuzzleError(f"ARC needs seq_len {CANVAS * CANVAS}, got {seq_len}", code="bad_seq_len")

    def encode(self, puzzle: ArcPuzzle, seq_len: int = 900) -> np.ndarray:
        self._check_len(seq_len)
        return grid_to_canvas(puzzle.input).reshape(-1)

    def encode_label(self, puzzle: ArcPuzzle | ArcAnswer, seq_len: int = 900) -> np.ndarray:
        self._check_len(seq_len)
        grid = puzzle.grid if isinstance(puzzle, ArcAnswer) else puzzle.expected
        if grid is None:
            raise PuzzleError(f"test[{puzzle.test_index}] has no output to label", code="no_label")
        return grid_to_canvas(grid).reshape(-1)

    def decode(self, tokens: np.ndarray, puzzle: ArcPuzzle | None = None) -> ArcAnswer:
        return ArcAnswer(as_grid(crop(as_tokens(tokens, CANVAS * CANVAS))))

    def verify(self, puzzle: ArcPuzzle, answer: Any) -> Verification:
        """Exact match with the known test output; without one an answer cannot be verified."""
        try:
            grid = _answer_grid(answer)
        except PuzzleError as err:
            return Verification.of([str(err)])
        if not grid:
            return Verification.of(["the answer grid is empty (no colour at the top-left of the canvas)"])
        expected = puzzle.expected
        if expected is None:
            return Verification.of(["no expected output is known for this test input, so it cannot be verified"])
        got_shape, want_shape = (len(grid), len(grid[0])), (len(expected), len(expected[0]))
        if got_shape != want_shape:
            return Verification.of([f"answer is {got_shape[0]}x{got_shape[1]}, expected "
                                    f"{want_shape[0]}x{want_shape[1]}"])
        diff = np.argwhere(np.asarray(grid) != np.asarray(expected))
        if diff.size:
            r, c = (int(v) for v in diff[0])
            return Verification.of([f"{len(diff)} cell(s) differ from the expected output, first at "
                                    f"row {r}, col {c}"])
        return Verification.of([])

    def verify_fact(self, puzzle: ArcPuzzle) -> None:
        """None: ARC has no token verifier (its answers are checked against the known output)."""
        return None

    def exact(self, puzzle: ArcPuzzle) -> ExactFacts | None:
        """None: there is no exact solver for ARC (its rule is what the model must find)."""
        return None

    def overwritten(self, puzzle: ArcPuzzle, answer: Any) -> list[str]:
        """[]: an ARC answer is a whole new grid, it has no givens to keep."""
        return []

    def canonical(self, puzzle: ArcPuzzle | ArcAnswer) -> str:
        if isinstance(puzzle, ArcAnswer):
            return json.dumps(puzzle.grid, separators=(",", ":"))
        return json.dumps(puzzle.to_json(), sort_keys=True, separators=(",", ":"))

    def render(self, puzzle_or_answer: ArcPuzzle | ArcAnswer) -> str:
        if isinstance(puzzle_or_answer, ArcAnswer):
            return _grid_text(puzzle_or_answer.grid)
        p = puzzle_or_answer
        parts = []
        for i, (inp, out) in enumerate(p.train):
            parts.append(f"Example {i + 1} input ({len(inp)}x{len(inp[0])}):\n{_grid_text(inp)}")
            parts.append(f"Example {i + 1} output ({len(out)}x{len(out[0])}):\n{_grid_text(out)}")
        parts.append(f"Test input ({len(p.input)}x{len(p.input[0])}):\n{_grid_text(p.input)}")
        return "\n\n".join(parts)

    def answer_payload(self, answer: ArcAnswer, puzzle: ArcPuzzle) -> list[list[int]]:
        return _lists(_answer_grid(answer))


CODEC = ArcCodec()
