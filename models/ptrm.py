"""PTRM: test-time sampling for recursive models (arXiv 2605.19943). Inference only.

A plain TRM run is deterministic. PTRM runs K copies of a puzzle side by side as K batch rows
(trajectories) and adds Gaussian noise `sigma * N(0, I)` to the latent carry at the start of every
ACT (deep recursion) step, so the copies explore different fixed points. The model's own Q-head
then picks one answer (best-Q), or the answers vote, or an exact verifier picks the first valid one.

Settings and their defaults:
- `sigma`: noise scale. Reported per task: Sudoku-Extreme 0.3, Maze-Hard 1.0, ARC-AGI-2 0.2
  (`DEFAULT_SIGMA`); sigma == 0 is plain TRM exactly.
- `noise_on`: which latent receives the noise. `"z_L"` (the reasoning latent z, what most sources
  describe) is the default; `"z_H"` (the answer latent) and `"both"` are options.
- Noise is drawn once per step for all K rows of one request from that request's own seeded
  `torch.Generator`, so the same seed gives the same answer whatever else shares the batch.

`ptrm_solve` is the offline reference; the engine reproduces it row by row (its draws are the
same: one `inject_noise` call per request and step, on the request's K rows in trajectory order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.recursive import RecursiveModel

NOISE_TARGETS = ("z_L", "z_H", "both")
DEFAULT_NOISE_ON = "z_L"
DEFAULT_SIGMA = {"sudoku": 0.3, "maze": 1.0, "arc": 0.2}
SELECTION_POLICIES = ("best_q", "vote", "verifier_first")
DEFAULT_POLICY = "best_q"


def inject_noise(z_H: torch.Tensor, z_L: torch.Tensor, sigma: float, noise_on: str,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Add `sigma * N(0, I)` to the chosen latent(s) of one request's rows.

    Noise is drawn in float32 on the generator's device (so a seed gives the same draws in any
    forward dtype), then rounded to the carry's dtype and added. With "both", z_H's draw comes
    first. A latent that gets no noise is returned as the very same tensor object, and sigma == 0
    returns both inputs unchanged and draws nothing.
    """
    targets = noise_targets(noise_on, sigma)
    if "z_H" in targets:
        z_H = z_H + draw_noise(z_H.shape, sigma, z_H.dtype, z_H.device, generator)
    if "z_L" in targets:
        z_L = z_L + draw_noise(z_L.shape, sigma, z_L.dtype, z_L.device, generator)
    return z_H, z_L


def noise_targets(noise_on: str, sigma: float) -> tuple[str, ...]:
    """The latents that get noise, in draw order (z_H first with "both"); none when sigma == 0."""
    if noise_on not in NOISE_TARGETS:
        raise ValueError(f"noise_on must be one of {NOISE_TARGETS}, not {noise_on!r}")
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, not {sigma!r}")
    if sigma == 0:
        return ()
    return ("z_H", "z_L") if noise_on == "both" else (noise_on,)


def draw_noise(shape: Sequence[int], sigma: float, dtype: torch.dtype, device: torch.device | str,
               generator: torch.Generator) -> torch.Tensor:
    """`sigma * N(0, I)` of `shape`, drawn in float32 on the generator's device, rounded to `dtype` on `device`:
    the term `inject_noise` adds (the engine adds it to its rows in place, drawing the same numbers)."""
    eps = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return (sigma * eps).to(device=device, dtype=dtype)


def select_trajectory(policy: str, answer_keys: Sequence[Hashable], q_halt: Sequence[float],
                      valid: Sequence[bool] | None = None) -> int:
    """Index of the chosen trajectory among K.

    - best_q: the largest final q_halt logit (the earliest on ties).
    - vote: answers (equal keys) pool the weights sigmoid(q_halt) of their trajectories; the
      heaviest answer wins (the earliest-seen on ties), represented by its own best-q trajectory.
    - verifier_first: the first trajectory whose answer is valid; best_q when none is (or `valid`
      is not given).
    """
    k = len(q_halt)
    if k == 0:
        raise ValueError("no trajectories to select from")
    if len(answer_keys) != k or (valid is not None and len(valid) != k):
        raise ValueError(f"answer_keys ({len(answer_keys)}), q_halt ({k}) and valid "
                         f"({None if valid is None else len(valid)}) must have one entry per trajectory")
    q = [float(v) for v in q_halt]

    def best_of(indices: Sequence[int]) -> int:
        return max(indices, key=lambda i: (q[i], -i))

    if policy == "best_q":
        return best_of(range(k))
    if policy == "vote":
        weight: dict[Hashable, float] = {}
        members: dict[Hashable, list[int]] = {}
        for i, key in enumerate(answer_keys):
            weight[key] = weight.get(key, 0.0) + _sigmoid(q[i])
            members.setdefault(key, []).append(i)
        winner = max(weight, key=weight.__getitem__)  # dicts keep first-seen order: ties go to the earliest
        return best_of(members[winner])
    if policy == "verifier_first":
        if valid is not None:
            for i, ok in enumerate(valid):
                if ok:
                    return i
        return best_of(range(k))
    raise ValueError(f"unknown selection policy {policy!r}; use one of {SELECTION_POLICIES}")


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


