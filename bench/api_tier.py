"""The API tier's cost per /v1/solve answer: `recursolve serve` with one API process and a tiny model, so
the engine is cheap and the API process (pinned to a core of its own when there are two or more) is the
busy part, as on a GPU machine. Closed-loop clients (serve_bench's: bench/http_load.py), cache off.

Two kinds of answers (`--answers`, both by default, each its own server):
  unverified  a random tiny TRM on medium Sudokus, {"halting": "max_steps"} (it never verifies, so auto would
              escalate every request): the path of a wrong answer, whose verdict and overwritten givens are
              spelled out cell by cell
  verified    the hand-set copy TRM (tests/app_engine_support.py: every step outputs its input) on distinct
              solved grids, the default options (halting auto): each request verifies at its first step, as
              ~99% of medium Sudokus do on the GPU. The exact solver has no search to do on a full grid, so
              add its cost on a real puzzle (bench/sudoku_solver.py: ~0.1 ms for a medium one) to this figure.

Reports answers/s, latency p50/p99/p99.9, the API process's CPU per answer (from /proc, the measured
window), how busy it was, and its garbage-collector passes by generation (recursolve_gc_pause_seconds).
`--repo PATH` serves another checkout (a `git worktree` of an older commit) for an A/B in one session:

    git worktree add /tmp/old 951c977 && ln -s $PWD/.venv /tmp/old/.venv
    for i in 1 2; do .venv/bin/python bench/api_tier.py --repo /tmp/old --out /tmp/old.json
                     .venv/bin/python bench/api_tier.py; done
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
import serve_bench as sb  # the load generator and server helpers of the serving benchmark

from app_engine_support import save_copy  # the copy TRM of the engine tests (hand-set weights)
from models import ModelConfig, build_model, save_model
from puzzles.sudoku import SudokuPuzzle, generate, parse
from puzzles.sudoku_solver import random_full_grid

TINY = dict(arch="trm", task="sudoku", seq_len=81, vocab_size=11, hidden_size=16, num_heads=2, expansion=2,
            H_cycles=1, L_cycles=1, L_layers=1, mlp_t=True, puzzle_emb_len=1, puzzle_emb_ndim=16,
            pos_encodings="none", forward_dtype="float32", halt_max_steps=2)
KINDS = ("verified", "unverified")
GC = re.compile(r'^recursolve_gc_pause_seconds_(count|sum)\{generation="(\d)",role="api"\} (\S+)$', re.M)


def gc_probe(url: str) -> sb.Probe:
    """The API process's GC pass counts and seconds by generation, from /metrics (without blocking the clients'
    event loop)."""
    async def probe() -> dict[str, float]:
        async with httpx.AsyncClient(timeout=30.0) as client:
            r = await client.get(url + "/metrics")
            r.raise_for_status()
            return {f"{kind}_{gen}": float(v) for kind, gen, v in GC.findall(r.text)}
    return probe


def pin(roles: dict[str, list[int]]) -> str:
    """The API process alone on the last CPU, everything else (engine, supervisor, clients) on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    api_cpu, rest = {cpus[-1]}, set(cpus[:-1])
    for role, pids in roles.items():
        for pid in pids:
            for task in Path(f"/proc/{pid}/task").iterdir():  # every thread (ZMQ's I/O thread, torch's pool)
                os.sched_setaffinity(int(task.name), api_cpu if role == "api" else rest)
    os.sched_setaffinity(0, rest)
    return f"API process on CPU {cpus[-1]}, the rest on {sorted(rest)}"


@dataclass(frozen=True)
class Answers:
    """What the served model answers and with which request options (see the module's docstring)."""

    puzzles: list[SudokuPuzzle]
    options: dict[str, Any]
    model: dict[str, Any]


