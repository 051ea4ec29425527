"""The ASGI app: `create_app(settings)` builds it; `app` is what `uvicorn app.main:app` serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import errors
from app.api.limits import BodyLimitMiddleware
from app.api.mcp import install_mcp
from app.api.routes import router
from app.api.tools import router as tools_router
from app.runtime import Runtime
from app.settings import ModelSpec, Settings, get_settings

DESCRIPTION = """Tiny recursive reasoning models (TRM, HRM, PTRM) behind one HTTP API.

POST a Sudoku, maze or ARC puzzle to `/v1/solve` and get a checked answer. Requests share the
model through continuous batching at ACT-step granularity: a row that halts leaves after the
step it halted in and a waiting request takes its place at the next step.
"""


def create_app(settings: Settings | None = None, specs: list[ModelSpec] | None = None) -> FastAPI:
    """The app; `specs` overrides the models list from settings (tests pass small models this way)."""
    settings = settings or get_settings()
    runtime = Runtime(settings, specs)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            async with mcp_sessions.run():  # the MCP transport's task group lives as long as the app
                yield
        finally:
            await runtime.stop()

    # strict_content_type off: `curl -d '{...}'` without a JSON content type is still a JSON request.
    app = FastAPI(title="recursolve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  strict_content_type=False)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.state.runtime = runtime
    errors.install(app)
    app.include_router(router)
    app.include_router(tools_router)
    mcp_sessions = install_mcp(app)
    return app


def __getattr__(name: str) -> FastAPI:
    """`app.main:app` for `uvicorn app.main:app`, built on first access (importing stays side-effect free)."""
    if name == "app":
        return create_app()
    raise AttributeError(name)
