"""The ASGI app: `create_app(settings)` builds it; `app` is what `uvicorn app.main:app` serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from app.api import errors, middleware, ui
from app.api.mcp import install_mcp
from app.api.request_id import RequestIdMiddleware
from app.api.routes import router
from app.api.tools import router as tools_router
from app.runtime import Runtime
from app.settings import ModelSpec, Settings, get_settings

DESCRIPTION = """Tiny recursive reasoning models (TRM, HRM, PTRM) behind one HTTP API.

POST a Sudoku, maze or ARC puzzle to `/v1/solve` and get a checked answer. Requests share the
model through continuous batching at ACT-step granularity: a row that halts leaves after the
step it halted in and a waiting request takes its place at the next step.
"""

# FastAPI's native OpenTelemetry switched off (RECURSOLVE_OPENTELEMETRY=false, the default): no span, metric or
# log record, and no provider lookup per request.
TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_app(settings: Settings | None = None, specs: list[ModelSpec] | None = None, *,
               serving_process: bool = False) -> FastAPI:
    """The app; `specs` overrides the models list from settings (tests pass small models this way).
    `serving_process`: the process does nothing but serve this app (see Runtime)."""
    settings = settings or get_settings()
    runtime = Runtime(settings, specs, serving_process=serving_process)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            async with mcp_sessions.run():  # the MCP transport's task group lives as long as the app
                yield
        finally:
            await runtime.stop()

    # docs_url/redoc_url off: FastAPI's pages load from a CDN; app.api.ui serves them from local files.
    app = FastAPI(title="recursolve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, telemetry=None if settings.opentelemetry else TELEMETRY_OFF)
    app.state.runtime = runtime
    middleware.install(app, settings)  # auth, CORS, JSON only, limits, timeouts, Idempotency-Key (app/api/)
    app.add_middleware(RequestIdMiddleware)  # added last = outermost: every response and log line carries the id
    errors.install(app)
    app.include_router(router)
    ui.install(app)  # the playground at / and offline /docs, /redoc
    app.include_router(tools_router)
    mcp_sessions = install_mcp(app)
    return app


_worker_app: FastAPI | None = None


def create_worker_app() -> FastAPI:
    """The app of one API process under `recursolve serve` (uvicorn factory): settings from the environment,
    which the supervisor filled with the engine core's address."""
    from app.logs import configure_logging

    global _worker_app
    settings = get_settings()
    configure_logging(settings.log_level)
    _worker_app = create_app(settings, serving_process=True)
    return _worker_app


def worker_runtime() -> Runtime | None:
    """This API process's Runtime (for the drain on SIGTERM), once its app exists."""
    return _worker_app.state.runtime if _worker_app is not None else None


def __getattr__(name: str) -> FastAPI:
    """`app.main:app` for `uvicorn app.main:app`, built on first access (importing stays side-effect free): a
    serving process (see Runtime)."""
    if name == "app":
        return create_app(serving_process=True)
    raise AttributeError(name)