def answers_kind(kind: str, folder: Path) -> Answers:
    """Save the kind's model to `folder` and draw its 300 distinct puzzles (seeded)."""
    rng = random.Random(2)
    if kind == "verified":
        save_copy(folder)
        return Answers([parse(list(random_full_grid(rng))) for _ in range(300)], {}, {"copy_of": "tiny_config()"})
    torch.manual_seed(0)
    save_model(build_model(ModelConfig(**TINY)), folder)
    return Answers([generate(rng, "medium") for _ in range(300)], {"halting": "max_steps"}, TINY)


def measure(kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One server, one measured window of `kind` answers: the report's entry for it."""
    answers = answers_kind(kind, tmp / kind)
    cpus = os.sched_getaffinity(0)  # pin() moves this process off the API's CPU: the next server gets them back
    # One engine thread: OpenMP spinning would take the API's core.
    server = sb.Server("serve", tmp / kind, {"device": "cpu", "batch_rows": 256, "max_queue_rows": 4096},
                       tmp, f"api-tier-{kind}", api_workers=1, repo=args.repo,
                       extra_env={"RECURSOLVE_ENGINE_THREADS": "1"})
    try:
        server.wait_ready()
        pinned = pin(sb.server_roles(server.proc.pid))
        mode = sb.HttpMode(None, answers.options, "solve", "serve")
        load = sb.Load(args.concurrency, args.duration, args.warmup, answers.puzzles)
        t0 = time.monotonic()

        async def run() -> tuple[tuple[float, float], dict[str, float], dict[str, float], dict[str, float]]:
            probing = asyncio.create_task(sb.probe_window(t0 + args.warmup, t0 + args.warmup + args.duration,
                                                          gc_probe(server.url), server.proc.pid))
            window = await sb.run_http(load, server.url, mode, t0)
            before, after, cpu = await probing
            return window, before, after, cpu

        (t_measure, t_end), before, after, cpu = asyncio.run(run())
    finally:
        server.stop()
        os.sched_setaffinity(0, cpus)
    summary = sb.summarise(load.results(), t_measure, t_end)
    n = summary["answers"]
    api_s = cpu["api"]
    report: dict[str, Any] = {
        "pinned": pinned, "options": answers.options, "model": answers.model,
        "answers_per_s": summary["throughput_rps"], "latency_ms": summary["latency_ms"],
        "verified_fraction": summary["verified_fraction"], "errors": summary["errors"],
        "api_cpu_us_per_answer": round(1e6 * api_s / n, 1) if n else None,
        "api_busy": round(api_s / (t_end - t_measure), 3),
        "api_gc": {f"gen{g}": {"passes": int(after.get(f"count_{g}", 0) - before.get(f"count_{g}", 0)),
                               "ms": round(1000 * (after.get(f"sum_{g}", 0) - before.get(f"sum_{g}", 0)), 1)}
                   for g in range(3)},
    }
    lat = report["latency_ms"]
    print(f"{kind}: {report['answers_per_s']:.0f} answers/s (verified {report['verified_fraction']}), "
          f"p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} max {lat['max']:.1f} ms, "
          f"API {report['api_cpu_us_per_answer']} us CPU per answer (busy {report['api_busy']}), "
          f"GC {report['api_gc']}; {pinned}", flush=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--answers", default=",".join(KINDS), help=f"comma-separated, of {','.join(KINDS)}")
    ap.add_argument("--repo", type=Path, default=sb.REPO, help="the checkout to serve (default: this one)")
    ap.add_argument("--out", type=Path, default=sb.REPO / "bench" / "results" / "api-tier-vm.json")
    args = ap.parse_args()
    kinds = args.answers.split(",")
    if not set(kinds) <= set(KINDS):
        ap.error(f"--answers: unknown {', '.join(sorted(set(kinds) - set(KINDS)))}")

    report: dict[str, Any] = {
        "benchmark": "api_tier", "command": " ".join(sys.argv), "repo": str(args.repo), "host": os.uname().nodename,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load": {"clients": args.concurrency, "duration_s": args.duration, "warmup_s": args.warmup},
    }
    with tempfile.TemporaryDirectory() as tmp_dir:
        report["answers"] = {kind: measure(kind, args, Path(tmp_dir)) for kind in kinds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
