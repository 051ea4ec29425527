"""`recursolve serve`: engine-core processes (one by default, `--engines N`), API processes in front of them, and
a supervisor.

    supervisor (this process)           binds the port, starts and restarts the others, forwards SIGTERM
      ├── engine core x E (default 1)   app.engine.core_loop: the models, a tight step loop, ZMQ ROUTER; each
      │                                 with every model and its own batch rows, on the same device
      └── API worker x N (N >= E)       uvicorn + FastAPI, each on its own socket of the port; parse, cache,
                                        verify, render; a ZMQ DEALER to engine core i mod E

The API processes share nothing but the port (a socket each, see listening_sockets) and the engine; /metrics
is one view across all of them (prometheus_client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR set here before
any of them starts).

Faults: if the engine process dies, each API process fails its in-flight requests with 503 at once (the
ZMQ disconnect), /readyz turns 503, the supervisor starts a new engine and /readyz returns to 200 when it
has loaded. A dead API worker is replaced. SIGTERM: every API process drains (see DrainingServer), then
the engine stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from app.settings import ModelSpec, Settings, load_model_specs, with_server_defaults

log = logging.getLogger("recursolve.serve")

RESTART_BACKOFF_S = 1.0
_ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: the cgroup CPU quota (a Kubernetes CPU limit, `docker run --cpus`) when there is
    one, else the CPUs it may run on. os.cpu_count() counts the host's cores, which in a 2-CPU pod on a 64-core
    node would start 8 API processes and 64 OpenMP threads."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        if (cgroup / "cpu.max").is_file():  # cgroup v2: "<quota> <period>" or "max <period>"
            quota, period = (cgroup / "cpu.max").read_text().split()
        else:  # cgroup v1
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        if quota not in ("max", "-1") and int(period) > 0:
            return max(1, min(cpus, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def default_api_workers(gpu: bool = False, engines: int = 1) -> int:
    """CPU serving: half the available CPUs, 1 to 8 (the engine's torch threads compute on the rest). GPU serving:
    three quarters of them, 1 to 32, since there the API processes, not the engine, cap /v1/solve (an H100 with
    16 cores: 12 API processes were 87% busy at 10.5k answers/s, bench/results/serve-h100.json). Never fewer than
    the engine cores: each needs an API process that talks to it."""
    cpus = available_cpus()
    return max(engines, max(1, min(32, 3 * cpus // 4)) if gpu else min(8, max(1, cpus // 2)))


def default_engine_threads(engines: int) -> int:
    """Each engine core's torch threads: the available CPUs shared out among the engine cores."""
    return max(1, available_cpus() // engines)


def torch_cuda_build() -> bool:
    """Whether the installed torch is a CUDA build, read from its version.py (`cuda = '12.8'` or None) without
    importing torch: the supervisor never loads it (seconds and hundreds of MB it would hold for nothing)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return False
    try:
        text = (Path(spec.origin).parent / "version.py").read_text()
    except OSError:
        return False
    return re.search(r"^cuda\b[^=\n]*=\s*['\"]", text, re.M) is not None


def cuda_visible(dev: Path = Path("/dev")) -> bool:
    """Whether `device: auto` will find a CUDA device, judged as torch would without loading it: a CUDA build of
    torch, the NVIDIA driver's control node (the container runtime mounts it into a container given a GPU), and
    CUDA_VISIBLE_DEVICES not hiding every device."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1"):
        return False
    return (dev / "nvidiactl").exists() and torch_cuda_build()


def on_gpu(device: str) -> bool:
    """Whether a model of this `device` runs on CUDA: `cuda`, `cuda:N`, or `auto` on a machine with a visible GPU."""
    return device.startswith("cuda") or (device == "auto" and cuda_visible())


def serves_on_gpu(specs: list[ModelSpec]) -> bool:
    """Whether any model runs on CUDA."""
    return any(on_gpu(s.device) for s in specs)


class DrainingServer(uvicorn.Server):
    """SIGTERM: keep the listener open and answer new requests 503 (readiness false) while the running ones
    finish, up to the grace period; then stop like uvicorn does. A second SIGTERM stops at once. SIGINT is
    ignored: a terminal's Ctrl-C reaches the whole process group, and the supervisor answers it with a SIGTERM
    to each API process, which would otherwise be their second signal and cut the drain short (the engine core
    ignores SIGINT for the same reason)."""

    _tasks: set[asyncio.Task[None]] = set()  # noqa: RUF012 - keeps the drain task referenced

    def handle_exit(self, sig: int, frame: Any) -> None:
        from app.main import worker_runtime

        if sig == signal.SIGINT:
            return
        runtime = worker_runtime()
        if getattr(self, "_draining", False) or runtime is None:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        log.info("SIGTERM: draining this API process for up to %.1f s", runtime.settings.drain_grace_seconds)
        loop = runtime.loop
        loop.call_soon_threadsafe(lambda: self._tasks.add(loop.create_task(self._drain_then_exit(runtime, sig, frame))))

    async def _drain_then_exit(self, runtime: Any, sig: int, frame: Any) -> None:
        try:
            runtime.begin_drain()
            await runtime.drained(quiet_s=1.0)
        finally:
            super().handle_exit(sig, frame)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listening_socket(host: str, port: int, backlog: int = 2048, reuse_port: bool = False) -> socket.socket:
    """A socket API processes accept on, bound by the supervisor.

    proto=IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on connections of a socket
    that says it is TCP, and with Nagle on, each response waited for the client's delayed ACK (/healthz took
    44 ms instead of 1 on the standard event loop; uvloop sets TCP_NODELAY whatever the socket says)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def listening_sockets(host: str, port: int, count: int, reuse_port: bool = True) -> list[socket.socket]:
    """One listening socket per API process, all on one port (SO_REUSEPORT), so the kernel spreads new
    connections evenly over the processes (by a hash of each connection's addresses).

    Why not one shared socket: Linux hands a shared socket's connections to whichever process's epoll it wakes,
    and that favours a few. Measured with 8 API processes and 256 keep-alive clients: 86, 50, 45, 25, 15, 12, 12
    and 11 connections per process, so the busiest queued requests while others idled. The supervisor keeps
    every socket, so a replaced API process takes over its predecessor's socket and the connections waiting in
    its backlog. Where SO_REUSEPORT does not balance (not Linux), for one process, or with reuse_port False (the
    RECURSOLVE_REUSE_PORT setting): one shared socket."""
    if count <= 1 or not reuse_port or not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return [listening_socket(host, port)]
    # A plain bind first: SO_REUSEPORT would silently share the port with a server of ours already running on it
    # (same user), where a second server must fail to start as it always did (EADDRINUSE). Port 0 picks one here.
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(listening_socket(host, port, reuse_port=True))
    except OSError as e:  # a sandbox (gVisor, say) without SO_REUSEPORT: the shared socket still works
        for sock in socks:
            sock.close()
        log.warning("SO_REUSEPORT is not available here (%s); the API processes share one socket", e)
        return [listening_socket(host, port)]
    return socks


def _worker_main(sock: socket.socket) -> None:
    """One API process: the app from the environment (the supervisor set the engine's address), uvicorn with
    our connection guards (app.api.server_options) on its listening socket."""
    from app.api.server_options import uvicorn_options
    from app.logs import uvicorn_log_config
    from app.settings import get_settings

    settings = get_settings()
    options = uvicorn_options(settings)
    for key in ("host", "port", "workers"):  # the socket is already bound; one process is one worker
        options.pop(key)
    # The drain has already waited for running requests (DrainingServer) when uvicorn starts its own shutdown.
    options["timeout_graceful_shutdown"] = 3
    config = uvicorn.Config("app.main:create_worker_app", factory=True, log_config=uvicorn_log_config(
        settings.log_level), access_log=settings.access_log, **options)
    DrainingServer(config).run(sockets=[sock])


class Supervisor:
    def __init__(self, settings: Settings, specs: list[ModelSpec], host: str, port: int, api_workers: int,
                 engines: int = 1) -> None:
        assert api_workers >= engines, "every engine core needs an API process (serve checks it)"
        self.settings, self.specs = settings, specs
        self.host, self.port, self.api_workers = host, port, api_workers
        self.run_dir = Path(tempfile.mkdtemp(prefix="recursolve-"))
        self.addresses = [f"ipc://{self.run_dir}/engine-{j}.sock" for j in range(engines)]
        self.stopping = threading.Event()
        self.engines: list[multiprocessing.process.BaseProcess | None] = [None] * engines
        self.workers: list[multiprocessing.process.BaseProcess] = []

    def _start_engine(self, j: int) -> None:
        from app.engine.core_loop import engine_process_main

        # Every available CPU (quota-aware, see available_cpus) as torch intra-op threads measured best on the quiet
        # 2-core machine: 83.5 answers/s at 16 clients against 72.5 with 1 thread (bench/serve_bench.py); several
        # engine cores share them out. RECURSOLVE_ENGINE_THREADS overrides it (fewer help when the CPU is
        # oversubscribed: OpenMP threads spin).
        threads = self.settings.engine_threads or default_engine_threads(len(self.engines))
        options = {"warmup": self.settings.warmup, "max_share": self.settings.max_request_share,
                   "log_level": self.settings.log_level, "torch_threads": threads}
        engine = _ctx.Process(target=engine_process_main, args=(self.addresses[j], self.specs, options),
                              name=f"recursolve-engine-{j}", daemon=False)
        engine.start()
        self.engines[j] = engine
        log.info("engine core %d: process %s on %s", j, engine.pid, self.addresses[j])

    def _start_worker(self, i: int, socks: list[socket.socket]) -> multiprocessing.process.BaseProcess:
        # A spawned process takes the environment as it is at start: API process i reads its engine core's address.
        os.environ["RECURSOLVE_ENGINE_ADDRESS"] = self.addresses[i % len(self.addresses)]
        p = _ctx.Process(target=_worker_main, args=(socks[i % len(socks)],), name="recursolve-api", daemon=False)
        p.start()
        return p

    def run(self) -> None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.run_dir / "metrics")
        (self.run_dir / "metrics").mkdir()
        try:
            socks = listening_sockets(self.host, self.port, self.api_workers, self.settings.reuse_port)
        except OSError:  # the port is taken: nothing started, and the run directory must not stay behind
            shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        for j in range(len(self.engines)):
            self._start_engine(j)
        self.workers = [self._start_worker(i, socks) for i in range(self.api_workers)]
        log.info("serving on http://%s:%d with %d API processes (%s) and %d engine cores", self.host, self.port,
                 self.api_workers, "a socket each, SO_REUSEPORT" if len(socks) > 1 else "one shared socket",
                 len(self.engines))
        try:
            while not self.stopping.wait(0.5):
                self._keep_alive(socks)
        finally:
            self._shutdown()
            for sock in socks:
                sock.close()

    def _keep_alive(self, socks: list[socket.socket]) -> None:
        from prometheus_client import multiprocess

        for j, engine in enumerate(self.engines):
            if engine is not None and not engine.is_alive():
                log.error("engine core %d (process %s) exited (code %s); restarting it", j, engine.pid,
                          engine.exitcode)
                multiprocess.mark_process_dead(engine.pid)
                time.sleep(RESTART_BACKOFF_S)
                self._start_engine(j)
        for i, w in enumerate(self.workers):
            if not w.is_alive() and not self.stopping.is_set():
                log.error("API process %s exited (code %s); replacing it", w.pid, w.exitcode)
                multiprocess.mark_process_dead(w.pid)
                self.workers[i] = self._start_worker(i, socks)

    def _shutdown(self) -> None:
        """API processes drain first (they still need the engine), then the engine stops."""
        for w in self.workers:
            if w.is_alive() and w.pid is not None:
                os.kill(w.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_grace_seconds + 10
        for w in self.workers:
            w.join(max(0.1, deadline - time.monotonic()))
            if w.is_alive():
                w.kill()
        for engine in self.engines:
            if engine is not None and engine.is_alive():
                engine.terminate()
        for engine in self.engines:
            if engine is not None:
                engine.join(10)
                if engine.is_alive():
                    engine.kill()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.run_dir)
        log.info("stopped")


def serve(settings: Settings, host: str, port: int, api_workers: int | None, engines: int | None = None) -> None:
    specs = with_server_defaults(load_model_specs(settings), settings)  # a bad models file fails here, before any
    # process starts
    engines = engines or settings.engines
    workers = api_workers or settings.api_workers
    if workers is None:
        gpu = serves_on_gpu(specs)
        workers = default_api_workers(gpu, engines)
        log.info("%d API processes: %s of %d CPUs (%s serving; --api-workers sets it)", workers,
                 "three quarters" if gpu else "half", available_cpus(), "GPU" if gpu else "CPU")
    elif workers < engines:
        raise SystemExit(f"{engines} engine cores need at least {engines} API processes (each API process talks to "
                         f"one engine core), not {workers}: raise --api-workers or lower --engines")
    Supervisor(settings, specs, host, port, workers, engines).run()
