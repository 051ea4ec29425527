"""Load benchmark of the Sudoku serving path, from the engine's step-rate limit up to HTTP, in one run.

N closed-loop clients each send one real generated Sudoku (puzzles.sudoku.generate), wait for the answer and
send the next, for a fixed time. Modes, same model, same weights, same device and dtype (the server's defaults):

  graph       the step-rate limit: the engine's ModelRunner alone stepping a full batch of --batch-rows rows
              over and over (a CUDA graph replay per step on CUDA, eager on CPU); no requests, no scheduler.
              Reports row-steps/s and the implied answers/s = row-steps/s / mean ACT steps per answer (the mean
              of the continuous mode of the same run, else of inproc)
  inproc      the engine core in a thread of this process (InprocEngine + EngineClient), no HTTP: asyncio
              clients submit EngineRequests and await the outputs (the engine shares this process's GIL)
  engine      the engine-core process as `recursolve serve` starts it, fed over ZMQ by EngineClients in
              --client-procs processes (as API processes hold them), no HTTP and no API tier: what the engine
              core alone can answer, the ceiling of every HTTP mode; reports its CPU per answer and how busy it was
  continuous  `recursolve serve` (engine-core process + --api-workers API processes), HTTP /v1/solve
  batch       as continuous, HTTP /v1/solve/batch: each call carries --batch-items puzzles (answers = items;
              latency is the call's)
  oneproc     one uvicorn process running the app with its engine core in a thread (the pre-split shape),
              HTTP /v1/solve: `continuous / oneproc` is what the process split costs or gains
  single      `recursolve serve` with the model at batch_rows=1 (one request at a time)
  static      in-process, no HTTP: the official evaluation loop: take every waiting request (up to B) as one
              static batch, run exactly halt_max_steps ACT steps (--static-steps) with no halting, answer all
  verifier    as continuous, with {"halting": "verifier"}: a row stops when its answer passes the exact
              Sudoku check (else at max_steps), instead of when the Q-head says so
  nohedge     as continuous, with {"hedge_after": 0}: halting=auto without the hedged escalation (on a GPU the
              default hedges after 3 unverified steps), so one run measures what the hedge does to the p99

Reported per mode: answers/s, latency p50/p95/p99 (client side; HTTP included for the server modes), mean ACT
steps per answer, verified fraction, mean rows per step (HTTP modes: the server's /metrics
recursolve_step_active_rows_sum/_count deltas over the measured window; inproc: the same histogram in this
process), and for the HTTP modes the server's CPU ms per answer by role (engine, api: all API processes
together, supervisor; from /proc over the same window) with api_busy, the API processes' mean share of a core
(near 1.0: the API tier bounds the answers/s), and for the HTTP and engine modes clients_busy, the load
generator's client processes' mean share of a core (near 1.0: the clients bound it), over the answers completed
in the measured window (after the warm-up; requests still in flight at the end are cut, so a slow mode cannot
stretch the run). The summary adds
the ratios continuous/static, verifier/static (about equal verified accuracy), inproc/graph, engine/graph,
batch/inproc and continuous/oneproc.
The result cache is disabled in the servers; puzzles cycle through a seeded pool (--puzzles, default 600), so
a repeat is hundreds of requests away and never coalesces with an identical request in flight.

--client-procs N runs the HTTP clients in N processes (concurrency/N clients each), started and imported before
the clock starts, their samples merged. --http-client: httptools (default; bench/http_load.py, keep-alive
connections parsed by httptools on uvloop, 61-66 us of client CPU a /v1/solve request on the VM) or aiohttp (the
load generator of runs before 2026-11-26: 208-230 us a request, one process topping out near 3k requests/s).
On a GPU machine the clients share the cores with the server, so the cheaper client leaves them to the server.

Weights: weights/<model> when present (default trm-mlp-sudoku, else the first Sudoku model folder), otherwise
a random-weight TRM-MLP (the architecture of training/configs/trm-mlp-sudoku.json) saved to a temp dir; random
weights never halt on their own (Q-head bias -5), so every request then runs all halt_max_steps steps in every
mode and the answers are wrong: the run then only measures the scheduling, and says so in its output.

    .venv/bin/python bench/serve_bench.py --duration 20 --modes graph,inproc,continuous,oneproc,batch,static
    .venv/bin/python bench/serve_bench.py --device cuda --client-procs 4 --concurrency 256   # a GPU machine

--profile-dir D: in the HTTP modes, py-spy samples the engine-core process and one API process (or the one
process of oneproc) over the measured window; raw stacks go to D/<mode>-<role>.txt and the frames with the most
samples of their own into the report (an idle uvloop process shows as asyncio's Runner.run). This is how the
API processes, not the engine, were found to cap /v1/solve on an H200.

Writes bench/results/serve-<host>.json. On a shared CPU, numbers move by 25% or more between runs; compare
modes within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import httpx
import numpy as np
import orjson
import torch
from http_load import HttpClient, event_loop_runner  # bench/http_load.py (this folder is on sys.path)

from app.engine.backends import make_backend
from app.gc_pauses import freeze_startup_heap
from models import ModelConfig, build_model, default_dtype, save_model
from puzzles import get_codec
from puzzles.sudoku import CODEC as SUDOKU
from puzzles.sudoku import SudokuPuzzle, generate

REPO = Path(__file__).resolve().parent.parent

MODES = ("graph", "inproc", "engine", "continuous", "batch", "oneproc", "single", "static", "verifier", "nohedge")
MODEL_NAME = "bench"


@dataclass(frozen=True)
class HttpMode:
    rows: int | None  # batch_rows of the served model; None = --batch-rows
    options: dict[str, Any]  # request options
    endpoint: str  # "solve" (/v1/solve, one puzzle a call) or "batch" (/v1/solve/batch, --batch-items a call)
    server: str  # "serve" (`recursolve serve`: engine process + API processes) or "oneproc" (one uvicorn process)


HTTP_MODES: dict[str, HttpMode] = {
    "continuous": HttpMode(None, {}, "solve", "serve"),
    "batch": HttpMode(None, {}, "batch", "serve"),
    "oneproc": HttpMode(None, {}, "solve", "oneproc"),
    "single": HttpMode(1, {}, "solve", "serve"),
    "verifier": HttpMode(None, {"halting": "verifier"}, "solve", "serve"),
    "nohedge": HttpMode(None, {"hedge_after": 0}, "solve", "serve"),
}
PLANNED_CONFIG = REPO / "training" / "configs" / "trm-mlp-sudoku.json"
# The HTTP path's default deadline (Settings.default_deadline_ms): inproc requests get the same budget.
DEFAULT_DEADLINE_MS = 30_000
ROWS_SUM, ROWS_COUNT = "recursolve_step_active_rows_sum", "recursolve_step_active_rows_count"
LOOP_SECONDS = "recursolve_engine_loop_seconds_total"  # the engine loop's seconds by phase (app/engine/phases.py)


# -- model -----------------------------------------------------------------------------------------------


def pick_model(weights_dir: Path, name: str | None, tmp: Path) -> tuple[Path, bool]:
    """(model folder, random_weights)."""
    if name is not None:
        folder = weights_dir / name
        if not (folder / "model.safetensors").exists():
            raise SystemExit(f"{folder} has no model.safetensors")
        return folder, False
    preferred = weights_dir / "trm-mlp-sudoku"
    if (preferred / "model.safetensors").exists():
        return preferred, False
    for folder in sorted(weights_dir.glob("*/config.json")):
        cfg = json.loads(folder.read_text())
        if cfg.get("task") == "sudoku" and (folder.parent / "model.safetensors").exists():
            return folder.parent, False
    # No trained weights yet: the architecture the training config will ship, with random init (nothing trained).
    torch.manual_seed(0)
    arch: dict[str, Any] = {"arch": "trm", "task": "sudoku", "hidden_size": 128, "num_heads": 4, "expansion": 4,
                            "H_cycles": 2, "L_cycles": 3, "L_layers": 2, "mlp_t": True, "pos_encodings": "none",
                            "puzzle_emb_ndim": 128, "puzzle_emb_len": 1, "halt_max_steps": 8}
    if PLANNED_CONFIG.exists():
        arch = json.loads(PLANNED_CONFIG.read_text())["model"]
    cfg = ModelConfig(**(arch | {"seq_len": 81, "vocab_size": 11}))
    folder = tmp / "random-trm-mlp-sudoku"
    save_model(build_model(cfg), folder)
    return folder, True


def sudoku_text(p: SudokuPuzzle) -> str:
    return SUDOKU.canonical(p)  # 81 characters, '.' for blanks


def bench_spec(model: Path, device: str, batch_rows: int, max_queue_rows: int | None = None,
               **entry: Any) -> Any:
    """The ModelSpec every in-process mode serves (the HTTP modes get the same entry in a models file);
    `entry`: further models-file fields (--compile, --model-options)."""
    from app.settings import ModelSpec

    return ModelSpec(name=MODEL_NAME, task="sudoku", path=model, device=device, batch_rows=batch_rows,
                     max_queue_rows=max_queue_rows, **entry)


def model_entry(args: argparse.Namespace) -> dict[str, Any]:
    """The models-file fields that --compile, --overlap, --device-wait and --model-options add to every mode's model
    (auto: none)."""
    entry: dict[str, Any] = {} if args.compile == "auto" else {"compile": args.compile == "on"}
    if args.overlap != "auto":
        entry["overlap"] = args.overlap == "on"
    if args.device_wait != "auto":
        entry["wait"] = args.device_wait
    if args.model_options:
        entry["default_options"] = json.loads(args.model_options)
    return entry


def cuda_sync(device: str) -> None:
    """Host time is only the device's time after the queued kernels finished."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -- measurements ------------------------------------------------------------------------------------------


