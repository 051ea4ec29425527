"""Reader and writer for the official on-disk dataset layout, plus the per-task dataset builders.

Layout (official-trm-hrm.md §4), so our trainer and the official one read the same files::

    <out>/identifiers.json                    list of names, index 0 = "<blank>"
    <out>/<split>/dataset.json                PuzzleDatasetMetadata (TRM fields, incl. total_puzzles)
    <out>/<split>/<set>__inputs.npy           [N_examples, seq_len] tokens
    <out>/<split>/<set>__labels.npy           [N_examples, seq_len] tokens
    <out>/<split>/<set>__puzzle_identifiers.npy  [N_puzzles] int32
    <out>/<split>/<set>__puzzle_indices.npy   [N_puzzles + 1] int32 example offsets
    <out>/<split>/<set>__group_indices.npy    [N_groups + 1] int32 puzzle offsets

A group is an original puzzle plus all its augmentations; in the official Sudoku and maze builders
each augmentation is its own puzzle with a single example.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ARRAY_NAMES = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")


@dataclass
class OfficialDataset:
    """One split of one set, arrays as stored (inputs/labels may be memory-mapped)."""

    metadata: dict[str, Any]
    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray
    identifiers: list[str]

    @property
    def num_examples(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_puzzles(self) -> int:
        return int(self.puzzle_identifiers.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.group_indices.shape[0] - 1)


def _token_dtype(vocab_size: int) -> type:
    # uint8 keeps a million-example Sudoku set at 160 MB; the official loaders cast to int32 anyway.
    return np.uint8 if vocab_size <= 256 else np.int32


def _check_offsets(name: str, offsets: np.ndarray, total: int) -> None:
    if offsets.ndim != 1 or offsets.shape[0] < 1 or offsets[0] != 0 or offsets[-1] != total:
        raise ValueError(f"{name} must start at 0 and end at {total}")
    if np.any(np.diff(offsets) <= 0):
        raise ValueError(f"{name} must be strictly increasing (no empty puzzle or group)")


def write_dataset(
    out_dir: str | Path,
    split: str,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    vocab_size: int,
    puzzle_indices: np.ndarray | None = None,
    group_indices: np.ndarray | None = None,
    puzzle_identifiers: np.ndarray | None = None,
    identifiers: Sequence[str] | None = None,
    num_puzzle_identifiers: int | None = None,
    pad_id: int = 0,
    ignore_label_id: int | None = 0,
    blank_identifier_id: int = 0,
    set_name: str = "all",
) -> Path:
    """Write one split. Defaults: every example its own puzzle, every puzzle its own group, id 0.

    ``identifiers`` (if given) is written to ``<out>/identifiers.json``; it must start with "<blank>".
    Returns the split directory.
    """
    inputs = np.asarray(inputs)
    labels = np.asarray(labels)
    if inputs.ndim != 2 or inputs.shape != labels.shape:
        raise ValueError(f"inputs {inputs.shape} and labels {labels.shape} must be the same [N, seq_len]")
    n, seq_len = inputs.shape
    if n == 0:
        raise ValueError("a dataset split needs at least one example")
    for name, arr in (("inputs", inputs), ("labels", labels)):
        if arr.min() < 0 or arr.max() >= vocab_size:
            raise ValueError(f"{name} tokens must lie in 0..{vocab_size - 1}")
    p_idx = np.arange(n + 1, dtype=np.int32) if puzzle_indices is None else np.asarray(puzzle_indices, np.int32)
    _check_offsets("puzzle_indices", p_idx, n)
    n_puzzles = p_idx.shape[0] - 1
    g_idx = (np.arange(n_puzzles + 1, dtype=np.int32) if group_indices is None
             else np.asarray(group_indices, np.int32))
    _check_offsets("group_indices", g_idx, n_puzzles)
    ids = (np.zeros(n_puzzles, np.int32) if puzzle_identifiers is None
           else np.asarray(puzzle_identifiers, np.int32))
    if ids.shape != (n_puzzles,):
        raise ValueError(f"puzzle_identifiers must have one entry per puzzle ({n_puzzles})")
    if identifiers is not None and (not identifiers or identifiers[0] != "<blank>"):
        raise ValueError('identifiers[0] must be "<blank>"')
    if num_puzzle_identifiers is None:
        num_puzzle_identifiers = len(identifiers) if identifiers is not None else int(ids.max()) + 1

    root = Path(out_dir)
    split_dir = root / split
    split_dir.mkdir(parents=True, exist_ok=True)
    dtype = _token_dtype(vocab_size)
    arrays = {"inputs": inputs.astype(dtype), "labels": labels.astype(dtype), "puzzle_identifiers": ids,
              "puzzle_indices": p_idx, "group_indices": g_idx}
    for name, arr in arrays.items():
        np.save(split_dir / f"{set_name}__{name}.npy", arr)
    metadata = {
        "pad_id": pad_id,
        "ignore_label_id": ignore_label_id,
        "blank_identifier_id": blank_identifier_id,
        "vocab_size": vocab_size,
        "seq_len": int(seq_len),
        "num_puzzle_identifiers": int(num_puzzle_identifiers),
        "total_groups": int(g_idx.shape[0] - 1),
        "mean_puzzle_examples": float(n / n_puzzles),
        "total_puzzles": int(n_puzzles),
        "sets": [set_name],
    }
    (split_dir / "dataset.json").write_text(json.dumps(metadata, indent=2))
    if identifiers is not None:
        (root / "identifiers.json").write_text(json.dumps(list(identifiers)))
    return split_dir


def read_dataset(path: str | Path, split: str, set_name: str | None = None, mmap: bool = False) -> OfficialDataset:
    """Read one split written by us or by the official builders (HRM ones lack total_puzzles: fine)."""
    root = Path(path)
    split_dir = root / split
    metadata = json.loads((split_dir / "dataset.json").read_text())
    name = set_name or metadata["sets"][0]
    mode = "r" if mmap else None
    arrays = {k: np.load(split_dir / f"{name}__{k}.npy", mmap_mode=mode if k in ("inputs", "labels") else None)
              for k in ARRAY_NAMES}
    ids_file = root / "identifiers.json"
    identifiers = json.loads(ids_file.read_text()) if ids_file.exists() else ["<blank>"]
    return OfficialDataset(metadata=metadata, identifiers=identifiers, **arrays)


# ------------------------------------------------------------------------------------------ builders


def build_sudoku_dataset(
    out_dir: str | Path,
    train: Sequence[Any] | tuple[np.ndarray, np.ndarray],
    test: Sequence[Any] | tuple[np.ndarray, np.ndarray] | None = None,
    *,
    num_aug: int = 0,
    seed: int = 0,
) -> Path:
    """Official Sudoku layout: each train puzzle + ``num_aug`` shuffles form a group (1 example per
    puzzle); the test split is not augmented. Puzzles are SudokuPuzzle objects with ``.solution`` or a
    pair of [N, 81] digit arrays (givens with 0 blanks, solutions)."""
    from puzzles.sudoku import augment_batch

    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    for split, data, aug in (("train", train, num_aug), ("test", test, 0)):
        if data is None:
            continue
        givens, solutions = _sudoku_arrays(data)
        n = givens.shape[0]
        if aug:
            rep_g = np.repeat(givens, aug, axis=0)
            rep_s = np.repeat(solutions, aug, axis=0)
            aug_g, aug_s = augment_batch(rep_g, rep_s, rng)
            # per group: the original first, then its augmentations
            inputs = np.concatenate([givens[:, None], aug_g.reshape(n, aug, 81)], axis=1).reshape(-1, 81)
            labels = np.concatenate([solutions[:, None], aug_s.reshape(n, aug, 81)], axis=1).reshape(-1, 81)
        else:
            inputs, labels = givens, solutions
        per_group = 1 + aug
        write_dataset(root, split, inputs + 1, labels + 1, vocab_size=11,
                      group_indices=np.arange(0, n * per_group + 1, per_group),
                      identifiers=["<blank>"], num_puzzle_identifiers=1)
    return root


def _sudoku_arrays(data: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
        return np.asarray(data[0], np.int64).reshape(-1, 81), np.asarray(data[1], np.int64).reshape(-1, 81)
    from puzzles.sudoku import solve_digits

    givens, solutions = [], []
    for p in data:
        sol = p.solution if p.solution is not None else solve_digits(p.givens, limit=1).solutions[0]
        givens.append(p.givens)
        solutions.append(sol)
    return np.asarray(givens, np.int64), np.asarray(solutions, np.int64)


def build_maze_dataset(
    out_dir: str | Path,
    train: Sequence[Any],
    test: Sequence[Any] | None = None,
    *,
    aug: bool = False,
    seq_len: int = 900,
) -> Path:
    """Official maze layout (vocab 6, one identifier). With ``aug`` each train maze's 8 dihedral
    versions form its group (official ``--aug``; off by default there too); test is not augmented.
    Puzzles are MazePuzzle objects (``.solution`` is computed by BFS when missing)."""
    from puzzles.maze import CODEC as MAZE
    from puzzles.maze import augment

    root = Path(out_dir)
    for split, data, use_aug in (("train", train, aug), ("test", test, False)):
        if data is None:
            continue
        versions = range(8) if use_aug else range(1)
        inputs, labels = [], []
        for puzzle in data:
            for t in versions:
                p = augment(puzzle, t) if t else puzzle
                inputs.append(MAZE.encode(p, seq_len))
                labels.append(MAZE.encode_label(p, seq_len))
        per_group = len(versions)
        write_dataset(root, split, np.stack(inputs), np.stack(labels), vocab_size=6,
                      group_indices=np.arange(0, len(data) * per_group + 1, per_group),
                      identifiers=["<blank>"], num_puzzle_identifiers=1)
    return root
