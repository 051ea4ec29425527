"""float32 vs bfloat16 on this CPU: speed of one eager ACT step, and the effect on answers.

Speed: TRM-MLP Sudoku (H3/L6, 2 layers, P=16) at hidden 64/128/256/512, eager torch, the two
dtypes measured alternately (so background load hits both alike); only the ratio within one run
means anything on a shared machine. Answers: each official fixture run 16 steps in its own dtype
and in the other one, argmax agreement of the final predictions; and the same for every folder
under weights/ whose task we can generate puzzles for (Sudoku, maze), with the solve rate.

    nice -n 10 .venv/bin/python bench/models_dtype.py [--quick]

Writes bench/results/models-dtype-<host>.json and prints tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import time
from pathlib import Path

import numpy as np
import torch

from models import ModelConfig, build_model, load_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "official"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def sudoku_mlp(hidden: int, dtype: str) -> ModelConfig:
    return ModelConfig(arch="trm", task="sudoku", seq_len=81, vocab_size=11, hidden_size=hidden, num_heads=8,
                       H_cycles=3, L_cycles=6, L_layers=2, puzzle_emb_ndim=hidden, puzzle_emb_len=16,
                       pos_encodings="none", mlp_t=True, forward_dtype=dtype)


@torch.inference_mode()
def step_seconds(models: dict[str, torch.nn.Module], batch: int, budget_s: float) -> dict[str, float]:
    """Best (minimum) seconds per ACT step for each dtype, the dtypes interleaved round by round.

    The minimum, not the median: on a shared CPU the slow samples measure the neighbours."""
    data = {}
    for name, m in models.items():
        x = m.embed(torch.randint(1, 11, (batch, 81)), torch.zeros(batch, dtype=torch.int32))
        data[name] = (x, *m.initial_carry(batch))
        m.act_step(*data[name])  # warm-up (allocator, oneDNN primitive cache)
    times: dict[str, list[float]] = {n: [] for n in models}
    start = time.perf_counter()
    while len(times[next(iter(models))]) < 3 or (time.perf_counter() - start < budget_s
                                                  and len(times[next(iter(models))]) < 30):
        for name, m in models.items():
            t0 = time.perf_counter()
            m.act_step(*data[name])
            times[name].append(time.perf_counter() - t0)
    return {n: min(v) for n, v in times.items()}


def speed(quick: bool) -> list[dict]:
    rows = []
    plan = {64: (1, 8, 32), 128: (1, 8, 32), 256: (1, 8, 32), 512: (1, 8)}
    for hidden, batches in plan.items():
        torch.manual_seed(0)
        base = build_model(sudoku_mlp(hidden, "float32")).eval()
        models = {"float32": base}
        bf = build_model(sudoku_mlp(hidden, "bfloat16")).eval()
        bf.load_state_dict(base.state_dict())
        models["bfloat16"] = bf
        for batch in batches:
            budget = (0.6 if quick else 2.0) * (1 if hidden < 512 else 2)
            sec = step_seconds(models, batch, budget)
            row = {"hidden": hidden, "batch": batch,
                   "fp32_steps_per_s": 1 / sec["float32"], "bf16_steps_per_s": 1 / sec["bfloat16"],
                   "bf16_speedup": sec["float32"] / sec["bfloat16"]}
            rows.append(row)
            print(f"hidden {hidden:4d} batch {batch:3d}: fp32 {row['fp32_steps_per_s']:8.2f} steps/s  "
                  f"bf16 {row['bf16_steps_per_s']:8.2f} steps/s  bf16/fp32 {row['bf16_speedup']:.2f}x", flush=True)
    return rows


@torch.inference_mode()
def run_steps(model, inputs: np.ndarray, ids: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    x = model.embed(torch.from_numpy(inputs.astype(np.int32)), torch.from_numpy(ids.astype(np.int32)))
    z_H, z_L = model.initial_carry(inputs.shape[0])
    out = None
    for _ in range(steps):
        out = model.act_step(x, z_H, z_L)
        z_H, z_L = out.z_H, out.z_L
    return out.logits.argmax(-1).numpy(), out.q_halt.float().numpy()


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    return {"cell_agreement": float((a == b).mean()), "row_agreement": float((a == b).all(-1).mean())}


@torch.inference_mode()
def one_step_agreement(model, e: dict) -> float:
    """Worst argmax agreement over steps s >= 1, each run from the recorded carry of step s-1: the
    local effect of the dtype, before the recursion amplifies it."""
    dt = model.forward_dtype
    x = model.embed(torch.from_numpy(e["inputs"]), torch.from_numpy(e["puzzle_identifiers"]))
    worst = 1.0
    for s in range(1, e["logits"].shape[0]):
        out = model.act_step(x, torch.from_numpy(e["z_H"][s - 1]).to(dt), torch.from_numpy(e["z_L"][s - 1]).to(dt))
        worst = min(worst, float((out.logits.argmax(-1).numpy() == e["logits"][s].argmax(-1)).mean()))
    return worst


def fixtures_effect() -> list[dict]:
    rows = []
    for folder in sorted(p for p in FIXTURES.glob("*") if (p / "step_0").exists()):
        e = np.load(folder / "expected.npz", allow_pickle=False)
        own = load_model(folder / "step_0").config.forward_dtype
        other = "bfloat16" if own == "float32" else "float32"
        preds = {d: run_steps(load_model(folder / "step_0", dtype=d).model, e["inputs"], e["puzzle_identifiers"], 16)[0]
                 for d in (own, other)}
        row = {"fixture": folder.name, "own_dtype": own, "other_dtype": other,
               "own_matches_expected": bool((preds[own] == e["preds"]).all()), **agreement(preds[own], preds[other]),
               "one_step_min_cell_agreement": one_step_agreement(load_model(folder / "step_0", dtype=other).model, e)}
        rows.append(row)
        print(f"{folder.name:22s} {own} vs {other} after 16 steps: cells agree {row['cell_agreement']:.3f}, "
              f"whole answers agree {row['row_agreement']:.2f}; one step from the recorded carry: cells agree "
              f">= {row['one_step_min_cell_agreement']:.4f}", flush=True)
    return rows


def weights_effect(n: int = 32) -> list[dict]:
    """Trained weights: fp32 vs bf16 answers and solve rates on generated puzzles."""
    from puzzles import get_codec

    rows = []
    for folder in sorted(p for p in (ROOT / "weights").glob("*") if (p / "model.safetensors").exists()):
        config = load_model(folder).config
        if config.task not in ("sudoku", "maze"):
            continue
        codec = get_codec(config.task)
        puzzles = _generate(config.task, n, config.seq_len)
        inputs = np.stack([codec.encode(p, config.seq_len) for p in puzzles])
        ids = np.zeros(len(puzzles), dtype=np.int32)
        result = {"weights": folder.name, "task": config.task, "puzzles": len(puzzles)}
        preds = {}
        for d in DTYPES:
            preds[d] = run_steps(load_model(folder, dtype=d).model, inputs, ids, config.halt_max_steps)[0]
            solved = [codec.verify(p, codec.decode(t, p)).valid for p, t in zip(puzzles, preds[d], strict=True)]
            result[f"solved_{d}"] = float(np.mean(solved))
        result.update(agreement(preds["float32"], preds["bfloat16"]))
        rows.append(result)
        print(f"{folder.name:22s} solved fp32 {result['solved_float32']:.3f} bf16 {result['solved_bfloat16']:.3f}; "
              f"cells agree {result['cell_agreement']:.3f}", flush=True)
    return rows


def _generate(task: str, n: int, seq_len: int) -> list:
    if task == "sudoku":
        from puzzles.sudoku import generate

        return [generate(1000 + i, "hard") for i in range(n)]
    from puzzles.maze import generate

    side = round(seq_len**0.5)
    return [generate(1000 + i, side) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timing budget")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    host = socket.gethostname()
    print(f"host {host}, torch {torch.__version__}, {args.threads} threads; load average {os.getloadavg()} "
          "(shared CPU: background jobs may run; compare ratios within this run only)", flush=True)
    result = {
        "host": host, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "threads": args.threads, "load_average_start": os.getloadavg(),
        "note": "eager torch, TRM-MLP Sudoku H3/L6 P=16; dtypes measured alternately on a shared CPU",
        "speed": speed(args.quick),
        "fixtures_effect": fixtures_effect(),
        "weights_effect": weights_effect(),
        "load_average_end": os.getloadavg(),
    }
    out = ROOT / "bench" / "results" / f"models-dtype-{host}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
