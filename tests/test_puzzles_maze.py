"""Maze codec, BFS verification, generator and dihedral augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from puzzles import get_codec
from puzzles.dataset import build_maze_dataset, read_dataset
from puzzles.maze import MazeAnswer, augment, deaugment_rows, generate, shortest_path

CODEC = get_codec("maze")
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(seed=st.integers(0, 2**31), size=st.integers(5, 30), form=st.sampled_from(["text", "rows", "flat"]))
def test_round_trip_and_label_verifies(seed: int, size: int, form: str) -> None:
    m = generate(seed, size)
    payload = {"text": "\n".join(m.rows) + "\n", "rows": list(m.rows), "flat": "".join(m.rows)}[form]
    p = CODEC.parse(payload)
    assert p.rows == m.rows and p.start == m.start and p.goal == m.goal
    tokens = CODEC.encode(p, 900)
    assert tokens.shape == (900,) and tokens.dtype == np.int32
    assert CODEC.decode(tokens, p).rows == p.rows
    answer = CODEC.decode(CODEC.encode_label(m, 900), p)
    assert CODEC.verify(p, answer).valid
    out = CODEC.answer_payload(answer, p)
    assert type(out) is type(payload)
    assert CODEC.canonical(CODEC.parse(out.replace("o", " ") if isinstance(out, str)
                                       else [r.replace("o", " ") for r in out])) == CODEC.canonical(p)


@FAST
@given(seed=st.integers(0, 2**31), lo=st.integers(1, 60))
def test_generator_respects_path_length(seed: int, lo: int) -> None:
    m = generate(seed, 21, min_path_len=lo, max_path_len=lo + 40)
    assert lo <= m.path_len <= lo + 40
    assert m.solution is not None and sum(r.count("o") for r in m.solution) == m.path_len - 1


def test_generator_is_seeded_and_reaches_maze_hard_lengths() -> None:
    assert generate(5, 30, min_path_len=110).rows == generate(5, 30, min_path_len=110).rows
    assert generate(5, 30, min_path_len=110).path_len >= 110
    with pytest.raises(ValueError, match="no 5x5 maze"):
        generate(0, 5, min_path_len=50)


@FAST
@given(seed=st.integers(0, 2**31), t=st.integers(0, 7))
def test_dihedral_augment_then_invert_is_identity(seed: int, t: int) -> None:
    m = generate(seed, 12)
    a = augment(m, t)
    assert CODEC.verify(CODEC.parse(list(a.rows)), MazeAnswer(a.solution)).valid
    assert deaugment_rows(a.rows, t) == m.rows and deaugment_rows(a.solution, t) == m.solution


def test_verify_rejects_long_broken_and_wall_paths() -> None:
    rows = ["#######",
            "#S    #",
            "# ### #",
            "#   G #",
            "#######",
            "#######",
            "#######"]
    p = CODEC.parse(rows)
    assert len(shortest_path(p.rows, p.start, p.goal)) - 1 == 5
    good = ["#######", "#S    #", "#o### #", "#oooG #", "#######", "#######", "#######"]
    assert CODEC.verify(p, good).valid
    longer = ["#######", "#Soooo#", "# ###o#", "#   Go#", "#######", "#######", "#######"]
    assert CODEC.verify(p, longer).reasons == ("the path marks 6 cells but a shortest path has 4",)
    broken = ["#######", "#S    #", "#o### #", "#o oG #", "#######", "#######", "#######"]
    assert "the 'o' path does not connect S to G" in CODEC.verify(p, broken).reasons
    wall = ["#######", "#S    #", "#o### #", "#oooG #", "###o###", "#######", "#######"]
    assert CODEC.verify(p, wall).reasons[0] == "row 5, col 4 is 'o' but the maze has '#'"


def test_encode_pads_small_maze_onto_canvas_and_rejects_too_big() -> None:
    m = generate(3, 9)
    tok = CODEC.encode(m, 400).reshape(20, 20)
    assert (tok[9:, :] == 0).all() and (tok[:, 9:] == 0).all() and (tok[:9, :9] > 0).all()
    big = generate(3, 30)
    with pytest.raises(Exception, match="does not fit"):
        CODEC.encode(big, 400)


def test_maze_dataset_with_dihedral_groups(tmp_path) -> None:
    mazes = [generate(i, 10) for i in range(3)]
    build_maze_dataset(tmp_path, mazes, mazes[:1], aug=True, seq_len=100)
    tr = read_dataset(tmp_path, "train")
    assert tr.inputs.shape == (24, 100) and tr.group_indices.tolist() == [0, 8, 16, 24]
    assert tr.metadata["vocab_size"] == 6 and tr.metadata["num_puzzle_identifiers"] == 1
    assert read_dataset(tmp_path, "test").num_examples == 1


def test_a_requests_puzzle_runs_its_bfs_once(monkeypatch) -> None:
    """Parsing (reachability), the engine's verifier fact, the exact facts and the verdict all read one BFS."""
    import puzzles.maze as maze

    codec = get_codec("maze")
    puzzle = generate(3, 30)
    calls = []
    bfs = maze.bfs_distances
    monkeypatch.setattr(maze, "bfs_distances", lambda rows, start: calls.append(start) or bfs(rows, start))
    parsed = codec.parse(codec.render(puzzle))
    fact, facts = codec.verify_fact(parsed), codec.exact(parsed)
    assert codec.verify(parsed, facts.solution).valid and facts.unique is not None
    assert fact == len(shortest_path(puzzle.rows, puzzle.start, puzzle.goal)) - 1 and len(calls) == 2  # + this one
    assert not parsed.distances.flags.writeable


@given(st.integers(0, 10_000), st.sampled_from([5, 9, 30]), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_bfs_distances_match_a_plain_breadth_first_search(seed: int, size: int, noise: int) -> None:
    """The flat-list BFS against the obvious one, on mazes with walls knocked down and put up at random
    (starts on a wall or at the border included)."""
    import random
    from collections import deque

    from puzzles.maze import bfs_distances

    rng = random.Random(noise)
    grid = [list(row) for row in generate(seed, size).rows]
    for _ in range(rng.randint(0, 3 * size)):
        r, c = rng.randrange(size), rng.randrange(size)
        if grid[r][c] in "# ":
            grid[r][c] = rng.choice("# ")
    rows = ["".join(row) for row in grid]
    start = (rng.randrange(size), rng.randrange(size))
    want = np.full((size, size), -1)
    want[start] = 0
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < size and 0 <= nc < size and rows[nr][nc] != "#" and want[nr, nc] < 0:
                want[nr, nc] = want[r, c] + 1
                queue.append((nr, nc))
    assert (bfs_distances(rows, start) == want).all()
