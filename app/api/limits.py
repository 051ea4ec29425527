"""Request body limits with our JSON error shape: a size limit (HTTP 413), checked before the body is parsed,
a budget for the bytes of all bodies this process holds at once (HTTP 429 + Retry-After: a flood of large
requests is refused before it is read, so memory stays bounded whatever the concurrency), and a read deadline
(HTTP 408), so a client that sends its headers and then trickles or stalls its body holds
no handler for longer than RECURSOLVE_BODY_TIMEOUT_S (the header deadline is in app/api/server_options.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ApiError, count_error


class _TooLarge(Exception):
    pass


class _OverBudget(Exception):
    pass


class BodyLimitMiddleware:
    """The whole body is read here, within `read_timeout_s` of the handler starting (i.e. of the headers being
    complete) and up to `max_bytes`, then replayed to the app. A declared Content-Length over the limit is
    refused at once; a chunked body as soon as it passes the limit. Reading it all first costs nothing extra:
    every route parses the whole JSON body anyway, and bodies are capped at max_bytes."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float | None = None,
                 max_inflight_bytes: int | None = None, retry_after_s: int = 1) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self.max_inflight_bytes = max_inflight_bytes
        self.retry_after_s = retry_after_s
        self.inflight_bytes = 0  # bodies being read or handled now (a declared Content-Length counts at once)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        declared = int(length) if length is not None and length.isdigit() else 0
        if declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        held = [0]  # bytes this request counts in inflight_bytes (grows while a chunked body arrives)
        try:
            try:
                self._reserve(held, declared)
                async with asyncio.timeout(self.read_timeout_s):
                    body = await self._read(receive, held)
            except _TooLarge:
                await self._refuse(scope, receive, send)
                return
            except _OverBudget:
                await self._busy(scope, receive, send)
                return
            except TimeoutError:
                err = ApiError(408, "body_timeout", f"the request body did not arrive within {self.read_timeout_s:g}"
                               " s of its headers (RECURSOLVE_BODY_TIMEOUT_S); send it in one go",
                               headers={"Connection": "close"})
                count_error(err)
                await err.response()(scope, receive, send)
                return
            await self._handle(scope, receive, send, body)
        finally:
            self.inflight_bytes -= held[0]

    def _reserve(self, held: list[int], total: int) -> None:
        """Count this request at `total` bytes; _OverBudget when that takes the process over its budget. A request
        alone is never over (max_request_bytes bounds one), so a budget below it cannot refuse everything."""
        extra = total - held[0]
        if extra <= 0:
            return
        others = self.inflight_bytes - held[0]
        if self.max_inflight_bytes is not None and others > 0 and self.inflight_bytes + extra > self.max_inflight_bytes:
            raise _OverBudget()
        self.inflight_bytes += extra
        held[0] = total

    async def _handle(self, scope: Scope, receive: Receive, send: Send, body: bytes | None) -> None:
        if body is None:  # client went away mid-body
            return
        await self.app(scope, replay_body(body, receive), send)

    async def _read(self, receive: Receive, held: list[int]) -> bytes | None:
        def received(size: int) -> None:
            if size > self.max_bytes:
                raise _TooLarge()
            self._reserve(held, size)

        return await read_body(receive, received)

    async def _busy(self, scope: Scope, receive: Receive, send: Send) -> None:
        err = ApiError(429, "too_many_bytes_in_flight", f"this server process holds {self.inflight_bytes} bytes of "
                       f"request bodies, its budget (RECURSOLVE_MAX_INFLIGHT_BYTES={self.max_inflight_bytes}); "
                       f"retry after {self.retry_after_s} s", headers={"Retry-After": str(self.retry_after_s)})
        count_error(err)
        await err.response()(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        err = ApiError(413, "request_too_large", f"request body is larger than {self.max_bytes} bytes; send fewer "
                       "or smaller puzzles (limit: RECURSOLVE_MAX_REQUEST_BYTES)")
        count_error(err)
        await err.response()(scope, receive, send)


async def read_body(receive: Receive, received: Callable[[int], None] | None = None) -> bytes | None:
    """The whole request body, or None if the client went away first. `received(bytes so far)` runs after each
    chunk arrives and before it is kept, so a limit can refuse the body there by raising."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if received is not None:
            received(size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over `body` (already read) as one message, then defers to `receive` (disconnects)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
