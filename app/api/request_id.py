"""Request ids: one id per HTTP request, taken from the client when it sends a usable one.

Order: a valid `X-Request-ID` header (1-128 visible ASCII characters) as sent; else the trace-id of a valid
W3C `traceparent` header (so log lines join the caller's trace); else a fresh 32-hex-digit id. An unusable
`X-Request-ID` (too long, spaces, control or non-ASCII characters) is replaced, not refused: a request id
must never be the reason a solve fails. The id goes into `app.logs.request_id_var` (every log line and
error body carries it) and back to the client as `X-Request-ID` on every response; a valid `traceparent`
is echoed as well.

A pure ASGI middleware (no BaseHTTPMiddleware): it does not buffer or re-wrap streamed (SSE) responses.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import new_request_id, request_id_var

MAX_REQUEST_ID_LEN = 128
# Visible ASCII only: the id goes into headers and log lines verbatim.
_VALID_ID = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_REQUEST_ID_LEN)
# W3C Trace Context: version-traceid-parentid-flags, lower-case hex. Version ff is invalid; a later version
# may append fields after the flags ("-..."), version 00 may not.
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ECHOED = (b"x-request-id", b"traceparent")


def trace_id(traceparent: bytes) -> str | None:
    """The trace-id of a valid W3C traceparent header value, else None."""
    m = _TRACEPARENT.fullmatch(traceparent.strip())
    if m is None:
        return None
    version, trace, parent, _flags, rest = m.groups()
    if version == b"ff" or (version == b"00" and rest) or set(trace) == {ord("0")} or set(parent) == {ord("0")}:
        return None
    return trace.decode()


def resolve(headers: list[tuple[bytes, bytes]]) -> tuple[str, bytes | None]:
    """(request id, traceparent to echo or None) from the raw request headers."""
    sent_id = traceparent = None
    for name, value in headers:
        if name == b"x-request-id" and sent_id is None:
            sent_id = value
        elif name == b"traceparent" and traceparent is None:
            traceparent = value
    trace = trace_id(traceparent) if traceparent is not None else None
    # Echoed as its first 55 characters, the four fields every version has (a later version's further fields are
    # the caller's bytes, which may be anything llhttp lets through: never echoed).
    echo = traceparent.strip()[:55] if trace is not None and traceparent is not None else None
    if sent_id is not None and _VALID_ID.fullmatch(sent_id):
        return sent_id.decode("ascii"), echo
    return (trace or new_request_id()), echo


class RequestIdMiddleware:
    """Sets `request_id_var` for the request and puts `X-Request-ID` (and `traceparent`) on its response,
    replacing any the app set, so there is exactly one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid, traceparent = resolve(scope.get("headers", []))
        echo = [(b"x-request-id", rid.encode("ascii"))]
        if traceparent is not None:
            echo.append((b"traceparent", traceparent))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _ECHOED]
                message = {**message, "headers": kept + echo}
            await send(message)

        token = request_id_var.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # Left set on purpose: Starlette's ServerErrorMiddleware, outside this one, renders the 500 body
            # (with the id, app/api/errors.py) and uvicorn logs the traceback after we return. Each request
            # runs in its own task, so the value dies with it.
            raise
        request_id_var.reset(token)
