"""Training and held-out sets from the seeded `puzzles/` generators, in the official layout.

    <out>/train/...            training examples (official layout; augmented on the fly by the trainer)
    <out>/heldout/<tier>/test/ one official-layout test split per difficulty tier
    <out>/heldout/tiers.json   tier names and how each was generated
    <out>/manifest.json        seeds, counts and the overlap check result

Train and held-out puzzles come from disjoint seeds, and every held-out puzzle's canonical string is
checked against the training set: any overlap is an error (the held-out figures would be inflated).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from puzzles import get_codec
from puzzles.dataset import build_maze_dataset, build_sudoku_dataset
from puzzles.maze import MazePuzzle, augment

TRAIN_SEED = 1_000
HELDOUT_SEED = 9_000_000  # far from TRAIN_SEED: the streams never share a seed


class OverlapError(RuntimeError):
    """A held-out puzzle also appears in the training data."""


def check_no_overlap(train_keys: Iterable[str], heldout: dict[str, Iterable[str]]) -> dict[str, int]:
    """Raise OverlapError if any held-out canonical string is in the training set; else sizes per tier."""
    train = set(train_keys)
    sizes = {}
    for tier, keys in heldout.items():
        keys = list(keys)
        shared = train.intersection(keys)
        if shared:
            raise OverlapError(f"{len(shared)} held-out {tier!r} puzzle(s) also in the training data, "
                               f"e.g. {sorted(shared)[0]!r}")
        sizes[tier] = len(set(keys))
    return sizes


def maze_orbit(puzzle: MazePuzzle) -> list[str]:
    """A maze's canonical text under the 8 rotations and reflections the trainer applies to training mazes."""
    codec = get_codec("maze")
    return [codec.canonical(augment(puzzle, t)) for t in range(8)]


def _sudoku_keys(givens: np.ndarray) -> list[str]:
    codec = get_codec("sudoku")
    return [codec.canonical(codec.parse("".join(str(int(d)) if d else "." for d in row))) for row in givens]


def make_sudoku(out: Path, train_counts: dict[str, int], heldout_count: int | dict[str, int], seed: int = TRAIN_SEED,
                heldout_seed: int = HELDOUT_SEED) -> dict[str, Any]:
    from puzzles.sudoku import TIERS, generate_batch

    g_parts, s_parts, train_tiers = [], [], {}
    for i, (tier, n) in enumerate(train_counts.items()):
        if n <= 0:
            continue
        g, s = generate_batch(seed + i, tier, n)
        g_parts.append(g)
        s_parts.append(s)
        train_tiers[tier] = {"count": n, "seed": seed + i}
    givens, solutions = np.concatenate(g_parts), np.concatenate(s_parts)
    # the trainer samples uniformly: shuffle once so the layout does not group tiers
    order = np.random.default_rng(seed).permutation(len(givens))
    givens, solutions = givens[order], solutions[order]
    heldout, tiers_info = {}, {}
    counts = heldout_count if isinstance(heldout_count, dict) else dict.fromkeys(TIERS, heldout_count)
    for i, tier in enumerate(TIERS):
        if counts.get(tier, 0) <= 0:
            continue
        heldout[tier] = generate_batch(heldout_seed + i, tier, counts[tier])
        tiers_info[tier] = {"count": counts[tier], "seed": heldout_seed + i}
    sizes = check_no_overlap(_sudoku_keys(givens), {t: _sudoku_keys(g) for t, (g, _) in heldout.items()})
    build_sudoku_dataset(out, (givens, solutions))
    for tier, pair in heldout.items():
        build_sudoku_dataset(out / "heldout" / tier, (pair[0][:1], pair[1][:1]), pair)
    return _finish(out, "sudoku", train_tiers, tiers_info, sizes, len(givens))


def _maze_batch(seed: int, size: int | Sequence[int], n: int, lo: int, hi: int | None, loops: float) -> list[Any]:
    """`n` seeded mazes; with several sizes each maze's side is drawn from them (uniformly, same seed)."""
    from puzzles.maze import generate

    rng = random.Random(seed)
    sides = [size] if isinstance(size, int) else list(size)
    # one size draws nothing extra from rng, so single-size sets stay the mazes earlier versions generated
    return [generate(rng, rng.choice(sides) if len(sides) > 1 else sides[0], min_path_len=lo, max_path_len=hi,
                     loops=loops) for _ in range(n)]


