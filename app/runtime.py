"""What the app holds while it runs: settings, the loaded models, the solve service, readiness, drain state.

Models load in a background task started by the lifespan, so the process answers /healthz (and
/readyz with 503) at once while weights load and warm up; /readyz turns 200 only when every
model is loaded, warmed and its worker thread is running.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pydantic import ValidationError

from app.api.budgets import server_limits
from app.api.redact import redact_paths
from app.api.schemas import SolveOptionsIn
from app.cache import ResultCache, make_cache
from app.engine.registry import ServedModel, default_per_task, load_served_model
from app.engine.service import SolveService
from app.settings import ModelSpec, Settings, load_model_specs

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, specs: list[ModelSpec] | None = None) -> None:
        self.settings = settings
        self._specs = specs
        self.service: SolveService | None = None
        self.cache: ResultCache | None = None
        self.ready = False
        self.load_error: str | None = None
        self.loading: str | None = None
        self.drain_started: float | None = None
        self._loader: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None

    def not_ready_reason(self) -> str:
        if self.load_error is not None:
            return f"loading models failed: {self.load_error}"
        if self.service is not None and self.service.draining:
            return "draining for shutdown"
        if self.loading is not None:
            return f"loading and warming up model {self.loading}"
        if self.ready and self.service is not None and not self.service.models:
            return "no models configured"
        return "starting"

    async def start(self) -> None:
        self.cache = make_cache(self.settings)
        self._loader = asyncio.create_task(self._load(), name="recursolve-load-models")

    async def wait_ready(self, timeout: float | None = None) -> None:
        """For in-process callers (tests, `recursolve solve --local`): wait until loading finished."""
        if self._loader is not None:
            await asyncio.wait_for(asyncio.shield(self._loader), timeout)
        if self.load_error is not None:
            raise RuntimeError(self.load_error)

    async def _load(self) -> None:
        models: dict[str, ServedModel] = {}
        try:
            specs = self._specs if self._specs is not None else load_model_specs(self.settings)
            for spec in specs:  # bad per-model default options fail the start, not the first request
                try:
                    SolveOptionsIn.model_validate(spec.default_options)
                except ValidationError as e:
                    raise ValueError(f"model {spec.name}: invalid default_options: {e}") from None
            for spec in specs:
                self.loading = spec.name
                served = await asyncio.to_thread(load_served_model, spec)
                if self.settings.warmup:
                    await asyncio.to_thread(served.executor.warmup)
                served.executor.start()
                models[spec.name] = served
                log.info("model %s (%s, %s) ready: version %s", spec.name, spec.task, spec.backend, served.version)
        except asyncio.CancelledError:  # shut down while loading
            for m in models.values():
                m.executor.stop()
            raise
        except Exception as e:
            # Shown by /healthz and /readyz: paths relative to the weights dir (the log has the full message).
            self.load_error = redact_paths(f"{type(e).__name__}: {e}", self.settings.weights_dir)
            log.exception("loading models failed")
            for m in models.values():
                m.executor.stop()
            return
        finally:
            self.loading = None
        assert self.cache is not None
        self.service = SolveService(models, default_per_task(models), self.cache,
                                    default_deadline_ms=self.settings.default_deadline_ms,
                                    cache_ttl_seconds=self.settings.cache_ttl_seconds,
                                    cache_enabled=self.settings.cache_enabled,
                                    caps=server_limits(self.settings))
        self.ready = bool(models)
        if self.drain_started is not None:  # SIGTERM arrived while loading: never admit anything
            self.service.begin_drain()
        if not models:
            log.warning("no models to serve: put model folders under %s or set RECURSOLVE_MODELS_FILE",
                        self.settings.weights_dir)

    def begin_drain(self) -> None:
        """SIGTERM: stop admitting (readyz 503, new solves 503) and start the grace-period clock: running and
        queued requests go on, and whatever still runs when it ends is cut with its best answer so far.
        Runs on the event loop (the CLI's signal hook schedules it with call_soon_threadsafe)."""
        if self.drain_started is not None:
            return
        self.drain_started = time.monotonic()
        log.info("draining: admission stopped; finishing running requests within %.1f s",
                 self.settings.drain_grace_seconds)
        if self.service is not None:
            self.service.begin_drain()
            self._drainer = asyncio.get_running_loop().create_task(
                self.service.drain(self.settings.drain_grace_seconds), name="recursolve-drain")

    async def stop(self) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        self.begin_drain()
        if self._drainer is not None:
            await self._drainer
        if self.service is not None:
            await self.service.close()
        elif self.cache is not None:
            await self.cache.close()
