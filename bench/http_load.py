"""The serving benchmark's HTTP client: keep-alive HTTP/1.1 connections, responses parsed by httptools.

Why not aiohttp for the load: on a GPU machine the load generator shares the CPUs with the server it
measures. A closed-loop /v1/solve client on the 2-core VM (32 connections, tiny model) spent 208-230 us of
CPU per request in aiohttp, 116-119 us here on asyncio and 61-66 us here on uvloop. At the H100's ~10k
answers/s that is ~2.3 cores of 16 against ~0.65: cores the API processes need, and queueing inside the
client that its latencies would include.

What it does and no more: one request in flight per connection (no pipelining), a pool of idle connections
(a closed loop of N clients holds N), Content-Length or chunked responses (httptools parses both), a new
connection after the server closes one. It speaks to one host and port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools


class HttpError(Exception):
    """The connection broke before a whole response arrived."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `request` sends a whole request and waits for the whole response."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.body: list[bytes] = []
        self.response: asyncio.Future[tuple[int, bytes]] | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(HttpError(f"bad response: {e}"))
            self.close()

    def on_body(self, body: bytes) -> None:  # httptools callback
        self.body.append(body)

    def on_message_complete(self) -> None:  # httptools callback
        body, self.body = b"".join(self.body), []
        if not self.parser.should_keep_alive():
            self.close()
        if self.response is not None and not self.response.done():
            self.response.set_result((self.parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(HttpError(f"the server closed the connection: {exc or 'EOF'}"))

    def _fail(self, error: Exception) -> None:
        if self.response is not None and not self.response.done():
            self.response.set_exception(error)

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.response = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        try:
            return await self.response
        finally:
            self.response = None


class HttpClient:
    """POSTs to one server over pooled keep-alive connections."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"an http://host:port URL, not {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self._idle: list[_Connection] = []

    async def post(self, path: str, body: bytes, content_type: bytes = b"application/json") -> tuple[int, bytes]:
        """(status, body). A cancelled call closes its connection, so the server sees the client leave."""
        conn = self._idle.pop() if self._idle else await self._connect()
        raw = b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
            path.encode(), self.host.encode(), self.port, content_type, len(body), body)
        try:
            status, data = await conn.request(raw)
        except BaseException:
            conn.close()
            raise
        if conn.open:
            self._idle.append(conn)
        return status, data

    async def _connect(self) -> _Connection:
        _, conn = await asyncio.get_running_loop().create_connection(_Connection, self.host, self.port)
        return conn

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def event_loop_runner() -> Callable[..., object]:
    """uvloop.run when uvloop is installed (the server's loop too), else asyncio.run."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
