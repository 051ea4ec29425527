"""A tiny attention TRM must learn a tiny maze task on the CPU (issue 12 item 1; training/ATTENTION.md).

The full TRM training loop (4 ACT steps of deep supervision, 2 x 2 cycles, 1D RoPE, the project's Trainer and its
default recipe) on 5x5 mazes, 600 optimiser steps of 32 rows, one thread, fixed seed: with attention's 2D grid
bias it solves >= 95% of held-out mazes (not in training, but 5x5 mazes are so few that each is a rotation or
reflection of a training maze: this measures learning, not generalisation) (0.99-1.0 over seeds 0-2 when this was
written); the same run without it stays near the copy-the-input plateau (0.315). Both are checked, so the test
fails if attention learning regresses and also if the task became too easy to tell the two apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.ablate import run, tiny_maze_data

pytestmark = pytest.mark.slow
STEPS = 600


@pytest.fixture(scope="module")
def mazes(tmp_path_factory) -> Path:
    return tiny_maze_data(tmp_path_factory.mktemp("maze5"), size=5, drop_rotations=False)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the figures above are one-thread figures (bf16 sums depend on the split)
    yield
    torch.set_num_threads(threads)


def test_attention_with_grid_bias_learns_5x5_mazes(mazes: Path, tmp_path: Path) -> None:
    result = run(STEPS, ["model.grid_bias=true"], mazes, tmp_path, seed=0)
    assert result["heldout_exact"] >= 0.95, result


def test_plain_attention_does_not_in_the_same_budget(mazes: Path, tmp_path: Path) -> None:
    result = run(STEPS, [], mazes, tmp_path, seed=0)
    assert result["heldout_exact"] < 0.6, result
