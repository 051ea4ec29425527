"""The API process's own CPU per /v1/solve answer, in-process: no sockets, no HTTP parser, no engine work.

bench/api_tier.py measures an API process under real HTTP load; its figure mixes uvicorn, the kernel's sockets,
ZMQ and the app. This drives the app itself through ASGI, 32 callers at a time on one event loop, with the
engine answering each request the moment it is submitted, and reads the event loop thread's CPU time
(time.thread_time) per answer, after freezing the start-up heap as a server process does. Layers:

  fastapi       a bare FastAPI app: the same SolveRequest body model, a fixed JSON response (the framework's floor)
  fastapi_otel  the same with FastAPI's native OpenTelemetry left on (its default; no provider set), which the
                server turns off unless RECURSOLVE_OPENTELEMETRY=true
  verified      create_app() (every guard, the routes, metrics) on distinct solved grids: each answer verifies at
                step 1 (the exact solver has no search to do on a full grid)
  solved        the same app on medium Sudokus, each answered with its solution (verified), as ~99% of medium
                Sudokus are on a GPU: the path a real request takes, exact facts on the puzzle included
  unverified    the same on medium Sudokus, answered with their givens, unverified: the API spells out the verdict
  cached        the same app with its result cache on, every medium Sudoku answered once first: each call is a cache
                hit (its exact facts kept from that first answer, as the service keeps the last 4,096 puzzles')
  exact         SudokuCodec.exact alone on the medium Sudokus (solvable/unique, on every response; us per call)

Compare layers and commits as ratios within one run. For an A/B against an older commit, put a worktree of it
first on the path: `PYTHONPATH=/tmp/old .venv/bin/python bench/api_layers.py --out /tmp/old.json`.

    .venv/bin/python bench/api_layers.py     # writes bench/results/api-layers-<host>.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_layers import add_layers_argument, chosen_layers  # bench/bench_layers.py (this folder is on sys.path)
from http_load import event_loop_runner  # bench/http_load.py (this script's folder is on sys.path)

from app.api.schemas import SolveRequest
from app.engine.protocol import EngineOutput, EngineRequest, tokens_to_bytes
from app.gc_pauses import freeze_startup_heap
from app.main import create_app
from app.settings import ModelSpec, Settings
from app_engine_support import lifespan_running, save_copy  # the copy TRM of the engine tests (hand-set weights)
from puzzles.sudoku import SudokuCodec, generate
from puzzles.sudoku_solver import random_full_grid

LAYERS = ("fastapi", "fastapi_otel", "verified", "solved", "unverified", "cached", "exact")
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def scope(length: int) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/solve", "raw_path": b"/v1/solve", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                        (b"content-length", str(length).encode())],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


async def call(app: App, body: bytes, out: bytearray | None = None) -> int:
    """One POST /v1/solve through the ASGI app; its status (and its body in `out`, when given)."""
    status = [0]
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        elif out is not None:
            out.extend(message.get("body", b""))

    await app(scope(len(body)), receive, send)
    return status[0]


async def drive(app: App, bodies: list[bytes], seconds: float, callers: int = 32) -> float:
    """`callers` closed-loop callers for `seconds`: the event loop thread's CPU microseconds per answer."""
    done = 0
    end = time.monotonic() + seconds

    async def caller(i: int) -> None:
        nonlocal done
        while time.monotonic() < end:
            status = await call(app, bodies[(done + i) % len(bodies)])
            if status != 200:
                raise RuntimeError(f"status {status}")
            done += 1

    t0 = time.thread_time()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    return 1e6 * (time.thread_time() - t0) / done


def instant_engine(app: Any, verified: bool, solutions: dict[bytes, bytes] | None = None) -> None:
    """Answer every submission at once: with the puzzle's solution when `solutions` (input tokens -> answer
    tokens) holds it, else with its own input tokens (the copy model's answer after one step)."""
    engine = app.state.runtime.service.engine
    solutions = solutions or {}

    def submit(request: EngineRequest, on_step: Any = None) -> asyncio.Future[EngineOutput]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[EngineOutput] = loop.create_future()
        out = EngineOutput(id=request.id, tokens=solutions.get(request.inputs, request.inputs), confidence=0.99,
                           q_halt=4.0, steps=1, halted_by="verified" if verified else "max_steps", trajectories=1,
                           chosen=0, row_steps=1, valid=True if verified else None, queue_ms=0.1, compute_ms=1.0,
                           elapsed_steps=1)
        loop.call_soon(future.set_result, out)
        return future

    engine.submit = submit