class Sample(NamedTuple):
    """One answer. Load keeps them as plain tuples (Sample's fields), which the garbage collector stops
    tracking: an object per answer (600k in a 60 s run at 10k/s) made every full GC pass of a client process
    scan them all (~160 ms for 600k here), a stall of its clients that the latencies would include."""
    start: float
    end: float
    ok: bool
    steps: int = 0
    verified: bool = False
    status: int = 200


@dataclass
class Load:
    concurrency: int
    duration: float
    warmup: float
    puzzles: list[SudokuPuzzle]
    per_call: int = 1  # puzzles a client sends in one call (/v1/solve/batch: --batch-items)
    _next: int = 0
    samples: list[tuple[Any, ...]] = field(default_factory=list)  # Sample's fields, see Sample

    def results(self) -> list[Sample]:
        return [Sample._make(t) for t in self.samples]

    def next_puzzles(self) -> list[SudokuPuzzle]:
        out = [self.puzzles[(self._next + i) % len(self.puzzles)] for i in range(self.per_call)]
        self._next += self.per_call
        return out


def summarise(samples: list[Sample], t_measure: float, t_end: float) -> dict[str, Any]:
    """Answers that completed inside the measured window [t_measure, t_end] (steady state, like wrk):
    requests still running at t_end are cut, so a mode's slowness cannot stretch the benchmark."""
    done = [s for s in samples if t_measure <= s.end <= t_end]
    ok = [s for s in done if s.ok]
    window = t_end - t_measure
    lat = np.array([(s.end - s.start) * 1000 for s in ok]) if ok else np.array([np.nan])
    return {
        "answers": len(ok),
        "errors": len(done) - len(ok),
        "error_statuses": dict(collections.Counter(s.status for s in done if not s.ok)),
        "window_s": round(window, 2),
        "throughput_rps": round(len(ok) / window, 3),
        "latency_ms": {k: round(float(v), 1) for k, v in {
            "p50": np.percentile(lat, 50), "p95": np.percentile(lat, 95), "p99": np.percentile(lat, 99),
            "mean": lat.mean(), "max": lat.max()}.items()},
        "mean_act_steps": round(float(np.mean([s.steps for s in ok])), 2) if ok else None,
        "verified_fraction": round(sum(s.verified for s in ok) / len(ok), 3) if ok else None,
        "row_steps_per_s": round(sum(s.steps for s in ok) / window, 1),
    }


OneCall = Callable[[list[SudokuPuzzle]], Awaitable[list[Sample]]]


async def closed_loop(load: Load, one_call: OneCall, t0: float | None = None) -> tuple[float, float]:
    """Run `concurrency` clients from t0 (time.monotonic(), one clock for every process; default now) for
    warmup + duration, then cancel what is still in flight. Returns the measured window (t_measure, t_end)."""
    t0 = time.monotonic() if t0 is None else t0
    t_measure, t_end = t0 + load.warmup, t0 + load.warmup + load.duration
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))

    async def client() -> None:
        while True:
            puzzles = load.next_puzzles()
            start = time.monotonic()
            samples = await one_call(puzzles)
            end = time.monotonic()
            load.samples.extend(tuple(s._replace(start=start, end=end)) for s in samples)

    tasks = [asyncio.create_task(client()) for _ in range(load.concurrency)]
    done, _ = await asyncio.wait(tasks, timeout=t_end - time.monotonic())
    for t in tasks:
        t.cancel()  # HTTP: the client disconnects and the server frees the rows
    await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:  # a client that stopped early hit an unexpected exception: show it
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    return t_measure, t_end


# A snapshot of the engine's counters: (rows stepped, steps, the loop's seconds by phase), from the server's /metrics
# (metrics_probe), this process's registry (inproc) or the engine's Stats (engine mode).
Snapshot = tuple[float, float, dict[str, float]]
Probe = Callable[[], Awaitable[Any]]


async def probe_window(t_measure: float, t_end: float, probe: Probe, server_pid: int | None = None
                       ) -> tuple[Any, Any, dict[str, float]]:
    """The probe's snapshot at the start and the end of the measured window (metrics_probe: the step-rows
    histogram's sum and count), and the CPU seconds each role of the server (`server_pid`, when given) used in
    between."""
    await asyncio.sleep(max(0.0, t_measure - time.monotonic()))
    cpu_before = server_cpu_seconds(server_pid) if server_pid is not None else {}
    before = await probe()
    await asyncio.sleep(max(0.0, t_end - time.monotonic()))
    after = await probe()
    cpu_after = server_cpu_seconds(server_pid) if server_pid is not None else {}
    return before, after, {role: round(cpu_after[role] - cpu_before.get(role, 0.0), 3) for role in cpu_after}


def engine_figures(before: Snapshot, after: Snapshot, window: float) -> dict[str, Any]:
    """Rows per step, steps per second and where the engine loop's time went in the window: each phase's share of
    the loop's time (its phases cover the loop, so the shares add up to 1 whatever the two snapshots' skew; with
    --engines N, of all N loops) and its ms per engine step."""
    rows, steps = after[0] - before[0], after[1] - before[1]
    spent = {phase: seconds - before[2].get(phase, 0.0) for phase, seconds in after[2].items()}
    spent = {phase: seconds for phase, seconds in spent.items() if seconds > 0}
    loop: dict[str, Any] = {}
    if spent:
        total = sum(spent.values())
        loop["engine_loop_share"] = {phase: round(seconds / total, 3) for phase, seconds in spent.items()}
        if steps:
            loop["engine_loop_ms_per_step"] = {phase: round(1e3 * seconds / steps, 3)
                                               for phase, seconds in spent.items()}
    return {"mean_rows_per_step": round(rows / steps, 2) if steps else None,
            "engine_steps_per_s": round(steps / window, 1)} | loop


# -- the servers ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server child process on 127.0.0.1 serving one model at a given batch_rows:
    kind "serve": `recursolve serve` (the supervisor, one engine-core process, `api_workers` API processes);
    kind "oneproc": one uvicorn process whose app runs the engine core in a thread (the pre-split shape)."""

    def __init__(self, kind: str, model: Path, spec: dict[str, Any], tmp: Path, tag: str,
                 api_workers: int | None = None, max_batch_items: int = 64, repo: Path = REPO,
                 engines: int = 1, extra_env: dict[str, str] | None = None) -> None:
        """`extra_env`: environment variables of the server's processes beyond the bench's own."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        models_file = tmp / f"models-{tag}.yaml"
        models_file.write_text(json.dumps({"models": [{  # JSON is YAML
            "name": MODEL_NAME, "task": "sudoku", "path": str(model), **spec}]}))
        env = os.environ | {
            "RECURSOLVE_MODELS_FILE": str(models_file), "RECURSOLVE_CACHE_ENABLED": "false",
            "RECURSOLVE_HOST": "127.0.0.1", "RECURSOLVE_PORT": str(self.port), "RECURSOLVE_LOG_LEVEL": "warning",
            "RECURSOLVE_DRAIN_GRACE_SECONDS": "2", "RECURSOLVE_WARMUP": "true",
            "RECURSOLVE_MAX_BATCH_ITEMS": str(max_batch_items),
        }
        # Whatever the calling shell had set would change the server's shape: the bench decides it.
        for name in ("RECURSOLVE_REDIS_URL", "RECURSOLVE_ENGINE_ADDRESS", "RECURSOLVE_API_WORKERS",
                     "RECURSOLVE_ENGINES", "PROMETHEUS_MULTIPROC_DIR", "RECURSOLVE_API_KEYS"):
            env.pop(name, None)
        env |= extra_env or {}
        if kind == "serve":
            argv = [sys.executable, "-m", "app.cli", "serve"]
            if api_workers is not None:
                argv += ["--api-workers", str(api_workers)]
            if engines != 1:  # only when asked: a --repo checkout from before the option still runs
                argv += ["--engines", str(engines)]
        else:
            argv = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                    "--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        self.log_path = tmp / f"server-{tag}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, cwd=repo, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def parse_engine_metrics(text: str) -> Snapshot:
    """The sum and count of recursolve_step_active_rows for the bench model, and the engine loop's seconds by phase
    (summed over engine cores), from a /metrics body."""
    values = {ROWS_SUM: 0.0, ROWS_COUNT: 0.0}
    loop: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in values and f'model="{MODEL_NAME}"' in line:
            values[name] = float(line.rsplit(" ", 1)[1])
        elif name == LOOP_SECONDS and 'phase="' in line:
            phase = line.split('phase="', 1)[1].split('"', 1)[0]
            loop[phase] = loop.get(phase, 0.0) + float(line.rsplit(" ", 1)[1])
    return values[ROWS_SUM], values[ROWS_COUNT], loop


