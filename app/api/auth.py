"""Optional API keys: with RECURSOLVE_API_KEYS set (comma-separated), `/v1/*` and `/mcp` need
`Authorization: Bearer <key>`; anything else is a 401 with `WWW-Authenticate: Bearer` (RFC 6750).

Health, readiness, /docs and /openapi.json stay open (probes and humans need them); /metrics too unless
RECURSOLVE_AUTH_METRICS=true. Keys are compared in constant time, every configured key every time, so the
time taken says nothing about how much of a key was right nor which key matched.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import ApiError, count_error
from app.api.guards import route_path

PROTECTED_PREFIXES = ("/v1/", "/mcp")
REALM = 'Bearer realm="recursolve"'


def parse_keys(raw: str | None) -> tuple[str, ...]:
    """'k1, k2,,' -> ('k1', 'k2'); None or blank -> () (auth off)."""
    return tuple(k.strip() for k in (raw or "").split(",") if k.strip())


def bearer_token(headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), else None."""
    raw = next((v for k, v in headers if k == b"authorization"), None)
    if raw is None:
        return None
    scheme, _, token = raw.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_matches(token: str, keys: tuple[str, ...]) -> bool:
    given = token.encode()
    found = False
    for key in keys:  # no early exit: the same work whichever key matches
        found |= hmac.compare_digest(given, key.encode())
    return found


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: tuple[str, ...], protect_metrics: bool = False) -> None:
        self.app = app
        self.keys = keys
        self.prefixes = PROTECTED_PREFIXES + (("/metrics",) if protect_metrics else ())

    def protects(self, path: str) -> bool:
        return bool(self.keys) and (path.startswith(self.prefixes) or path in ("/v1", "/mcp"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.protects(route_path(scope)):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope.get("headers", ()))
        if token is not None and key_matches(token, self.keys):
            await self.app(scope, receive, send)
            return
        if token is None:
            err = ApiError(401, "unauthorized", "this server needs an API key: send 'Authorization: Bearer <key>'",
                           "header Authorization", headers={"WWW-Authenticate": REALM})
        else:
            err = ApiError(401, "invalid_api_key", "the API key in 'Authorization: Bearer <key>' is not valid here",
                           "header Authorization", headers={"WWW-Authenticate": REALM + ', error="invalid_token"'})
        count_error(err)
        await err.response()(scope, receive, send)
