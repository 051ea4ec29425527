"""Seeded generator of unique-solution 9x9 Sudoku at a requested difficulty tier.

Tiers (a puzzle belongs to a tier when BOTH its number of givens and the solver's ``guesses`` fall
in range; ``guesses`` = tentative assignments our solver makes to walk the whole search tree with
naked + hidden singles, see ``sudoku_solver``):

============  ===========  =============  ==============================================
tier          givens       guesses        what it means for a solver
============  ===========  =============  ==============================================
easy          36..45       0              singles alone solve it, many clues
medium        28..35       0              singles alone solve it, fewer clues
hard          22..30       2..9           needs search: a few branch points
extreme       17..30       >= 10          needs deep search (sudoku-extreme style)
============  ===========  =============  ==============================================

How (why it is fast): a complete grid comes from the solver seeded with one random box (the
top-left, a shuffled 1-9) and a shuffled search order. Easy/medium remove a random batch of cells at
once and then "repair": run singles propagation and, where it stalls, give back one stalled cell
from the solution and continue the same propagation state (deductions stay sound because the
solution satisfies every given). Hard and extreme remove a batch, repair uniqueness by giving back a
cell where two solutions differ, then remove the rest one at a time while the solution stays unique
(a minimal puzzle), and keep the result only if its rating lands in the tier. Expect roughly:
easy/medium hundreds per second, hard tens, extreme about ten per second on one CPU core.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from puzzles.sudoku_solver import _propagate, initial_candidates, random_full_grid, solve_digits

TIERS: tuple[str, ...] = ("easy", "medium", "hard", "extreme")


@dataclass(frozen=True)
class TierSpec:
    min_givens: int
    max_givens: int
    min_guesses: int
    max_guesses: int | None  # None = unbounded


TIER_SPECS: dict[str, TierSpec] = {
    "easy": TierSpec(36, 45, 0, 0),
    "medium": TierSpec(28, 35, 0, 0),
    "hard": TierSpec(22, 30, 2, 9),
    "extreme": TierSpec(17, 30, 10, None),
}

MAX_ATTEMPTS = 10_000  # a tier is never this rare; guards against an infinite loop on a bug


@dataclass(frozen=True)
class Generated:
    givens: tuple[int, ...]
    solution: tuple[int, ...]
    guesses: int


def as_random(rng_or_seed: int | random.Random | np.random.Generator | None) -> random.Random:
    """One seeded stdlib RNG from whatever the caller has (stdlib is faster per call than numpy)."""
    if isinstance(rng_or_seed, random.Random):
        return rng_or_seed
    if isinstance(rng_or_seed, np.random.Generator):
        return random.Random(int(rng_or_seed.integers(0, 2**63 - 1)))
    return random.Random(rng_or_seed)


def tier_of(givens: int, guesses: int) -> str | None:
    """The tier a (givens, guesses) pair belongs to, or None when it falls between tiers."""
    for name, spec in TIER_SPECS.items():
        hi = spec.max_guesses if spec.max_guesses is not None else guesses
        if spec.min_givens <= givens <= spec.max_givens and spec.min_guesses <= guesses <= hi:
            return name
    return None


def _singles_repair(solution: tuple[int, ...], givens: list[int], rng: random.Random) -> bool:
    """Add back stalled cells until singles solve the grid; False if the givens contradict."""
    cands = initial_candidates(givens)
    while cands is not None:
        open_cells = [i for i, m in enumerate(cands) if m & (m - 1)]
        if not open_cells:
            return True
        cell = rng.choice(open_cells)
        givens[cell] = solution[cell]
        cands[cell] = 1 << (solution[cell] - 1)
        if not _propagate(cands, [cell]):
            return False
    return False


def _singles_puzzle(rng: random.Random, spec: TierSpec) -> Generated | None:
    solution = random_full_grid(rng)
    target = rng.randint(spec.min_givens, spec.max_givens)
    givens = list(solution)
    for cell in rng.sample(range(81), 81 - target):
        givens[cell] = 0
    _singles_repair(solution, givens, rng)
    n = 81 - givens.count(0)
    if n > spec.max_givens:
        return None
    return Generated(tuple(givens), solution, 0)


def _minimal_puzzle(rng: random.Random, spec: TierSpec) -> Generated | None:
    solution = random_full_grid(rng)
    order = list(range(81))
    rng.shuffle(order)
    givens = list(solution)
    bulk = 81 - 32  # one uniqueness repair instead of ~50 separate checks
    for cell in order[:bulk]:
        givens[cell] = 0
    while True:
        res = solve_digits(givens, limit=2)
        if res.count == 1:
            break
        a, b = res.solutions[0], res.solutions[1]
        diff = [i for i in range(81) if a[i] != b[i]]
        cell = rng.choice(diff)
        givens[cell] = solution[cell]
    for cell in order:
        if not givens[cell]:
            continue
        givens[cell] = 0
        if solve_digits(givens, limit=2).count != 1:
            givens[cell] = solution[cell]
    n = 81 - givens.count(0)
    guesses = solve_digits(givens, limit=2).guesses
    if n < spec.min_givens or n > spec.max_givens or guesses < spec.min_guesses:
        return None
    if spec.max_guesses is not None and guesses > spec.max_guesses:
        return None
    return Generated(tuple(givens), solution, guesses)


def generate_digits(rng_or_seed: int | random.Random | np.random.Generator | None, tier: str) -> Generated:
    """A unique-solution puzzle in ``tier``; the same seed gives the same puzzle."""
    if tier not in TIER_SPECS:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
    rng = as_random(rng_or_seed)
    spec = TIER_SPECS[tier]
    make = _singles_puzzle if spec.max_guesses == 0 else _minimal_puzzle
    for _ in range(MAX_ATTEMPTS):
        out = make(rng, spec)
        if out is not None:
            return out
    raise RuntimeError(f"could not generate a {tier} puzzle in {MAX_ATTEMPTS} attempts")