def make_maze(out: Path, size: int, train_count: int, heldout_count: int, tiers: dict[str, tuple[int, int | None]],
              loops: float = 0.0, seed: int = TRAIN_SEED, heldout_seed: int = HELDOUT_SEED,
              train_min_path: int = 1, sizes: Sequence[int] | None = None,
              drop_rotations: bool = True) -> dict[str, Any]:
    """Mazes on a size x size canvas. With `sizes`, training mazes have sides drawn from them (each sits in the
    canvas's top-left corner with PAD around it, as the server encodes it), and there is one held-out tier per
    side (`side9`, ...) instead of the path-length `tiers`. `drop_rotations` False keeps training mazes that are
    a rotation or reflection of a held-out one (only exact copies go): for sides so small (5) that every maze
    is one, where a run measures learning rather than generalisation."""
    codec = get_codec("maze")
    seq_len = size * size
    if sizes:
        if max(sizes) > size:
            raise ValueError(f"maze sides {sorted(sizes)} do not fit the {size}x{size} canvas")
        tiers = {f"side{s}": (1, None) for s in sorted(sizes)}
        tier_size: dict[str, Any] = {f"side{s}": s for s in sizes}
    else:
        tier_size = dict.fromkeys(tiers, size)
    heldout = {tier: _maze_batch(heldout_seed + i, tier_size[tier], heldout_count, lo, hi, loops)
               for i, (tier, (lo, hi)) in enumerate(tiers.items())}
    # Small mazes repeat, and the trainer shows each training maze under one of the 8 rotations and reflections
    # (training/data.py): drop training mazes that a held-out maze is, or is a rotation or reflection of (the
    # checks below stay the guard).
    def keys(p: MazePuzzle) -> list[str]:
        return maze_orbit(p) if drop_rotations else [codec.canonical(p)]

    held_keys = {k for ps in heldout.values() for p in ps for k in keys(p)}
    generated = _maze_batch(seed, sizes or size, train_count, train_min_path, None, loops)
    train = [p for p in generated if codec.canonical(p) not in held_keys]
    train_count = len(train)
    train_keys = [codec.canonical(p) for p in train]
    check_no_overlap(train_keys, {t: [k for p in ps for k in keys(p)] for t, ps in heldout.items()})
    unique = check_no_overlap(train_keys, {t: [codec.canonical(p) for p in ps] for t, ps in heldout.items()})
    build_maze_dataset(out, train, seq_len=seq_len)
    tiers_info = {}
    for i, (tier, puzzles) in enumerate(heldout.items()):
        build_maze_dataset(out / "heldout" / tier, puzzles[:1], puzzles, seq_len=seq_len)
        lo, hi = tiers[tier]
        tiers_info[tier] = {"count": heldout_count, "seed": heldout_seed + i, "size": tier_size[tier], "canvas": size,
                            "min_path_len": lo, "max_path_len": hi, "loops": loops}
    train_info = {"all": {"count": train_count, "generated": len(generated), "seed": seed,
                          "size": sorted(sizes) if sizes else size, "canvas": size,
                          "loops": loops, "min_path_len": train_min_path,
                          "dropped_as_heldout": len(generated) - train_count, "drop_rotations": drop_rotations}}
    return _finish(out, "maze", train_info, tiers_info, unique, train_count)


def _finish(out: Path, task: str, train_info: dict, tiers_info: dict, sizes: dict, n_train: int) -> dict[str, Any]:
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    (out / "heldout" / "tiers.json").write_text(json.dumps({"tiers": list(tiers_info), "info": tiers_info}, indent=2))
    manifest = {"task": task, "train": train_info, "train_examples": n_train, "heldout": tiers_info,
                "overlap_check": {"method": "canonical puzzle string", "shared": 0, "unique_heldout": sizes}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
