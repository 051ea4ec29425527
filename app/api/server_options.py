"""Everything `recursolve serve` hands to uvicorn, from Settings: `uvicorn_options(settings)`.

uvicorn alone keeps a connection that never finishes its headers open forever (its keep-alive timer only
runs between requests) and takes sockets until the process runs out of file descriptors, which then fills
the log with "Too many open files". `guarded_protocol` is uvicorn's httptools protocol (llhttp, in C: half
the per-request CPU of its pure-Python h11 protocol, and the API processes' CPU is what caps GPU serving)
with four additions:

- a header deadline: armed when a connection opens and when a kept-alive connection starts a new request,
  cleared once the request's headers are complete; when it fires the socket gets a 408 (if anything was
  sent) and is closed. The body has its own deadline at the ASGI level (app/api/limits.py).
- a header size cap (llhttp has none of its own): a request whose headers run past MAX_HEADER_BYTES gets a
  431 with the JSON error body and is closed, so a client cannot grow a header buffer without bound; bytes
  that are not HTTP get a 400 with the JSON error body (uvicorn's own is plain text).
- a cap on open connections: one over it gets a 503 with Retry-After and the JSON error body at once and
  is closed, so it costs a file descriptor for microseconds, not until the client gives up. The cap is
  also kept under the process's file-descriptor limit, so accept() itself never fails.
- a write deadline: uvicorn's `send` waits, with no limit, for a client whose unread response has filled
  the socket and the transport's buffer; its handler, its in-flight slot and its rows would stay held. And
  once an answer is complete, a closing transport waits, with no limit, to flush what is still unsent,
  holding the socket. So once writing pauses, or an answer completes with bytes unsent, a client that reads
  none of them for `write_timeout_s` is aborted (a handler still running sees a disconnect). Any progress
  starts the deadline again, so a slow but live reader (a long SSE stream over a thin link) is never cut;
  only one that has stopped reading is.

uvicorn's own `limit_concurrency` is left off: its 503 is plain text without Retry-After, and it counts
connections and requests together. The in-flight request cap is app/api/guards.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import socket
import struct
from collections.abc import Callable
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.logs import CountedWarning
from app.settings import Settings

log = logging.getLogger(__name__)

FD_RESERVE = 64  # descriptors kept for model files, Redis, logs and the listening socket
MAX_HEADER_BYTES = 16 * 1024  # request line and headers together; more is a 431 (h11's default cap)


def fd_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(configured: int) -> int:
    """The configured cap, lowered to stay FD_RESERVE below the file-descriptor limit."""
    return max(1, min(configured, fd_limit() - FD_RESERVE))


def _raw_response(status: int, reason: str, code: str, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 response with the JSON error body, for a socket with no request cycle (yet)."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class _Deadline:
    """One re-armable timer of a connection (its header deadline, its write deadline)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float, expired: Callable[[], None]) -> None:
        self.loop, self.delay_s, self.expired = loop, delay_s, expired
        self.timer: asyncio.TimerHandle | None = None

    @property
    def armed(self) -> bool:
        return self.timer is not None

    def arm(self) -> None:
        """Start it (again): it fires delay_s from now."""
        self.cancel()
        self.timer = self.loop.call_later(self.delay_s, self._fire)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fire(self) -> None:
        self.timer = None
        self.expired()


