"""Held-out evaluation of a model folder: exact-answer accuracy, verified rate and ACT steps per tier,
with Q-head halting vs always `halt_max_steps`, and PTRM (K noisy trajectories, best final q_halt)
vs plain. Writes the JSON that `export` builds the card from.

Rows are independent (models/ contract), so one pass of `halt_max_steps` steps gives both policies:
the Q-head answer of a row is its answer at the first step where `model.halted` says stop.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import RecursiveModel, load_model
from models.checkpoint import confidence_temperature
from models.ptrm import ptrm_solve
from puzzles import get_codec
from training.calibration import calibration_report
from training.data import IGNORE_LABEL, load_examples


@dataclass
class PlainResult:
    final_tokens: np.ndarray  # [N, L] argmax after halt_max_steps steps
    halt_tokens: np.ndarray  # [N, L] argmax at the step the Q-head halted (or the last)
    halt_steps: np.ndarray  # [N] ACT steps the Q-head policy used
    final_q_halt: np.ndarray  # [N]
    halt_q_halt: np.ndarray  # [N] q_halt at the step the Q-head halted (or the last): what a server reports


@torch.inference_mode()
def run_plain(model: RecursiveModel, inputs: np.ndarray, ids: np.ndarray, batch_size: int = 64,
              steps: int | None = None) -> PlainResult:
    model.eval()
    steps = steps or model.config.halt_max_steps
    device = next(model.parameters()).device
    finals, halts, halt_steps, qs, h_qs = [], [], [], [], []
    for s in range(0, len(inputs), batch_size):
        inp = torch.as_tensor(inputs[s:s + batch_size], device=device)
        pid = torch.as_tensor(ids[s:s + batch_size], device=device)
        x = model.embed(inp, pid)
        z_H, z_L = model.initial_carry(inp.shape[0], device=device)
        done = torch.zeros(inp.shape[0], dtype=torch.bool, device=device)
        h_tok = torch.zeros(inp.shape, dtype=torch.long, device=device)
        h_steps = torch.full((inp.shape[0],), steps, dtype=torch.long, device=device)
        h_q = torch.zeros(inp.shape[0], dtype=torch.float32, device=device)
        for k in range(steps):
            out = model.act_step(x, z_H, z_L)
            z_H, z_L = out.z_H, out.z_L
            tok = out.logits.argmax(-1)
            stop = model.halted(out.q_halt, out.q_continue) | (k == steps - 1)
            new = stop & ~done
            h_tok[new] = tok[new]
            h_steps[new] = k + 1
            h_q[new] = out.q_halt.float()[new]
            done |= stop
        finals.append(tok.cpu().numpy())
        halts.append(h_tok.cpu().numpy())
        halt_steps.append(h_steps.cpu().numpy())
        qs.append(out.q_halt.float().cpu().numpy())
        h_qs.append(h_q.cpu().numpy())
    return PlainResult(np.concatenate(finals), np.concatenate(halts), np.concatenate(halt_steps), np.concatenate(qs),
                       np.concatenate(h_qs))


def puzzle_from_tokens(task: str, tokens: np.ndarray) -> Any:
    """The codec's puzzle for one encoded input row (so answers can be verified)."""
    codec = get_codec(task)
    if task == "sudoku":
        return codec.parse("".join("." if t <= 1 else str(int(t) - 1) for t in tokens))
    if task == "maze":
        from puzzles.maze import array_to_rows

        side = math.isqrt(len(tokens))
        grid = np.asarray(tokens).reshape(side, side)
        n = int((grid.sum(1) > 0).sum())  # rows of the maze on the canvas (PAD = 0 elsewhere)
        return codec.parse(list(array_to_rows(grid[:n, :n])))
    raise ValueError(f"no verifier wiring for task {task!r}")


