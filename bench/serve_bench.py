"""Load benchmark of the Sudoku serving path: continuous batching vs one-at-a-time vs the official static loop.

N closed-loop clients (httpx, asyncio) each send one real generated Sudoku (puzzles.sudoku.generate), wait for
the answer, and send the next, for a fixed time. Four modes, same model, same weights, same dtype
(models.default_dtype, as the server picks it):

  continuous  `recursolve serve` on 127.0.0.1 with the model at batch_rows=B (this server: rows halt and are
              refilled at ACT-step granularity)
  single      `recursolve serve` with the same model at batch_rows=1 (one request at a time)
  static      in-process, no HTTP: the official evaluation loop: take every waiting request (up to B) as one
              static batch, run exactly halt_max_steps ACT steps (16 in the official configs; --static-steps)
              with no halting, answer them all, repeat
  verifier    as continuous, with {"halting": "verifier"}: a row stops when its answer passes the exact
              Sudoku check (else at max_steps), instead of when the Q-head says so

Reported per mode: throughput (answers/s), latency p50/p95/p99 (client side; HTTP included for the server modes),
mean ACT steps per answer, verified fraction, over the answers completed in the measured window (after the
warm-up; requests still in flight at the end are cut, so a slow mode cannot stretch the run).
The result cache is disabled in the servers; puzzles cycle through a seeded pool (--puzzles, default 600), so
a repeat is hundreds of requests away and never coalesces with an identical request in flight.

Weights: weights/<model> when present (default trm-mlp-sudoku, else the first Sudoku model folder), otherwise
a random-weight TRM-MLP (the architecture of training/configs/trm-mlp-sudoku.json) saved to a temp dir; random
weights never halt on their own (Q-head bias -5), so every request then runs all halt_max_steps steps in every
mode and the answers are wrong: the run then only measures the scheduling, and says so in its output.

    .venv/bin/python bench/serve_bench.py                      # ~3.5 min: 4 x (start + 5 s warm-up + 35 s)
    .venv/bin/python bench/serve_bench.py --duration 10 --modes continuous,static

Writes bench/results/serve-<host>.json. This machine's 2 CPU cores are shared with training runs: numbers
move by 25% or more between runs; compare modes within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from app.engine.backends import make_backend
from models import ModelConfig, build_model, default_dtype, save_model
from puzzles import get_codec
from puzzles.sudoku import SudokuPuzzle, generate

REPO = Path(__file__).resolve().parent.parent

MODES = ("continuous", "single", "static", "verifier")
# HTTP modes: (batch_rows, request options); batch_rows None = --batch-rows.
HTTP_MODES: dict[str, tuple[int | None, dict[str, Any]]] = {
    "continuous": (None, {}),
    "single": (1, {}),
    "verifier": (None, {"halting": "verifier"}),
}
PLANNED_CONFIG = REPO / "training" / "configs" / "trm-mlp-sudoku.json"


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
    return "".join(str(d) if d else "." for d in p.givens)


# -- measurements ------------------------------------------------------------------------------------------


@dataclass
class Sample:
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
    _next: int = 0
    samples: list[Sample] = field(default_factory=list)

    def next_puzzle(self) -> SudokuPuzzle:
        p = self.puzzles[self._next % len(self.puzzles)]
        self._next += 1
        return p


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


async def closed_loop(load: Load, one_request) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Run `concurrency` clients for warmup + duration, then cancel what is still in flight.
    Returns the measured window (t_measure, t_end)."""
    t0 = time.perf_counter()
    t_measure, t_end = t0 + load.warmup, t0 + load.warmup + load.duration

    async def client() -> None:
        while True:
            puzzle = load.next_puzzle()
            start = time.perf_counter()
            sample = await one_request(puzzle)
            sample.start, sample.end = start, time.perf_counter()
            load.samples.append(sample)

    tasks = [asyncio.create_task(client()) for _ in range(load.concurrency)]
    done, _ = await asyncio.wait(tasks, timeout=t_end - time.perf_counter())
    for t in tasks:
        t.cancel()  # HTTP: the client disconnects and the server frees the rows
    await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:  # a client that stopped early hit an unexpected exception: show it
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    return t_measure, t_end


