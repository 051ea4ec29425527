"""Sudoku 9x9 codec: parse any reasonable payload, encode to the official tokens, decode, verify.

Official vocabulary (official-trm-hrm.md §4.1): 0 = PAD, 1 = blank, 2..10 = digits 1..9, seq_len 81,
row-major. The solver lives in ``sudoku_solver`` and the tiered generator in ``sudoku_gen``; both are
re-exported here as ``solve`` and ``generate`` (the names the trainer and the server call).

Difficulty tiers (details and how they are generated: ``sudoku_gen``). ``guesses`` = tentative
assignments our solver makes to walk the whole search tree (naked + hidden singles at every node):

    easy      36..45 givens, 0 guesses (singles alone solve it)
    medium    28..35 givens, 0 guesses
    hard      22..30 givens, 2..9 guesses
    extreme   17..30 givens, >= 10 guesses
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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
from puzzles.grid_text import cell_name, clip, is_int
from puzzles.llm_text import (
    NULL_WORDS,
    Line,
    extract,
    find_json,
    has_words,
    normalise_newlines,
    render_table,
    table_cells,
)
from puzzles.sudoku_gen import TIER_SPECS, TIERS, generate_digits, tier_of
from puzzles.sudoku_solver import UNITS, SolveResult, solve_digits, unit_masks

__all__ = [
    "CODEC",
    "TIERS",
    "TIER_SPECS",
    "SolveResult",
    "SudokuAnswer",
    "SudokuCodec",
    "SudokuPuzzle",
    "augment",
    "augment_batch",
    "generate",
    "generate_batch",
    "parse",
    "solve",
    "tier_of",
]

BLANKS = frozenset(".0_*xX?")  # a space is a blank too, when the cell count says so (see _from_text)
BLANK_WORDS = "'.', '0', '_', '*', 'x', '?', null or a space"
IGNORED = frozenset("\t\r\n|-+=,")  # separators people draw grids with (and the space, in most texts)
_PLAIN_81 = re.compile(r"[0-9.]{81}")  # 81 digits and dots, nothing else: read as is (the text path agrees)
_NULL_WORD = re.compile(r"\b(?:" + "|".join(sorted(NULL_WORDS)) + r")\b", re.IGNORECASE)
# One form a line, with a short example: the 422 for any bad payload lists these (and the API docs show them).
ACCEPTED_FORMS: tuple[str, ...] = (
    'an 81-character string, blanks as ".", "0", "_", "*", "x" or "?": "53..7....6..195....98....6.8..."',
    'the same with spaces as blanks: "53  7    6  195    98    6 8   ..."',
    '9 row strings: ["53..7....", "6..195...", ...]',
    "a 9x9 grid of integers, 0 or null for blanks: [[5,3,0,0,7,0,0,0,0], ...]",
    'text rows with separators: "5 3 . | . 7 . | . . .\\n6 . . | 1 9 5 | . . .\\n..."',
    'a markdown table, header row optional: "| 5 | 3 |   | ... |\\n| 6 |   |   | ... |"',
    "any text form inside a ``` code block or after a sentence; or JSON of the grid as text",
    '{"grid": <any of these>}',
)
_UNIT_NAMES = tuple([f"row {i + 1}" for i in range(9)] + [f"column {i + 1}" for i in range(9)]
                    + [f"box {i + 1}" for i in range(9)])
# Effort cap of ``SudokuCodec.exact``: generated extreme puzzles take ~1 ms and < 1,000 guesses; a
# pathological grid (few givens, no solution) could search for seconds and hold an API worker.
EXACT_MAX_GUESSES = 20_000
EXACT_MAX_MS = 100.0


@dataclass(frozen=True)
class SudokuPuzzle:
    """81 row-major digits (0 = blank) plus the caller's input form, so the answer can mirror it.

    ``form`` is one of "string", "rows", "grid", "flat", "table"; ``wrapped`` is True for {"grid": ...};
    ``header`` is a markdown table's header row, echoed above the answer table.
    ``solution``/``guesses``/``tier`` are filled by the generator (or the dataset loaders).
    """

    givens: tuple[int, ...]
    form: str = "string"
    wrapped: bool = False
    solution: tuple[int, ...] | None = None
    guesses: int | None = None
    tier: str | None = None
    header: str | None = None

    @property
    def grid(self) -> np.ndarray:
        return np.array(self.givens, dtype=np.int64).reshape(9, 9)

    @property
    def num_givens(self) -> int:
        return sum(1 for v in self.givens if v)


@dataclass(frozen=True)
class SudokuAnswer:
    """A filled (or partly filled: 0 where the model gave no digit) 9x9 grid, row-major."""

    cells: tuple[int, ...]

    @property
    def grid(self) -> np.ndarray:
        return np.array(self.cells, dtype=np.int64).reshape(9, 9)


# ---------------------------------------------------------------------------------------------- parse


def _is_grid(text: str) -> bool:
    """A line of cells and separators, not a sentence (a stray letter stays in: it is then named as bad)."""
    return not has_words(text, "xX", NULL_WORDS)


def _line_cells(text: str, where: Callable[[int], str], spaces_blank: bool = False) -> list[int]:
    """Cells of one text line; separators skipped (spaces too unless ``spaces_blank``), anything else an error."""
    cells: list[int] = []
    i = 0
    while i < len(text):
        word = _NULL_WORD.match(text, i)
        if word:
            cells.append(0)
            i = word.end()
            continue
        ch = text[i]
        i += 1
        if ch == " " and spaces_blank:
            cells.append(0)
        elif ch in IGNORED or ch == " ":
            continue
        elif ch in BLANKS:
            cells.append(0)
        elif "1" <= ch <= "9":
            cells.append(ord(ch) - 48)
        else:
            raise PuzzleError(f"bad character {ch!r} in sudoku text: use digits 1-9, and {BLANK_WORDS} for blanks",
                              where(i), code="bad_character")
    return cells


def _table_row(line: Line, where: Callable[[int], str]) -> list[int]:
    """Cells of ``| 5 | 3 |   | ...``: an empty cell is a blank; a cell may hold several (``| 5 3 . |``)."""
    cells: list[int] = []
    for col, content in table_cells(line.text):
        if not content:
            cells.append(0)
        else:
            cells.extend(_line_cells(content, lambda c, col=col: where(col - 1 + c)))
    return cells


def _from_text(text: str) -> tuple[list[int], str, str | None]:
    """(81 cells, form, table header) of a text payload, wherever the grid sits in it."""
    if not text.strip():
        raise PuzzleError("empty sudoku string: expected 81 cells", code="wrong_size")
    normalised = normalise_newlines(text)  # lines as extract numbers them (the error below quotes `text` as sent)
    multiline = "\n" in normalised.strip()

    def at(line: Line) -> Callable[[int], str]:
        return lambda col: f"line {line.number}, char {line.offset + col}" if multiline else f"char {line.offset + col}"

    block = extract(text, _is_grid)
    if not block.lines:  # no line is all cells: name the first character that is not one
        for number, raw in enumerate(normalised.split("\n"), 1):
            _line_cells(raw, at(Line(number, 0, raw)))
        raise PuzzleError("no sudoku grid found in the text", code="no_grid")
    if block.table:
        cells = []
        for line in block.lines:
            row = _table_row(line, at(line))
            if len(row) != 9:
                raise PuzzleError(f"markdown table row has {len(row)} cells, expected 9", f"line {line.number}",
                                  code="wrong_size")
            cells.extend(row)
        if len(cells) != 81:
            raise PuzzleError(f"markdown table has {len(cells) // 9} rows, expected 9 (a header row needs a "
                              "|---| line under it)", code="wrong_size")
        return cells, "table", block.header
    lines = [x for x in block.lines if x.text.strip()]
    cells = [c for line in lines for c in _line_cells(line.text, at(line))]
    if len(cells) == 81:
        return cells, "string", None
    # Spaces as blanks ("53  7    "): only when that reading, and only it, gives whole rows.
    spaced = [_line_cells(line.text, at(line), spaces_blank=True) for line in lines]
    if sum(map(len, spaced)) == 81 and (len(lines) == 1 or all(len(r) == 9 for r in spaced)):
        return [c for r in spaced for c in r], "string", None
    shown = "\n".join(x.text for x in block.lines) if block.trimmed else text
    raise PuzzleError(f"sudoku string has {len(cells)} cells, expected 81 (text was {clip(shown)!r})",
                      code="wrong_size")


def _from_rows(rows: Sequence[str]) -> list[int]:
    cells: list[int] = []
    for r, row in enumerate(rows):
        def where(col: int, r: int = r) -> str:
            return f"row {r + 1}, char {col}"

        got = _line_cells(row, where)
        if len(got) != 9:
            spaced = _line_cells(row, where, spaces_blank=True)
            got = spaced if len(spaced) == 9 else got
        if len(got) != 9:
            raise PuzzleError(f"sudoku row {r + 1} has {len(got)} cells, expected 9 (row was {clip(row)!r})",
                              f"row {r + 1}", code="wrong_size")
        cells.extend(got)
    return cells


def _cell_value(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        s = value.strip()
        if s == "" or s in BLANKS or s.lower() in NULL_WORDS:
            return 0
        if len(s) == 1 and "1" <= s <= "9":
            return int(s)
        raise PuzzleError(f"sudoku cell must be a digit 1..9 or a blank ({BLANK_WORDS}), got {value!r}", where,
                          code="bad_character")
    if not is_int(value):
        raise PuzzleError(f"sudoku cell must be an integer 0..9 (0 = blank), got {value!r}", where,
                          code="bad_character")
    v = int(value)
    if not 0 <= v <= 9:
        raise PuzzleError(f"sudoku cell must be 0..9 (0 = blank), got {v}", where, code="bad_character")
    return v


def _from_grid(grid: Sequence[Any]) -> list[int]:
    if len(grid) != 9:
        raise PuzzleError(f"sudoku grid has {len(grid)} rows, expected 9", code="wrong_size")
    cells: list[int] = []
    for r, row in enumerate(grid):
        if isinstance(row, str) or not isinstance(row, Sequence | np.ndarray):
            raise PuzzleError(f"sudoku grid row {r + 1} must be a list of 9 integers, got {describe_type(row)}",
                              f"row {r + 1}", code="wrong_size")
        if len(row) != 9:
            raise PuzzleError(f"sudoku grid row {r + 1} has {len(row)} cells, expected 9", f"row {r + 1}",
                              code="wrong_size")
        cells.extend(_cell_value(v, cell_name(r, c)) for c, v in enumerate(row))
    return cells


_CHAR = ".123456789"  # a cell's character, '.' for blank


_BAND = "\n".join([" | ".join(["{} {} {}"] * 3)] * 3)
# The text grid of `render`, 81 slots: "5 3 . | . 7 . | . . ." rows, a rule after every third row.
_GRID_TEXT = "\n------+-------+------\n".join([_BAND] * 3)


def _text(cells: Sequence[int]) -> str:
    """Cells as digits and dots (a lookup per cell: a third of the cost of str() with a condition)."""
    return "".join(map(_CHAR.__getitem__, cells))


def _check_givens(cells: Sequence[int]) -> None:
    """Reject contradictory givens, naming both cells of the first clash found."""
    if unit_masks(cells) is not None:  # one pass over unit masks finds whether there is a clash at all
        return
    message, second = next(_clashes(cells))  # there is one: name the first in unit order
    raise PuzzleError(message, cell_name(*divmod(second, 9)), code="contradictory_givens")


def _clashes(cells: Sequence[int]) -> Iterator[tuple[str, int]]:
    """Each digit that stands twice in a unit, in unit order: what to say, and the second cell."""
    for u, unit in enumerate(UNITS):
        seen: dict[int, int] = {}
        for cell in unit:
            v = cells[cell]
            if v and v in seen:
                yield (f"digit {v} appears twice in {_UNIT_NAMES[u]}: {cell_name(*divmod(seen[v], 9))} and "
                       f"{cell_name(*divmod(cell, 9))}", cell)
            elif v:
                seen[v] = cell


def parse_cells(payload: Any) -> tuple[list[int], str, bool, str | None]:
    """(81 digits, form, wrapped, table header) from any accepted payload; no contradiction check."""
    wrapped = False
    if isinstance(payload, dict):
        if "grid" not in payload:
            keys = ", ".join(sorted(map(str, payload))) or "none"
            raise PuzzleError(f"sudoku object needs a 'grid' field (got keys: {keys})", code="missing_field")
        payload, wrapped = payload["grid"], True
    if isinstance(payload, np.ndarray):
        payload = payload.tolist()
    if isinstance(payload, str):
        if _PLAIN_81.fullmatch(payload):  # the usual form: skip looking for a grid inside text (~40 us a request)
            return [0 if ch in ".0" else ord(ch) - 48 for ch in payload], "string", wrapped, None
        try:
            found, value = find_json(payload)
            if found:  # a JSON grid sent as text (often inside a code block): its own structure is the form
                if isinstance(value, str):
                    raise PuzzleError("the text holds a JSON string, not a grid", code="bad_type")
                cells, form, inner_wrapped, header = parse_cells(value)
                return cells, form, wrapped or inner_wrapped, header
        except PuzzleError as json_error:  # unless a bracket was prose ("Solve this [hard]:", a note after the
            with contextlib.suppress(PuzzleError):  # grid) and the text reader finds the grid, the JSON's error
                cells, form, header = _from_text(payload)
                return cells, form, wrapped, header
            raise json_error
        cells, form, header = _from_text(payload)
        return cells, form, wrapped, header
    if isinstance(payload, list | tuple):
        # 81 entries are the flat form even with a bad one among them (9x9 needs 9 rows, never 81): its cell is
        # named, rather than the list called 81 row strings.
        if len(payload) == 81:
            return [_cell_value(v, cell_name(*divmod(i, 9))) for i, v in enumerate(payload)], "flat", wrapped, None
        if payload and all(isinstance(r, str) for r in payload):
            if len(payload) != 9:
                raise PuzzleError(f"sudoku needs 9 row strings, got {len(payload)}", code="wrong_size")
            return _from_rows(payload), "rows", wrapped, None
        if not payload:
            raise PuzzleError("empty sudoku grid: expected 9 rows of 9 cells", code="wrong_size")
        return _from_grid(payload), "grid", wrapped, None
    raise PuzzleError("sudoku payload must be an 81-character string, a list of 9 row strings or a 9x9 "
                      f"integer grid, got {describe_type(payload)}", code="bad_type")


@lists_accepted(ACCEPTED_FORMS)
def parse(payload: Any) -> SudokuPuzzle:
    cells, form, wrapped, header = parse_cells(payload)
    _check_givens(cells)
    return SudokuPuzzle(tuple(cells), form=form, wrapped=wrapped, header=header)


# ------------------------------------------------------------------------------------ solve, generate


def solve(grid: Any, limit: int = 2) -> SolveResult:
    """Exact solutions up to ``limit`` and the search effort; ``grid`` is a puzzle or any payload."""
    cells = grid.givens if isinstance(grid, SudokuPuzzle) else parse_cells(grid)[0]
    return solve_digits(cells, limit=limit)


def generate(rng_or_seed: int | random.Random | np.random.Generator | None, tier: str = "medium") -> SudokuPuzzle:
    """A seeded unique-solution puzzle of ``tier`` with ``.solution`` and ``.guesses`` filled."""
    g = generate_digits(rng_or_seed, tier)
    return SudokuPuzzle(g.givens, form="string", solution=g.solution, guesses=g.guesses, tier=tier)


def generate_batch(seed: int, tier: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` puzzles of one tier from one seeded stream, as ([n, 81] givens, [n, 81] solutions) int8
    digit arrays (0 = blank): the shape ``puzzles.dataset.build_sudoku_dataset`` takes."""
    rng = random.Random(seed)
    out = [generate_digits(rng, tier) for _ in range(n)]
    return (np.array([g.givens for g in out], dtype=np.int8).reshape(n, 81),
            np.array([g.solution for g in out], dtype=np.int8).reshape(n, 81))


