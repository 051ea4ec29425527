"""Batched token verifiers (models/verify.py) give the codecs' verdict, row for row.

Ground truth everywhere is ``codec.verify(puzzle, codec.decode(tokens, puzzle)).valid``.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.verify import (
    MAZE_TOKENS,
    SUDOKU_TOKENS,
    NoTokenVerifier,
    has_token_verifier,
    maze_shortest_distance,
    prepare_batch,
    token_verifier,
    verify_batch,
)
from puzzles import get_codec
from puzzles.maze import TOKEN_OF, MazePuzzle, count_shortest_paths
from puzzles.maze import generate as maze_generate
from puzzles.sudoku import SudokuPuzzle
from puzzles.sudoku import generate as sudoku_generate

SUDOKU = get_codec("sudoku")
MAZE = get_codec("maze")
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def codec_truth(codec, puzzles: list, tokens: np.ndarray) -> list[bool]:
    return [codec.verify(p, codec.decode(t, p)).valid for p, t in zip(puzzles, tokens, strict=True)]


def batch_verdict(task: str, inputs: np.ndarray, tokens: np.ndarray, **kw) -> list[bool]:
    out = verify_batch(task, torch.as_tensor(inputs), torch.as_tensor(tokens), **kw)
    assert out.dtype == torch.bool and out.shape == (len(inputs),)
    return out.tolist()


# --------------------------------------------------------------------------------------------- sudoku


@cache
def sudoku_pool() -> tuple[SudokuPuzzle, ...]:
    return tuple(sudoku_generate(seed, tier) for seed in range(4) for tier in ("easy", "medium", "hard"))


SUDOKU_KINDS = ("solved", "swap", "digit_perm", "given_changed", "random", "pad")


@st.composite
def sudoku_case(draw) -> tuple[SudokuPuzzle, np.ndarray]:
    """(puzzle, answer tokens): a solution, or one broken in one of the ways a model breaks it."""
    p = draw(st.sampled_from(sudoku_pool()))
    label = SUDOKU.encode_label(p).astype(np.int64)
    kind = draw(st.sampled_from(SUDOKU_KINDS))
    if kind == "swap":
        i, j = draw(st.integers(0, 80)), draw(st.integers(0, 80))
        label[[i, j]] = label[[j, i]]
    elif kind == "digit_perm":  # still a valid grid, but the givens are relabelled
        perm = np.array([0, 1, *draw(st.permutations(range(2, 11)))])
        label = perm[label]
    elif kind == "given_changed":  # the puzzle gains a given that the answer does not keep
        i = draw(st.integers(0, 80))
        givens = list(p.givens)
        givens[i] = draw(st.integers(1, 9))
        p = SudokuPuzzle(tuple(givens))
    elif kind == "random":
        label = np.array(draw(st.lists(st.integers(0, 11), min_size=81, max_size=81)))
    elif kind == "pad":  # PAD, blank or out-of-vocabulary tokens in an otherwise solved answer
        for i in draw(st.lists(st.integers(0, 80), min_size=1, max_size=4)):
            label[i] = draw(st.sampled_from([0, 1, 11, -1]))
    return p, label


@FAST
@given(cases=st.lists(sudoku_case(), min_size=1, max_size=12))
def test_sudoku_verify_batch_agrees_with_codec(cases: list) -> None:
    puzzles = [p for p, _ in cases]
    inputs = np.stack([SUDOKU.encode(p) for p in puzzles])
    tokens = np.stack([t for _, t in cases])
    assert batch_verdict("sudoku", inputs, tokens) == codec_truth(SUDOKU, puzzles, tokens)


def test_sudoku_known_verdicts() -> None:
    pool = list(sudoku_pool())
    inputs = np.stack([SUDOKU.encode(p) for p in pool])
    labels = np.stack([SUDOKU.encode_label(p) for p in pool])
    assert all(batch_verdict("sudoku", inputs, labels))
    assert not any(batch_verdict("sudoku", inputs, inputs))  # the unsolved puzzle itself
    swapped = labels.copy()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]  # cells 0 and 1 share a row, so their digits differ
    assert not any(batch_verdict("sudoku", inputs, swapped))
    relabelled = labels % 9 + 2  # digits shifted by one: a valid grid that breaks every given
    assert not any(batch_verdict("sudoku", inputs, relabelled))
    assert all(batch_verdict("sudoku", inputs.astype(np.int32), labels.astype(np.int32)))


# ----------------------------------------------------------------------------------------------- maze


@cache
def maze_pool(canvas: int) -> tuple[MazePuzzle, ...]:
    sizes = [5, 7, 9, 12, 20, 30] if canvas == 30 else [5, 7, canvas]
    return tuple(maze_generate(seed, size) for seed in range(3) for size in sizes if size <= canvas)


MAZE_KINDS = ("solved", "off_path", "broken", "wall", "flips", "edit", "margin", "random")


def _cells(p: MazePuzzle, chars: str) -> list[tuple[int, int]]:
    return [(r, c) for r, row in enumerate(p.rows) for c, ch in enumerate(row) if ch in chars]


@st.composite
def maze_case(draw, canvas: int) -> tuple[MazePuzzle, np.ndarray]:
    p = draw(st.sampled_from(maze_pool(canvas)))
    label = MAZE.encode_label(p, canvas * canvas).astype(np.int64).reshape(canvas, canvas)
    kind = draw(st.sampled_from(MAZE_KINDS))
    path = [(r, c) for r, c in _cells(p, " ") if label[r, c] == TOKEN_OF["o"]]
    off = [(r, c) for r, c in _cells(p, " ") if label[r, c] == TOKEN_OF[" "]]
    if kind == "off_path" and off:
        label[draw(st.sampled_from(off))] = TOKEN_OF["o"]
    elif kind == "broken" and path:
        label[draw(st.sampled_from(path))] = TOKEN_OF[" "]
    elif kind == "wall":
        label[draw(st.sampled_from(_cells(p, "#")))] = TOKEN_OF["o"]
    elif kind == "flips":  # toggle open cells between ' ' and 'o': detours, gaps, branches, loops
        for rc in draw(st.lists(st.sampled_from(_cells(p, " ")), min_size=1, max_size=6)):
            label[rc] = TOKEN_OF["o"] + TOKEN_OF[" "] - label[rc]
    elif kind == "edit":  # any token (PAD included) anywhere in the maze: S/G moved, walls, padding
        r, c = draw(st.integers(0, p.side - 1)), draw(st.integers(0, p.side - 1))
        label[r, c] = draw(st.integers(0, 6))
    elif kind == "margin" and p.side < canvas:  # junk outside the maze is cropped away by decode
        label[p.side:, :] = draw(st.integers(0, 6))
        label[:, p.side:] = TOKEN_OF["o"]
    elif kind == "random":
        label = np.array(draw(st.lists(st.integers(0, 6), min_size=canvas * canvas, max_size=canvas * canvas)))
    return p, label.reshape(-1)


@FAST
@given(data=st.data(), canvas=st.sampled_from([12, 30]))
def test_maze_verify_batch_agrees_with_codec(data, canvas: int) -> None:
    cases = data.draw(st.lists(maze_case(canvas), min_size=1, max_size=8))
    puzzles = [p for p, _ in cases]
    inputs = np.stack([MAZE.encode(p, canvas * canvas) for p in puzzles])
    tokens = np.stack([t for _, t in cases])
    truth = codec_truth(MAZE, puzzles, tokens)
    assert batch_verdict("maze", inputs, tokens) == truth
    # the distances prepared once per request (on the device, or from each puzzle's path_len) agree
    prepared = prepare_batch("maze", torch.as_tensor(inputs))
    assert prepared.tolist() == [p.path_len for p in puzzles]
    assert batch_verdict("maze", inputs, tokens, prepared=prepared) == truth
    path_lens = torch.tensor([p.path_len for p in puzzles])
    assert batch_verdict("maze", inputs, tokens, prepared=path_lens) == truth


def test_maze_every_path_marking_of_a_small_room_agrees_with_codec() -> None:
    """Exhaustive: all 2^14 ways to mark the open cells of a small room with walls, on an 8x8 canvas.
    Covers every detour, branch, gap, 2x2 block and loop the degree rule must get right."""
    rows = ("#######",
            "#S   ##",
            "#  #  #",
            "# #   #",
            "#   #G#",
            "#######",
            "#######")
    p = MAZE.parse(list(rows))
    free = _cells(p, " ")
    assert len(free) == 14
    base = MAZE.encode(p, 64).astype(np.int64).reshape(8, 8)
    marks = np.array(list(itertools.product([TOKEN_OF[" "], TOKEN_OF["o"]], repeat=len(free))))
    tokens = np.repeat(base[None], len(marks), 0)
    idx_r, idx_c = zip(*free, strict=True)
    tokens[:, list(idx_r), list(idx_c)] = marks
    tokens = tokens.reshape(len(marks), 64)
    inputs = np.repeat(base.reshape(1, 64), len(marks), 0)
    truth = codec_truth(MAZE, [p] * len(marks), tokens)
    # the accepted markings are exactly the shortest paths, and there are several of them
    assert sum(truth) == count_shortest_paths(p.rows, p.start, p.goal, cap=1000) > 1
    assert batch_verdict("maze", inputs, tokens) == truth


def test_maze_known_verdicts_and_margin_next_to_the_start() -> None:
    # S on the maze's right edge: an 'o' just outside it, in the canvas margin, is cropped away
    rows = ["#####",
            "#   S",
            "# # #",
            "#  G#",
            "#####"]
    p = MAZE.parse(rows)
    label = MAZE.encode_label(p, 49).astype(np.int64).reshape(7, 7)
    label[1, 5] = label[2, 5] = TOKEN_OF["o"]
    x = MAZE.encode(p, 49).reshape(1, 49)
    assert MAZE.verify(p, MAZE.decode(label.reshape(-1), p)).valid
    assert batch_verdict("maze", x, label.reshape(1, 49)) == [True]
    label[1, 4] = TOKEN_OF["o"]  # S overwritten
    assert batch_verdict("maze", x, label.reshape(1, 49)) == [False]


def test_maze_distance_cap_is_conservative() -> None:
    p = maze_generate(5, 30, min_path_len=110)
    x = torch.as_tensor(MAZE.encode(p, 900)).reshape(1, 900)
    y = torch.as_tensor(MAZE.encode_label(p, 900)).reshape(1, 900)
    assert maze_shortest_distance(x, early_exit=False).tolist() == [p.path_len]
    capped = maze_shortest_distance(x, max_steps=50)
    assert capped.tolist() == [-1]  # unknown -> reads unreachable -> never a false "verified"
    assert verify_batch("maze", x, y, prepared=capped).tolist() == [False]
    no_path = MAZE.encode(MazePuzzle(("#####", "#S# #", "# #G#", "# # #", "#####"), (1, 1), (2, 3)), 25)
    assert maze_shortest_distance(torch.as_tensor(no_path).reshape(1, 25)).tolist() == [-1]


# ---------------------------------------------------------------------------------------- the surface


def test_token_vocabularies_match_the_codecs() -> None:
    assert {k: v for k, v in TOKEN_OF.items()} == {"#": MAZE_TOKENS["wall"], " ": MAZE_TOKENS["open"],
                                                   "S": MAZE_TOKENS["start"], "G": MAZE_TOKENS["goal"],
                                                   "o": MAZE_TOKENS["path"]}
    assert MAZE.encode(maze_generate(0, 5), 49).reshape(7, 7)[5:, :].max() == MAZE_TOKENS["pad"]
    x = SUDOKU.encode(SudokuPuzzle((0, 1, 9, *([0] * 78))))
    assert x[:3].tolist() == [SUDOKU_TOKENS["blank"], SUDOKU_TOKENS["digit_1"], SUDOKU_TOKENS["digit_9"]]


def test_arc_and_bad_shapes_get_clear_errors() -> None:
    x = torch.ones(2, 900, dtype=torch.long)
    assert not has_token_verifier("arc") and token_verifier("arc") is None
    assert token_verifier("sudoku") is not None and has_token_verifier("maze")
    with pytest.raises(NoTokenVerifier, match="'arc' has no token verifier"):
        verify_batch("arc", x, x)
    with pytest.raises(NoTokenVerifier, match="'arc'"):
        prepare_batch("arc", x)
    with pytest.raises(ValueError, match=r"sudoku tokens must be \[n, 81\]; got seq_len 900"):
        verify_batch("sudoku", x, x)
    with pytest.raises(ValueError, match="must be a square"):
        verify_batch("maze", x[:, :899], x[:, :899])
    with pytest.raises(ValueError, match=r"inputs \(2, 900\), tokens \(1, 900\)"):
        verify_batch("maze", x, x[:1])
    with pytest.raises(ValueError, match="integer token ids"):
        verify_batch("maze", x, x.float())


def test_no_graph_breaks() -> None:
    """Pure tensor ops: dynamo traces each verifier as one graph (so it can be compiled or captured)."""
    p = maze_generate(1, 7)
    mx = torch.as_tensor(MAZE.encode(p, 49)).reshape(1, 49).repeat(3, 1)
    my = torch.as_tensor(MAZE.encode_label(p, 49)).reshape(1, 49).repeat(3, 1)
    d = torch.full((3,), p.path_len)
    sp = sudoku_pool()[0]
    sx = torch.as_tensor(SUDOKU.encode(sp)).reshape(1, 81)
    sy = torch.as_tensor(SUDOKU.encode_label(sp)).reshape(1, 81)
    for fn, args in ((lambda a, b: verify_batch("sudoku", a, b), (sx, sy)),
                     (lambda a, b, c: verify_batch("maze", a, b, prepared=c), (mx, my, d)),
                     (lambda a: maze_shortest_distance(a, max_steps=8), (mx,))):
        torch._dynamo.reset()
        explained = torch._dynamo.explain(fn)(*args)
        assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_replays_in_a_cuda_graph() -> None:
    puzzles = list(maze_pool(30))
    x = torch.as_tensor(np.stack([MAZE.encode(p, 900) for p in puzzles]))
    y = torch.as_tensor(np.stack([MAZE.encode_label(p, 900) for p in puzzles]))
    y[::2, 0] = 0  # every other answer breaks its corner wall
    want = verify_batch("maze", x, y)
    assert want.tolist() == [i % 2 == 1 for i in range(len(puzzles))]
    xc, yc = x.cuda(), y.cuda()
    d = prepare_batch("maze", xc)
    assert verify_batch("maze", xc, yc, prepared=d).cpu().tolist() == want.tolist()
    sx = torch.as_tensor(np.stack([SUDOKU.encode(p) for p in sudoku_pool()])).cuda()
    sy = torch.as_tensor(np.stack([SUDOKU.encode_label(p) for p in sudoku_pool()])).cuda()
    # capture both verifiers and the full-length flood fill, then replay on new answers in place
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the default stream, as torch.cuda.graphs asks
        verify_batch("maze", xc, yc, prepared=d)
        verify_batch("sudoku", sx, sy)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        maze_out = verify_batch("maze", xc, yc, prepared=d)
        sudoku_out = verify_batch("sudoku", sx, sy)
        dist_out = maze_shortest_distance(xc)  # no early exit while capturing: all 900 layers
    graph.replay()
    torch.cuda.synchronize()
    assert maze_out.cpu().tolist() == want.tolist() and sudoku_out.all()
    assert dist_out.cpu().tolist() == [p.path_len for p in puzzles]
    yc[1::2, 0] = 0
    sy[0, 0] = 1
    graph.replay()
    torch.cuda.synchronize()
    assert not maze_out.any() and sudoku_out.cpu().tolist() == [False] + [True] * (len(sy) - 1)
