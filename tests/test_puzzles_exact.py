"""Exact facts beside the neural answer (solvable, unique, one exact solution) and the overwritten-givens
report, for every codec."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from puzzles import ExactFacts, get_codec
from puzzles.arc import ArcAnswer
from puzzles.arc_data import arc1_puzzles
from puzzles.maze import MazeAnswer, MazePuzzle, count_shortest_paths
from puzzles.maze import generate as maze_generate
from puzzles.sudoku import SudokuAnswer, SudokuPuzzle
from puzzles.sudoku import generate as sudoku_generate
from puzzles.sudoku_solver import solve_digits

SUDOKU = get_codec("sudoku")
MAZE = get_codec("maze")
FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------- sudoku


@FAST
@given(seed=st.integers(0, 2**31), tier=st.sampled_from(["easy", "hard"]))
def test_sudoku_exact_on_generated_puzzles_is_solvable_unique_and_verifies(seed: int, tier: str) -> None:
    p = sudoku_generate(seed, tier)
    facts = SUDOKU.exact(p)
    assert isinstance(facts, ExactFacts)
    assert (facts.solvable, facts.unique, facts.capped) == (True, True, False)
    assert isinstance(facts.solution, SudokuAnswer) and facts.solution.cells == p.solution
    assert SUDOKU.verify(p, facts.solution).valid and 0 <= facts.ms < 1000


def _two_solution_sudoku() -> tuple[SudokuPuzzle, tuple[int, ...]]:
    """A solved grid with one 'deadly rectangle' emptied: two rows of one band, two columns of
    different stacks, where the four digits are a, b / b, a -> exactly two solutions."""
    sol = sudoku_generate(7, "easy").solution
    assert sol is not None
    for r1 in range(9):
        for r2 in range(r1 + 1, (r1 // 3) * 3 + 3):
            for c1 in range(9):
                for c2 in range((c1 // 3 + 1) * 3, 9):
                    a, b = sol[r1 * 9 + c1], sol[r1 * 9 + c2]
                    if sol[r2 * 9 + c1] == b and sol[r2 * 9 + c2] == a:
                        cells = list(sol)
                        for i in (r1 * 9 + c1, r1 * 9 + c2, r2 * 9 + c1, r2 * 9 + c2):
                            cells[i] = 0
                        return SUDOKU.parse(cells), sol
    raise AssertionError("no deadly rectangle in the test grid; pick another seed")


def _candidates_by_peers(givens: list[int]) -> list[int] | None:
    """The plain way: place each given and strike its digit from its 20 peers, then the same propagation."""
    from puzzles.sudoku_solver import ALL, _propagate

    cands, queue = [ALL] * 81, []
    for i, v in enumerate(givens):
        if v:
            cands[i] = 1 << (v - 1)
            queue.append(i)
    return cands if _propagate(cands, queue) else None


@FAST
@given(cells=st.lists(st.tuples(st.integers(0, 80), st.integers(1, 9)), max_size=45),
       seed=st.integers(0, 2**31), tier=st.sampled_from(["medium", "hard"]))
def test_candidates_from_unit_masks_equal_placing_each_given(cells: list[tuple[int, int]], seed: int,
                                                              tier: str) -> None:
    """initial_candidates strikes the givens through row/column/box masks in one pass; it must give exactly what
    placing them one by one gives, for real puzzles and for random (often contradictory) givens alike."""
    import random

    from puzzles.sudoku_solver import initial_candidates

    noise = [0] * 81
    for i, v in cells:
        noise[i] = v
    for givens in (noise, list(sudoku_generate(random.Random(seed), tier).givens)):
        assert initial_candidates(givens) == _candidates_by_peers(givens)


def test_sudoku_with_two_solutions_is_solvable_not_unique() -> None:
    p, sol = _two_solution_sudoku()
    facts = SUDOKU.exact(p)
    assert (facts.solvable, facts.unique, facts.capped) == (True, False, False)
    assert SUDOKU.verify(p, facts.solution).valid
    both = solve_digits(p.givens, limit=5)
    assert both.count == 2 and sol in both.solutions  # exactly two: the rectangle's two fillings
    empty = SUDOKU.exact(SudokuPuzzle((0,) * 81))
    assert (empty.solvable, empty.unique) == (True, False) and SUDOKU.verify(SudokuPuzzle((0,) * 81),
                                                                             empty.solution).valid


def test_unsolvable_sudoku_without_contradictory_givens() -> None:
    # Row 1 holds 1..8 and the 9 it needs sits lower in column 9: no two givens clash, yet no solution.
    direct = SUDOKU.parse("12345678." + "." * 36 + "........9" + "." * 27)
    facts = SUDOKU.exact(direct)
    assert (facts.solvable, facts.unique, facts.solution, facts.capped) == (False, False, None, False)
    # One given of an extreme puzzle changed: parses, and only the search (8 guesses) finds no solution.
    cells = list(sudoku_generate(1, "extreme").givens)
    cells[27] = 2
    p = SUDOKU.parse(cells)
    assert solve_digits(p.givens).guesses > 0
    facts = SUDOKU.exact(p)
    assert (facts.solvable, facts.unique, facts.solution) == (False, False, None)


def test_sudoku_effort_cap_reports_unknown_instead_of_searching_on() -> None:
    p = sudoku_generate(0, "extreme")
    assert solve_digits(p.givens).guesses > 3
    capped = SUDOKU.exact(p, max_guesses=1)
    assert capped.capped and capped.unique is None
    assert capped.solvable in (None, True) and (capped.solvable is None) == (capped.solution is None)
    # a deadline already past stops the search as well (the clock is read every 256 guesses)
    res = solve_digits((0,) * 81, limit=10**9, deadline=0.0)
    assert res.capped and res.guesses <= 256
    # one solution found, cap hit before a second was ruled out -> solvable, uniqueness unknown
    res = solve_digits(p.givens, limit=2, max_guesses=solve_digits(p.givens, limit=1).guesses)
    assert res.count == 1 and res.capped


def test_sudoku_overwritten_names_each_changed_given() -> None:
    p = sudoku_generate(3, "easy")
    assert p.solution is not None
    assert SUDOKU.overwritten(p, SudokuAnswer(p.solution)) == []
    cells = list(p.solution)
    first, second = [i for i, g in enumerate(p.givens) if g][:2]
    cells[first] = p.givens[first] % 9 + 1
    cells[second] = 0
    r1, c1 = divmod(first, 9)
    r2, c2 = divmod(second, 9)
    assert SUDOKU.overwritten(p, SudokuAnswer(tuple(cells))) == [
        f"r{r1 + 1}c{c1 + 1}: given {p.givens[first]}, answer {p.givens[first] % 9 + 1}",
        f"r{r2 + 1}c{c2 + 1}: given {p.givens[second]}, answer blank"]
    # a non-given cell changed is not an overwrite (verify reports it as a rule break instead)
    blank = next(i for i, g in enumerate(p.givens) if not g)
    cells = list(p.solution)
    cells[blank] = cells[blank] % 9 + 1
    assert SUDOKU.overwritten(p, SudokuAnswer(tuple(cells))) == []
    assert SUDOKU.overwritten(p, 12345)[0].startswith("answer is not a sudoku grid")


def test_sudoku_overwritten_example_form() -> None:
    givens = [0] * 81
    givens[2 * 9 + 4] = 7
    answer = [0] * 81
    answer[2 * 9 + 4] = 2
    assert SUDOKU.overwritten(SudokuPuzzle(tuple(givens)), SudokuAnswer(tuple(answer))) == ["r3c5: given 7, answer 2"]


# ----------------------------------------------------------------------------------------------- maze


OPEN_ROOM = ["#######",
             "#S    #",
             "#     #",
             "#    G#",
             "#######",
             "#######",
             "#######"]
CORRIDOR = ["#######",
            "#S    #",
            "# ### #",
            "#   G #",
            "#######",
            "#######",
            "#######"]


@FAST
@given(seed=st.integers(0, 2**31), size=st.integers(5, 30))
def test_maze_exact_matches_bfs_and_solution_verifies(seed: int, size: int) -> None:
    m = maze_generate(seed, size)
    facts = MAZE.exact(m)
    assert (facts.solvable, facts.capped) == (True, False)
    assert isinstance(facts.solution, MazeAnswer) and MAZE.verify(m, facts.solution).valid
    assert facts.unique == (count_shortest_paths(m.rows, m.start, m.goal, cap=10) == 1)


def test_maze_uniqueness_counts_shortest_paths_only() -> None:
    room = MAZE.parse(OPEN_ROOM)  # S (1,1) to G (3,5): 2 down, 4 right in any order -> C(6, 2) = 15
    assert count_shortest_paths(room.rows, room.start, room.goal, cap=100) == 15
    assert MAZE.exact(room).unique is False
    # the corridor has two routes around the block, of lengths 5 and 7: one shortest path -> unique
    corridor = MAZE.parse(CORRIDOR)
    facts = MAZE.exact(corridor)
    assert (facts.solvable, facts.unique) == (True, True)
    assert facts.solution.rows == ("#######", "#S    #", "#o### #", "#oooG #", "#######", "#######", "#######")


def test_maze_with_no_path() -> None:
    rows = ("#######", "#S #  #", "#  #  #", "#  # G#", "#######", "#######", "#######")
    # parse refuses it with a 422-style error, so build it directly (as a caller of exact() might)
    with pytest.raises(ValueError, match="cannot be reached"):
        MAZE.parse(list(rows))
    facts = MAZE.exact(MazePuzzle(rows, (1, 1), (3, 5)))
    assert (facts.solvable, facts.unique, facts.solution, facts.capped) == (False, False, None, False)


def test_maze_overwritten_reports_walls_crossed_and_moved_ends() -> None:
    p = MAZE.parse(CORRIDOR)
    good = ["#######", "#S    #", "#o### #", "#oooG #", "#######", "#######", "#######"]
    assert MAZE.overwritten(p, good) == []
    bad = ["#######", "#o    #", "#S### #", "#ooo Go", "###o###", "#######", "#######"]
    assert MAZE.overwritten(p, bad) == [
        "row 2, col 2: start 'S', answer 'o' (start moved)",
        "row 3, col 2: open cell ' ', answer 'S' (second start)",
        "row 4, col 5: goal 'G', answer ' ' (goal moved)",
        "row 4, col 6: open cell ' ', answer 'G' (second goal)",
        "row 4, col 7: wall '#', answer 'o' (path through a wall)",
        "row 5, col 4: wall '#', answer 'o' (path through a wall)",
    ]
    assert MAZE.overwritten(p, ["#"]) == ["answer must be 7 rows of 7 characters"]
    tokens = MAZE.encode_label(p, 100)
    tokens[0] = 0  # PAD where the corner wall is
    assert MAZE.overwritten(p, MAZE.decode(tokens, p)) == ["row 1, col 1: wall '#', answer '?' (wall removed)"]


# ------------------------------------------------------------------------------------------------ arc


def test_arc_has_no_exact_solver_and_no_givens() -> None:
    arc = get_codec("arc")
    p = arc1_puzzles("evaluation")[0]
    assert arc.exact(p) is None
    assert arc.overwritten(p, ArcAnswer(p.input)) == []


def test_every_codec_offers_exact_and_overwritten() -> None:
    for task, puzzle in (("sudoku", sudoku_generate(0, "easy")), ("maze", maze_generate(0, 9))):
        codec = get_codec(task)
        facts = codec.exact(puzzle)
        assert facts is not None and facts.solvable
        label = codec.decode(np.asarray(codec.encode_label(puzzle, codec.default_seq_len)), puzzle)
        assert codec.overwritten(puzzle, label) == []
