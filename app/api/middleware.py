"""The request guards in front of the routes, in one place so their order is decided once.

Outermost first (Starlette runs the last added first):
  Connection: close on every response once a drain began (clients reconnect and get the 503)
  -> CORS (only with RECURSOLVE_CORS_ORIGINS: preflights answered, error responses readable cross-origin)
  -> API keys (401 before anything costs work)
  -> in-flight limit (503 + Retry-After)
  -> JSON only (415)
  -> body size, bytes held by this process and read deadline (413, 429, 408)
  -> Idempotency-Key (replays need the whole body, which the layer above has read)
  -> HEAD as GET (after the keys and limits, which then treat a HEAD as the request it is)
  -> the routes.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from app.api import openapi
from app.api.auth import ApiKeyMiddleware, parse_keys
from app.api.guards import (
    CloseWhileDrainingMiddleware,
    HeadAsGetMiddleware,
    InflightLimitMiddleware,
    JsonOnlyMiddleware,
)
from app.api.idempotency import IdempotencyMiddleware
from app.api.limits import BodyLimitMiddleware
from app.settings import Settings

CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"]
CORS_EXPOSED = ["X-Request-ID", "Retry-After", "Idempotent-Replayed"]


def cors_origins(raw: str | None) -> list[str]:
    return [o.strip().rstrip("/") for o in (raw or "").split(",") if o.strip()]


def install(app: FastAPI, settings: Settings) -> None:
    """Add every guard to `app` (built with FastAPI(...), before it serves) and patch its OpenAPI document."""
    runtime = app.state.runtime
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(IdempotencyMiddleware, get_cache=lambda: runtime.cache,
                       ttl_seconds=settings.idempotency_ttl_seconds)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes,
                       read_timeout_s=settings.body_timeout_s, max_inflight_bytes=settings.max_inflight_bytes,
                       retry_after_s=settings.retry_after_s)
    app.add_middleware(JsonOnlyMiddleware)
    app.add_middleware(InflightLimitMiddleware, limit=settings.max_inflight_requests,
                       retry_after_s=settings.retry_after_s)
    keys = parse_keys(settings.api_keys)
    if keys:
        app.add_middleware(ApiKeyMiddleware, keys=keys, protect_metrics=settings.auth_metrics)
    origins = cors_origins(settings.cors_origins)
    if origins:
        # No credentials: keys travel in the Authorization header, which CORS allows without cookies.
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=CORS_HEADERS, expose_headers=CORS_EXPOSED, max_age=600)
    app.add_middleware(CloseWhileDrainingMiddleware, is_draining=lambda: runtime.drain_started is not None)
    openapi.install(app, auth=bool(keys), auth_metrics=settings.auth_metrics)
