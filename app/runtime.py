"""What an API process holds while it runs: settings, the engine client, the solve service, readiness, drain.

Two ways to reach an engine core, the API code above cannot tell which:
- `settings.engine_address` set (`recursolve serve` sets it for its API processes): connect to the
  engine-core process over ZMQ.
- unset (tests, `recursolve solve`, `create_app` used directly): start the engine core in a thread of this
  process on an inproc:// socket.

The process answers /healthz at once; /readyz turns 200 when the engine has reported its models loaded
and warmed (Ready), and goes back to 503 while the engine is unreachable (e.g. restarting after a crash).
"""

from __future__ import annotations

import asyncio
import logging
import time

from app import metrics
from app.api.budgets import server_limits
from app.api.redact import redact_paths
from app.api.service import ServedModel, SolveService, default_per_task
from app.cache import ResultCache, make_cache
from app.engine.client import EngineClient, InprocEngine
from app.engine.protocol import Ready
from app.gc_pauses import flush_pauses_every, freeze_startup_heap, record_pauses
from app.settings import ModelSpec, Settings, load_model_specs, with_server_defaults

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, specs: list[ModelSpec] | None = None, *,
                 serving_process: bool = False) -> None:
        """`serving_process`: this process only serves (an API process of `recursolve serve`, or `uvicorn
        app.main:app`), so it times its GC passes and freezes its startup heap once ready (app/gc_pauses.py);
        tests and `recursolve solve` leave their process's collector alone."""
        self.settings = settings
        self._specs = specs
        self._serving_process = serving_process
        self._gc_flusher: asyncio.Task[None] | None = None
        self._ready_publisher: asyncio.Task[None] | None = None
        self.service: SolveService | None = None
        self.cache: ResultCache | None = None
        self.engine: EngineClient | None = None
        self._inproc: InprocEngine | None = None
        self.load_error: str | None = None
        self.drain_started: float | None = None
        self._loader: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self.last_turned_away: float = 0.0  # when a request was last answered 503 for draining
        self._configured_tasks: set[str] | None = None

    @property
    def ready(self) -> bool:
        return self.service is not None and self.engine is not None and self.engine.is_ready and bool(
            self.service.models)

    @property
    def accepting(self) -> bool:
        """What /readyz answers 200 for: ready, and not draining."""
        return self.ready and self.service is not None and not self.service.draining

    async def _publish_accepting_every(self, seconds: float) -> None:
        """recursolve_ready from this API process every `seconds`. Across processes the gauge is the largest
        live value, so a process that set 1 once (when a scrape reached it) must say when that stops being
        true, or an engine outage would show only after every API process had been scraped again."""
        while True:
            metrics.READY.set(float(self.accepting))
            await asyncio.sleep(seconds)

    def configured_tasks(self) -> set[str] | None:
        """The tasks of the models this server is configured to serve (its specs, or the models file or weights
        folders the engine reads), read once: what is known before the engine reports its models, for the tool
        list while the server starts. None when the configuration cannot be read (the engine says why)."""
        if self._configured_tasks is None:
            try:
                specs = self._model_specs()
            except Exception:
                return None
            self._configured_tasks = {s.task for s in specs}
        return self._configured_tasks

    def _model_specs(self) -> list[ModelSpec]:
        """The models to serve: the specs given to create_app, else the models file or weights folders (raises
        ModelsFileError for an invalid one)."""
        return self._specs if self._specs is not None else load_model_specs(self.settings)

    def not_ready_reason(self) -> str:
        if self.load_error is not None:
            return f"loading models failed: {self.load_error}"
        if self.service is not None and self.service.draining:
            return "draining for shutdown"
        if self.service is not None and not self.service.models:
            return "no models configured"
        if self.service is not None:
            return "the engine core is not reachable (restarting); retry shortly"
        return "loading and warming up the models"

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self._serving_process:
            record_pauses("api")
            self._gc_flusher = asyncio.create_task(flush_pauses_every(1.0), name="recursolve-gc-pauses")
            self._ready_publisher = asyncio.create_task(self._publish_accepting_every(1.0), name="recursolve-ready")
        self.cache = make_cache(self.settings)
        address = self.settings.engine_address
        if address is None:
            try:
                specs = self._model_specs()
                specs = with_server_defaults([ModelSpec.model_validate(s.model_dump()) for s in specs],  # built in code
                                             self.settings)
            except Exception as e:
                self.load_error = f"{type(e).__name__}: {e}"
                log.error("invalid models configuration: %s", e)
                return
            self._inproc = InprocEngine(specs, warmup=self.settings.warmup,
                                        max_share=self.settings.max_request_share)
            self._inproc.start()
            address = self._inproc.address
            self.engine = EngineClient(address, self._inproc.ctx)
        else:
            self.engine = EngineClient(address)
        await self.engine.start()
        self._loader = asyncio.create_task(self._await_ready(), name="recursolve-await-engine")

    async def wait_ready(self, timeout: float | None = None) -> None:
        """For in-process callers (tests, `recursolve solve`): wait until the engine reported its models."""
        if self._loader is not None:
            await asyncio.wait_for(asyncio.shield(self._loader), timeout)
        if self.load_error is not None:
            raise RuntimeError(self.load_error)

    async def _await_ready(self) -> None:
        assert self.engine is not None and self.cache is not None
        ready: Ready = await self.engine.wait_ready()
        if ready.error is not None:
            # Shown by /healthz and /readyz: paths relative to the weights dir (the engine log has the full one).
            self.load_error = redact_paths(ready.error, self.settings.weights_dir)
            return
        models = {m.name: ServedModel.of(m) for m in ready.models}
        self.service = SolveService(models, default_per_task(models), self.cache, self.engine,
                                    default_deadline_ms=self.settings.default_deadline_ms,
                                    cache_ttl_seconds=self.settings.cache_ttl_seconds,
                                    cache_enabled=self.settings.cache_enabled,
                                    caps=server_limits(self.settings))
        if self.drain_started is not None:  # SIGTERM arrived while loading: never admit anything
            self.service.begin_drain()
        if not models:
            log.warning("no models to serve: put model folders under %s or set RECURSOLVE_MODELS_FILE",
                        self.settings.weights_dir.name)
        if self._serving_process:  # the app, its routes and the served models are built: app/gc_pauses.py
            freeze_startup_heap("API process")

    def begin_drain(self) -> None:
        """SIGTERM: stop admitting (readyz 503, new solves 503) and start the grace-period clock: running
        requests go on, and whatever still runs when it ends is cut with its best answer so far."""
        if self.drain_started is not None:
            return
        self.drain_started = time.monotonic()
        log.info("draining: admission stopped; finishing running requests within %.1f s",
                 self.settings.drain_grace_seconds)
        if self.service is not None:
            self.service.begin_drain()
            self._drainer = asyncio.get_running_loop().create_task(
                self.service.drain(self.settings.drain_grace_seconds), name="recursolve-drain")

    async def drained(self, quiet_s: float = 1.0) -> None:
        """After begin_drain: returns when the running requests are done and no new request came for `quiet_s`
        (clients and load balancers have noticed), or when the grace period is over."""
        end = (self.drain_started or time.monotonic()) + self.settings.drain_grace_seconds
        if self._drainer is not None:
            await self._drainer
        # The quiet period also follows the last running request: its client may send again at once, and must
        # find the listener open (a 503), even when the grace period is already over.
        settled = time.monotonic()
        while (time.monotonic() < max(end, settled + quiet_s)
               and time.monotonic() - max(self.last_turned_away, settled) < quiet_s):
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        for task in (self._gc_flusher, self._ready_publisher):
            if task is not None:
                task.cancel()
        self.begin_drain()
        if self._drainer is not None:
            await self._drainer
        if self.service is not None:
            await self.service.close()
        elif self.cache is not None:
            await self.cache.close()
        if self.engine is not None:
            await self.engine.close()
        if self._inproc is not None:
            await self._inproc.stop()
