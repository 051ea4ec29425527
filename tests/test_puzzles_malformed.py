"""Every malformed payload is rejected with its own message and location, so a caller can fix it."""

from __future__ import annotations

from typing import Any

import pytest

from puzzles import PuzzleError, get_codec
from puzzles.maze import MARKERS, START_HINT
from puzzles.sudoku import BLANK_WORDS

DOT81 = "." * 81
ROW9 = "........."
GOOD_GRID = [[0] * 9 for _ in range(9)]
MAZE = ["#####", "#S  #", "# # #", "#  G#", "#####"]
PAIR = {"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}
TASK = {"train": [PAIR], "test": [{"input": [[1, 2], [3, 4]]}]}


def grid_with(r: int, c: int, v: Any) -> list[list[Any]]:
    g = [row[:] for row in GOOD_GRID]
    g[r][c] = v
    return g


def task_with(**changes: Any) -> dict[str, Any]:
    return {**TASK, **changes}


# (task, payload, exact message, location, code)
CASES: list[tuple[str, Any, str, str | None, str]] = [
    # ----------------------------------------------------------------------------------------- sudoku
    ("sudoku", "123", "sudoku string has 3 cells, expected 81 (text was '123')", None, "wrong_size"),
    ("sudoku", "  \n ", "empty sudoku string: expected 81 cells", None, "wrong_size"),
    ("sudoku", "k" + DOT81[1:], f"bad character 'k' in sudoku text: use digits 1-9, and {BLANK_WORDS} for blanks",
     "char 1", "bad_character"),
    ("sudoku", ROW9 + "\n....a....\n" + "\n".join([ROW9] * 7),
     f"bad character 'a' in sudoku text: use digits 1-9, and {BLANK_WORDS} for blanks", "line 2, char 5",
     "bad_character"),
    ("sudoku", "5......5." + DOT81[9:], "digit 5 appears twice in row 1: r1c1 and r1c8", "r1c8",
     "contradictory_givens"),
    ("sudoku", "3........" + "3........" + DOT81[18:], "digit 3 appears twice in column 1: r1c1 and r2c1", "r2c1",
     "contradictory_givens"),
    ("sudoku", "7........" + ".7......." + DOT81[18:], "digit 7 appears twice in box 1: r1c1 and r2c2", "r2c2",
     "contradictory_givens"),
    ("sudoku", [ROW9] * 8, "sudoku needs 9 row strings, got 8", None, "wrong_size"),
    ("sudoku", [ROW9] * 3 + ["12345678"] + [ROW9] * 5, "sudoku row 4 has 8 cells, expected 9 (row was '12345678')",
     "row 4", "wrong_size"),
    ("sudoku", GOOD_GRID[:8], "sudoku grid has 8 rows, expected 9", None, "wrong_size"),
    ("sudoku", [[0] * 9, [0] * 10, *GOOD_GRID[2:]], "sudoku grid row 2 has 10 cells, expected 9", "row 2",
     "wrong_size"),
    ("sudoku", grid_with(2, 3, 10), "sudoku cell must be 0..9 (0 = blank), got 10", "r3c4", "bad_character"),
    ("sudoku", grid_with(4, 0, 2.5), "sudoku cell must be an integer 0..9 (0 = blank), got 2.5", "r5c1",
     "bad_character"),
    ("sudoku", grid_with(0, 8, True), "sudoku cell must be an integer 0..9 (0 = blank), got True", "r1c9",
     "bad_character"),
    ("sudoku", [*GOOD_GRID[:8], "123456789"], "sudoku grid row 9 must be a list of 9 integers, got str", "row 9",
     "wrong_size"),
    ("sudoku", {"puzzle": DOT81}, "sudoku object needs a 'grid' field (got keys: puzzle)", None, "missing_field"),
    ("sudoku", 42, "sudoku payload must be an 81-character string, a list of 9 row strings or a 9x9 integer grid, "
     "got int", None, "bad_type"),
    ("sudoku", [], "empty sudoku grid: expected 9 rows of 9 cells", None, "wrong_size"),
    # ------------------------------------------------------------------------------------------- maze
    ("maze", 3.0, "maze payload must be a string of newline-separated rows, a list of row strings or an integer grid, "
     "got float", None, "bad_type"),
    ("maze", "\n\n", "empty maze: expected rows of '#', ' ', 'S', 'G'", None, "wrong_size"),
    ("maze", ["#####", "#S  #", "# #", "#  G#", "#####"],
     "maze row 3 has 3 characters, expected 5 as in row 1 (row was '# #')", "row 3", "not_rectangular"),
    ("maze", ["#######", "#S    #", "# ### #", "#    G#", "#######"], "maze must be square: got 5 rows of 7 characters",
     None, "not_square"),
    ("maze", "####\n#SG#\n#  #\n####", "maze side 4 is outside 5..30", None, "wrong_size"),
    ("maze", "\n".join(["S" + " " * 29 + "G"] + ["#" * 31] * 30), "maze side 31 is outside 5..30", None,
     "wrong_size"),
    ("maze", ["#####", "#Sx #", "# # #", "#  G#", "#####"],
     f"bad character 'x' in maze: use {MARKERS}", "row 2, col 3", "bad_character"),
    ("maze", ["#####", "#So #", "# # #", "#  G#", "#####"],
     "the maze contains 'o' (a path mark); send the unsolved maze", "row 2, col 3", "bad_character"),
    ("maze", ["#####", "#   #", "# # #", "#  G#", "#####"], f"maze has no start: mark it with {START_HINT}", None,
     "missing_start"),
    ("maze", ["#####", "#S G#", "# # #", "#  G#", "#####"],
     "maze has 2 goals, expected exactly 1 (row 2, col 4 and row 4, col 4)", "row 4, col 4", "multiple_goals"),
    ("maze", ["#####", "#S# #", "### #", "#  G#", "#####"],
     "goal 'G' cannot be reached from start 'S' through open cells", None, "unsolvable"),
    ("maze", ["#####", 5, "# # #", "#  G#", "#####"], "maze row 2 must be a string, got int", "row 2", "bad_type"),
    ("maze", "#" * 26, "single-line maze of 26 characters is not a square; separate rows with newlines", None,
     "wrong_size"),
    ("maze", {"grid": MAZE}, "maze object needs a 'maze' field (got keys: grid)", None, "missing_field"),
    # -------------------------------------------------------------------------------------------- arc
    ("arc", [PAIR], "ARC payload must be a task object with 'train' and 'test', got list", None, "bad_type"),
    ("arc", {"train": [PAIR]}, "ARC task has no 'test' list", "test", "missing_field"),
    ("arc", task_with(train=PAIR), "'train' must be a list of {'input', 'output'} pairs, got dict", "train",
     "bad_task"),
    ("arc", task_with(train=[]), "'train' is empty: it needs at least one pair", "train", "bad_task"),
    ("arc", task_with(train=[{"input": [[1]]}]), "train[0] has no 'output' grid (demonstration pairs need both)",
     "train[0]", "bad_task"),
    ("arc", task_with(train=[{"input": [[1]], "output": None}]),  # was accepted, then a 500 while rendering
     "train[0].output is null: a demonstration pair needs its output grid", "train[0].output", "bad_task"),
    ("arc", task_with(test=[{"output": [[1]]}]), "test[0] has no 'input' grid", "test[0]", "bad_task"),
    ("arc", task_with(train=[PAIR, {"input": [[0] * 8] * 2 + [[0] * 7 + [10]], "output": [[1]]}]),
     "colour must be an integer 0..9, got 10", "train[1].input[2][7]", "bad_colour"),
    ("arc", task_with(train=[{"input": [[1, 2, 3]], "output": [[1, 2, 3], [1, 2]]}]),
     "train[0].output[1] has 2 cells but row 0 has 3: grids must be rectangular", "train[0].output[1]", "bad_grid"),
    ("arc", task_with(test=[{"input": []}]), "test[0].input is empty: a grid needs 1..30 rows", "test[0].input",
     "bad_grid"),
    ("arc", task_with(train=[{"input": [[0]] * 31, "output": [[1]]}]), "train[0].input has 31 rows, at most 30 allowed",
     "train[0].input", "bad_grid"),
    ("arc", task_with(train=[{"input": [[0] * 31], "output": [[1]]}]), "train[0].input[0] has 31 cells, a row needs "
     "1..30", "train[0].input[0]", "bad_grid"),
    ("arc", task_with(test_index=2), "test_index 2 is out of range: the task has 1 test input(s)", "test_index",
     "bad_task"),
    ("arc", task_with(test_index="0"), "test_index must be an integer, got '0'", "test_index", "bad_task"),
    ("arc", task_with(train=[{"input": "12", "output": [[1]]}]),
     "train[0].input must be a grid (list of rows), got str", "train[0].input", "bad_grid"),
    ("arc", task_with(train=[[[1]], [[2]]]), "train[0] must be an object with 'input' and 'output', got list",
     "train[0]", "bad_task"),
    ("arc", task_with(test=[{"input": [[1, "2"]]}]), "colour must be an integer 0..9, got '2'", "test[0].input[0][1]",
     "bad_colour"),
    ("arc", task_with(id=7), "task id must be a string, got int", "id", "bad_task"),
]


def test_table_is_large_and_every_message_is_distinct() -> None:
    assert len(CASES) >= 30
    keyed = {(task, msg, loc) for task, _, msg, loc, _ in CASES}
    assert len(keyed) == len(CASES)
    assert {task for task, *_ in CASES} == {"sudoku", "maze", "arc"}


@pytest.mark.parametrize(("task", "payload", "message", "location", "code"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_malformed_payload_is_rejected_precisely(task: str, payload: Any, message: str, location: str | None,
                                                 code: str) -> None:
    with pytest.raises(PuzzleError) as info:
        get_codec(task).parse(payload)
    err = info.value
    assert err.message == message
    assert err.location == location
    assert err.code == code
    assert str(err) == (message if location is None else f"{message} (at {location})")


def test_unknown_task() -> None:
    with pytest.raises(PuzzleError) as info:
        get_codec("chess")
    assert info.value.code == "unknown_task"
    assert info.value.message == "unknown task 'chess'; expected one of sudoku, maze, arc"


@pytest.mark.parametrize("bad", ["12", [1], {"a": 1}])
def test_a_flat_list_with_one_bad_cell_names_that_cell(bad: Any) -> None:
    """81 entries with one that is no cell: that cell is named (was 'sudoku needs 9 row strings, got 81')."""
    flat: list[Any] = list("53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79")
    flat[40] = bad
    with pytest.raises(PuzzleError) as info:
        get_codec("sudoku").parse(flat)
    assert (info.value.code, info.value.location) == ("bad_character", "r5c5") and repr(bad) in info.value.message