def bare_fastapi(telemetry: bool) -> App:
    from app.main import TELEMETRY_OFF

    body = orjson.dumps({"request_id": "0" * 32, "answer": "1" * 81, "verified": True})
    app = FastAPI(telemetry=None if telemetry else TELEMETRY_OFF)

    @app.post("/v1/solve")
    async def solve(item: SolveRequest, request: Request) -> Response:
        return Response(body, media_type="application/json")

    return app


async def measure(layers: set[str], seconds: float, repeats: int) -> dict[str, Any]:
    rng = random.Random(2)
    grids = ["".join(map(str, random_full_grid(rng))) for _ in range(300)]
    medium = [generate(rng, "medium") for _ in range(300)]
    codec = SudokuCodec()
    texts = {"verified": grids, "unverified": [codec.canonical(p) for p in medium]}
    texts["cached"] = texts["solved"] = texts["unverified"]
    solutions = {tokens_to_bytes(codec.encode(p, 81)): tokens_to_bytes(codec.encode_label(codec.exact(p).solution, 81))
                 for p in medium}
    bodies = {k: [orjson.dumps({"task": "sudoku", "puzzle": t}) for t in v] for k, v in texts.items()}
    out: dict[str, Any] = {}
    if "exact" in layers:
        n = 3 * len(medium)
        out["exact"] = min(1e6 * timeit.timeit(lambda: [codec.exact(p) for p in medium], number=3) / n
                           for _ in range(repeats))
    freeze_startup_heap("api")
    bare = {layer: bare_fastapi(telemetry=layer == "fastapi_otel") for layer in ("fastapi", "fastapi_otel")
            if layer in layers}
    for app in bare.values():
        await drive(app, bodies["verified"], 1.0)
    runs: dict[str, list[float]] = {layer: [] for layer in bare}
    for _ in range(repeats):  # the two alternate, so a drift of the machine's speed hits both
        for layer, app in bare.items():
            runs[layer].append(await drive(app, bodies["verified"], seconds))
    out |= {layer: min(v) for layer, v in runs.items()}
    for kind in ("verified", "solved", "unverified", "cached"):
        if kind not in layers:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            spec = ModelSpec(name="copy", task="sudoku", path=save_copy(Path(tmp) / "copy"), batch_rows=8,
                             max_queue_rows=64)
            app = create_app(Settings(weights_dir=Path(tmp), cache_enabled=kind == "cached", warmup=False), [spec])
            async with lifespan_running(app):
                await app.state.runtime.wait_ready(60)
                instant_engine(app, kind in ("verified", "solved"), solutions if kind == "solved" else None)
                freeze_startup_heap("api")
                await drive(app, bodies[kind], 1.0)
                first = bytearray()
                await call(app, bodies[kind][0], first)
                if orjson.loads(first)["verified"] != (kind in ("verified", "solved")):
                    raise RuntimeError(f"{kind}: the answer's verdict is not the layer's: {first[:200]!r}")
                out[kind] = min([await drive(app, bodies[kind], seconds) for _ in range(repeats)])
    return {k: round(v, 1) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds of each repeat")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per layer; the report keeps the fastest")
    add_layers_argument(ap, LAYERS)
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/api-layers-<host>.json")
    args = ap.parse_args()
    layers = chosen_layers(ap, args, LAYERS)
    os.environ.setdefault("RECURSOLVE_LOG_LEVEL", "warning")
    us = event_loop_runner()(measure(layers, args.seconds, args.repeats))  # uvloop, as the server's processes
    for layer, v in us.items():
        print(f"{layer:11s} {v:7.1f} us {'a call' if layer == 'exact' else 'of event-loop CPU an answer'}")
    host = platform.node() or "host"
    report = {"benchmark": "api_layers", "command": " ".join(sys.argv), "host": host,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": platform.python_version(),
              "seconds": args.seconds, "repeats": args.repeats, "us": us,
              "note": "fastest of the repeats; in-process ASGI, 32 callers, an engine that answers at once; "
                      "compare layers and commits as ratios within one run"}
    out = args.out or Path(__file__).resolve().parent / "results" / f"api-layers-{host}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