# -- modes (a) and (b): the real server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`recursolve serve` as a child process on 127.0.0.1 with one model at a given batch_rows."""

    def __init__(self, model: Path, batch_rows: int, max_queue_rows: int, tmp: Path, tag: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        models_file = tmp / f"models-{tag}.yaml"
        models_file.write_text(json.dumps({"models": [{  # JSON is YAML
            "name": "bench", "task": "sudoku", "path": str(model), "batch_rows": batch_rows,
            "max_queue_rows": max_queue_rows}]}))
        env = os.environ | {
            "RECURSOLVE_MODELS_FILE": str(models_file), "RECURSOLVE_CACHE_ENABLED": "false",
            "RECURSOLVE_HOST": "127.0.0.1", "RECURSOLVE_PORT": str(self.port), "RECURSOLVE_LOG_LEVEL": "warning",
            "RECURSOLVE_DRAIN_GRACE_SECONDS": "2", "RECURSOLVE_WARMUP": "true",
        }
        env.pop("RECURSOLVE_REDIS_URL", None)
        self.log_path = tmp / f"server-{tag}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], cwd=REPO, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return time.perf_counter() - t0
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


async def run_http(load: Load, url: str, options: dict[str, Any]) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=load.concurrency, max_keepalive_connections=load.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300.0, limits=limits) as client:

        async def one(puzzle: SudokuPuzzle) -> Sample:
            r = await client.post("/v1/solve", json={"task": "sudoku", "puzzle": sudoku_text(puzzle),
                                                     "options": options})
            if r.status_code != 200:
                return Sample(0, 0, ok=False, status=r.status_code)
            body = r.json()
            return Sample(0, 0, ok=True, steps=int(body["steps"]), verified=bool(body["verified"]))

        return await closed_loop(load, one)


# -- mode (c): the official static loop ------------------------------------------------------------------------


class StaticLoop:
    """Official-style evaluation: a static batch of whatever is waiting (<= batch_rows), exactly `steps` ACT
    steps, no halting; requests that arrive meanwhile wait for the next batch. One worker thread."""

    def __init__(self, model: Path, batch_rows: int, steps: int) -> None:
        self.backend = make_backend(model, task="sudoku")  # same loader, device and dtype default as the server
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


async def run_static(load: Load, model: Path, batch_rows: int,
                     steps: int) -> tuple[tuple[float, float], dict[str, Any]]:
    codec = get_codec("sudoku")
    engine = StaticLoop(model, batch_rows, steps)
    await asyncio.to_thread(engine.warmup)
    engine.start()

    async def one(puzzle: SudokuPuzzle) -> Sample:
        inputs = np.asarray(codec.encode(puzzle, 81), dtype=np.int32)
        tokens = await engine.submit(inputs)
        verified = codec.verify(puzzle, codec.decode(tokens, puzzle)).valid
        return Sample(0, 0, ok=True, steps=steps, verified=verified)

    try:
        window = await closed_loop(load, one)
    finally:
        await asyncio.to_thread(engine.stop)
    sizes = engine.batches
    return window, {"batches": len(sizes), "mean_batch_rows": round(float(np.mean(sizes)), 2) if sizes else None}


# -- driver ----------------------------------------------------------------------------------------------