def metrics_probe(url: str) -> Probe:
    async def probe() -> Snapshot:
        async with httpx.AsyncClient(timeout=30.0) as client:
            r = await client.get(url + "/metrics")
            r.raise_for_status()
            return parse_engine_metrics(r.text)
    return probe


JSON_HEADERS = {"content-type": "application/json"}


Post = Callable[[str, bytes], Awaitable[tuple[int, bytes]]]  # (path, JSON body) -> (status, response body)
HTTP_CLIENTS = ("httptools", "aiohttp")


def http_call(post: Post, mode: HttpMode) -> OneCall:
    """One client call: /v1/solve with one puzzle, or /v1/solve/batch with all of them (one Sample per item)."""
    if mode.endpoint == "solve":
        async def one(puzzles: list[SudokuPuzzle]) -> list[Sample]:
            payload = orjson.dumps({"task": "sudoku", "puzzle": sudoku_text(puzzles[0]), "options": mode.options})
            status, raw = await post("/v1/solve", payload)
            if status != 200:
                return [Sample(0, 0, ok=False, status=status)]
            body = orjson.loads(raw)
            return [Sample(0, 0, ok=True, steps=int(body["steps"]), verified=bool(body["verified"]))]
        return one

    async def batch(puzzles: list[SudokuPuzzle]) -> list[Sample]:
        body: dict[str, Any] = {"items": [{"task": "sudoku", "puzzle": sudoku_text(p)} for p in puzzles]}
        if mode.options:
            body["options"] = mode.options
        status, raw = await post("/v1/solve/batch", orjson.dumps(body))
        if status != 200:
            return [Sample(0, 0, ok=False, status=status) for _ in puzzles]
        return [Sample(0, 0, ok=True, steps=int(item["result"]["steps"]), verified=bool(item["result"]["verified"]))
                if item["status"] == 200 else Sample(0, 0, ok=False, status=int(item["status"]))
                for item in orjson.loads(raw)["results"]]
    return batch


async def run_http(load: Load, url: str, mode: HttpMode, t0: float | None = None, client: str = "httptools"
                   ) -> tuple[float, float]:
    """The closed loop over HTTP. `client`: httptools (bench/http_load.py, the default: ~3.5x less client CPU
    per request) or aiohttp (what runs before 2026-11-26 used: 0.13-0.23 ms a request; httpx cost 2.7 ms)."""
    if client == "httptools":
        pool = HttpClient(url)
        try:
            return await closed_loop(load, http_call(pool.post, mode), t0)
        finally:
            pool.close()
    connector = aiohttp.TCPConnector(limit=load.concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300.0)) as session:
        async def post(path: str, payload: bytes) -> tuple[int, bytes]:
            async with session.post(url + path, data=payload, headers=JSON_HEADERS) as r:
                return r.status, await r.read()
        return await closed_loop(load, http_call(post, mode), t0)


async def run_http_here(load: Load, url: str, mode: HttpMode, server_pid: int, client: str = "httptools"
                        ) -> tuple[tuple[float, float], dict[str, Any]]:
    """The clients in this process, /metrics and the server's CPU times read at both ends of the window."""
    t0 = time.monotonic()

    async def watch(t_measure: float, t_end: float) -> tuple[Any, Any, dict[str, float]]:
        return await probe_window(t_measure, t_end, metrics_probe(url), server_pid)

    probing = asyncio.create_task(clients_busy([os.getpid()], watch, t0 + load.warmup,
                                               t0 + load.warmup + load.duration))
    window = await run_http(load, url, mode, t0, client)
    (before, after, cpu), busy = await probing
    return window, engine_figures(before, after, window[1] - window[0]) | {"server_cpu_s": cpu, "clients_busy": busy}


def _client_process(i: int, url: str, mode: HttpMode, client: str, load: Load, ready: Any, go: Any, t0: Any,
                    results: Any) -> None:
    """One client process of --client-procs: says it is ready (imports done), waits for the common start time,
    runs its share of the clients and sends back its samples as plain tuples."""
    try:
        freeze_startup_heap("bench client")  # as the server's processes do: no full GC pass over the imports
        ready.put(i)
        go.wait()
        run = event_loop_runner() if client == "httptools" else asyncio.run
        run(run_http(load, url, mode, t0.value, client))
        results.put((i, load.samples, None))
    except BaseException as e:  # the parent must hear about it, not wait forever
        results.put((i, [], f"{type(e).__name__}: {e}"))


def run_client_procs(load: Load, procs: int, target: Callable[..., None], args: tuple[Any, ...],
                     watch: Callable[[float, float], Awaitable[Any]], ready_timeout: float = 120.0,
                     name: str = "bench-client") -> tuple[tuple[float, float], Any, float | None]:
    """The clients split over `procs` processes (spawned: safe beside CUDA), one common start time. Process i runs
    target(i, *args, its share of `load`, ready, go, t0, results); once every one is ready, `watch(t_measure,
    t_end)` runs here over the measured window. Their samples are merged into `load`; returns the window, what
    `watch` returned and how busy the client processes were over it (`clients_busy`)."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, go, t0 = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    shares = [load.concurrency // procs + (1 if i < load.concurrency % procs else 0) for i in range(procs)]
    children = []
    for i, n in enumerate(shares):
        part = Load(n, load.duration, load.warmup, load.puzzles, load.per_call,
                    _next=load._next + i * len(load.puzzles) // procs)
        children.append(ctx.Process(target=target, args=(i, *args, part, ready, go, t0, results),
                                    name=f"{name}-{i}", daemon=True))
    for c in children:
        c.start()
    try:
        for _ in children:
            ready.get(timeout=ready_timeout)
        t0.value = time.monotonic() + 0.2
        go.set()
        t_measure, t_end = t0.value + load.warmup, t0.value + load.warmup + load.duration
        watched, busy = asyncio.run(clients_busy([c.pid for c in children], watch, t_measure, t_end))
        for _ in children:
            i, rows, error = results.get(timeout=load.warmup + load.duration + 120)
            if error is not None:
                raise RuntimeError(f"{name} process {i} failed: {error}")
            load.samples.extend(rows)
    finally:
        for c in children:
            c.join(10)
            if c.is_alive():
                c.kill()
    return (t_measure, t_end), watched, busy


async def clients_busy(pids: list[int], watch: Callable[[float, float], Awaitable[Any]], t_measure: float,
                       t_end: float) -> tuple[Any, float | None]:
    """What `watch` returns, and the client processes' (`pids`) mean CPU use over the window, a fraction of a core each:
    near 1.0 the load generator, not the server, caps the answers/s (one aiohttp process tops out near 3k
    requests/s), and its own queueing adds to the latencies it records."""
    await asyncio.sleep(max(0.0, t_measure - time.monotonic()))

    def cpu() -> float | None:
        try:
            return sum(process_cpu_seconds(p) for p in pids)
        except OSError:  # a client process already gone: no figure
            return None

    c0, w0 = cpu(), time.monotonic()
    watched = await watch(t_measure, t_end)
    c1, w1 = cpu(), time.monotonic()
    busy = None if c0 is None or c1 is None else round((c1 - c0) / ((w1 - w0) * len(pids)), 3)
    return watched, busy


def run_http_procs(load: Load, url: str, mode: HttpMode, procs: int, server_pid: int, client: str = "httptools"
                   ) -> tuple[tuple[float, float], dict[str, Any]]:
    """The HTTP clients in `procs` processes; /metrics and the server's CPU times read at both ends of the window."""
    async def watch(t_measure: float, t_end: float) -> tuple[Any, Any, dict[str, float]]:
        return await probe_window(t_measure, t_end, metrics_probe(url), server_pid)

    (t_measure, t_end), (before, after, cpu), busy = run_client_procs(load, procs, _client_process, (url, mode, client),
                                                                       watch)
    return (t_measure, t_end), engine_figures(before, after, t_end - t_measure) | {
        "client_procs": procs, "clients_busy": busy, "server_cpu_s": cpu}