def guarded_protocol(header_timeout_s: float, max_connections: int, retry_after_s: int = 1,
                     write_timeout_s: float = 30.0) -> type[HttpToolsProtocol]:
    """uvicorn's HttpToolsProtocol with a header deadline, a header size cap, an open-connection cap and a write
    deadline (a class per setting values, because uvicorn builds protocols with its own fixed arguments)."""
    cap = connection_cap(max_connections)
    refused = CountedWarning(log, f"open-connection cap {cap} reached: refused %d connections with 503 "
                             "(RECURSOLVE_MAX_CONNECTIONS)")
    timed_out = CountedWarning(log, f"closed %d connections whose request headers did not arrive within "
                               f"{header_timeout_s:g} s (RECURSOLVE_HEADER_TIMEOUT_S)")
    oversized = CountedWarning(log, f"closed %d connections whose request headers ran past {MAX_HEADER_BYTES} bytes")
    unread = CountedWarning(log, f"aborted %d connections that read none of their response for {write_timeout_s:g} s "
                            "(RECURSOLVE_WRITE_TIMEOUT_S)")
    busy = _raw_response(503, "Service Unavailable", "too_many_connections",
                         f"the server has {cap} open connections, its limit; retry after {retry_after_s} s",
                         {"retry-after": str(retry_after_s)})
    late = _raw_response(408, "Request Timeout", "header_timeout",
                         f"the request headers did not arrive within {header_timeout_s:g} s")
    too_large = _raw_response(431, "Request Header Fields Too Large", "headers_too_large",
                              f"the request line and headers are over {MAX_HEADER_BYTES} bytes")
    not_http = _raw_response(400, "Bad Request", "invalid_http",
                             "the request is not valid HTTP/1.1 (request line, header syntax or framing)")
    no_upgrade = _raw_response(400, "Bad Request", "upgrade_not_supported",
                               "this server speaks HTTP/1.1 only: send a request with a body without 'Connection: "
                               "upgrade' and 'Upgrade' (curl: --http1.1 rather than --http2 on http://)")

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        header_deadline: _Deadline
        write_deadline: _Deadline
        # Between requests or inside a request line and headers, not in a body. A read that ends one request's
        # body and starts the next request's headers counts for neither: the cap is loose by one read at most.
        in_headers = True
        header_bytes = 0  # bytes received while in_headers, since the last request's headers or body ended
        # The request line and headers as parsed: the count above misses headers that arrive in one read with
        # what follows them (on_headers_complete has reset it by the time data_received looks).
        parsed_header_bytes = 0
        headers_too_large = False
        got_bytes = False
        unread_bytes = 0  # the transport's buffer when the write deadline was (re)armed
        running: Any = None  # the request whose handler runs; with pipelining, not self.cycle (the newest parsed)
        upgrade_asked = False
        # An error answer held until the pipelined requests before it are answered; b"" once sent. Set, the
        # connection reads nothing more.
        refusal: bytes | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self.header_deadline = _Deadline(self.loop, header_timeout_s, self._headers_late)
            self.write_deadline = _Deadline(self.loop, write_timeout_s, self._write_stalled)
            super().connection_made(transport)
            if len(self.connections) > cap:
                refused()
                transport.write(busy)
                transport.close()
                return
            self.header_deadline.arm()

        def data_received(self, data: bytes) -> None:
            if self.refusal is not None:  # bad bytes came; what follows them is not read as requests
                return
            self.got_bytes = True
            if not self.header_deadline.armed and (self.cycle is None or self.cycle.response_complete):
                self.header_deadline.arm()  # a kept-alive connection starting its next request
            if self.in_headers:  # counted whatever the deadline: a pipelined request's headers arrive unarmed
                self.header_bytes += len(data)
            super().data_received(data)  # on_headers_complete disarms once the headers are in
            if (self.in_headers and self.header_bytes > MAX_HEADER_BYTES and self.refusal is None
                    and not self.transport.is_closing()):
                oversized()
                self._refuse(too_large)

        def send_400_response(self, msg: str) -> None:  # uvicorn's is plain text; every other error is JSON
            if self.headers_too_large:
                oversized()
            self._refuse(too_large if self.headers_too_large else no_upgrade if self.upgrade_asked else not_http)

        def _refuse(self, answer: bytes) -> None:
            """Answer bytes that are not a request we take, then close. Requests that arrived whole before them
            (pipelined) are answered first, in order: uvicorn wrote its 400 at once and closed, dropping their
            answers though their work was done. The request the bad bytes broke is not run."""
            if self.refusal is not None or self.transport.is_closing():
                return
            self.header_deadline.cancel()
            self.pipeline = type(self.pipeline)((c, a) for c, a in self.pipeline if not c.more_body)
            self.refusal = answer
            self.flow.pause_reading()
            self._send_refusal_once_answered()

        def _send_refusal_once_answered(self) -> None:
            """Send the held refusal and close, unless a request that arrived whole before it awaits its answer."""
            running = self.running is not None and not self.running.response_complete and not self.running.more_body
            if self.refusal and not running and not self.pipeline and not self.transport.is_closing():
                answer, self.refusal = self.refusal, b""  # b"": sent, and what comes after is still not read
                self.transport.write(answer)
                self.transport.close()

        def on_message_begin(self) -> None:
            self.parsed_header_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count_header(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_header(len(name) + len(value) + 4)  # "name: value\r\n"
            super().on_header(name, value)

        def _count_header(self, n: int) -> None:
            self.parsed_header_bytes += n
            if self.parsed_header_bytes > MAX_HEADER_BYTES:
                self.headers_too_large = True
                # An exception in a parser callback stops the parser; uvicorn answers through send_400_response.
                raise ValueError("request headers over MAX_HEADER_BYTES")

        def on_headers_complete(self) -> None:
            self.header_deadline.cancel()
            self.in_headers, self.header_bytes = False, 0
            if not self.parser.should_upgrade():
                super().on_headers_complete()
                return
            # llhttp hands everything after an upgrade request's headers (its body, the next requests) to the new
            # protocol, and uvicorn, having none, dropped it: a POST ran with an empty body, and the connection went
            # quiet. No route here speaks another protocol. A request with a body is refused (via
            # send_400_response); one without (`curl --http2` GET) loses nothing, so it is served, over HTTP/1.1,
            # and its connection closed after it, since llhttp would drop what came next.
            if any(name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0"))
                   for name, value in self.headers):
                self.upgrade_asked = True
                raise ValueError("protocol upgrade requested with a body")
            super().on_headers_complete()
            if not self._should_upgrade():  # uvicorn made an HTTP request of it (not a websocket it can serve)
                self.cycle.keep_alive = False

        def _unsupported_upgrade_warning(self) -> None:
            """uvicorn warns twice per upgrade it cannot make (no websocket library): handled above, say nothing."""

        def on_message_complete(self) -> None:
            self.in_headers, self.header_bytes = True, 0
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self.header_deadline.cancel()
            self.write_deadline.cancel()
            self._running_disconnected()
            super().connection_lost(exc)

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            self.running = cycle
            super()._start_asgi_task(cycle, app)

        def _running_disconnected(self) -> None:
            """Tell the running handler its client is gone. uvicorn tells only self.cycle, which under pipelining is
            a request still queued: the running one's send, woken by connection_lost, wrote to a dead transport."""
            if self.running is not None and not self.running.response_complete:
                self.running.disconnected = True
                self.running.message_event.set()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # starts the next pipelined request, if any
            self._send_refusal_once_answered()
            # What the answer left unsent, under the high-water mark too: uvicorn may close now (Connection: close)
            # or at keep-alive expiry, and a closing transport waits to flush it for ever if it is never read.
            if not self.write_deadline.armed and self.transport.get_write_buffer_size() > 0:
                self._arm_write()

        def pause_writing(self) -> None:  # the transport's buffer is over its high-water mark: send() now waits
            super().pause_writing()
            self._arm_write()

        def resume_writing(self) -> None:
            self.write_deadline.cancel()
            super().resume_writing()

        def _arm_write(self) -> None:
            self.unread_bytes = self.transport.get_write_buffer_size()
            self.write_deadline.arm()

        def _write_stalled(self) -> None:
            # Closing or not: after a finished answer uvicorn's close() waits, without limit, to flush what an
            # unread client holds up, keeping the socket. Only an empty buffer needs nothing more.
            unread_bytes = self.transport.get_write_buffer_size()
            if unread_bytes == 0:
                return
            if unread_bytes < self.unread_bytes:  # it read some: a slow reader, not gone
                self._arm_write()
                return
            unread()
            self._running_disconnected()  # before the abort: uvloop's wakes a waiting send before connection_lost
            sock = self.transport.get_extra_info("socket")
            if sock is not None:  # a reset: the kernel drops what it holds too, rather than keep sending it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()  # close() would wait to flush what the client will never read

        def _headers_late(self) -> None:
            if self.transport.is_closing():
                return
            timed_out()
            if self.got_bytes:  # a half-sent request gets told why; a silent socket is just closed
                self.transport.write(late)
            self.transport.close()

    return GuardedHttpToolsProtocol


def uvicorn_options(settings: Settings, *, host: str | None = None, port: int | None = None) -> dict[str, Any]:
    """Keyword arguments for uvicorn.Config(app, **uvicorn_options(settings)); host/port override settings."""
    return {
        "host": host or settings.host,
        "port": port if port is not None else settings.port,
        "workers": 1,  # scale with replicas (or the engine-core's API processes), so Prometheus sees one process
        "log_level": settings.log_level.lower(),
        # uvicorn cancels handlers still open after this: leave time for the engine to cut its rows at the end
        # of the grace period and for the cut answers to be sent.
        "timeout_graceful_shutdown": math.ceil(settings.drain_grace_seconds) + 3,
        "timeout_keep_alive": max(1, math.ceil(settings.keep_alive_timeout_s)),
        "http": guarded_protocol(settings.header_timeout_s, settings.max_connections, settings.retry_after_s,
                                 settings.write_timeout_s),
        "limit_concurrency": None,  # see the module docstring: our caps answer with JSON + Retry-After
        "backlog": 2048,
        "server_header": False,  # no server version to fingerprint
    }
