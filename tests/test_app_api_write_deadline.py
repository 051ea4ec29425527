"""The write deadline (app/api/server_options.py) against a real uvicorn server over real sockets: a client that
stops reading its answers is cut off and frees its handler; one that reads slowly but steadily is not.

Each test runs under asyncio's loop and under uvloop (uvicorn's loop when installed, so the one `recursolve serve`
runs): the two differ in when an aborted transport wakes a handler waiting to write."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import orjson
import pytest

from app_engine_support import solve_body, uvicorn_serving, variant, wait_for

try:
    import uvloop
except ImportError:  # uvloop is not built for Windows
    uvloop = None

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    LOOPS["uvloop"] = uvloop.new_event_loop

JSON = {"content-type": "application/json"}


def batch_of(n: int) -> bytes:
    return orjson.dumps({"items": [solve_body(puzzle=variant(i), max_steps=1) for i in range(n)]})


BATCH = batch_of(64)  # answered in ~80-120 KB


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    def run(test: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            runner.run(test)
    return run


async def reader_with_small_window(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window it offers stays small
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    # A small reader buffer too: asyncio's default reads 128 KiB ahead of the test's reads, then stops reading
    # the socket until the test has taken half of it, which is a stalled reader for most of a second.
    return await asyncio.open_connection(sock=sock, limit=4096)


def pipelined_batches(n: int, body: bytes = BATCH, headers: bytes = b"") -> bytes:
    """n /v1/solve/batch requests of body back to back (BATCH: two answers pass the transport's 64 KiB mark)."""
    head = b"POST /v1/solve/batch HTTP/1.1\r\nHost: x\r\n" + headers + b"Content-Type: application/json\r\n"
    return (head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body) * n


def test_a_client_that_stops_reading_is_cut_off_and_frees_its_handler(run, tmp_path, caplog):
    write_timeout_s = 1.0

    async def scenario() -> None:
        async with uvicorn_serving(tmp_path, send_buffer=4096, write_timeout_s=write_timeout_s,
                                   max_inflight_requests=1) as p:
            base = f"http://127.0.0.1:{p}"
            async with httpx.AsyncClient(timeout=10) as c:
                # Solved once first, so the pipelined ones are cache hits: a 503 below is the stall's, not a solve's.
                assert (await c.post(f"{base}/v1/solve/batch", content=BATCH, headers=JSON)).status_code == 200
                reader, writer = await reader_with_small_window(p)
                writer.write(pipelined_batches(8))  # and never reads: a send() waits on the full socket, in the slot
                sent_at = time.monotonic()  # the stall, and so its deadline, starts after this

                async def status() -> int:
                    return (await c.post(f"{base}/v1/solve", json=solve_body(max_steps=1))).status_code

                async def held() -> bool:
                    return await status() == 503

                async def freed() -> bool:
                    return await status() == 200

                await wait_for(held, timeout=5)
                await wait_for(freed, timeout=write_timeout_s + 5)
                # Held until the deadline, not before. Measured from the write, not from when `held` first saw the
                # stall: on a loaded machine that poll can come late in the hold (CI saw 0.11 s of it left).
                assert time.monotonic() - sent_at >= write_timeout_s * 0.9
            with pytest.raises(ConnectionResetError):  # a reset: the server's kernel dropped the unread bytes too
                while await asyncio.wait_for(reader.read(1 << 16), 5):
                    pass
            writer.close()

    with caplog.at_level(logging.WARNING):
        run(scenario())
    assert any("read none of their response" in r.getMessage() for r in caplog.records)
    # The handler that was waiting to write learns its client is gone; it does not write to the dead socket.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_slow_reader_that_keeps_reading_is_not_cut_off(run, tmp_path):
    write_timeout_s = 0.5

    async def scenario() -> None:
        async with uvicorn_serving(tmp_path, send_buffer=4096, write_timeout_s=write_timeout_s) as p:
            reader, writer = await reader_with_small_window(p)
            n = 3
            writer.write(pipelined_batches(n))
            answers, t0 = 0, time.monotonic()
            while answers < n:  # a few kilobytes every 0.1 s: seconds in all, many write deadlines long
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200 "), head
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while length:
                    chunk = await asyncio.wait_for(reader.read(min(length, 8192)), 5)
                    assert chunk, "the server closed a connection that was still reading"
                    length -= len(chunk)
                    await asyncio.sleep(0.1)
                answers += 1
            assert time.monotonic() - t0 > 4 * write_timeout_s
            writer.close()

    run(scenario())


@pytest.mark.parametrize("body", [batch_of(64), batch_of(20)], ids=["past_high_water", "under_high_water"])
def test_a_finished_answer_that_is_never_read_does_not_hold_its_socket(run, tmp_path, body):
    """The handler is done and uvicorn has closed the connection (Connection: close), but close() waits to flush
    what the client never reads: the socket and its descriptor would be held for good. The deadline aborts it,
    whether what is left unsent ever paused writing (past the transport's 64 KiB mark) or not."""
    write_timeout_s = 1.0

    async def scenario() -> None:
        async with uvicorn_serving(tmp_path, send_buffer=4096, write_timeout_s=write_timeout_s) as p:
            async with httpx.AsyncClient(timeout=10) as c:  # solved first: the answer below is a cache hit, sized here
                for _ in range(2):
                    answer = await c.post(f"http://127.0.0.1:{p}/v1/solve/batch", content=body, headers=JSON)
            unsent = len(answer.content) - 2 * 8192  # past what the two kernels' buffers take
            assert unsent > 0 and (unsent > 65536) == (len(body) > len(batch_of(20))), len(answer.content)
            reader, writer = await reader_with_small_window(p)
            writer.write(pipelined_batches(1, body, b"Connection: close\r\n"))
            await asyncio.sleep(write_timeout_s + 1.5)  # reads nothing meanwhile
            with pytest.raises(ConnectionResetError):  # a clean close would hand over the whole answer, then EOF
                while await asyncio.wait_for(reader.read(1 << 16), 5):
                    pass
            writer.close()

    run(scenario())
