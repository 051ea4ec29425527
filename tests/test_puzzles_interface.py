"""The shared codec contract: every task satisfies it, and puzzles/ never imports torch."""

from __future__ import annotations

import subprocess
import sys
from functools import cache

import numpy as np
import pytest

from puzzles import TASKS, Codec, get_codec
from puzzles.arc import ArcAnswer
from puzzles.arc_data import arc1_puzzles
from puzzles.maze import generate as maze_generate
from puzzles.sudoku import generate as sudoku_generate

VOCAB = {"sudoku": (11, 81), "maze": (6, 900), "arc": (12, 900)}


@cache
def sample(task: str):  # one parsed puzzle per task, with a known answer
    if task == "sudoku":
        return sudoku_generate(0, "easy")
    if task == "maze":
        return maze_generate(0, 30, min_path_len=60)
    return arc1_puzzles("evaluation")[0]


def test_puzzles_package_does_not_import_torch() -> None:
    code = ("import sys, puzzles, puzzles.sudoku, puzzles.maze, puzzles.maze_gen, puzzles.arc, puzzles.arc_aug, "
            "puzzles.arc_data, puzzles.dataset; puzzles.arc_data.load_arc1('training'); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("task", TASKS)
def test_codec_contract(task: str) -> None:
    codec = get_codec(task)
    assert isinstance(codec, Codec) and codec.task == task
    assert (codec.vocab_size, codec.default_seq_len) == VOCAB[task]
    puzzle = sample(task)
    x = codec.encode(puzzle, codec.default_seq_len)
    y = codec.encode_label(puzzle, codec.default_seq_len)
    assert x.shape == y.shape == (codec.default_seq_len,) and x.dtype == np.int32
    assert x.min() >= 0 and max(x.max(), y.max()) < codec.vocab_size
    answer = codec.decode(y, puzzle)
    assert codec.verify(puzzle, answer).valid
    assert codec.verify(puzzle, codec.decode(np.zeros_like(y), puzzle)).valid is False
    assert codec.canonical(puzzle) == codec.canonical(codec.parse(payload_of(task, puzzle)))
    assert isinstance(codec.render(puzzle), str) and isinstance(codec.render(answer), str)


def payload_of(task: str, puzzle):
    """The puzzle as a caller would send it (canonical() must not depend on the form)."""
    if task == "sudoku":
        return puzzle.grid.tolist()
    if task == "maze":
        return list(puzzle.rows)
    return puzzle.to_json()


def test_arc_canonical_of_answer_payload_roundtrip() -> None:
    p = sample("arc")
    assert get_codec("arc").answer_payload(ArcAnswer(p.input), p) == [list(r) for r in p.input]


def test_verify_never_raises_on_garbage_answers() -> None:
    for task in TASKS:
        codec = get_codec(task)
        v = codec.verify(sample(task), 12345)
        assert not v.valid and v.reasons