def run_mode(mode: str, args: argparse.Namespace, model: Path, puzzles: list[SudokuPuzzle],
             tmp: Path) -> dict[str, Any]:
    load = Load(args.concurrency, args.duration, args.warmup, puzzles)
    load._next = random.Random(mode).randrange(len(puzzles))  # different puzzles per mode, same distribution
    info: dict[str, Any] = {"loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    if mode == "static":
        info |= {"batch_rows": args.batch_rows, "transport": "in-process (no HTTP)", "steps": args.static_steps}
        (t_measure, t_end), extra = asyncio.run(run_static(load, model, args.batch_rows, args.static_steps))
        info |= extra
    else:
        rows, options = HTTP_MODES[mode]
        rows = rows or args.batch_rows
        server = Server(model, rows, max(512, 4 * args.concurrency), tmp, mode)
        try:
            info |= {"batch_rows": rows, "request_options": options, "transport": "HTTP (httpx -> uvicorn, 127.0.0.1)",
                     "ready_after_s": round(server.wait_ready(), 1)}
            t_measure, t_end = asyncio.run(run_http(load, server.url, options))
        finally:
            server.stop()
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return summarise(load.samples, t_measure, t_end) | info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop clients (default 16)")
    ap.add_argument("--duration", type=float, default=35.0, help="measured seconds per mode (default 35)")
    ap.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds at the start of each mode")
    ap.add_argument("--batch-rows", type=int, default=32, help="rows per step for continuous and static")
    ap.add_argument("--static-steps", type=int, default=None,
                    help="ACT steps of every static batch (default: the model's halt_max_steps)")
    ap.add_argument("--tier", default="medium", choices=("easy", "medium", "hard", "extreme"))
    ap.add_argument("--puzzles", type=int, default=600, help="distinct puzzles generated (seeded)")
    ap.add_argument("--weights-dir", type=Path, default=REPO / "weights")
    ap.add_argument("--model", default=None, help="folder name under --weights-dir (default trm-mlp-sudoku)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/serve-<host>.json")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"unknown mode(s) {sorted(unknown)}; choose from {MODES}")

    host = socket.gethostname()
    out = args.out or REPO / "bench" / "results" / f"serve-{host}.json"
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model, random_weights = pick_model(args.weights_dir, args.model, tmp)
        cfg = json.loads((model / "config.json").read_text())
        if args.static_steps is None:
            args.static_steps = int(cfg.get("halt_max_steps", 16))
        print(f"model: {model}{' (RANDOM weights: nothing trained, never halts early)' if random_weights else ''}")
        rng = random.Random(1234)
        t = time.perf_counter()
        puzzles = [generate(rng, args.tier) for _ in range(args.puzzles)]
        print(f"generated {len(puzzles)} {args.tier} Sudokus in {time.perf_counter() - t:.1f} s")
        results: dict[str, Any] = {}
        for mode in modes:
            print(f"-- {mode}: {args.concurrency} clients, {args.warmup:.0f} s warm-up + {args.duration:.0f} s",
                  flush=True)
            results[mode] = run_mode(mode, args, model, puzzles, tmp)
            r = results[mode]
            print(f"   {r['throughput_rps']:.2f} answers/s, p50 {r['latency_ms']['p50']:.0f} ms, "
                  f"p99 {r['latency_ms']['p99']:.0f} ms, {r['mean_act_steps']} steps, errors {r['errors']}",
                  flush=True)

    report = {
        "benchmark": "serve_bench",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "host": host,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "python": platform.python_version()},
        "note": ("CPU shared: this machine's 2 cores also run background model training and other workers' "
                 "tests, so absolute figures are noisy (25% or more); compare the modes within one run. "
                 "static runs in-process without HTTP (an advantage of a few ms per request)."),
        "model": {"path": str(model.relative_to(REPO)) if model.is_relative_to(REPO) else "temp dir",
                  "random_weights": random_weights,
                  "arch": cfg.get("arch"), "hidden_size": cfg.get("hidden_size"), "mlp_t": cfg.get("mlp_t"),
                  "H_cycles": cfg.get("H_cycles"), "L_cycles": cfg.get("L_cycles"), "L_layers": cfg.get("L_layers"),
                  "halt_max_steps": cfg.get("halt_max_steps"),
                  "dtype": f"{default_dtype('cpu')} (the server's CPU default, used by every mode)"},
        "load": {"clients": args.concurrency, "closed_loop": True, "duration_s": args.duration,
                 "warmup_s": args.warmup, "tier": args.tier, "distinct_puzzles": args.puzzles,
                 "cache": "disabled"},
        "modes": results,
        "total_wall_s": round(time.perf_counter() - t_start, 1),
    }
    if random_weights:
        report["note"] += (" RANDOM weights (no trained model was in weights/): every request runs all "
                           "halt_max_steps steps in every mode and no answer is right; this run measures "
                           "scheduling only.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\n{'mode':<11} {'rows':>4} {'answers/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'steps':>6} {'verified':>8} {'errors':>6}")
    for mode, r in results.items():
        lat = r["latency_ms"]
        print(f"{mode:<11} {r['batch_rows']:>4} {r['throughput_rps']:>9.2f} {lat['p50']:>8.0f} {lat['p95']:>8.0f} "
              f"{lat['p99']:>8.0f} {r['mean_act_steps']!s:>6} {r['verified_fraction']!s:>8} {r['errors']:>6}")
    print(f"\n{report['note']}\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out} "
          f"({report['total_wall_s']} s)")


if __name__ == "__main__":
    main()