def exact_rows(tokens: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row: every labelled position answered right (IGNORE_LABEL positions do not count)."""
    return np.all((tokens == labels) | (labels == IGNORE_LABEL), axis=1)


def _verified(task: str, puzzles: list[Any], tokens: np.ndarray) -> np.ndarray:
    codec = get_codec(task)
    out = []
    for p, t in zip(puzzles, tokens, strict=True):
        try:
            out.append(bool(codec.verify(p, codec.decode(t, p)).valid))
        except Exception:  # an undecodable answer is simply not verified
            out.append(False)
    return np.array(out, dtype=bool)


def evaluate_tier(model: RecursiveModel, task: str, data_root: Path, n: int, ptrm_k: list[int], ptrm_n: int,
                  sigma: float, noise_on: str, batch_size: int = 64, seed: int = 0,
                  temperature: float = 1.0) -> dict[str, Any]:
    ex = load_examples(data_root, "test")
    n = min(n, len(ex))
    inputs, labels, ids = ex.inputs[:n], ex.labels[:n], ex.puzzle_identifiers[:n]
    puzzles = [puzzle_from_tokens(task, row) for row in inputs]
    t0 = time.monotonic()
    res = run_plain(model, inputs, ids, batch_size=batch_size)
    plain_s = time.monotonic() - t0
    final_ok, halt_ok = exact_rows(res.final_tokens, labels), exact_rows(res.halt_tokens, labels)
    out: dict[str, Any] = {
        "n": n,
        "max_steps": {"exact": float(final_ok.mean()),
                      "verified": float(_verified(task, puzzles, res.final_tokens).mean()),
                      "mean_act_steps": float(model.config.halt_max_steps)},
        "q_halt": {"exact": float(halt_ok.mean()),
                   "verified": float(_verified(task, puzzles, res.halt_tokens).mean()),
                   "mean_act_steps": float(res.halt_steps.mean())},
        "q_halt_head_accuracy": float(((res.final_q_halt >= 0) == final_ok).mean()),
        # confidence = sigmoid(q_halt / T) of the answer reported, against "that answer is exactly right"
        "calibration": {"max_steps": calibration_report(res.final_q_halt, final_ok, temperature),
                        "q_halt": calibration_report(res.halt_q_halt, halt_ok, temperature)},
        "seconds_plain": round(plain_s, 1),
    }
    m = min(ptrm_n, n)
    for k in ptrm_k:
        if m == 0:
            break
        t0 = time.monotonic()
        chunk = max(1, batch_size // k)  # K rows per puzzle: keep about batch_size rows per call
        chosen = np.concatenate([
            ptrm_solve(model, inputs[s:min(m, s + chunk)], ids[s:min(m, s + chunk)], K=k, sigma=sigma,
                       noise_on=noise_on, seed=[seed + i for i in range(s, min(m, s + chunk))],
                       policy="best_q").tokens
            for s in range(0, m, chunk)
        ])
        out[f"ptrm_k{k}"] = {"n": m, "sigma": sigma, "noise_on": noise_on, "policy": "best_q",
                             "exact": float(exact_rows(chosen, labels[:m]).mean()),
                             "verified": float(_verified(task, puzzles[:m], chosen).mean()),
                             "plain_exact_same_rows": float(exact_rows(res.final_tokens[:m], labels[:m]).mean()),
                             "mean_act_steps": float(model.config.halt_max_steps),
                             "seconds": round(time.monotonic() - t0, 1)}
    return out


def tiers_of(heldout: Path) -> list[str]:
    spec = heldout / "tiers.json"
    if spec.exists():
        return list(json.loads(spec.read_text())["tiers"])
    return sorted(p.name for p in heldout.iterdir() if (p / "test" / "dataset.json").exists())


def evaluate(model_path: str | Path, heldout: str | Path, *, n: int = 200, ptrm_k: list[int] | None = None,
             ptrm_n: int = 50, sigma: float = 0.3, noise_on: str = "z_L", tiers: list[str] | None = None,
             threads: int | None = 1, device: str = "cpu", seed: int = 0,
             temperature: float | None = None) -> dict[str, Any]:
    """Per-tier figures; calibration uses `temperature`, else the model folder's `confidence_temperature`
    (written by `calibrate`), else 1 (raw sigmoid(q_halt))."""
    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(model_path, device=device)
    model, cfg = loaded.model, loaded.config
    task = cfg.task or "sudoku"
    heldout = Path(heldout)
    if temperature is None:
        temperature = confidence_temperature(model_path)
    result: dict[str, Any] = {"model": str(model_path), "version": loaded.version, "task": task,
                              "confidence_temperature": temperature,
                              "heldout": str(heldout), "halt_max_steps": cfg.halt_max_steps,
                              "forward_dtype": cfg.forward_dtype, "device": device, "threads": threads,
                              "tiers": {}}
    t0 = time.monotonic()
    for tier in tiers or tiers_of(heldout):
        result["tiers"][tier] = evaluate_tier(model, task, heldout / tier, n, ptrm_k or [], ptrm_n, sigma,
                                              noise_on, seed=seed, temperature=temperature)
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result
