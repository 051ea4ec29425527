"""The serving benchmark's HTTP client (bench/http_load.py) against a scripted asyncio server: keep-alive reuse,
chunked bodies, a server that closes, and a cancelled call that must close its connection (so the server sees
the client leave, as it frees the rows of a disconnected /v1/solve)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from http_load import HttpClient, HttpError


class Scripted:
    """Answers each request on a connection with the next of `replies(path, body)`; counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length"))
                body = await reader.readexactly(length)
                if path == "/hang":
                    await reader.read()  # until the client closes
                    self.closed.set()
                    return
                if path == "/chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                                 b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
                elif path == "/close":
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 4\r\n\r\n"
                                 b"busy")
                    await writer.drain()
                    writer.close()
                    return
                elif path == "/drop":
                    writer.close()
                    return
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()

    async def __aenter__(self) -> tuple[Scripted, HttpClient]:
        """The server started, and a client of it."""
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.client = HttpClient(f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}")
        return self, self.client

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.client.close()
        self.server.close()


@pytest.mark.asyncio
async def test_bodies_come_back_whole_over_one_kept_alive_connection():
    async with Scripted() as (server, client):
        for i in range(5):
            assert await client.post("/echo", b'{"n": %d}' % i) == (200, b'{"n": %d}' % i)
        assert await client.post("/chunked", b"{}") == (200, b"abcdefg")
        assert server.connections == 1
        # Two calls at once need two connections; both go back to the pool.
        a, b = await asyncio.gather(client.post("/echo", b"a"), client.post("/echo", b"b"))
        assert (a, b) == ((200, b"a"), (200, b"b")) and server.connections == 2


@pytest.mark.asyncio
async def test_a_closed_connection_is_replaced_and_a_broken_one_is_an_error():
    async with Scripted() as (server, client):
        assert await client.post("/close", b"{}") == (503, b"busy")
        assert await client.post("/echo", b"x") == (200, b"x")  # on a new connection
        assert server.connections == 2
        with pytest.raises(HttpError, match="closed the connection"):
            await client.post("/drop", b"{}")
        assert await client.post("/echo", b"y") == (200, b"y")


@pytest.mark.asyncio
async def test_a_cancelled_call_closes_its_connection():
    async with Scripted() as (server, client):
        call = asyncio.create_task(client.post("/hang", b"{}"))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(server.closed.wait(), 5)
        assert await client.post("/echo", b"z") == (200, b"z")  # the cancelled connection was not pooled
