"""Per-row codec verification against the batched token verifier (models/verify.py) on CPU.

What the engine pays to check every active row after an ACT step: today, per row, ``codec.decode``
then ``codec.verify`` in Python; with ``verify_batch``, a few tensor ops for the whole batch. Rows are
correct answers (the codec's most expensive case: nothing short-circuits). Sudoku: medium puzzles.
Maze: 30x30 mazes on the official 900-token canvas, verified both with the shortest S-G distances
prepared once per request (``prepare_batch``, the intended use) and without them (the flood fill runs
inside every call); the one-off prepare cost is reported too. Timings are medians of repeated runs
(``--repeats``), one torch thread unless ``--threads``; the two methods alternate so background load
on a shared machine hits both alike.

    nice -n 10 .venv/bin/python bench/verify_batch.py [--repeats 15 --threads 1]

Writes bench/results/verify-batch-<host>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.verify import prepare_batch, verify_batch
from puzzles import get_codec
from puzzles.maze import generate as maze_generate
from puzzles.sudoku import generate as sudoku_generate

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1, 64, 256)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocator, first-call dispatch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def bench_task(task: str, puzzles: list, seq_len: int, repeats: int) -> dict[str, dict[str, float]]:
    codec = get_codec(task)
    rows: dict[str, dict[str, float]] = {}
    for n in SIZES:
        ps = [puzzles[i % len(puzzles)] for i in range(n)]
        x_np = np.stack([codec.encode(p, seq_len) for p in ps])
        y_np = np.stack([codec.encode_label(p, seq_len) for p in ps])
        x, y = torch.as_tensor(x_np, dtype=torch.long), torch.as_tensor(y_np, dtype=torch.long)

        def per_row(ps=ps, y_np=y_np) -> list[bool]:
            return [codec.verify(p, codec.decode(t, p)).valid for p, t in zip(ps, y_np, strict=True)]

        def batched(x=x, y=y, prepared=None) -> torch.Tensor:
            return verify_batch(task, x, y, prepared=prepared)

        assert all(per_row()) and bool(batched().all())  # the rows really are correct answers
        entry = {"per_row_ms": median_ms(per_row, repeats), "verify_batch_ms": median_ms(batched, repeats)}
        if task == "maze":
            prepared = prepare_batch(task, x)
            entry["prepare_batch_ms"] = median_ms(lambda x=x: prepare_batch(task, x), repeats)
            entry["verify_batch_prepared_ms"] = median_ms(lambda x=x, y=y, d=prepared: batched(x, y, d), repeats)
        fastest = min(v for k, v in entry.items() if k.startswith("verify_batch"))
        entry["speedup"] = entry["per_row_ms"] / fastest
        entry["per_row_us_per_answer"] = entry["per_row_ms"] * 1000.0 / n
        rows[str(n)] = {k: round(v, 4) for k, v in entry.items()}
        print(f"{task:7s} n={n:4d}  " + "  ".join(f"{k} {v:.3f}" for k, v in rows[str(n)].items()), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    host = socket.gethostname()
    print(f"host {host}, torch {torch.__version__}, {args.threads} torch thread(s), load {os.getloadavg()}")
    sudokus = [sudoku_generate(seed, "medium") for seed in range(32)]
    mazes = [maze_generate(seed, 30, min_path_len=60) for seed in range(16)]
    results = {"sudoku": bench_task("sudoku", sudokus, 81, args.repeats),
               "maze (30x30, seq_len 900)": bench_task("maze", mazes, 900, args.repeats)}
    report = {
        "benchmark": "verify-batch", "host": host, "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": args.threads, "repeats": args.repeats, "device": "cpu",
        "rows": "correct answers (encode_label); sudoku medium x32 distinct, maze 30x30 path>=60 x16 distinct",
        "columns": {"per_row_ms": "codec.decode + codec.verify per row, Python loop, whole batch",
                    "verify_batch_ms": "models.verify.verify_batch, whole batch (maze: flood fill inside)",
                    "prepare_batch_ms": "maze: shortest S-G distances, once per request",
                    "verify_batch_prepared_ms": "maze: verify_batch with prepared distances (per step)",
                    "speedup": "per_row_ms / fastest verify_batch variant"},
        "results": results,
    }
    out = ROOT / "bench" / "results" / f"verify-batch-{host}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
