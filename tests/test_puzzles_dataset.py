"""The official on-disk layout: what we write reads back identically and has the official fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from puzzles.dataset import build_sudoku_dataset, read_dataset, write_dataset
from puzzles.sudoku import CODEC, generate


def test_sudoku_dataset_layout(tmp_path: Path) -> None:
    train = [generate(i, "easy") for i in range(4)]
    test = [generate(100 + i, "medium") for i in range(3)]
    build_sudoku_dataset(tmp_path, train, test, num_aug=5, seed=0)
    assert json.loads((tmp_path / "identifiers.json").read_text()) == ["<blank>"]
    names = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert names == sorted(["dataset.json"] + [f"all__{k}.npy" for k in
                                               ("inputs", "labels", "puzzle_identifiers", "puzzle_indices",
                                                "group_indices")])
    tr = read_dataset(tmp_path, "train")
    meta = tr.metadata
    assert meta["vocab_size"] == 11 and meta["seq_len"] == 81 and meta["num_puzzle_identifiers"] == 1
    assert meta["total_groups"] == 4 and meta["total_puzzles"] == 24 and meta["sets"] == ["all"]
    assert tr.inputs.shape == (24, 81) and tr.group_indices.tolist() == [0, 6, 12, 18, 24]
    assert tr.puzzle_indices.tolist() == list(range(25)) and not tr.puzzle_identifiers.any()
    # group starts hold the originals, untouched; every row is a valid puzzle/solution pair
    assert np.array_equal(tr.inputs[0].astype(int) - 1, train[0].givens)
    for i in range(tr.num_examples):
        p = CODEC.parse((tr.inputs[i].astype(int) - 1).tolist())
        assert CODEC.verify(p, (tr.labels[i].astype(int) - 1).tolist()).valid
    te = read_dataset(tmp_path, "test", mmap=True)
    assert te.num_examples == 3 and te.num_groups == 3


def test_write_dataset_rejects_inconsistent_offsets(tmp_path: Path) -> None:
    x = np.ones((4, 9), np.int32)
    with pytest.raises(ValueError, match="puzzle_indices"):
        write_dataset(tmp_path, "train", x, x, vocab_size=3, puzzle_indices=np.array([0, 2, 3]))
    with pytest.raises(ValueError, match="tokens must lie"):
        write_dataset(tmp_path, "train", x * 5, x, vocab_size=3)
    with pytest.raises(ValueError, match="<blank>"):
        write_dataset(tmp_path, "train", x, x, vocab_size=3, identifiers=["a"])
