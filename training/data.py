"""Training and evaluation data in the official layout (what `puzzles.dataset.write_dataset` writes).

`TrainStream` hands out fresh examples one row at a time, which is what the persistent-batch trainer
needs when some rows halt: an epoch is a seeded permutation of the examples, and each example can be
re-augmented on the fly (official Sudoku shuffles; the 8 dihedral maps for mazes). Its whole state
(permutation, position, epoch, numpy RNG) goes into the training checkpoint, so a resumed run draws
exactly the examples the uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from puzzles.dataset import read_dataset
from puzzles.dihedral import dihedral

IGNORE_LABEL = -100


@dataclass
class Examples:
    """One split as int64 arrays: inputs / labels [N, L] (ignored labels = -100), identifiers [N]."""

    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    metadata: dict

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.inputs.shape[1])


def load_examples(root: str | Path, split: str) -> Examples:
    """Read one split; each example gets the identifier of the puzzle it belongs to (as the official
    loader does with searchsorted on puzzle_indices)."""
    ds = read_dataset(root, split)
    inputs = np.asarray(ds.inputs, dtype=np.int64)
    labels = np.asarray(ds.labels, dtype=np.int64)
    ignore = ds.metadata.get("ignore_label_id")
    if ignore is not None:
        labels = np.where(labels == ignore, IGNORE_LABEL, labels)
    example_puzzle = np.searchsorted(ds.puzzle_indices, np.arange(inputs.shape[0]), side="right") - 1
    ids = np.asarray(ds.puzzle_identifiers, dtype=np.int64)[example_puzzle]
    return Examples(inputs, labels, ids, ds.metadata)


def augment_rows(task: str, inputs: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A fresh validity-preserving augmentation for each row (the answer maps with the puzzle)."""
    if task == "sudoku":
        from puzzles.sudoku import augment_batch

        # tokens are digit + 1 (1 = blank); the shuffles work on digits with 0 = blank
        g, s = augment_batch(inputs - 1, np.where(labels == IGNORE_LABEL, 1, labels) - 1, rng)
        return g + 1, s + 1
    if task == "maze":
        side = math.isqrt(inputs.shape[1])
        if side * side != inputs.shape[1]:
            return inputs, labels
        out_i, out_l = inputs.copy(), labels.copy()
        grids, answers = out_i.reshape(-1, side, side), out_l.reshape(-1, side, side)
        for r in range(inputs.shape[0]):
            t = int(rng.integers(8))
            # A smaller maze sits in the canvas's top-left corner with PAD (token 0) around it, as the server
            # encodes it: transform that block, so the maze stays where the server puts it.
            n = int((grids[r] != 0).any(1).sum())
            grids[r, :n, :n] = dihedral(grids[r, :n, :n], t)
            answers[r, :n, :n] = dihedral(answers[r, :n, :n], t)
        return out_i, out_l
    return inputs, labels


class TrainStream:
    """Seeded, resumable stream of training examples (epochs of random permutations)."""

    def __init__(self, examples: Examples, task: str, seed: int, augment: bool):
        self.examples = examples
        self.task = task
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.pos = 0
        self.order = self.rng.permutation(len(examples))

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next `n` examples (inputs, labels, identifiers), augmented when enabled."""
        idx = np.empty(n, dtype=np.int64)
        for i in range(n):
            if self.pos >= len(self.order):
                self.epoch += 1
                self.pos = 0
                self.order = self.rng.permutation(len(self.examples))
            idx[i] = self.order[self.pos]
            self.pos += 1
        ex = self.examples
        inputs, labels = ex.inputs[idx], ex.labels[idx]
        if self.augment:
            inputs, labels = augment_rows(self.task, inputs, labels, self.rng)
        return inputs, labels, ex.puzzle_identifiers[idx]

    def state_dict(self) -> dict:
        # The numpy bit-generator state holds 128-bit ints: JSON text keeps it loadable with weights_only.
        return {"epoch": self.epoch, "pos": self.pos, "order": torch.from_numpy(self.order.copy()),
                "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.pos = int(state["pos"])
        self.order = state["order"].numpy().astype(np.int64)
        self.rng.bit_generator.state = json.loads(state["rng"])