@dataclass
class PTRMResult:
    tokens: np.ndarray  # [N, L] the chosen trajectory's argmax tokens per puzzle
    chosen: list[int]  # [N] index of the chosen trajectory
    q_halt: np.ndarray  # [N, K] final-step q_halt logits of every trajectory
    trajectory_tokens: np.ndarray  # [N, K, L]
    valid: np.ndarray | None  # [N, K] verifier verdicts, when a verifier was given


@torch.inference_mode()
def ptrm_solve(model: RecursiveModel, inputs: torch.Tensor | np.ndarray, puzzle_identifiers: torch.Tensor | np.ndarray,
               *, K: int, sigma: float, noise_on: str = DEFAULT_NOISE_ON, steps: int | None = None,
               seed: int | Sequence[int] = 0, policy: str = DEFAULT_POLICY,
               decode: Callable[[np.ndarray], Any] | None = None,
               verify: Callable[[np.ndarray], bool] | None = None) -> PTRMResult:
    """Offline PTRM: K noisy trajectories per puzzle for exactly `steps` ACT steps, then selection.

    `inputs` [N, L] tokens and `puzzle_identifiers` [N]. Puzzle i gets its own generator seeded
    with `seed` (an int: the same for every puzzle, as N separate requests with that seed would) or
    `seed[i]`. `decode(tokens)` maps a trajectory's tokens to the answer that votes (default: the
    tokens themselves); `verify(tokens)` says whether an answer is valid (needed by verifier_first).
    """
    if K < 1:
        raise ValueError(f"K must be >= 1, not {K}")
    if policy not in SELECTION_POLICIES:
        raise ValueError(f"unknown selection policy {policy!r}; use one of {SELECTION_POLICIES}")
    if policy == "verifier_first" and verify is None:
        raise ValueError("policy 'verifier_first' needs a verify function")
    noise_targets(noise_on, sigma)  # checks both up front: with sigma 0 no step would
    steps = model.config.halt_max_steps if steps is None else steps
    device = next(model.parameters()).device
    inputs = torch.as_tensor(inputs, device=device)
    ids = torch.as_tensor(puzzle_identifiers, device=device)
    n = inputs.shape[0]
    seeds = [seed] * n if isinstance(seed, int) else list(seed)
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} puzzles")
    generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    # Puzzle i owns rows i*K .. i*K+K-1 (trajectory order).
    x = model.embed(inputs, ids).repeat_interleave(K, dim=0)
    z_H, z_L = model.initial_carry(n * K, device=device)
    out = None
    for _ in range(steps):
        if sigma > 0:
            parts = [inject_noise(z_H[i * K:(i + 1) * K], z_L[i * K:(i + 1) * K], sigma, noise_on, g)
                     for i, g in enumerate(generators)]
            z_H = torch.cat([p[0] for p in parts])
            z_L = torch.cat([p[1] for p in parts])
        out = model.act_step(x, z_H, z_L)
        z_H, z_L = out.z_H, out.z_L
    if out is None:
        raise ValueError("steps must be >= 1")

    tokens = out.logits.argmax(-1).cpu().numpy().reshape(n, K, -1)
    q_halt = out.q_halt.float().cpu().numpy().reshape(n, K)
    valid = np.array([[bool(verify(t)) for t in row] for row in tokens]) if verify is not None else None
    chosen = []
    for i in range(n):
        keys = [_hashable(decode(t)) if decode is not None else t.tobytes() for t in tokens[i]]
        chosen.append(select_trajectory(policy, keys, q_halt[i].tolist(), None if valid is None else valid[i]))
    return PTRMResult(tokens=tokens[np.arange(n), chosen], chosen=chosen, q_halt=q_halt,
                      trajectory_tokens=tokens, valid=valid)


def _hashable(answer: Any) -> Hashable:
    """Vote key for a decoded answer: arrays and nested lists become bytes / tuples."""
    if isinstance(answer, np.ndarray):
        return (answer.shape, answer.tobytes())
    if isinstance(answer, list | tuple):
        return tuple(_hashable(a) for a in answer)
    return answer
