"""Memory over many distinct requests once the result cache is full (issue 11 item 3): is RSS flat?

    python bench/memory_soak.py inprocess [--requests 20000] [--top 15]
    python bench/memory_soak.py serve [--requests 20000] [--api-workers 1] [--out bench/results/memory_soak.json]

`inprocess`: the real app (create_app, engine core in a thread) driven through httpx's ASGI transport with a tiny
random sudoku TRM; tracemalloc snapshots after the warm-up and at the end, and the allocation sites that grew
most are printed (the quickest way to find what keeps growing). `serve`: a real `recursolve serve` on a free
127.0.0.1 port with the shipped weights (weights/trm-mlp-sudoku); the RSS of every server process (supervisor,
engine core, API processes, read from /proc) is sampled every 1,000 requests.

Both use a cache of 256 entries (RECURSOLVE_CACHE_MAX_ENTRIES), so it is full after the warm-up, and distinct
generated Sudokus (a digit relabelling of one solution with a random set of cells blanked), halting=max_steps and
max_steps=1 so a request costs one ACT step. Loopback only; bounded by --requests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
WARMUP = 2000  # requests before the first measurement: the cache (256 entries) is long full by then
CACHE_ENTRIES = 256


def sudoku(rng: random.Random) -> str:
    """A distinct valid puzzle: SOLUTION with its digits relabelled and ~45 random cells blanked."""
    perm = list("123456789")
    rng.shuffle(perm)
    grid = [perm[int(c) - 1] for c in SOLUTION]
    for k in rng.sample(range(81), 45):
        grid[k] = "."
    return "".join(grid)


def body(rng: random.Random) -> dict[str, Any]:
    return {"task": "sudoku", "puzzle": sudoku(rng), "options": {"halting": "max_steps", "max_steps": 1}}


async def drive(client: httpx.AsyncClient, n: int, rng: random.Random, concurrency: int = 8) -> int:
    """n requests, `concurrency` at a time; returns how many were not 200."""
    bad = 0
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for _ in range(n):
        queue.put_nowait(body(rng))

    async def worker() -> None:
        nonlocal bad
        while not queue.empty():
            r = await client.post("/v1/solve", json=queue.get_nowait())
            bad += r.status_code != 200

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return bad


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def self_rss_mb() -> float:
    return rss_mb(os.getpid())


async def inprocess(args: argparse.Namespace) -> dict[str, Any]:
    from app.main import create_app
    from app.settings import ModelSpec, Settings
    from app_engine_support import lifespan_running, save_random

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        specs = [ModelSpec(name="sudoku", task="sudoku", path=save_random(root / "sudoku"), batch_rows=8)]
        settings = Settings(weights_dir=root, cache_max_entries=CACHE_ENTRIES, log_level="warning")
        app = create_app(settings, specs)
        rng = random.Random(0)
        async with lifespan_running(app):
            await app.state.runtime.wait_ready(60)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
                bad = await drive(client, WARMUP, rng)
                gc.collect()
                tracemalloc.start(10)
                first = tracemalloc.take_snapshot()
                rss0 = self_rss_mb()
                samples = [round(rss0, 1)]
                done = 0
                while done < args.requests:
                    step = min(1000, args.requests - done)
                    bad += await drive(client, step, rng)
                    done += step
                    samples.append(round(self_rss_mb(), 1))
                gc.collect()
                last = tracemalloc.take_snapshot()
                runtime = app.state.runtime
                sizes = {"service._inflight": len(runtime.service._inflight),
                         "engine_client._pending": len(runtime.engine._pending),
                         "engine_client._sending": len(runtime.engine._sending),
                         "cache entries": len(runtime.cache)}
        stats = last.compare_to(first, "traceback")
        print(f"{args.requests} requests after {WARMUP} warm-up, non-200: {bad}")
        print(f"traced growth: {sum(s.size_diff for s in stats) / 1e6:+.2f} MB; sizes at the end: {sizes}")
        for s in stats[: args.top]:
            print(f"{s.size_diff / 1024:+9.1f} KiB {s.count_diff:+7d} blocks")
            for line in s.traceback.format()[-6:]:
                print("      " + line)
        return {"mode": "inprocess", "requests": args.requests, "non_200": bad, "rss_mb": samples,
                "traced_growth_mb": round(sum(s.size_diff for s in stats) / 1e6, 3), "sizes": sizes}


def serve(args: argparse.Namespace) -> dict[str, Any]:
    from hostile import ServerProcess  # bench/hostile.py: starts and stops a real `recursolve serve`

    env = {"RECURSOLVE_CACHE_MAX_ENTRIES": str(CACHE_ENTRIES), "RECURSOLVE_MODELS_FILE": "",
           "RECURSOLVE_WEIGHTS_DIR": str(REPO / "weights")}
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp), env, api_workers=args.api_workers) as srv:
        rng = random.Random(0)

        async def run() -> tuple[int, list[dict[str, float]]]:
            async with httpx.AsyncClient(base_url=srv.base, timeout=60) as client:
                bad = await drive(client, WARMUP, rng)
                samples = [srv.rss()]
                done = 0
                while done < args.requests:
                    step = min(1000, args.requests - done)
                    bad += await drive(client, step, rng)
                    done += step
                    samples.append(srv.rss())
                return bad, samples

        bad, samples = asyncio.run(run())
    total = [round(sum(s.values()), 1) for s in samples]
    growth = (total[-1] - total[0]) / total[0]
    print(f"{args.requests} requests after {WARMUP} warm-up on `recursolve serve --api-workers {args.api_workers}`"
          f", non-200: {bad}")
    for i, s in enumerate(samples):
        print(f"  after {i * 1000:6d}: " + "  ".join(f"{k} {v:7.1f} MB" for k, v in s.items()))
    print(f"total RSS {total[0]:.1f} -> {total[-1]:.1f} MB ({growth:+.1%}); max {max(total):.1f} MB")
    return {"mode": "serve", "requests": args.requests, "api_workers": args.api_workers, "non_200": bad,
            "rss_mb_per_process": samples, "rss_mb_total": total, "growth": round(growth, 4),
            "flat_within_10pct": abs(growth) <= 0.10}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["inprocess", "serve"])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--top", type=int, default=15, help="inprocess: allocation sites to print")
    ap.add_argument("--api-workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.monotonic()
    result = asyncio.run(inprocess(args)) if args.mode == "inprocess" else serve(args)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["non_200"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
