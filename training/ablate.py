"""Short one-thread ablation runs of the training recipe on a tiny maze task (training/ATTENTION.md).

    python -m training.ablate --steps 600 --set lr=1e-3 --set model.pos_encodings=rope

Each run: make (once, cached) a 7x7 maze set, train a tiny TRM with the project's Trainer for `--steps`
optimiser steps from a fixed seed, then report held-out exact accuracy (always halt_max_steps ACT steps)
of the EMA weights. One JSON line per run, so experiments can be compared one difference at a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import TrainConfig
from training.data import load_examples
from training.evaluate import exact_rows, run_plain
from training.make_data import make_maze
from training.trainer import Trainer

# A tiny attention TRM: 2 layers, hidden 64, 4 heads, 2x2 cycles (6 network calls per ACT step).
TINY_ATT: dict[str, Any] = {"arch": "trm", "task": "maze", "hidden_size": 64, "num_heads": 4, "expansion": 2,
                            "H_cycles": 2, "L_cycles": 2, "L_layers": 2, "pos_encodings": "rope",
                            "puzzle_emb_ndim": 64, "puzzle_emb_len": 1, "halt_max_steps": 4,
                            "forward_dtype": "bfloat16"}
TINY_RECIPE: dict[str, Any] = {"batch_size": 32, "lr": 1e-3, "lr_warmup_steps": 50, "weight_decay": 0.1,
                               "ema_rate": 0.99, "loss": "stablemax", "eval_every_minutes": 0, "log_every": 50,
                               "checkpoint_every_minutes": 1e9, "threads": 1}


def tiny_maze_data(root: Path, size: int = 7, train_count: int = 2000, heldout_count: int = 200,
                   drop_rotations: bool = True) -> Path:
    """Cached tiny maze set: `train/` plus one held-out tier `heldout/all/` of mazes not in training, nor (with
    `drop_rotations`, see make_maze) rotated or reflected there."""
    out = root / f"maze{size}-{train_count}-{heldout_count}{'' if drop_rotations else '-rot'}"
    manifest = out / "manifest.json"
    # A set cached before make_maze dropped rotations has the same name: its manifest does not say drop_rotations.
    cached = json.loads(manifest.read_text()).get("train", {}).get("all", {}) if manifest.exists() else {}
    if cached.get("drop_rotations") != drop_rotations:
        shutil.rmtree(out, ignore_errors=True)
        make_maze(out, size, train_count, heldout_count, {"all": (1, None)}, seed=11, heldout_seed=9_100_000,
                  drop_rotations=drop_rotations)
    return out


def _set(cfg: dict[str, Any], key: str, raw: str) -> None:
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:  # a bare word such as rope / learned / float32
        value = raw
    target = cfg
    *path, last = key.split(".")
    for p in path:
        target = target[p]
    target[last] = value


def run(steps: int, overrides: list[str], data: Path, runs: Path, seed: int = 0,
        fresh_carry: bool = False, stagger: bool = False, no_halting: bool = False) -> dict[str, Any]:
    cfg: dict[str, Any] = {"name": "ablate", "model": dict(TINY_ATT), "data_dir": str(data), "runs_dir": str(runs),
                           "max_steps": steps, "seed": seed} | TINY_RECIPE
    for item in overrides:
        key, raw = item.split("=", 1)
        _set(cfg, key, raw)
    trainer = Trainer(TrainConfig.model_validate(cfg))
    if fresh_carry:  # diagnostic: every training step starts from H_init / L_init (no carried state)
        step = trainer.train_step

        def fresh_step() -> dict[str, float]:
            trainer.z_H, trainer.z_L = trainer.model.initial_carry(cfg["batch_size"])
            return step()

        trainer.train_step = fresh_step  # type: ignore[method-assign]
    if no_halting:  # diagnostic: training rows halt only at halt_max_steps (no Q-head halts, no exploration)
        trainer.cfg = trainer.cfg.model_copy(update={"halt_exploration_prob": 0.0})
        trainer.model.halted = lambda q_halt, q_continue: torch.zeros_like(q_halt, dtype=torch.bool)
    if stagger:  # diagnostic: rows start at staggered ACT depths, so each step refills ~B/K rows, not all B at once
        trainer._refill()
        trainer.steps = torch.arange(cfg["batch_size"]) % trainer.model.config.halt_max_steps
        trainer.halted[:] = False
    t0 = time.monotonic()
    last = trainer.fit(progress=False)
    train_s = time.monotonic() - t0
    held = load_examples(data / "heldout" / "all", "test")
    model = trainer.ema_model()
    res = run_plain(model, held.inputs, held.puzzle_identifiers)
    exact = float(np.mean(exact_rows(res.final_tokens, held.labels)))
    flags = [n for n, on in (("fresh_carry", fresh_carry), ("stagger", stagger), ("no_halting", no_halting)) if on]
    return {"overrides": overrides + flags, "steps": steps, "seed": seed,
            "heldout_exact": round(exact, 4),
            "train_exact_last": round(last.get("exact_acc", float("nan")), 4),
            "train_token_acc_last": round(last.get("token_acc", float("nan")), 4), "train_seconds": round(train_s, 1),
            "z_H_position_share": position_share(model, held.inputs[:32], held.puzzle_identifiers[:32])}


@torch.inference_mode()
def position_share(model, inputs: np.ndarray, ids: np.ndarray) -> list[float]:
    """Per ACT step, the share of z_H's energy that differs between positions (1 - the common vector's share).

    Near 0 means every position holds almost the same state: the answer head cannot tell cells apart."""
    x = model.embed(torch.as_tensor(inputs), torch.as_tensor(ids))
    z_H, z_L = model.initial_carry(len(inputs))
    out = []
    for _ in range(model.config.halt_max_steps):
        step = model.act_step(x, z_H, z_L)
        z_H, z_L = step.z_H, step.z_L
        t = z_H[:, model.config.P:].float()
        out.append(round(float((t - t.mean(1, keepdim=True)).pow(2).mean() / t.pow(2).mean()), 3))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--set", action="append", default=[], help="cfg key=value (model.* for the model config)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", type=Path, default=Path("data/ablate"))
    ap.add_argument("--size", type=int, default=7, help="maze side")
    ap.add_argument("--fresh-carry", action="store_true", help="diagnostic: no carried z between steps")
    ap.add_argument("--stagger", action="store_true", help="diagnostic: rows start at staggered ACT depths")
    ap.add_argument("--no-halting", action="store_true", help="diagnostic: rows halt only at halt_max_steps")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = tiny_maze_data(args.data_root, size=args.size)
    with tempfile.TemporaryDirectory() as runs:
        result = run(args.steps, args.set, data, Path(runs), args.seed, args.fresh_carry, args.stagger,
                     args.no_halting)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
