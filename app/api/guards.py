"""Request-level guards, as pure ASGI middleware (they answer before any body is parsed or handler runs):

- JsonOnlyMiddleware: a POST to a route that takes POST must send its body as `application/json` (or
  `application/*+json`), uncompressed: 415 otherwise, and 501 for a transfer coding other than chunked;
  anything else is left to routing (405 and 404 stay right).
  A form-encoded or text/plain POST is a CORS "simple request" that any web page can send
  cross-site without a preflight; refusing it means a page cannot start work on a server it can reach.
- InflightLimitMiddleware: at most `limit` requests handled at once; over it 503 + Retry-After with the JSON
  error body. Health, readiness and metrics are not counted and never refused: probes must see the truth.
- HeadAsGetMiddleware: HEAD is answered as GET without the body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ApiError, count_error, is_json_media_type
from app.logs import CountedWarning

log = logging.getLogger(__name__)

# Probes and scrapes: answered whatever the load, so an overloaded pod is not also reported dead.
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/v2/health/")
OPEN_SUFFIXES = ("/ready",)  # /v2/models/{name}/ready


def route_path(scope: Scope) -> str:
    """The path the routes match: scope["path"] less the root_path a proxy prefix adds (uvicorn --root-path
    makes path = root_path + the route's path, and Starlette routes on the rest). Every guard that decides by
    path must read this one, or /prefix/v1/solve would pass a check written for /v1/solve."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):]
    return path


def is_probe(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PATHS[-1]) or (
        path.startswith("/v2/models/") and path.endswith(OPEN_SUFFIXES))


def _routed(scope: Scope) -> bool:
    """Whether a route of the app takes this method on this path (scope["app"] is the Starlette app)."""
    app = scope.get("app")
    routes = getattr(getattr(app, "router", None), "routes", ())
    return any(route.matches(scope)[0] is Match.FULL for route in routes)


class JsonOnlyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and (err := _body_refusal(scope)) is not None:
            count_error(err)
            await err.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _body_refusal(scope: Scope) -> ApiError | None:
    """The 415 for a POST body this app cannot read as JSON (501 for its transfer coding), or None."""
    raw = encoding = transfer = None
    for k, v in scope.get("headers", ()):
        if k == b"content-type":
            raw = v
        elif k == b"content-encoding" and v.strip().lower() != b"identity":
            encoding = v
        elif k == b"transfer-encoding":
            transfer = v
    if transfer is not None and _other_transfer_coding(transfer):
        # The HTTP parser takes `gzip, chunked` as chunked and hands the body on still gzipped, or, for a plain
        # body so labelled, as if the label were not there. RFC 9112 6.1: a coding the server does not
        # understand is answered 501.
        got = transfer.decode("latin-1")[:64]
        return ApiError(501, "unsupported_transfer_coding", f"transfer codings other than chunked are not "
                        f"supported (got 'Transfer-Encoding: {got}'): send the body with Content-Length or "
                        "'Transfer-Encoding: chunked' alone", "header Transfer-Encoding")
    if encoding is not None and _routed(scope):
        # Nothing here decodes a compressed body: a gzip body read as JSON was a confusing 400 about UTF-8, and a
        # plain body labelled gzip was read as if the label were not there.
        got = encoding.decode("latin-1")[:64]
        return ApiError(415, "unsupported_media_type", f"compressed request bodies are not accepted (got "
                        f"'Content-Encoding: {got}'): send the JSON uncompressed, without Content-Encoding",
                        "header Content-Encoding")
    content_type = raw.decode("latin-1") if raw is not None else ""
    # The media type first: a JSON body passes whatever the route, so only a non-JSON one pays for matching the
    # path against the routes (~5 us a request here).
    if not is_json_media_type(content_type) and _routed(scope):
        got = repr(content_type[:64]) if content_type else "no Content-Type"
        return ApiError(415, "unsupported_media_type", "the request body must be JSON sent with "
                        f"'Content-Type: application/json' (got {got})", "header Content-Type")
    return None


def _other_transfer_coding(value: bytes) -> bool:
    """Whether a Transfer-Encoding value names a coding besides chunked (identity, obsolete, is let pass)."""
    return any(c.strip().lower() not in (b"chunked", b"identity", b"") for c in value.split(b","))


class InflightLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int, retry_after_s: int = 1) -> None:
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.inflight = 0
        self._refused = CountedWarning(log, f"in-flight limit {limit} reached: refused %d requests with 503 since the "
                                       "last warning")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_probe(route_path(scope)):
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.limit:
            self._refused()
            err = ApiError(503, "too_many_requests_in_flight", f"the server is handling {self.inflight} requests, "
                           f"its limit (RECURSOLVE_MAX_INFLIGHT_REQUESTS); retry after {self.retry_after_s} s",
                           headers={"Retry-After": str(self.retry_after_s)})
            count_error(err)
            await err.response()(scope, receive, send)
            return
        self.inflight += 1  # no await between the check and this: atomic on the event loop
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


class CloseWhileDrainingMiddleware:
    """Once a drain has begun, every response says `Connection: close`: a client's next request then opens a new
    connection to the (still open) listener and gets its 503, instead of reusing a kept-alive socket that the
    shutdown closes under it (a ReadError, a request lost)."""

    def __init__(self, app: ASGIApp, is_draining: Callable[[], bool]) -> None:
        self.app, self.is_draining = app, is_draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.is_draining():
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


class HeadAsGetMiddleware:
    """HEAD answered as the GET of the same path, with its status and headers and no body (RFC 9110 9.3.2: a
    server that serves GET serves HEAD). Load balancers' health checks (HAProxy's `http-check`, for one) and
    `curl -I` probe /healthz and /readyz this way; FastAPI's routes take GET alone, so HEAD got 405.

    HEAD to a path without GET gets that path's 405, with its Allow header. uvicorn drops a HEAD response's body
    itself; the body is dropped here too, so the app does the same under any server. Content-Length stays the
    GET's, as the RFC asks."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def head(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.body":
                if ended:
                    return
                ended = True  # the response is complete after its head: a streamed GET's later parts are dropped
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, head)
