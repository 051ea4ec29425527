"""`recursolve serve` for real, when its engine-core process dies (issue 9's fault rule): the request in flight gets
a 503 saying so at once (never a hang), /readyz turns 503, the supervisor starts a new engine core, /readyz
returns to 200 and the server answers again."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from app_engine_support import save_random, served, solve_body

pytestmark = pytest.mark.slow


def engine_pids(supervisor: int) -> list[int]:
    """The supervisor's children that map libtorch: the engine cores (API processes never load torch)."""
    kids = [int(k) for f in Path(f"/proc/{supervisor}/task").glob("*/children") for k in f.read_text().split()]
    found = []
    for k in kids:
        try:
            if "libtorch" in Path(f"/proc/{k}/maps").read_text():
                found.append(k)
        except OSError:
            continue
    return found


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_dead_engine_fails_its_requests_with_503_and_is_restarted(tmp_path: Path) -> None:
    save_random(tmp_path / "random")
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - name: random\n    path: {tmp_path / 'random'}\n    batch_rows: 4\n")
    with served(models, ready_timeout=60) as (base, proc):
        [engine] = engine_pids(proc.pid)
        result: dict[str, httpx.Response] = {}

        def hold() -> None:  # runs until its deadline unless the engine goes away first
            result["r"] = httpx.post(f"{base}/v1/solve", json=solve_body(
                cache=False, halting="max_steps", max_steps=4096, deadline_ms=60_000), timeout=90)

        def stream() -> None:  # the same, streamed: its error comes in-band, after the 200
            result["stream"] = httpx.post(f"{base}/v1/solve/stream", json=solve_body(
                cache=False, halting="max_steps", max_steps=4096, deadline_ms=60_000, seed=1), timeout=90)

        threads = [threading.Thread(target=hold), threading.Thread(target=stream)]
        for t in threads:
            t.start()
        wait_until(lambda: httpx.get(f"{base}/v1/models/random").json()["engine"]["running_rows"] == 2, 30,
                   "the requests to start")
        killed = time.monotonic()
        os.kill(engine, signal.SIGKILL)
        for t in threads:
            t.join(30)
            assert not t.is_alive()
        last = result["stream"].text.strip().split("\n\n")[-1]  # the stream's last event
        assert last.startswith("event: error") and '"status":503' in last and "engine_unavailable" in last, last
        r = result["r"]
        assert r.status_code == 503, r.text
        assert time.monotonic() - killed < 10  # at once, not at the request's 60 s deadline
        error = r.json()["error"]
        assert error["code"] == "engine_unavailable" and "engine" in error["message"]
        assert r.headers.get("Retry-After")

        wait_until(lambda: len(engine_pids(proc.pid)) == 1 and engine_pids(proc.pid) != [engine], 30,
                   "a new engine core")
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, 60, "/readyz to return to 200")
        again = httpx.post(f"{base}/v1/solve", json=solve_body(cache=False, halting="max_steps", max_steps=3),
                           timeout=30)
        assert again.status_code == 200 and again.json()["steps"] == 3
        assert proc.poll() is None  # the supervisor itself carried on


def test_two_engine_cores_share_the_traffic_and_fail_alone(tmp_path: Path) -> None:
    """--engines 2: API process i talks to engine core i mod 2. Killing one engine core fails only the requests
    that reach its API process (503, while the other engine answers) until the supervisor has restarted it."""
    save_random(tmp_path / "random")
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - name: random\n    path: {tmp_path / 'random'}\n    batch_rows: 4\n")

    def fresh_solve(base: str) -> httpx.Response:  # a new connection each: SO_REUSEPORT spreads them by port
        with httpx.Client(timeout=30) as c:
            return c.post(f"{base}/v1/solve", json=solve_body(cache=False, halting="max_steps", max_steps=1))

    env = {"RECURSOLVE_ENGINES": "2", "RECURSOLVE_API_WORKERS": "2", "RECURSOLVE_ENGINE_THREADS": "1"}
    with served(models, env=env, ready_timeout=90) as (base, proc):
        engines = engine_pids(proc.pid)
        assert len(engines) == 2
        wait_until(lambda: all(fresh_solve(base).status_code == 200 for _ in range(10)), 60, "both engines ready")
        os.kill(engines[0], signal.SIGKILL)
        time.sleep(0.2)  # the dead engine's API process has seen the disconnect
        codes = [fresh_solve(base).status_code for _ in range(20)]  # within the supervisor's 1 s restart backoff
        assert set(codes) == {200, 503}, codes
        wait_until(lambda: len(engine_pids(proc.pid)) == 2 and engines[0] not in engine_pids(proc.pid), 30,
                   "the engine core's restart")
        wait_until(lambda: all(fresh_solve(base).status_code == 200 for _ in range(10)), 60,
                   "every request answered again")
        assert engines[1] in engine_pids(proc.pid)  # the other engine core ran on untouched


def test_fewer_api_processes_than_engine_cores_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    save_random(tmp_path / "random")
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - name: random\n    path: {tmp_path / 'random'}\n")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", "0", "--engines", "3",
                          "--api-workers", "2"], cwd=root, capture_output=True, text=True, timeout=60,
                         env=os.environ | {"RECURSOLVE_MODELS_FILE": str(models)})
    assert out.returncode != 0
    assert "3 engine cores need at least 3 API processes" in out.stderr + out.stdout
