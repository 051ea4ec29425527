"""What a Redis outage costs a request: RedisCache call latency with Redis healthy, killed, frozen and restarted.

Starts its own redis-server (Debian package) on a free 127.0.0.1 port, no persistence:

    .venv/bin/python bench/cache_outage.py        # ~10 s; writes bench/results/cache-outage-<host>.json

Phases (each get/set timed on its own):
  healthy     GET/SET round trips to a live Redis
  killed      redis-server terminated: the first call fails on the dead pooled connection, the rest are
              skipped by the circuit breaker until it half-opens; then one probe (connection refused)
  frozen      redis-server SIGSTOPped (accepts TCP, never answers): the first call waits for the 100 ms read
              timeout, the rest are skipped
  restarted   redis-server started again on the same port: after the breaker window the cache reconnects
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import REGISTRY

from app.cache import RedisCache

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(binary: str, port: int, workdir: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    proc.wait(10)


def stats(ms: list[float]) -> dict[str, Any]:
    a = np.array(ms)
    return {"calls": len(ms), "p50_ms": round(float(np.median(a)), 3), "max_ms": round(float(a.max()), 3)}


async def timed(coro) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    await coro
    return (time.perf_counter() - t0) * 1000


async def measure(binary: str, breaker: float, calls: int) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = start_redis(binary, port, workdir)
        cache = RedisCache(f"redis://127.0.0.1:{port}/0", breaker_seconds=breaker)
        errors = lambda: REGISTRY.get_sample_value("recursolve_cache_errors_total", {"backend": "redis"})  # noqa: E731
        out: dict[str, Any] = {}
        try:
            await cache.set("warm", b"x", 60)
            out["healthy"] = {
                "get": stats([await timed(cache.get(f"k{i}")) for i in range(calls)]),
                "set": stats([await timed(cache.set(f"k{i}", b"v" * 2000, 60)) for i in range(calls)]),
            }

            e0 = errors()
            stop(proc)
            first = await timed(cache.get("k0"))
            skipped = [await timed(cache.get("k0")) for _ in range(calls)]
            skipped += [await timed(cache.set("k0", b"v", 60)) for _ in range(calls)]
            await asyncio.sleep(breaker + 0.05)
            probe = await timed(cache.get("k0"))
            out["killed"] = {"first_call_ms": round(first, 3), "breaker_open": stats(skipped),
                             "half_open_probe_ms": round(probe, 3), "errors_counted": errors() - e0}

            proc = start_redis(binary, port, workdir)
            await asyncio.sleep(breaker + 0.05)
            reconnect = await timed(cache.get("k0"))
            out["restarted"] = {"reconnect_call_ms": round(reconnect, 3), "available": cache.available,
                                "round_trip_ok": (await cache.set("z", b"1", 60), await cache.get("z"))[1] == b"1"}

            e0 = errors()
            proc.send_signal(signal.SIGSTOP)
            first = await timed(cache.get("z"))
            skipped = [await timed(cache.get("z")) for _ in range(calls)]
            proc.send_signal(signal.SIGCONT)
            out["frozen"] = {"first_call_ms": round(first, 3), "breaker_open": stats(skipped),
                             "errors_counted": errors() - e0}
        finally:
            await cache.close()
            stop(proc)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Redis outage cost per cache call")
    ap.add_argument("--breaker", type=float, default=1.0, help="breaker window for the run (server default 5 s)")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (Debian: apt-get install redis-server)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    phases = asyncio.run(measure(binary, args.breaker, args.calls))
    host = socket.gethostname()
    report = {"benchmark": "cache_outage", "host": host, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "redis_server": subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip(),
              "socket_timeout_s": 0.1, "breaker_seconds": args.breaker, "loadavg": list(os.getloadavg()),
              "note": "2 CPU cores shared with training runs: healthy round trips are slower than on an idle host",
              "phases": phases}
    out = args.out or REPO / "bench" / "results" / f"cache-outage-{host}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(phases, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