# -------------------------------------------------------------------------------------- augmentation


def augment_maps(rng: np.random.Generator, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(digit_map[10] with 0 fixed, cell index map[81]) for one official-style validity-preserving shuffle, or
    ([n, 10], [n, 81]) for n independent ones when n is given.

    Rows = shuffled bands x shuffled rows within each band, columns the same with stacks, then a transpose with
    p=0.5; digits 1..9 permuted. ``new.flat[i] = digit_map[old.flat[index_map[i]]]``.
    """
    m = 1 if n is None else n
    digit_map = np.concatenate([np.zeros((m, 1), np.int64), rng.random((m, 9)).argsort(1) + 1], axis=1)
    bands = rng.random((m, 3)).argsort(1)
    rows = (bands[:, :, None] * 3 + rng.random((m, 3, 3)).argsort(2)).reshape(m, 9)
    stacks = rng.random((m, 3)).argsort(1)
    cols = (stacks[:, :, None] * 3 + rng.random((m, 3, 3)).argsort(2)).reshape(m, 9)
    index_map = (rows[:, :, None] * 9 + cols[:, None, :]).reshape(m, 81)
    transpose = rng.random(m) < 0.5  # folded into the index map: old_t[r, c] = old[c, r]
    index_map[transpose] = (index_map[transpose] % 9) * 9 + index_map[transpose] // 9
    return (digit_map[0], index_map[0]) if n is None else (digit_map, index_map)


def apply_maps(digits: np.ndarray, digit_map: np.ndarray, index_map: np.ndarray) -> np.ndarray:
    """Apply ``augment_maps`` output to 81 digits (0 = blank); works on any leading batch shape."""
    flat = np.asarray(digits)
    if flat.shape[-2:] == (9, 9):
        flat = flat.reshape(*flat.shape[:-2], 81)
    return digit_map[flat[..., index_map]]


def invert_maps(digit_map: np.ndarray, index_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps that undo ``apply_maps`` exactly (used to de-augment predictions)."""
    return np.argsort(digit_map), np.argsort(index_map)


def augment(givens: np.ndarray, solution: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same random official shuffle applied to a puzzle and its solution (81 digits each)."""
    digit_map, index_map = augment_maps(rng)
    return apply_maps(givens, digit_map, index_map), apply_maps(solution, digit_map, index_map)


# ------------------------------------------------------------------------------------------- codec


def _answer_cells(answer: Any) -> tuple[int, ...]:
    if isinstance(answer, SudokuAnswer):
        return answer.cells
    if isinstance(answer, SudokuPuzzle):
        return answer.givens
    return tuple(parse_cells(answer)[0])


def _duplicates(cells: Sequence[int]) -> list[str]:
    return [message for message, _ in _clashes(cells)]


class SudokuCodec:
    task = "sudoku"
    vocab_size = 11
    default_seq_len = 81

    def parse(self, payload: Any) -> SudokuPuzzle:
        return parse(payload)

    def _check_len(self, seq_len: int) -> None:
        if seq_len != 81:
            raise PuzzleError(f"sudoku needs seq_len 81, got {seq_len}", code="bad_seq_len")

    def encode(self, puzzle: SudokuPuzzle, seq_len: int = 81) -> np.ndarray:
        self._check_len(seq_len)
        return np.asarray(puzzle.givens, dtype=np.int32) + 1

    def encode_label(self, puzzle: SudokuPuzzle | SudokuAnswer, seq_len: int = 81) -> np.ndarray:
        """Label tokens (2..10 everywhere, givens included, as the official builder writes them)."""
        self._check_len(seq_len)
        if isinstance(puzzle, SudokuAnswer):
            cells = puzzle.cells
        elif puzzle.solution is not None:
            cells = puzzle.solution
        else:
            res = solve_digits(puzzle.givens, limit=2)
            if res.count != 1:
                raise PuzzleError(f"cannot label a sudoku with {res.count if res.count < 2 else '2+'} solutions",
                                  code="not_unique")
            cells = res.solutions[0]
        return np.asarray(cells, dtype=np.int32) + 1

    def decode(self, tokens: np.ndarray, puzzle: SudokuPuzzle | None = None) -> SudokuAnswer:
        t = as_tokens(tokens, 81)
        cells = np.where((t >= 2) & (t <= 10), t - 1, 0)
        return SudokuAnswer(tuple(cells.tolist()))

    def verify(self, puzzle: SudokuPuzzle, answer: Any) -> Verification:
        """Complete, rows/columns/boxes hold each digit once, every given kept."""
        try:
            cells = _answer_cells(answer)
        except PuzzleError as err:
            return Verification.of([f"answer is not a sudoku grid: {err}"])
        reasons = [f"{cell_name(*divmod(i, 9))} is empty" for i, v in enumerate(cells) if not v]
        reasons += [f"{cell_name(*divmod(i, 9))} is {cells[i]} but the given is {g}"
                    for i, g in enumerate(puzzle.givens) if g and cells[i] and cells[i] != g]
        reasons += _duplicates(cells)
        return Verification.of(at_most(reasons, "problems"))

    def verify_fact(self, puzzle: SudokuPuzzle) -> None:
        """None: the Sudoku verifier needs the tokens alone."""
        return None

    def exact(self, puzzle: SudokuPuzzle, max_guesses: int = EXACT_MAX_GUESSES,
              max_ms: float = EXACT_MAX_MS) -> ExactFacts:
        """Solvable / unique / one solution from the bitmask solver (counts up to 2 solutions), bounded by
        ``max_guesses`` and ``max_ms``; past the cap the undecided facts are None and ``capped`` is True."""
        t0 = time.perf_counter()
        res = solve_digits(puzzle.givens, limit=2, max_guesses=max_guesses, deadline=t0 + max_ms / 1000.0)
        ms = (time.perf_counter() - t0) * 1000.0
        solution = SudokuAnswer(res.solutions[0]) if res.solutions else None
        if res.count >= 2:
            return ExactFacts(solvable=True, unique=False, solution=solution, ms=ms)
        if res.capped:
            return ExactFacts(solvable=True if res.count else None, unique=None, solution=solution, ms=ms,
                              capped=True)
        return ExactFacts(solvable=res.count == 1, unique=res.count == 1, solution=solution, ms=ms)

    def overwritten(self, puzzle: SudokuPuzzle, answer: Any) -> list[str]:
        """Each given the answer does not keep, as ``"r3c5: given 7, answer 2"`` (``answer blank`` when the
        answer left it empty), in row-major order; [] when every given is kept."""
        try:
            cells = _answer_cells(answer)
        except PuzzleError as err:
            return [f"answer is not a sudoku grid: {err}"]
        return [f"{cell_name(*divmod(i, 9))}: given {g}, answer {cells[i] if cells[i] else 'blank'}"
                for i, g in enumerate(puzzle.givens) if g and cells[i] != g]

    def canonical(self, puzzle: SudokuPuzzle | SudokuAnswer) -> str:
        """81 characters, '.' for blanks: independent of the form the caller used."""
        return _text(_answer_cells(puzzle))

    def render(self, puzzle_or_answer: SudokuPuzzle | SudokuAnswer) -> str:
        return _GRID_TEXT.format(*_text(_answer_cells(puzzle_or_answer)))

    def answer_payload(self, answer: SudokuAnswer, puzzle: SudokuPuzzle) -> Any:
        cells = _answer_cells(answer)
        if puzzle.form == "grid":
            out: Any = [list(cells[r * 9:(r + 1) * 9]) for r in range(9)]
        elif puzzle.form == "flat":
            out = list(cells)
        elif puzzle.form == "rows":
            out = [_text(cells[r * 9:(r + 1) * 9]) for r in range(9)]
        elif puzzle.form == "table":
            out = render_table([list(_text(cells[r * 9:(r + 1) * 9])) for r in range(9)], puzzle.header)
        else:
            out = _text(cells)
        return {"grid": out} if puzzle.wrapped else out


CODEC = SudokuCodec()


def augment_batch(givens: np.ndarray, solutions: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``augment`` for many rows at once ([n, 81] each), vectorised: a million rows in seconds.

    Each row gets its own independent shuffle (the same one for its puzzle and its solution).
    """
    givens = np.asarray(givens).reshape(-1, 81)
    solutions = np.asarray(solutions).reshape(-1, 81)
    digit_map, index_map = augment_maps(rng, givens.shape[0])

    def apply(x: np.ndarray) -> np.ndarray:
        return np.take_along_axis(digit_map, np.take_along_axis(x.astype(np.int64), index_map, 1), 1)

    return apply(givens), apply(solutions)