# -- --profile-dir: where the server's processes spend their time ------------------------------------------------


def server_roles(pid: int) -> dict[str, list[int]]:
    """The processes of `recursolve serve` running as `pid` by role: the engine core (the spawned child that maps
    libtorch), the API processes and the supervisor itself; for a one-process server, {"server": [pid]}."""
    kids = [int(k) for f in Path(f"/proc/{pid}/task").glob("*/children") for k in f.read_text().split()]
    found: dict[str, list[int]] = {}
    for k in kids:
        try:
            if "spawn_main" not in Path(f"/proc/{k}/cmdline").read_text():
                continue  # multiprocessing's resource tracker
            role = "engine" if "libtorch" in Path(f"/proc/{k}/maps").read_text() else "api"
        except OSError:
            continue
        found.setdefault(role, []).append(k)
    return found | {"supervisor": [pid]} if found else {"server": [pid]}


def engine_sockets(pid: int) -> list[tuple[str, int]]:
    """The ipc:// address and process id of each engine core of the `recursolve serve` running as `pid`: the unix
    socket path an engine process holds open (/proc/net/unix by the inodes of its file descriptors)."""
    paths: dict[str, str] = {}  # socket inode -> path
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7].endswith(".sock"):
            paths[fields[6]] = fields[7]
    found = []
    for engine in server_roles(pid).get("engine", []):
        for fd in Path(f"/proc/{engine}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                path = paths.get(target[len("socket:["):-1]) if target.startswith("socket:[") else None
                if path is not None and Path(path).name.startswith("engine-"):
                    found.append((f"ipc://{path}", engine))
                    break
    return found


def server_processes(pid: int) -> dict[str, int]:
    """One process per role of `server_roles` (the one py-spy samples)."""
    return {role: pids[0] for role, pids in server_roles(pid).items() if role != "supervisor"}


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU seconds used so far by each role's processes (all their threads: ZMQ's I/O thread
    and torch's pool included), from /proc/<pid>/stat; a process that is gone counts nothing."""
    out: dict[str, float] = {}
    for role, pids in server_roles(pid).items():
        total = 0.0
        for p in pids:
            try:
                total += process_cpu_seconds(p)
            except OSError:
                continue
        out[role] = total
    return out


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads) so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of proc(5))


def cpu_per_answer(cpu_s: dict[str, float], answers: int, window_s: float, api_workers: int) -> dict[str, Any]:
    """The server's CPU milliseconds per answer by role over the measured window, and how busy the API
    processes were (1.0: every one of them used a whole core): when they are near 1.0 the API tier, not the
    engine, bounds the answers/s, and api ms/answer x answers/s is the API cores the load needed."""
    out: dict[str, Any] = {"cpu_ms_per_answer": {role: round(1000.0 * s / answers, 3) if answers else None
                                                 for role, s in cpu_s.items()}}
    if "api" in cpu_s and window_s > 0:
        out["api_busy"] = round(cpu_s["api"] / (window_s * api_workers), 3)
    return out


def py_spy() -> str:
    """py-spy beside this interpreter (a virtual environment's bin/) or on PATH; SystemExit when it is neither."""
    found = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise SystemExit("--profile-dir needs py-spy: pip install py-spy")
    return found


class Profiler:
    """py-spy sampling the server's processes for `seconds`, from `delay` s on: raw folded stacks to
    <dir>/<mode>-<role>.txt (an older file of that name is removed first, so a failed run reports no stale
    stacks), then the frames with the most samples of their own (`top`)."""

    def __init__(self, out_dir: Path, mode: str, pid: int, delay: float, seconds: float) -> None:
        self.pids = server_processes(pid)
        self.files = {role: out_dir / f"{mode}-{role}.txt" for role in self.pids}
        self.seconds = seconds
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exe = py_spy()
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in self.files.values():
            path.unlink(missing_ok=True)
        self.timer = threading.Timer(delay, self._start)
        self.timer.start()

    def _start(self) -> None:
        for role, pid in self.pids.items():
            self.procs.append(subprocess.Popen(
                [self.exe, "record", "--nonblocking", "-r", "200", "-f", "raw", "-d", str(int(self.seconds)),
                 "-p", str(pid), "-o", str(self.files[role])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def top(self, n: int = 8) -> dict[str, list[tuple[str, float]]]:
        self.timer.join()
        for proc in self.procs:
            proc.wait(timeout=self.seconds + 60)
        out: dict[str, list[tuple[str, float]]] = {}
        for role, path in self.files.items():
            own: collections.Counter[str] = collections.Counter()
            if path.exists():
                for line in path.read_text().splitlines():
                    stack, _, count = line.rpartition(" ")
                    own[stack.rsplit(";", 1)[-1]] += int(count)
            total = sum(own.values()) or 1
            out[role] = [(frame, round(c / total, 3)) for frame, c in own.most_common(n)]
        return out


# -- graph: the step-rate limit of the model runner ------------------------------------------------------------


def timed_steps(runner: Any, idx: np.ndarray, seconds: float, device: str) -> tuple[int, float]:
    """(steps, elapsed s) of repeated `runner.execute(idx)` for about `seconds` (each step ends with its
    device-to-host copy, so it has finished on the device when execute returns; synced again around the loop)."""
    cuda_sync(device)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        runner.execute(idx)
        n += 1
    cuda_sync(device)
    return n, time.perf_counter() - t0


def run_graph(args: argparse.Namespace, model: Path, puzzles: list[SudokuPuzzle]) -> dict[str, Any]:
    """ModelRunner alone, built as the engine core builds it, stepping all --batch-rows rows of real puzzles."""
    from app.engine.core import ModelEngine

    engine = ModelEngine.load(bench_spec(model, args.device, args.batch_rows, **model_entry(args)))
    runner, rows = engine.runner, args.batch_rows
    codec = get_codec("sudoku")
    inputs = np.stack([np.asarray(codec.encode(puzzles[i % len(puzzles)], 81), dtype=np.int32) for i in range(rows)])
    def measure() -> dict[str, tuple[int, float]]:
        with torch.inference_mode():
            runner.load_rows(inputs, np.zeros(rows, dtype=np.int32), [[i] for i in range(rows)])
            timed_steps(runner, np.arange(rows), min(args.warmup, 2.0), args.device)
            timed = {"full": timed_steps(runner, np.arange(rows), args.duration, args.device),
                     "one": timed_steps(runner, np.arange(1), min(3.0, args.duration / 5), args.device)}
            # The step's time by active rows (each padded to its bucket on CUDA): what a partly full pool costs.
            for n in sorted({32, 64, 128, 3 * rows // 4, rows - rows // 3} & set(range(2, rows))):
                timed[f"rows_{n}"] = timed_steps(runner, np.arange(n), min(0.5, args.duration / 10), args.device)
            return timed

    runner.warmup()
    # In a thread of its own, as InprocEngine runs the engine loop (inproc, oneproc); then briefly in the main
    # thread, as the engine-core process of `recursolve serve` runs it: on a loaded CPU the two differed 4-6x.
    timed: dict[str, tuple[int, float]] = {}
    worker = threading.Thread(target=lambda: timed.update(measure()), name="graph-steps")
    worker.start()
    worker.join()
    (steps, elapsed), (steps_1, elapsed_1) = timed["full"], timed["one"]
    with torch.inference_mode():
        main_steps, main_elapsed = timed_steps(runner, np.arange(rows), min(5.0, args.duration / 4), args.device)
    backend = runner.describe()
    return {
        "batch_rows": rows, "transport": "none (ModelRunner.execute in this process)", "backend": backend,
        "steps": steps, "window_s": round(elapsed, 2),
        "step_ms": round(elapsed / steps * 1000, 3), "step_ms_1_row": round(elapsed_1 / steps_1 * 1000, 3),
        "row_steps_per_s": round(steps * rows / elapsed, 1), "mean_rows_per_step": float(rows),
        "engine_steps_per_s": round(steps / elapsed, 1),
        "thread": "a worker thread (as the in-process engine); step_ms_main_thread: the same in the main thread, "
                  "as the engine-core process runs its loop",
        "step_ms_main_thread": round(main_elapsed / main_steps * 1000, 3),
        "step_ms_by_rows": {k.removeprefix("rows_"): round(e / n * 1000, 3) for k, (n, e) in timed.items()
                            if k.startswith("rows_")},
    }


# -- inproc: the engine core in this process, no HTTP ---------------------------------------------------------


def registry_snapshot() -> Snapshot:
    """The in-process engine's step-rows histogram and loop seconds (this process's default registry)."""
    from prometheus_client import REGISTRY

    from app.engine.phases import PHASES

    labels = {"model": MODEL_NAME}
    loop = {phase: REGISTRY.get_sample_value(LOOP_SECONDS, {"phase": phase}) or 0.0 for phase in PHASES}
    return (REGISTRY.get_sample_value(ROWS_SUM, labels) or 0.0, REGISTRY.get_sample_value(ROWS_COUNT, labels) or 0.0,
            loop)


def engine_call(client: Any, prefix: str, max_steps: int) -> OneCall:
    """One call of the engine modes: a Sudoku encoded and submitted as an EngineRequest, its output awaited."""
    from app.engine.client import EngineRejected, EngineUnavailable
    from app.engine.protocol import EngineRequest, SolveOptions, tokens_from_bytes

    codec = get_codec("sudoku")
    # /v1/solve's default (halting=auto) starts with this plain run, halting on the batched verifier; its
    # escalation of the few unverified answers (K noisy trajectories) is left out here.
    options = SolveOptions(max_steps=max_steps, halting="verifier", deadline_ms=DEFAULT_DEADLINE_MS)
    ids = itertools.count()

    async def one(puzzles: list[SudokuPuzzle]) -> list[Sample]:
        puzzle = puzzles[0]
        tokens = np.asarray(codec.encode(puzzle, 81), dtype=np.int32)
        request = EngineRequest(f"{prefix}-{next(ids)}", MODEL_NAME, inputs=tokens.tobytes(), puzzle_identifier=0,
                                options=options, arrival=time.monotonic())
        try:
            out = await client.submit(request)
        except EngineRejected as e:
            return [Sample(0, 0, ok=False, status=429 if e.code == "queue_full" else 503)]
        except EngineUnavailable:
            return [Sample(0, 0, ok=False, status=503)]
        if out.tokens is None:
            return [Sample(0, 0, ok=False, status=504)]
        # The engine's batched verifier ruled on every step (tests hold it equal to the codec's check); checking
        # again here would spend the client's CPU (inproc: the GIL the engine thread shares).
        verified = out.valid if out.valid is not None else codec.verify(
            puzzle, codec.decode(tokens_from_bytes(out.tokens), puzzle)).valid
        return [Sample(0, 0, ok=True, steps=out.steps, verified=verified)]
    return one


async def run_inproc(load: Load, spec: Any, max_steps: int) -> tuple[tuple[float, float], dict[str, Any]]:
    """InprocEngine + EngineClient, as an app without RECURSOLVE_ENGINE_ADDRESS runs them, without the app."""
    from app.engine.client import EngineClient, InprocEngine
    from app.settings import Settings

    share = Settings.model_fields["max_request_share"].default
    engine = InprocEngine([spec], warmup=True, max_share=share)
    engine.start()
    client = EngineClient(engine.address, engine.ctx)
    try:
        await client.start()
        ready = await client.wait_ready(timeout=600)
        if ready.error is not None:
            raise RuntimeError(f"the in-process engine could not load the model: {ready.error}")
        freeze_startup_heap("bench inproc")  # what a serving process does once ready (app/gc_pauses.py)
        t0 = time.monotonic()

        async def probe() -> Snapshot:
            return registry_snapshot()

        probing = asyncio.create_task(probe_window(t0 + load.warmup, t0 + load.warmup + load.duration, probe))
        window = await closed_loop(load, engine_call(client, "bench", max_steps), t0)
        before, after, _ = await probing
    finally:
        await client.close()
        await engine.stop()
    return window, engine_figures(before, after, window[1] - window[0]) | {"max_request_share": share}


# -- engine: the engine-core process of `recursolve serve`, fed over ZMQ by client processes, no HTTP -----------


def _engine_client_process(i: int, addresses: list[str], max_steps: int, load: Load, ready: Any, go: Any,
                           t0: Any, results: Any) -> None:
    """One client process of the engine mode: an EngineClient (as an API process holds one) connects to engine
    core i mod N, waits for its Ready, says so, then runs its share of the clients from the common start time."""
    from app.engine.client import EngineClient

    async def run() -> None:
        client = EngineClient(addresses[i % len(addresses)])
        try:
            await client.start()
            if (r := await client.wait_ready(timeout=900)).error is not None:
                raise RuntimeError(f"the engine core could not load the model: {r.error}")
            ready.put(i)
            await asyncio.to_thread(go.wait)
            await closed_loop(load, engine_call(client, f"bench{i}", max_steps), t0.value)
        finally:
            await client.close()

    try:
        freeze_startup_heap("bench client")
        asyncio.run(run())
        results.put((i, load.samples, None))
    except BaseException as e:  # the parent must hear about it, not wait forever
        results.put((i, [], f"{type(e).__name__}: {e}"))


def run_engine(load: Load, spec: Any, max_steps: int, procs: int, tmp: Path,
               entry: Callable[..., None] | None = None, torch_threads: int | None = None, engines: int = 1,
               attach: list[tuple[str, int]] | None = None) -> tuple[tuple[float, float], dict[str, Any]]:
    """The engine-core process started as `recursolve serve` starts it (engine_process_main, spawned, ipc://),
    driven by `procs` client processes of EngineClients: the engine core's own answers/s with no HTTP and no API
    tier, and its CPU per answer. Rows per step: the rows the engine launched over its steps (Stats), as the HTTP
    modes read them from /metrics (with the overlapped step they include rows whose result was dropped).
    `engines` > 1: that many engine-core processes, client process i on engine core i mod N (`serve --engines`);
    their steps, rows and CPU seconds are summed.
    `entry`: the engine process's target instead of engine_process_main (bench/engine_overhead.py's null step);
    `torch_threads`: its intra-op threads (default: as `recursolve serve`, RECURSOLVE_ENGINE_THREADS or the
    available CPUs shared out among the engine cores).
    `attach`: (address, pid) of each engine core of a running `recursolve serve` (`engine_sockets`) to drive
    instead of starting engine cores here (their API processes stay idle meanwhile)."""
    if attach is not None:
        engines = len(attach)
    if procs < engines:
        raise SystemExit(f"--engines {engines} needs at least {engines} --client-procs (one engine core each)")
    from app.engine.client import EngineClient
    from app.engine.core_loop import engine_process_main
    from app.serve import default_engine_threads
    from app.settings import Settings

    share = Settings.model_fields["max_request_share"].default
    cores: list[Any] = []
    if attach is None:
        ctx = multiprocessing.get_context("spawn")
        addresses = [f"ipc://{tmp}/bench-engine-{j}.sock" for j in range(engines)]
        options = {"warmup": True, "max_share": share, "log_level": "warning",
                   "torch_threads": torch_threads or Settings().engine_threads or default_engine_threads(engines)}
        cores = [ctx.Process(target=entry or engine_process_main, args=(address, [spec], options),
                             name=f"bench-engine-{j}", daemon=True) for j, address in enumerate(addresses)]
        for core in cores:
            core.start()
        pids = [core.pid for core in cores]
    else:
        addresses, pids = [a for a, _ in attach], [pid for _, pid in attach]

    async def counts(clients: list[EngineClient]) -> Snapshot:
        """(rows stepped, steps, the loop's seconds by phase) so far, summed over the engine cores: the rows they
        launched, as the HTTP modes read them from /metrics."""
        steps = rows = 0.0
        loop: dict[str, float] = {}
        for client in clients:
            answer = await client.query_stats(timeout=10.0)
            if answer is None:
                raise RuntimeError("an engine core did not answer a stats query within 10 s")
            stats = answer.models[MODEL_NAME]
            steps, rows = steps + float(stats["steps_run"]), rows + float(stats["rows_stepped"])
            for phase, seconds in answer.loop_s.items():
                loop[phase] = loop.get(phase, 0.0) + seconds
        return rows, steps, loop

    def cpu_seconds() -> float:
        return sum(process_cpu_seconds(pid) for pid in pids)

    async def watch(t_measure: float, t_end: float) -> tuple[float, Snapshot, Snapshot]:
        clients = [EngineClient(address) for address in addresses]
        try:
            for client in clients:
                await client.start()
                await client.wait_ready(timeout=60)
            await asyncio.sleep(max(0.0, t_measure - time.monotonic()))
            cpu, before = cpu_seconds(), await counts(clients)
            await asyncio.sleep(max(0.0, t_end - time.monotonic()))
            after = await counts(clients)
            return cpu_seconds() - cpu, before, after
        finally:
            for client in clients:
                await client.close()

    try:  # the clients wait for the engine's warm-up (a CUDA compile) before they say they are ready
        (t_measure, t_end), (cpu, before, after), busy = run_client_procs(
            load, procs, _engine_client_process, (addresses, max_steps), watch, ready_timeout=900,
            name="bench-engine-client")
    finally:
        for core in cores:
            core.terminate()
        for core in cores:
            core.join(30)
    return (t_measure, t_end), engine_figures(before, after, t_end - t_measure) | {
        "client_procs": procs, "clients_busy": busy, "max_request_share": share, "engines": engines,
        "engine_cpu_s": round(cpu, 3)}


# -- static: the official evaluation loop ------------------------------------------------------------------------


class StaticLoop:
    """Official-style evaluation: a static batch of whatever is waiting (<= batch_rows), exactly `steps` ACT
    steps, no halting; requests that arrive meanwhile wait for the next batch. One worker thread."""

    def __init__(self, model: Path, batch_rows: int, steps: int, device: str) -> None:
        # same loader and dtype default as the server, on the same device
        self.backend = make_backend(model, task="sudoku", device=device)
        self.batch_rows, self.steps = batch_rows, steps
        self.waiting: collections.deque[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = collections.deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self.thread = threading.Thread(target=self._run, name="static-loop", daemon=True)
        self.batches: list[int] = []

    def warmup(self) -> None:
        """One step at batch 1 and at the full batch, as the server's warm-up does."""
        with torch.inference_mode():
            for n in sorted({1, self.batch_rows}):
                x = self.backend.embed(torch.ones(n, 81, dtype=torch.int32), torch.zeros(n, dtype=torch.int32))
                self.backend.act_step(x, *self.backend.fresh_carry(n))

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop after the batch in progress (its answers go to clients that are gone)."""
        with self.cond:
            self.stopping = True
            self.waiting.clear()
            self.cond.notify()
        self.thread.join(120)

    def submit(self, inputs: np.ndarray) -> asyncio.Future[np.ndarray]:
        fut: asyncio.Future[np.ndarray] = self.loop.create_future()
        with self.cond:
            self.waiting.append((inputs, fut))
            self.cond.notify()
        return fut

    def _solve(self, inputs: np.ndarray) -> np.ndarray | None:
        with torch.inference_mode():
            n = inputs.shape[0]
            x = self.backend.embed(torch.from_numpy(inputs), torch.zeros(n, dtype=torch.int32))
            z_H, z_L = self.backend.fresh_carry(n)
            for _ in range(self.steps):
                if self.stopping:  # end of the run: nobody waits for this batch any more
                    return None
                out = self.backend.act_step(x, z_H, z_L)
                z_H, z_L = out.z_H, out.z_L
            return out.logits.argmax(-1).cpu().numpy()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not (self.stopping or self.waiting):
                    self.cond.wait()
                if self.stopping:
                    return
                batch = [self.waiting.popleft() for _ in range(min(self.batch_rows, len(self.waiting)))]
            tokens = self._solve(np.stack([b[0] for b in batch]))
            if tokens is None:
                return
            self.batches.append(len(batch))
            for (_, fut), row in zip(batch, tokens, strict=True):
                self.loop.call_soon_threadsafe(_resolve, fut, row)


def _resolve(fut: asyncio.Future[np.ndarray], row: np.ndarray) -> None:
    if not fut.done():  # the client may have been cancelled at the end of the run
        fut.set_result(row)


async def run_static(load: Load, model: Path, batch_rows: int, steps: int,
                     device: str) -> tuple[tuple[float, float], dict[str, Any]]:
    codec = get_codec("sudoku")
    engine = StaticLoop(model, batch_rows, steps, device)
    await asyncio.to_thread(engine.warmup)
    freeze_startup_heap("bench static")  # as inproc and the server's processes: no full GC pass over the imports
    engine.start()

    async def one(puzzles: list[SudokuPuzzle]) -> list[Sample]:
        puzzle = puzzles[0]
        inputs = np.asarray(codec.encode(puzzle, 81), dtype=np.int32)
        tokens = await engine.submit(inputs)
        verified = codec.verify(puzzle, codec.decode(tokens, puzzle)).valid
        return [Sample(0, 0, ok=True, steps=steps, verified=verified)]

    try:
        window = await closed_loop(load, one)
    finally:
        await asyncio.to_thread(engine.stop)
    sizes = engine.batches
    mean = round(float(np.mean(sizes)), 2) if sizes else None
    # every step of a static batch runs all its rows
    return window, {"batches": len(sizes), "mean_batch_rows": mean, "mean_rows_per_step": mean}


# -- driver ----------------------------------------------------------------------------------------------


def default_api_workers(device: str, engines: int) -> int:
    """What `recursolve serve --engines` starts without --api-workers for a model on `device`."""
    from app.serve import default_api_workers as serve_default
    from app.serve import on_gpu

    return serve_default(on_gpu(device), engines)


def queue_rows_for(mode: str, concurrency: int, batch_items: int) -> int:
    """Room in a mode's queue for every client's whole call, so the load is never turned away (429)."""
    per_call = batch_items if mode in HTTP_MODES and HTTP_MODES[mode].endpoint == "batch" else 1
    return max(512, 4 * concurrency * per_call)


def uses_server(mode: str, args: argparse.Namespace) -> bool:
    """Whether the mode runs against a `recursolve serve` (the engine mode drives the engine cores of one, unless
    --fresh-servers starts its own engine core as before)."""
    return mode in HTTP_MODES or (mode == "engine" and not args.fresh_servers)


class KeptServer:
    """The server of the last mode that used one, kept for the next that asks for the same one (kind and batch
    rows): the request options are the only difference between continuous, verifier, nohedge and batch, the engine
    mode drives the same engine cores without the API tier, and each start of `recursolve serve` on a GPU costs a
    minute or more of a short lease (torch.compile and CUDA-graph capture at warm-up). Any other mode stops it
    first, so an idle server never shares the machine with a measurement; --fresh-servers starts one per mode."""

    def __init__(self) -> None:
        self.key: tuple[str, int] | None = None
        self.server: Server | None = None

    def get(self, key: tuple[str, int], start: Callable[[], Server]) -> tuple[Server, bool]:
        """The kept server when it is `key`'s, else a new one (the old one stopped); True when new."""
        if self.server is not None and self.key == key:
            return self.server, False
        self.stop()
        self.server, self.key = start(), key
        return self.server, True

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.server = self.key = None


def run_mode(mode: str, args: argparse.Namespace, model: Path, puzzles: list[SudokuPuzzle],
             tmp: Path, max_steps: int, kept: KeptServer, queue_rows: int) -> dict[str, Any]:
    """One mode's figures. Modes that use a server (`uses_server`) take `kept`'s when it is the same one (started
    with `queue_rows`, enough for every mode of the run), and leave it kept unless --fresh-servers or the mode
    failed."""
    load = Load(args.concurrency, args.duration, args.warmup, puzzles)
    load._next = random.Random(mode).randrange(len(puzzles))  # different puzzles per mode, same distribution
    if not uses_server(mode, args):
        kept.stop()

    def server_for(kind: str, rows: int) -> tuple[Server, dict[str, Any]]:
        server, fresh = kept.get((kind, rows), lambda: Server(
            kind, model, {"batch_rows": rows, "max_queue_rows": queue_rows, "device": args.device,
                          **model_entry(args)},
            tmp, mode, api_workers=args.api_workers if kind == "serve" else None,
            max_batch_items=max(64, args.batch_items), engines=args.engines))
        # A kept server answered the previous mode: its start-up is not this mode's.
        return server, ({"ready_after_s": round(server.wait_ready(), 1)} if fresh
                        else {"server_kept_from_previous_mode": True})

    info: dict[str, Any] = {"loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    if mode == "graph":
        info |= run_graph(args, model, puzzles)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()  # the runner's buffers and graphs are gone: leave the GPU to the next mode
        info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        return info  # no requests: answers/s is implied from another mode's steps (main)
    if mode == "static":
        info |= {"batch_rows": args.batch_rows, "transport": "in-process (no HTTP)", "steps": args.static_steps}
        (t_measure, t_end), extra = asyncio.run(run_static(load, model, args.batch_rows, args.static_steps,
                                                           args.device))
        info |= extra
    elif mode == "inproc":
        info |= {"batch_rows": args.batch_rows, "transport": "in-process EngineClient -> InprocEngine (no HTTP)"}
        spec = bench_spec(model, args.device, args.batch_rows, queue_rows_for(mode, args.concurrency, args.batch_items),
                          **model_entry(args))
        (t_measure, t_end), extra = asyncio.run(run_inproc(load, spec, max_steps))
        info |= extra
    elif mode == "engine" and args.fresh_servers:
        info |= {"batch_rows": args.batch_rows,
                 "transport": "EngineClients in --client-procs processes -> ZMQ ipc -> an engine-core process "
                              "started as `recursolve serve` starts it (no HTTP, no API tier)"}
        spec = bench_spec(model, args.device, args.batch_rows, queue_rows_for(mode, args.concurrency, args.batch_items),
                          **model_entry(args))
        (t_measure, t_end), extra = run_engine(load, spec, max_steps, args.client_procs, tmp, engines=args.engines)
        info |= extra
    elif mode == "engine":
        info |= {"batch_rows": args.batch_rows,
                 "transport": "EngineClients in --client-procs processes -> ZMQ ipc -> the engine-core process of "
                              "a running `recursolve serve` (no HTTP: its API processes stay idle)"}
        ok = False
        try:
            server, started = server_for("serve", args.batch_rows)
            info |= started
            attach = engine_sockets(server.proc.pid)
            if len(attach) != args.engines:
                raise RuntimeError(f"found {len(attach)} engine-core sockets of the server, expected {args.engines}")
            (t_measure, t_end), extra = run_engine(load, None, max_steps, args.client_procs, tmp, attach=attach)
            info |= extra
            ok = True
        finally:
            if not ok:
                kept.stop()
    else:
        http = HTTP_MODES[mode]
        rows = http.rows or args.batch_rows
        if http.endpoint == "batch":
            load.per_call = args.batch_items
        workers = (args.api_workers or default_api_workers(args.device, args.engines)) if http.server == "serve" else 1
        profiler: Profiler | None = None
        ok = False
        try:
            info |= {"batch_rows": rows, "request_options": http.options, "server": http.server,
                     "api_workers": workers,
                     "transport": f"HTTP /v1/{'solve/batch' if http.endpoint == 'batch' else 'solve'} "
                                  f"({args.http_client} -> uvicorn, 127.0.0.1)",
                     "http_client": args.http_client}
            server, started = server_for(http.server, rows)
            info |= started
            if http.endpoint == "batch":
                info["items_per_call"] = load.per_call
            profiler = (Profiler(args.profile_dir, mode, server.proc.pid, load.warmup + 0.5, load.duration - 1)
                        if args.profile_dir is not None else None)
            if args.client_procs > 1:
                (t_measure, t_end), extra = run_http_procs(load, server.url, http, args.client_procs,
                                                           server.proc.pid, args.http_client)
            else:
                run = event_loop_runner() if args.http_client == "httptools" else asyncio.run
                (t_measure, t_end), extra = run(run_http_here(load, server.url, http, server.proc.pid,
                                                              args.http_client))
            info |= extra
            if profiler is not None:
                info["profile_top_own_samples"] = top = profiler.top()
                for role, frames in top.items():
                    print(f"   {role}: " + "; ".join(f"{share:.0%} {frame}" for frame, share in frames[:5]))
            ok = True
        finally:
            if profiler is not None:
                profiler.timer.cancel()  # a mode that failed early must not start py-spy on a stopped server
            if args.fresh_servers or not ok:
                kept.stop()
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    summary = summarise(load.results(), t_measure, t_end)
    if cpu := info.get("server_cpu_s"):
        summary |= cpu_per_answer(cpu, summary["answers"], t_end - t_measure, info["api_workers"])
    if (cpu_s := info.pop("engine_cpu_s", None)) is not None:
        summary["cpu_ms_per_answer"] = {"engine": round(1000.0 * cpu_s / summary["answers"], 3)
                                        if summary["answers"] else None}
        summary["engine_busy"] = round(cpu_s / (t_end - t_measure), 3)
    return summary | info


# verifier/static: /v1/solve against the static loop at about equal verified accuracy (halting=verifier skips
# auto's escalations, which buy the last few percent); continuous/static compares /v1/solve's default.
RATIOS = (("continuous", "static"), ("verifier", "static"), ("inproc", "graph"), ("engine", "graph"),
          ("batch", "inproc"), ("continuous", "oneproc"))


def graph_answers(results: dict[str, Any]) -> str | None:
    """Fill the graph mode's implied answers/s from the mean steps of continuous (else inproc) of this run."""
    graph = results.get("graph")
    if graph is None:
        return None
    source = next((m for m in ("continuous", "inproc") if results.get(m, {}).get("mean_act_steps")), None)
    if source is None:
        graph["throughput_rps"] = None
        return "graph: no continuous or inproc mode in this run, so no mean ACT steps: answers/s not implied"
    steps = results[source]["mean_act_steps"]
    graph |= {"mean_act_steps": steps, "mean_act_steps_from": source,
              "throughput_rps": round(graph["row_steps_per_s"] / steps, 1)}
    return None if source == "continuous" else "graph: mean ACT steps taken from inproc (continuous did not run)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop clients (default 16)")
    ap.add_argument("--duration", type=float, default=35.0, help="measured seconds per mode (default 35)")
    ap.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds at the start of each mode")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="device of every mode (default auto: CUDA when torch sees one)")
    ap.add_argument("--batch-rows", type=int, default=None,
                    help="rows per step for every mode but single (default: the server's, 256 on CUDA, 32 on CPU)")
    ap.add_argument("--batch-items", type=int, default=64, help="puzzles per /v1/solve/batch call (batch mode)")
    ap.add_argument("--engines", type=int, default=1,
                    help="engine-core processes: `recursolve serve --engines` in the HTTP modes; in the engine mode, "
                         "client process i drives engine core i mod N")
    ap.add_argument("--api-workers", type=int, default=None,
                    help="API processes of `recursolve serve` (default: the server's, from the cores and the device)")
    ap.add_argument("--http-client", default="httptools", choices=HTTP_CLIENTS,
                    help="the HTTP modes' load generator: httptools (bench/http_load.py, on uvloop when installed) "
                         "or aiohttp (runs before 2026-11-26; ~3.5x the client CPU a request)")
    ap.add_argument("--client-procs", type=int, default=1,
                    help="processes running the HTTP clients, concurrency/N clients each (default 1: this one)")
    ap.add_argument("--static-steps", type=int, default=None,
                    help="ACT steps of every static batch (default: the model's halt_max_steps)")
    ap.add_argument("--tier", default="medium", choices=("easy", "medium", "hard", "extreme"))
    ap.add_argument("--puzzles", type=int, default=600, help="distinct puzzles generated (seeded)")
    ap.add_argument("--weights-dir", type=Path, default=REPO / "weights")
    ap.add_argument("--model", default=None, help="folder name under --weights-dir (default trm-mlp-sudoku)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    ap.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                    help="the model's compile field in every mode but static: auto (the server's default: on for "
                         "CUDA), on or off (the eager step)")
    ap.add_argument("--overlap", default="auto", choices=("auto", "on", "off"),
                    help="the model's overlap field in every mode but static and graph: auto (the server's default: "
                         "on for CUDA), on or off (launch a step and wait for it)")
    ap.add_argument("--device-wait", default="auto", choices=("auto", "block", "spin"),
                    help="the model's wait field: how the engine waits for a CUDA step (auto: the server's default, "
                         "block; spin busy-waits, as CUDA does by default)")
    ap.add_argument("--model-options", default=None, metavar="JSON",
                    help='the model\'s default_options in the HTTP modes, e.g. \'{"escalate_after": 4}\'')
    ap.add_argument("--fresh-servers", action="store_true",
                    help="start a server for every HTTP mode (default: consecutive HTTP modes that need the same "
                         "server share one; each start costs a GPU minute or more of compile and graph capture)")
    ap.add_argument("--note", default=None, help="appended to the report's note (e.g. what else ran)")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/serve-<host>.json")
    ap.add_argument("--profile-dir", type=Path, default=None,
                    help="HTTP modes: py-spy (must be on PATH) samples the engine-core and one API process over the "
                         "measured window; raw stacks go here, the top frames into the report")
    args = ap.parse_args()
    try:
        model_entry(args)
    except ValueError as e:
        ap.error(f"--model-options is not JSON: {e}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"unknown mode(s) {sorted(unknown)}; choose from {MODES}")
    if args.client_procs < 1 or args.client_procs > args.concurrency:
        raise SystemExit(f"--client-procs {args.client_procs}: expected 1 to --concurrency ({args.concurrency})")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    from app.engine.core import default_batch_rows, resolve_device

    args.device = resolve_device(args.device)
    args.batch_rows = args.batch_rows or default_batch_rows(args.device)

    host = socket.gethostname()
    out = args.out or REPO / "bench" / "results" / f"serve-{host}.json"
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model, random_weights = pick_model(args.weights_dir, args.model, tmp)
        cfg = json.loads((model / "config.json").read_text())
        halt_max_steps = int(cfg.get("halt_max_steps", 16))
        if args.static_steps is None:
            args.static_steps = halt_max_steps
        print(f"model: {model}{' (RANDOM weights: nothing trained, never halts early)' if random_weights else ''}"
              f" on {args.device}, batch_rows {args.batch_rows}")
        rng = random.Random(1234)
        t = time.monotonic()
        puzzles = [generate(rng, args.tier) for _ in range(args.puzzles)]
        print(f"generated {len(puzzles)} {args.tier} Sudokus in {time.monotonic() - t:.1f} s")
        results: dict[str, Any] = {}
        kept = KeptServer()
        queue_rows = max([queue_rows_for(m, args.concurrency, args.batch_items) for m in modes
                          if uses_server(m, args)], default=512)
        try:
            for mode in modes:
                print(f"-- {mode}: {args.concurrency} clients, {args.warmup:.0f} s warm-up + {args.duration:.0f} s",
                      flush=True)
                try:
                    results[mode] = r = run_mode(mode, args, model, puzzles, tmp, halt_max_steps, kept, queue_rows)
                except Exception as exc:  # one broken mode must not cost the others' figures (a GPU lease is short)
                    traceback.print_exc()
                    results[mode] = r = {"error": f"{type(exc).__name__}: {exc}"[-4000:]}
                write_report(args, out, results, model, cfg, random_weights, halt_max_steps, t_start)
                if "error" in r:
                    continue
                if mode == "graph":
                    print(f"   {r['row_steps_per_s']:.0f} row-steps/s ({r['step_ms']} ms/step at {r['batch_rows']} "
                          f"rows, {r['step_ms_1_row']} ms at 1 row)", flush=True)
                    continue
                print(f"   {r['throughput_rps']:.2f} answers/s, p50 {r['latency_ms']['p50']:.0f} ms, "
                      f"p99 {r['latency_ms']['p99']:.0f} ms, {r['mean_act_steps']} steps, "
                      f"{r.get('mean_rows_per_step')} rows/step, errors {r['errors']}", flush=True)
        finally:
            kept.stop()  # before the folder its models file is in goes
    report = write_report(args, out, results, model, cfg, random_weights, halt_max_steps, t_start)
    print_table(report["modes"], report["ratios"])
    for mode, error in report["failed"].items():
        print(f"{mode:<11} FAILED: {error.splitlines()[0][:200]}")
    print(f"\n{report['note']}\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out} "
          f"({report['total_wall_s']} s)")


def write_report(args: argparse.Namespace, out: Path, results: dict[str, Any], model: Path, cfg: dict[str, Any],
                 random_weights: bool, halt_max_steps: int, t_start: float) -> dict[str, Any]:
    """The report of the modes run so far, written to `out` (after every mode, so a run cut short keeps them)."""
    failed = {m: r["error"] for m, r in results.items() if "error" in r}
    results = {m: r for m, r in results.items() if m not in failed}
    graph_note = graph_answers(results)
    rate = {m: r.get("throughput_rps") for m, r in results.items()}
    ratios = {f"{a}/{b}": round(rate[a] / rate[b], 3) for a, b in RATIOS if rate.get(a) and rate.get(b)}

    on_cuda = args.device.startswith("cuda")
    note = ("On a CPU the clients, the API processes and the engine share the cores, so absolute figures move by "
            "25% or more between runs; compare the modes within one run. "
            if not on_cuda else "Compare the modes within one run. ")
    note += ("static and inproc run in this process without HTTP; graph is the model runner alone (no requests): "
             "its answers/s is row-steps/s over the mean ACT steps per answer.")
    if graph_note:
        note += " " + graph_note + "."
    if (g := results.get("graph")) and g["step_ms_main_thread"] > 2 * g["step_ms"]:
        note += (f" graph: a {g['batch_rows']}-row step took {g['step_ms_main_thread'] / g['step_ms']:.1f}x longer in "
                 "the main thread than in a worker thread of the same process (the engine-core process of "
                 "`recursolve serve` steps in its main thread; the in-process engine of inproc and oneproc in a "
                 "thread).")
    if empty := [m for m, r in results.items() if m != "graph" and not r.get("answers")]:
        note += (f" {', '.join(empty)}: no call completed inside the measured window (each takes longer than "
                 "warm-up + duration under this load): lengthen --duration or lower --batch-items/--concurrency.")
    if failed:
        note += f" Failed (no figures): {', '.join(failed)}; their errors are under 'failed'."
    if args.note:
        note += " " + args.note
    report = {
        "benchmark": "serve_bench",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "host": socket.gethostname(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "python": platform.python_version(),
                    "gpu": torch.cuda.get_device_name() if on_cuda else None},
        "note": note,
        "model": {"path": str(model.relative_to(REPO)) if model.is_relative_to(REPO) else "temp dir",
                  "random_weights": random_weights,
                  "arch": cfg.get("arch"), "hidden_size": cfg.get("hidden_size"), "mlp_t": cfg.get("mlp_t"),
                  "H_cycles": cfg.get("H_cycles"), "L_cycles": cfg.get("L_cycles"), "L_layers": cfg.get("L_layers"),
                  "halt_max_steps": halt_max_steps, "device": args.device, "entry": model_entry(args),
                  "dtype": f"{default_dtype(args.device)} (the server's default for the device, used by every mode)"},
        "load": {"clients": args.concurrency, "closed_loop": True, "duration_s": args.duration,
                 "warmup_s": args.warmup, "tier": args.tier, "distinct_puzzles": args.puzzles,
                 "cache": "disabled", "batch_rows": args.batch_rows, "batch_items": args.batch_items,
                 "api_workers": args.api_workers or default_api_workers(args.device, args.engines),
                 "engines": args.engines,
                 "client_procs": args.client_procs},
        "modes": results,
        "failed": failed,
        "ratios": ratios,
        "total_wall_s": round(time.monotonic() - t_start, 1),
    }
    if random_weights:
        report["note"] += (" RANDOM weights (no trained model was in weights/): every request runs all "
                           "halt_max_steps steps in every mode and no answer is right; this run measures "
                           "scheduling only.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _fmt(v: Any, spec: str) -> str:
    """`v` in `spec`; a missing value is a '-' as wide as the column, so the columns stay aligned."""
    if v is None:
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return "-".rjust(int(width or 1))
    return format(v, spec)


CLIENTS_BUSY_CAP = 0.9  # client processes' mean share of a core above which they, not the server, may set a figure


def print_table(results: dict[str, Any], ratios: dict[str, float]) -> None:
    print(f"\n{'mode':<11} {'rows':>4} {'answers/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'steps':>6} {'verified':>8} "
          f"{'rows/step':>9} {'errors':>6} {'api ms/ans':>10} {'api busy':>8} {'eng ms/ans':>10} {'cli busy':>8}")
    for mode, r in results.items():
        lat = r.get("latency_ms", {})  # graph has none: it serves no requests
        cpu = r.get("cpu_ms_per_answer", {})
        print(f"{mode:<11} {r['batch_rows']:>4} {_fmt(r.get('throughput_rps'), '10.1f')} "
              f"{_fmt(lat.get('p50'), '8.1f')} {_fmt(lat.get('p99'), '8.1f')} {_fmt(r.get('mean_act_steps'), '6')} "
              f"{_fmt(r.get('verified_fraction'), '8')} {_fmt(r.get('mean_rows_per_step'), '9')} "
              f"{_fmt(r.get('errors'), '6')} {_fmt(cpu.get('api', cpu.get('server')), '10.3f')} "
              f"{_fmt(r.get('api_busy'), '8')} {_fmt(cpu.get('engine'), '10.3f')} {_fmt(r.get('clients_busy'), '8')}")
    if "graph" in results:
        g = results["graph"]
        print(f"graph: {g['row_steps_per_s']:.0f} row-steps/s, {g['step_ms']} ms/step at {g['batch_rows']} rows, "
              f"{g['step_ms_1_row']} ms at 1 row ({'CUDA graphs' if g['backend'].get('cuda_graphs') else 'eager'}); "
              f"{g['step_ms_main_thread']} ms/step at {g['batch_rows']} rows in the main thread"
              f"{', compiled step' if g['backend'].get('compiled') else ''}")
        if g.get("step_ms_by_rows"):
            print("   ms/step by active rows: " + ", ".join(f"{n}: {ms}" for n, ms in g["step_ms_by_rows"].items()))
    for mode, r in results.items():
        if r.get("engine_loop_share"):
            print(f"engine loop, {mode}: share of its time by phase: " + ", ".join(
                f"{phase} {share:.2f}" for phase, share in sorted(r["engine_loop_share"].items(), key=lambda x: -x[1])))
    for name, value in ratios.items():
        print(f"{name:<22} {value:.2f}x")
    capped = [mode for mode, r in results.items() if (r.get("clients_busy") or 0.0) >= CLIENTS_BUSY_CAP]
    if capped:
        print(f"clients busy >= {CLIENTS_BUSY_CAP} in {', '.join(capped)}: the load generator may set those figures "
              "(more --client-procs, if cores allow)")


if __name__ == "__main__":
    main()
