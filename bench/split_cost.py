"""What the engine/API split costs on this machine: `recursolve serve` against the one-process server, in
alternating windows, so a drift of the machine's speed hits both alike.

serve_bench runs its modes one after the other, 25-40 s each; on the 2-core VM the step time moved by 25% within
minutes, so its continuous/oneproc ratio came out 0.65-1.05 for one commit. Here every server is started once,
all of them stay up, and the same closed loop (serve_bench's: 16 clients, httptools, /v1/solve, the shipped
Sudoku model, cache off) drives one at a time for --window seconds, round after round. The report gives each
server's answers/s per round and, per round, its ratio to the one-process server; the median of the ratios is the
figure. An idle server costs next to nothing (its engine polls its socket every 100 ms).

Servers (`--servers`, comma-separated), each `KIND[+HALTING][:VAR=VALUE...]`: `+HALTING` sends the requests with
that halting rule (`serve+verifier`: {"halting": "verifier"}; default: none, /v1/solve's auto), `:VAR=VALUE` sets
environment variables of that server's processes (`serve:RECURSOLVE_ENGINE_THREADS=1`):
  oneproc    one uvicorn process, the engine core in a thread (the shape before the split)
  serve      `recursolve serve`: the supervisor, one engine-core process, the default API processes
  static     no server: serve_bench's official-style static loop in this process (batches of --batch-rows,
             the model's halt_max_steps each, no halting), for the continuous/static ratio

    .venv/bin/python bench/split_cost.py        # writes bench/results/split-cost-<host>.json
    .venv/bin/python bench/split_cost.py --pool bench/results/split-cost-*vm.json   # the rounds of several runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_bench as sb  # the servers, the load and its summary
from http_load import event_loop_runner

from puzzles.sudoku import generate

HALTING = ("auto", "verifier", "q_head", "max_steps")  # the halting rules a `+HALTING` suffix may name


def parse_server(name: str) -> tuple[str, dict[str, str], dict[str, str]] | None:
    """(kind, environment, request options) of a --servers entry (see the docstring); None when it is not one."""
    head, *assignments = name.split(":")
    kind, _, halting = head.partition("+")
    if name == "static":
        return kind, {}, {}
    if kind in ("oneproc", "serve") and all("=" in a for a in assignments) and (not halting or halting in HALTING):
        return kind, dict(a.split("=", 1) for a in assignments), {"halting": halting} if halting else {}
    return None


def window(server: sb.Server | None, options: dict[str, str], puzzles: list[Any], args: argparse.Namespace
           ) -> dict[str, Any]:
    """One measured window of the closed loop on `server` with these request options (None: on the static loop,
    in this process)."""
    load = sb.Load(args.concurrency, args.window, args.warmup, puzzles)
    if server is None:
        (t_measure, t_end), _ = asyncio.run(sb.run_static(load, args.weights_dir / args.model, args.batch_rows,
                                                          args.static_steps, "cpu"))
    else:
        mode = sb.HttpMode(None, options, "solve", "serve")
        t_measure, t_end = event_loop_runner()(sb.run_http(load, server.url, mode))
    s = sb.summarise(load.results(), t_measure, t_end)
    return {"answers_per_s": s["throughput_rps"], "p99_ms": s["latency_ms"]["p99"], "errors": s["errors"],
            "verified": s["verified_fraction"]}


def pool(paths: list[Path], base: str) -> None:
    """Every server's ratios to `base` over the rounds of several reports (those that ran it)."""
    ratios: dict[str, list[float]] = {}
    for path in paths:
        rounds = json.loads(path.read_text())["rounds"]
        for row in rounds:
            if base not in row:
                continue
            for name, v in row.items():
                if name != base:
                    ratios.setdefault(name, []).append(v["answers_per_s"] / row[base]["answers_per_s"])
    for name, v in sorted(ratios.items(), key=lambda kv: -len(kv[1])):
        v.sort()
        print(f"{name}: {len(v)} rounds against {base}, median {statistics.median(v):.3f}x, geometric mean "
              f"{statistics.geometric_mean(v):.3f}x, quartiles {v[len(v) // 4]:.3f}-{v[3 * len(v) // 4]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="oneproc,serve", help="comma-separated; the first is the baseline")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--window", type=float, default=8.0, help="measured seconds per server per round")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each window")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch-rows", type=int, default=32)
    ap.add_argument("--weights-dir", type=Path, default=sb.REPO / "weights")
    ap.add_argument("--model", default="trm-mlp-sudoku")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--pool", type=Path, nargs="+", default=None,
                    help="measure nothing: pool the rounds of these reports, as ratios to --base")
    ap.add_argument("--base", default="oneproc", help="the baseline of --pool (default oneproc)")
    args = ap.parse_args()
    if args.pool:
        pool(args.pool, args.base)
        return
    names = args.servers.split(",")
    parsed: dict[str, tuple[str, dict[str, str]]] = {}
    for name in names:
        found = parse_server(name)
        if found is None:
            ap.error(f"--servers: {name!r} is not static, or oneproc or serve with +HALTING ({', '.join(HALTING)}) "
                     "and :VAR=VALUE settings")
        parsed[name] = found
    model = args.weights_dir / args.model
    args.static_steps = int(json.loads((model / "config.json").read_text()).get("halt_max_steps", 16))

    rng = random.Random(1234)
    puzzles = [generate(rng, "medium") for _ in range(600)]
    spec = {"batch_rows": args.batch_rows, "max_queue_rows": max(512, 4 * args.concurrency), "device": "cpu"}
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="split-cost-") as tmp_name:
        tmp = Path(tmp_name)
        servers = {name: sb.Server(kind, model, spec, tmp, f"split-{i}", extra_env=env) if kind != "static" else None
                   for i, (name, (kind, env, _)) in enumerate(parsed.items())}
        try:
            for server in servers.values():
                if server is not None:
                    server.wait_ready()
            for r in range(args.rounds):
                order = names if r % 2 == 0 else names[::-1]  # neither always goes first
                row = {name: window(servers[name], parsed[name][2], puzzles, args) for name in order}
                rounds.append(row)
                print(f"round {r + 1}: " + ", ".join(f"{n} {row[n]['answers_per_s']:.1f}/s" for n in names),
                      flush=True)
        finally:
            for server in servers.values():
                if server is not None:
                    server.stop()
    base = names[0]
    ratios = {n: [round(row[n]["answers_per_s"] / row[base]["answers_per_s"], 3) for row in rounds]
              for n in names[1:]}
    median = {n: statistics.median(row[n]["answers_per_s"] for row in rounds) for n in names}
    # Two figures, since the windows' answers/s fall into a fast and a slow cluster on the VM: the median of the
    # per-round ratios (pairs taken close in time) and the ratio of the medians (which cluster each server
    # sat in more often).
    summary: dict[str, Any] = {n: {"median_ratio": round(statistics.median(v), 3),
                                   "ratio_of_medians": round(median[n] / median[base], 3), "ratios": v,
                                   "median_answers_per_s": round(median[n], 1)} for n, v in ratios.items()}
    summary[base] = {"median_answers_per_s": round(median[base], 1)}
    for n, v in summary.items():
        print(f"{n:10s} median {v['median_answers_per_s']:6.1f} answers/s"
              + (f"; against {base}: median ratio {v['median_ratio']:.3f}x, ratio of medians "
                 f"{v['ratio_of_medians']:.3f}x (rounds: {v['ratios']})" if n != base else " (baseline)"))
    host = socket.gethostname()
    out = args.out or sb.REPO / "bench" / "results" / f"split-cost-{host}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "split_cost", "command": " ".join(sys.argv), "host": host,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": len(os.sched_getaffinity(0)),
        "load": {"clients": args.concurrency, "window_s": args.window, "warmup_s": args.warmup,
                 "rounds": args.rounds, "batch_rows": args.batch_rows, "model": args.model, "tier": "medium"},
        "summary": summary, "rounds": rounds}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
