"""When should halting=auto give up on the plain run and escalate? Latency in ACT steps, compute, accuracy.

halting=auto runs one plain trajectory that halts on the exact verifier; if it has not verified after
`escalate_after` steps, K = 8 noisy PTRM trajectories run (verifier_first, up to max_steps each). A request's
latency is then the steps of both phases one after the other; with `hedge_after` h (--hedge-after) the
escalation starts beside the plain run after its h-th unverified step instead. On a GPU a step costs about the
same whatever the rows, so steps are the latency; on a CPU the row-steps are the cost. This runs real generated
puzzles through the API's SolveService with the in-process engine (the shipped model, cache off) for each
escalate_after (and hedge_after) and reports per tier:

  verified      fraction of answers that pass the exact verifier
  escalated     fraction of requests that escalated
  steps         ACT steps from admission to answer (plain phase + escalation): mean, p95, p99, max
  row_steps     mean row-steps per request (the compute)

    .venv/bin/python bench/auto_escalation.py                   # writes bench/results/auto-escalation-<host>.json
    .venv/bin/python bench/auto_escalation.py --escalate-after 8,4 --tiers medium:300
    .venv/bin/python bench/auto_escalation.py --escalate-after 8 --hedge-after none,2,3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.runtime import Runtime
from app.settings import Settings
from puzzles.sudoku import CODEC, generate

REPO = Path(__file__).resolve().parent.parent


async def run_tier(runtime: Runtime, model: str, puzzles: list[str], escalate_after: int,
                   concurrency: int, hedge_after: int | None = None) -> dict[str, Any]:
    service = runtime.service
    assert service is not None
    gate = asyncio.Semaphore(concurrency)
    rows: list[tuple[int, dict[str, Any]]] = []

    async def one(text: str) -> None:
        async with gate:
            prep = service.prepare("sudoku", model, text, {"escalate_after": escalate_after, "hedge_after": hedge_after,
                                                           "cache": False})
            outcome = await service.solve(prep)
            # elapsed_steps: ACT steps from admission to answer, the plain run's and the escalation's together
            rows.append((outcome.result.elapsed_steps, service.render(prep, outcome)))

    t0 = time.monotonic()
    await asyncio.gather(*(asyncio.create_task(one(p)) for p in puzzles))
    steps = np.array([s for s, _ in rows])
    return {
        "puzzles": len(rows),
        "verified": round(float(np.mean([b["verified"] for _, b in rows])), 4),
        "escalated": round(float(np.mean([b["escalated"] for _, b in rows])), 4),
        "steps": {"mean": round(float(steps.mean()), 2), "p95": float(np.percentile(steps, 95)),
                  "p99": float(np.percentile(steps, 99)), "max": int(steps.max())},
        "row_steps_mean": round(float(np.mean([b["row_steps"] for _, b in rows])), 2),
        "cut_by_deadline": sum(b["halted_by"] == "deadline" for _, b in rows),
        "wall_s": round(time.monotonic() - t0, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    tiers = {name: int(n) for name, n in (t.split(":") for t in args.tiers.split(","))}
    sets = {name: [CODEC.canonical(generate(rng, name)) for _ in range(n)] for name, n in tiers.items()}
    # No deadline: on a busy CPU a 30 s default could cut escalations short and count them as failures.
    runtime = Runtime(Settings(weights_dir=args.weights_dir, cache_enabled=False, warmup=False,
                               default_deadline_ms=None))
    await runtime.start()
    await runtime.wait_ready(600)
    assert runtime.service is not None
    served = runtime.service.models[args.model]
    results: dict[str, Any] = {}
    try:
        hedges = [None if h == "none" else int(h) for h in args.hedge_after.split(",")]
        for after, hedge in [(int(a), h) for a in args.escalate_after.split(",") for h in hedges]:
            for name, puzzles in sets.items():
                r = await run_tier(runtime, args.model, puzzles, after, args.concurrency, hedge)
                label = str(after) if hedge is None else f"{after}, hedge_after {hedge}"
                results.setdefault(label, {})[name] = r
                print(f"escalate_after {label:>2} {name:<8} verified {r['verified']:.3f} escalated "
                      f"{r['escalated']:.3f} steps mean {r['steps']['mean']:.2f} p95 {r['steps']['p95']:.0f} "
                      f"p99 {r['steps']['p99']:.0f} row-steps {r['row_steps_mean']:.2f} ({r['wall_s']} s)",
                      flush=True)
    finally:
        await runtime.stop()
    return {"model": args.model, "version": served.version, "max_steps": served.info.halt_max_steps,
            "results": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="trm-mlp-sudoku")
    ap.add_argument("--weights-dir", type=Path, default=REPO / "weights")
    ap.add_argument("--tiers", default="medium:1000,hard:300,extreme:200", help="tier:count,...")
    ap.add_argument("--escalate-after", default="8,3,4,5", help="values to compare (8 = the model's max_steps, "
                                                                 "the default)")
    ap.add_argument("--hedge-after", default="none", help="hedge_after values to combine with each escalate_after "
                                                          "(none: no hedge, the default)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.monotonic()
    report = asyncio.run(main_async(args))
    out = args.out or REPO / "bench" / "results" / f"auto-escalation-{socket.gethostname()}.json"
    report = {"benchmark": "auto_escalation", "command": "python bench/auto_escalation.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "weights_dir")),
              "host": socket.gethostname(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "torch": torch.__version__},
              "note": "steps: ACT steps from admission to answer, both phases (a GPU step costs about the same at "
                      "any row count, so on a GPU this is the latency); row_steps: the compute.",
              **report, "total_wall_s": round(time.monotonic() - t0, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")


if __name__ == "__main__":
    main()
