"""ARC augmentation (dihedral + colour permutation) with exact inverses, and the official vote.

Forward: ``dihedral(perm[grid], t)``; inverse: ``argsort(perm)[inverse_dihedral(grid, t)]``, with colour
0 (black) never permuted (official-trm-hrm.md §4.3). Augmented puzzle names follow the TRM builder,
``"{id}|||t{t}|||{perm digits}"``; HRM's ``"{id}_t{t}_{perm}"`` is read too, so predictions from either
code base can be de-augmented. Voting (§4.4): predictions for one test input, each de-augmented,
are grouped by grid; groups rank by (count, mean q) descending, q = sigmoid(last q_halt logit) in float64.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from puzzles.arc import ArcPuzzle, Grid, as_grid
from puzzles.dihedral import dihedral, inverse_dihedral

IDENTITY = np.arange(10, dtype=np.int64)
SEP = "|||"
_HRM_NAME = re.compile(r"^(?P<id>.+)_t(?P<t>[0-7])_(?P<perm>\d{10})$")


@dataclass(frozen=True)
class Augmentation:
    t: int = 0
    perm: tuple[int, ...] = tuple(range(10))

    @property
    def is_identity(self) -> bool:
        return self.t == 0 and self.perm == tuple(range(10))


def random_augmentation(rng: np.random.Generator) -> Augmentation:
    perm = np.concatenate([[0], rng.permutation(9) + 1])
    return Augmentation(int(rng.integers(0, 8)), tuple(int(v) for v in perm))


def apply_aug(grid: np.ndarray, aug: Augmentation) -> np.ndarray:
    return dihedral(np.asarray(aug.perm, dtype=np.int64)[np.asarray(grid)], aug.t)


def invert_aug(grid: np.ndarray, aug: Augmentation) -> np.ndarray:
    return np.argsort(np.asarray(aug.perm, dtype=np.int64))[inverse_dihedral(np.asarray(grid), aug.t)]


def augment_puzzle(puzzle: ArcPuzzle, aug: Augmentation) -> ArcPuzzle:
    """Every grid of the task (train and test, outputs included) under the same augmentation."""
    def m(g: Grid | None) -> Grid | None:
        return None if g is None else as_grid(apply_aug(np.asarray(g), aug))

    return ArcPuzzle(tuple((m(i), m(o)) for i, o in puzzle.train),  # type: ignore[misc]
                     tuple((m(i), m(o)) for i, o in puzzle.test),  # type: ignore[misc]
                     puzzle.test_index,
                     None if puzzle.task_id is None else aug_name(puzzle.task_id, aug))


def aug_name(task_id: str, aug: Augmentation) -> str:
    """TRM's identifier for an augmented version; the original keeps its bare id."""
    if aug.is_identity:
        return task_id
    return f"{task_id}{SEP}t{aug.t}{SEP}{''.join(str(v) for v in aug.perm)}"


def parse_aug_name(name: str) -> tuple[str, Augmentation]:
    """(original id, augmentation) from a TRM or HRM augmented name; a bare id is the identity."""
    parts = name.split(SEP)
    if len(parts) == 3 and re.fullmatch(r"t[0-7]", parts[1]) and re.fullmatch(r"\d{10}", parts[2]):
        return parts[0], Augmentation(int(parts[1][1]), tuple(int(c) for c in parts[2]))
    m = _HRM_NAME.match(name)
    if m:
        return m["id"], Augmentation(int(m["t"]), tuple(int(c) for c in m["perm"]))
    return name, Augmentation()


def sigmoid(x: float) -> float:
    """q from a q_halt logit, in float64 as the official evaluator computes it."""
    return float(1.0 / (1.0 + np.exp(-np.float64(x))))


@dataclass(frozen=True)
class Vote:
    grid: Grid
    count: int
    mean_q: float


def vote(candidates: Iterable[tuple[Grid | np.ndarray, float]]) -> list[Vote]:
    """Rank de-augmented predictions by (count, mean q), descending; the first is the answer.

    Ties in both keys keep first-seen order (Python's sort is stable), which makes the result
    deterministic for a given prediction order.
    """
    groups: dict[Grid, list[float]] = {}
    for grid, q in candidates:
        key = grid if isinstance(grid, tuple) else as_grid(grid)
        groups.setdefault(key, []).append(float(q))
    votes = [Vote(g, len(qs), float(np.mean(np.asarray(qs, dtype=np.float64)))) for g, qs in groups.items()]
    votes.sort(key=lambda v: (v.count, v.mean_q), reverse=True)
    return votes


def pass_at_k(votes: list[Vote], expected: Grid, k: int) -> bool:
    """Whether the expected grid is among the top ``k`` voted answers."""
    return any(v.grid == expected for v in votes[:k])
