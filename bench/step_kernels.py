"""Where one ACT step's device time goes: the runner's step profiled kernel by kernel (torch.profiler).

A tiny model's step on a GPU is hundreds of small kernels, so the question is which kinds of kernel add up
(matrix products, the float32 casts of RMSNorm, copies, the verifier) and how many run per step. The step is
the runner's own (`ModelRunner._step_rows`, as the engine core runs it, eager and, with --compile, through
torch.compile) on --rows rows of real medium Sudokus, profiled over --steps steps after a warm-up.

    python3 bench/step_kernels.py --device cuda [--rows 256] [--compile]   # on the GPU machine
    .venv/bin/python bench/step_kernels.py --device cpu --rows 32           # works on a CPU too (ops, not kernels)

Prints the top kernels by total device time and writes bench/results/step-kernels-<host>[-compiled].json.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import time
from pathlib import Path

import numpy as np
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from app.engine.backends import make_backend
from app.engine.runner import ModelRunner
from puzzles import get_codec
from puzzles.sudoku import generate

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="profiled steps (default 20)")
    ap.add_argument("--compile", action="store_true", help="the torch.compile'd step (compile: true)")
    ap.add_argument("--model", type=Path, default=REPO / "weights" / "trm-mlp-sudoku")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    codec, rng = get_codec("sudoku"), random.Random(0)
    inputs = np.stack([np.asarray(codec.encode(generate(rng, "medium"), 81), np.int32) for _ in range(args.rows)])
    runner = ModelRunner(make_backend(args.model, device=args.device, task="sudoku"), args.rows, "sudoku",
                         cuda_graphs=False, compile_step=args.compile)
    idx = torch.arange(args.rows, device=args.device)
    on_cuda = args.device.startswith("cuda")
    t0 = time.perf_counter()
    with torch.inference_mode():
        runner.load_rows(inputs, np.zeros(args.rows, np.int32), [[r] for r in range(args.rows)])
        for _ in range(3):  # the compile (if any) and lazy initialisation happen here, unprofiled
            runner._step(idx)
        if on_cuda:
            torch.cuda.synchronize()
        warmup_s = time.perf_counter() - t0
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                runner._step(idx)
            if on_cuda:
                torch.cuda.synchronize()

    events = prof.key_averages()
    def device_us(e: object) -> float:
        return float(getattr(e, "device_time_total", 0.0) or getattr(e, "cuda_time_total", 0.0) or 0.0)

    if on_cuda:
        # Kernels only (the device's own events), not the aten ops whose totals include them.
        kernels = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA and device_us(e) > 0]
        if not kernels:  # older profilers: a kernel is an event with device time and no CPU time of its own
            kernels = [e for e in events if device_us(e) > 0 and e.self_cpu_time_total == 0]
        key = device_us
    else:
        kernels = [e for e in events if e.self_cpu_time_total > 0 and e.key.startswith("aten::")]
        key = lambda e: float(e.self_cpu_time_total)  # noqa: E731
    total = sum(key(e) for e in kernels)
    launches = sum(e.count for e in kernels)
    top = sorted(kernels, key=key, reverse=True)[:args.top]
    rows = [{"name": e.key[:120], "calls_per_step": round(e.count / args.steps, 1),
             "us_per_step": round(key(e) / args.steps, 1), "share": round(key(e) / total, 3)} for e in top]
    report = {
        "benchmark": "step_kernels", "host": socket.gethostname(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": torch.cuda.get_device_name() if on_cuda else "cpu", "torch": torch.__version__,
        "model": str(args.model.relative_to(REPO)) if args.model.is_relative_to(REPO) else str(args.model),
        "rows": args.rows, "dtype": str(runner.backend.dtype).removeprefix("torch."), "compiled": runner.compiled,
        "warmup_s": round(warmup_s, 1), "profiled_steps": args.steps,
        "what": "device kernels" if on_cuda else "aten ops (self CPU time)",
        "per_step": {"us": round(total / args.steps, 1), "launches": round(launches / args.steps, 1)},
        "top": rows,
    }
    print(f"{report['device']}, {args.rows} rows, {report['dtype']}, compiled {runner.compiled}: "
          f"{report['per_step']['us']} us of {report['what']} per step in {report['per_step']['launches']} "
          f"launches (warm-up {report['warmup_s']} s)")
    for r in rows:
        print(f"  {r['us_per_step']:>9.1f} us {r['share']:>6.1%} {r['calls_per_step']:>6.1f}x  {r['name']}")
    suffix = "-compiled" if args.compile else ""
    out = args.out or REPO / "bench" / "results" / f"step-kernels-{socket.gethostname()}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
