"""Hostile and heavy traffic against a real `recursolve serve` on 127.0.0.1 (issue 11): do the targets hold?

    python bench/hostile.py [--quick] [--api-workers 2] [--out bench/results/hostile.json]

Starts `recursolve serve` on a free loopback port with the shipped weights (weights/trm-mlp-sudoku) plus a tiny
random ARC TRM built here, then measures, each part bounded in count and time:

  hog        a normal solve's latency unloaded, then behind the heaviest request the caps allow (halting
             max_steps, trajectories = every batch row, max_steps = row_steps_cap / trajectories); target <= 3x.
  slow       2,000 half-sent connections (headers never finished) held open: /healthz latency meanwhile
             (target < 1 s) and the growth of the server's log (target < 1 MB).
  big        200 concurrent ~1 MB ARC requests: peak RSS of all server processes against a memory budget
             (--memory-budget-mb, with RECURSOLVE_MAX_INFLIGHT_BYTES and RECURSOLVE_MAX_QUEUE_BYTES set to keep
             under it); every answer must be 200, 413 or 429 (never a 5xx, never a dropped connection) and the
             server must still answer /healthz afterwards.
  sigterm    clients sending solves continuously, SIGTERM to the supervisor: a request is lost when it gets a
             connection error or a 5xx other than 503 (a 503 + Retry-After tells the client to go elsewhere, so a
             client stops at its first); target 0.

Writes every figure to --out and prints a table; exits 1 when a target is missed. --quick (for CI, ~2 min)
uses fewer repetitions and a shorter SIGTERM run, but the same connection and payload counts.
Loopback only; raises this process's RLIMIT_NOFILE (the server inherits it) for the 2,000 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
SUDOKU_WEIGHTS = REPO / "weights" / "trm-mlp-sudoku"
PUZZLE = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
STALLED = 2000
BIG_CLIENTS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """pid and every process below it (from /proc/*/stat: no psutil needed)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parent.items() if p in frontier]
        found += frontier
    return found


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def process_name(pid: int) -> str:
    with contextlib.suppress(OSError):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if "multiprocessing" in cmd or "spawn_main" in cmd:
            return "child"
        return "supervisor"
    return "gone"


class ServerProcess:
    """`recursolve serve` on a free 127.0.0.1 port; its stdout and stderr go to <tmp>/server.log."""

    def __init__(self, tmp: Path, env: dict[str, str], api_workers: int = 2, ready_timeout: float = 180.0) -> None:
        self.tmp, self.env, self.api_workers, self.ready_timeout = tmp, env, api_workers, ready_timeout
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "RECURSOLVE_LOG_LEVEL": "info", **self.env}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--api-workers", str(self.api_workers)], env=env, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=REPO)
        end = time.monotonic() + self.ready_timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(self.base + "/readyz", timeout=2).status == 200:
                    return self
            time.sleep(0.3)
        self.stop()
        raise SystemExit(f"server not ready within {self.ready_timeout:.0f} s:\n{self.log_path.read_text()[-3000:]}")

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                for pid in reversed(descendants(self.proc.pid)):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait(10)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode if self.proc is not None else None

    def pids(self) -> list[int]:
        assert self.proc is not None
        return descendants(self.proc.pid)

    def rss(self) -> dict[str, float]:
        """RSS (MB) of every server process, by pid."""
        return {str(pid): round(rss_mb(pid), 1) for pid in self.pids()}

    def total_rss(self) -> float:
        return sum(rss_mb(pid) for pid in self.pids())

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size


class PeakSampler:
    """Samples the server's total RSS every `every_s` in a thread; `.peak` is the largest seen."""

    def __init__(self, server: ServerProcess, every_s: float = 0.05) -> None:
        self.server, self.every_s, self.peak = server, every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._pids = server.pids()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(rss_mb(p) for p in self._pids))
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the parts -----------------------------------------------------------------------------------------


NORMAL = {"task": "sudoku", "puzzle": PUZZLE, "options": {"cache": False}}


async def _latency(client: httpx.AsyncClient, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await client.post("/v1/solve", json=NORMAL)
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise SystemExit(f"normal solve failed: {r.status_code} {r.text[:300]}")
    return out


async def part_hog(base: str, reps: int, share: float) -> dict[str, Any]:
    """Two hogs, each the heaviest of its kind the caps allow (halting max_steps, max_steps = row_steps_cap / K):
    `share` with K = the most rows one request may hold (RECURSOLVE_MAX_REQUEST_SHARE), which runs beside light
    requests, and `full` with K = every batch row, which the engine must refuse (413 too_many_trajectories)."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        await _latency(client, 2)  # warm caches and connections
        unloaded = statistics.median(await _latency(client, reps))
        info = (await client.get("/v1/models/trm-mlp-sudoku")).json()
        rows = int(info["engine"]["batch_rows"])
        caps = server_caps()
        out: dict[str, Any] = {"unloaded_s": round(unloaded, 4), "batch_rows": rows}
        for name, k in (("share", max(1, int(share * rows))), ("full", rows)):
            k = min(k, caps["trajectories_cap"])
            steps = min(caps["max_steps_cap"], caps["row_steps_cap"] // k)
            hog = {"task": "sudoku", "puzzle": PUZZLE, "options": {
                "halting": "max_steps", "max_steps": steps, "trajectories": k, "cache": False, "seed": 1}}
            hog_task = asyncio.ensure_future(client.post("/v1/solve", json=hog))
            await asyncio.sleep(0.5)  # the hog is admitted and running
            behind = await _latency(client, reps)
            hog_r = await hog_task
            body = hog_r.json()
            res = {"hog_options": hog["options"], "behind_hog_s": round(statistics.median(behind), 4),
                   "behind_hog_max_s": round(max(behind), 4), "hog_status": hog_r.status_code,
                   "hog_halted_by": body.get("halted_by"), "hog_row_steps": body.get("row_steps"),
                   "hog_total_s": body.get("timings", {}).get("total_ms", 0) / 1000.0}
            res["ratio"] = round(res["behind_hog_max_s"] / unloaded, 2)
            refused = hog_r.status_code == 413 and k > max(1, int(share * rows))  # over the share: never runs
            res["ok"] = refused or (res["ratio"] <= 3.0 and hog_r.status_code == 200)
            out[name] = res
        out["ok"] = out["share"]["ok"] and out["full"]["ok"]
        return out


def server_share() -> float:
    sys.path.insert(0, str(REPO))
    from app.settings import Settings

    return float(Settings.model_fields["max_request_share"].default)


def server_caps() -> dict[str, int]:
    """The cost caps the server runs with: Settings' defaults (this script sets none of them)."""
    sys.path.insert(0, str(REPO))
    from app.settings import Settings

    return {k: Settings.model_fields[k].default for k in ("max_steps_cap", "trajectories_cap", "row_steps_cap")}


async def part_slow(server: ServerProcess, n: int, hold_s: float) -> dict[str, Any]:
    log0 = server.log_bytes()
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    opened = refused = 0
    t0 = time.monotonic()
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            await loop.sock_connect(s, ("127.0.0.1", server.port))
            await loop.sock_sendall(s, b"POST /v1/solve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
            socks.append(s)
            opened += 1
        except OSError:
            refused += 1
            s.close()
    open_s = time.monotonic() - t0
    latencies: list[float] = []
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=server.base, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
                                 ) as client:
        end = time.monotonic() + hold_s
        while time.monotonic() < end:
            t = time.perf_counter()
            try:
                r = await client.get("/healthz")
                statuses.append(r.status_code)
            except httpx.HTTPError:
                statuses.append(0)
            latencies.append(time.perf_counter() - t)
            await asyncio.sleep(0.2)
    for s in socks:
        s.close()
    await asyncio.sleep(1.0)
    growth = server.log_bytes() - log0
    return {"stalled": n, "opened": opened, "refused_at_connect": refused, "open_s": round(open_s, 2),
            "healthz_max_s": round(max(latencies), 4), "healthz_median_s": round(statistics.median(latencies), 4),
            "healthz_non_200": sum(st != 200 for st in statuses), "healthz_probes": len(statuses),
            "log_growth_bytes": growth,
            "ok": max(latencies) < 1.0 and growth < 1_000_000 and all(st == 200 for st in statuses)}


def big_arc_task(target_bytes: int = 950_000) -> bytes:
    """A valid ARC task JSON of about target_bytes: many 30x30 train pairs, one 30x30 test input."""
    grid = [[(r * 7 + c) % 10 for c in range(30)] for r in range(30)]
    pair = {"input": grid, "output": grid}
    one = len(json.dumps(pair, separators=(",", ":")))
    pairs = max(1, (target_bytes - 4000) // (one + 1))
    task = {"train": [pair] * pairs, "test": [{"input": grid}]}
    body = {"task": "arc", "puzzle": task, "options": {"max_steps": 2, "halting": "max_steps", "cache": False}}
    return json.dumps(body, separators=(",", ":")).encode()


async def part_big(server: ServerProcess, clients: int, budget_mb: float) -> dict[str, Any]:
    payload = big_arc_task()
    baseline = server.total_rss()
    statuses: dict[str, int] = {}

    async def one(client: httpx.AsyncClient) -> None:
        try:
            r = await client.post("/v1/solve", content=payload, headers={"Content-Type": "application/json"})
            key = str(r.status_code)
        except httpx.HTTPError as e:
            key = type(e).__name__
        statuses[key] = statuses.get(key, 0) + 1

    with PeakSampler(server) as sampler:
        async with httpx.AsyncClient(base_url=server.base, timeout=120,
                                     limits=httpx.Limits(max_connections=clients)) as client:
            t0 = time.monotonic()
            await asyncio.gather(*(one(client) for _ in range(clients)))
            wall = time.monotonic() - t0
    alive = False
    with contextlib.suppress(OSError):
        alive = urllib.request.urlopen(server.base + "/healthz", timeout=5).status == 200
    bad = {k: v for k, v in statuses.items() if k not in ("200", "413", "429")}
    return {"clients": clients, "payload_bytes": len(payload), "statuses": statuses, "wall_s": round(wall, 2),
            "rss_idle_mb": round(baseline, 1), "rss_peak_mb": round(sampler.peak, 1), "budget_mb": budget_mb,
            "rss_after_mb": round(server.total_rss(), 1), "alive_after": alive,
            "ok": sampler.peak <= budget_mb and not bad and alive and statuses.get("200", 0) > 0}


async def part_sigterm(server: ServerProcess, clients: int, run_s: float) -> dict[str, Any]:
    counts = {"ok": 0, "503": 0, "lost": 0}
    lost: list[str] = []
    stop = asyncio.Event()
    first_503: list[float] = []

    async def client_loop(i: int) -> None:
        async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
            while True:
                body = {"task": "sudoku", "puzzle": PUZZLE, "options": {"cache": False, "halting": "max_steps",
                                                                          "max_steps": 4 + i % 4}}
                try:
                    r = await client.post("/v1/solve", json=body)
                except httpx.HTTPError as e:
                    counts["lost"] += 1
                    lost.append(f"{type(e).__name__}: {e}"[:160])
                    return
                if r.status_code == 200:
                    counts["ok"] += 1
                elif r.status_code == 503:
                    counts["503"] += 1
                    first_503.append(time.monotonic())
                    return  # told to go elsewhere: a real client (or a load balancer) stops sending here
                else:
                    counts["lost"] += 1
                    lost.append(f"{r.status_code}: {r.text[:120]}")
                    return
                if stop.is_set() and r.status_code != 200:
                    return

    tasks = [asyncio.ensure_future(client_loop(i)) for i in range(clients)]
    await asyncio.sleep(run_s)
    ok_before = counts["ok"]
    assert server.proc is not None
    t_term = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=60)
    for t in pending:
        t.cancel()
    rc = await asyncio.to_thread(server.proc.wait, 60)
    return {"clients": clients, "ok_before_sigterm": ok_before, "ok_total": counts["ok"], "got_503": counts["503"],
            "lost": counts["lost"], "lost_examples": lost[:5], "clients_unfinished": len(pending),
            "first_503_after_s": round(min(first_503) - t_term, 3) if first_503 else None,
            "exit_code": rc, "ok": counts["lost"] == 0 and not pending}


# -- driver --------------------------------------------------------------------------------------------


def models_file(tmp: Path) -> Path:
    """The shipped sudoku TRM plus a tiny random ARC TRM (hidden 32; the shipped weights have no ARC model)."""
    sys.path.insert(0, str(REPO))
    from models import ModelConfig, build_model, save_model

    cfg = ModelConfig(arch="trm", task="arc", seq_len=900, vocab_size=12, hidden_size=32, num_heads=2, expansion=2,
                      H_cycles=1, L_cycles=1, L_layers=1, puzzle_emb_len=0, forward_dtype="float32",
                      halt_max_steps=16)
    save_model(build_model(cfg), tmp / "arc-tiny")
    path = tmp / "models.yaml"
    path.write_text(f"models:\n  - name: trm-mlp-sudoku\n    path: {SUDOKU_WEIGHTS}\n"
                    f"  - name: arc-tiny\n    path: {tmp / 'arc-tiny'}\n    batch_rows: 8\n")
    return path


def raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def table(results: dict[str, Any]) -> str:
    hog = results["hog"]
    rows = [
        (f"hog: normal solve (worst of n) behind a K={h['hog_options']['trajectories']} hog",
         f"{hog['unloaded_s']*1000:.0f} ms -> {h['behind_hog_max_s']*1000:.0f} ms ({h['ratio']}x)",
         "<= 3x" if h is hog["share"] else f"refused (413), got {h['hog_status']}", h["ok"])
        for h in (hog["share"], hog["full"])
    ] + [
        (f"slow: /healthz with {results['slow']['opened']} stalled connections",
         f"max {results['slow']['healthz_max_s']*1000:.0f} ms", "< 1 s", results["slow"]["healthz_max_s"] < 1),
        ("slow: server log growth", f"{results['slow']['log_growth_bytes']} B", "< 1 MB",
         results["slow"]["log_growth_bytes"] < 1_000_000),
        (f"big: peak RSS, {results['big']['clients']} x {results['big']['payload_bytes']/1e6:.2f} MB ARC",
         f"{results['big']['rss_idle_mb']:.0f} -> {results['big']['rss_peak_mb']:.0f} MB "
         f"{results['big']['statuses']}", f"<= {results['big']['budget_mb']:.0f} MB, 200/413/429 only",
         results["big"]["ok"]),
        ("sigterm: requests lost", f"{results['sigterm']['lost']} lost, {results['sigterm']['ok_total']} ok, "
         f"{results['sigterm']['got_503']} x 503", "0", results["sigterm"]["ok"]),
    ]
    w = max(len(r[0]) for r in rows)
    lines = [f"{'check':<{w}}  {'measured':<48} {'target':<30} ok"]
    lines += [f"{a:<{w}}  {b:<48} {c:<30} {'yes' if d else 'NO'}" for a, b, c, d in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI mode: fewer repetitions, shorter SIGTERM run (~2 min)")
    ap.add_argument("--api-workers", type=int, default=2)
    ap.add_argument("--memory-budget-mb", type=float, default=2000.0,
                    help="the server's whole RSS (all processes) may not pass this under the big-payload flood")
    ap.add_argument("--inflight-bytes", type=int, default=24_000_000,
                    help="RECURSOLVE_MAX_INFLIGHT_BYTES for the server (per API process)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "hostile.json")
    ap.add_argument("--report-only", action="append", default=[], choices=["hog", "slow", "big", "sigterm"],
                    help="measure and print this part but do not fail on it (repeatable)")
    args = ap.parse_args()
    t_start = time.monotonic()
    nofile = raise_nofile(2 * STALLED + 1024)
    reps = 3 if args.quick else 7
    results: dict[str, Any] = {"quick": args.quick, "api_workers": args.api_workers, "nofile": nofile}
    with tempfile.TemporaryDirectory(prefix="recursolve-hostile-") as tmp_s:
        tmp = Path(tmp_s)
        env = {"RECURSOLVE_MODELS_FILE": str(models_file(tmp)),
               "RECURSOLVE_MAX_CONNECTIONS": str(STALLED + 512),
               "RECURSOLVE_MAX_INFLIGHT_BYTES": str(args.inflight_bytes),
               "RECURSOLVE_MAX_QUEUE_BYTES": "4000000",
               "RECURSOLVE_DRAIN_GRACE_SECONDS": "5",
               "RECURSOLVE_CACHE_ENABLED": "false"}
        if args.quick:  # the full-pool hog is cut at the default deadline: keep CI's wait short
            env["RECURSOLVE_DEFAULT_DEADLINE_MS"] = "10000"
        with ServerProcess(tmp, env, api_workers=args.api_workers) as server:
            results["server_rss_idle_mb"] = server.rss()
            print("hog ...", flush=True)
            results["hog"] = asyncio.run(part_hog(server.base, reps, server_share()))
            print("slow connections ...", flush=True)
            results["slow"] = asyncio.run(part_slow(server, STALLED, 3.0 if args.quick else 6.0))
            print("big payloads ...", flush=True)
            results["big"] = asyncio.run(part_big(server, BIG_CLIENTS, args.memory_budget_mb))
            print("SIGTERM under load ...", flush=True)
            results["sigterm"] = asyncio.run(part_sigterm(server, 16, 2.0 if args.quick else 5.0))
            results["server_log_bytes"] = server.log_bytes()
    results["wall_s"] = round(time.monotonic() - t_start, 1)
    results["report_only"] = args.report_only
    results["ok"] = all(results[k]["ok"] for k in ("hog", "slow", "big", "sigterm") if k not in args.report_only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    missed = [k for k in ("hog", "slow", "big", "sigterm") if not results[k]["ok"]]
    print(f"wall {results['wall_s']} s; figures in {args.out}; missed: {', '.join(missed) or 'none'}"
          + (f" (report only: {', '.join(args.report_only)})" if args.report_only else ""))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
