"""Connections against a real uvicorn server built from `uvicorn_options` (what `recursolve serve` runs), over
real sockets on 127.0.0.1: header and body deadlines, the open-connection cap and the in-flight request cap."""

from __future__ import annotations

import asyncio
import resource
import time

import httpx
import orjson
import pytest
import pytest_asyncio
import uvicorn

from app.api.server_options import FD_RESERVE, MAX_HEADER_BYTES, connection_cap, uvicorn_options
from app.settings import Settings
from app_engine_support import solve_body, uvicorn_serving, variant, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 300
STALLED = 200


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def port(tmp_path_factory):
    async with uvicorn_serving(tmp_path_factory.mktemp("conns"), header_timeout_s=HEADER_TIMEOUT_S,
                               body_timeout_s=BODY_TIMEOUT_S, max_connections=MAX_CONNECTIONS,
                               max_inflight_requests=2) as p:
        yield p


async def read_all(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (b'' if it only closes)."""
    return await asyncio.wait_for(reader.read(), timeout)


async def test_options_are_what_serve_passes():
    s = Settings(header_timeout_s=3, keep_alive_timeout_s=2.5, max_connections=10**9, drain_grace_seconds=20)
    opts = uvicorn_options(s, port=0)
    assert (opts["host"], opts["port"], opts["workers"], opts["limit_concurrency"]) == ("127.0.0.1", 0, 1, None)
    assert (opts["timeout_keep_alive"], opts["timeout_graceful_shutdown"]) == (3, 23)
    assert issubclass(opts["http"], uvicorn.protocols.http.httptools_impl.HttpToolsProtocol)
    # A cap above the descriptor limit is lowered under it, so accept() never runs out of descriptors.
    assert connection_cap(10**9) == resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_RESERVE
    uvicorn.Config(object(), **opts)  # every key is a uvicorn.Config argument


async def test_stalled_half_sent_requests_are_closed_and_health_stays_fast(port):
    conns = []
    for i in range(STALLED):  # headers started, never finished (slowloris)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/solve HTTP/1.1\r\nHost: x\r\nX-Slow-" + str(i).encode())
        conns.append((reader, writer))
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)  # sends nothing at all
    opened = time.monotonic()

    async with httpx.AsyncClient(timeout=5) as c:
        t0 = time.monotonic()
        r = await c.get(f"http://127.0.0.1:{port}/healthz")
        health_s = time.monotonic() - t0
    assert r.status_code == 200 and health_s < 0.5, health_s

    answers = await asyncio.gather(*(read_all(reader, HEADER_TIMEOUT_S + 5) for reader, _ in conns))
    closed_after = time.monotonic() - opened
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[0]
    assert orjson.loads(answers[0].split(b"\r\n\r\n", 1)[1])["error"]["code"] == "header_timeout"
    assert closed_after < HEADER_TIMEOUT_S + 3
    assert await read_all(silent_reader, HEADER_TIMEOUT_S + 5) == b""  # closed without a word
    for _, writer in [*conns, (silent_reader, silent_writer)]:
        writer.close()


async def test_a_keep_alive_connection_gets_a_fresh_header_deadline_per_request(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(2):  # together longer than one deadline: each request has its own
        await asyncio.sleep(HEADER_TIMEOUT_S * 0.6)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(
            b"content-length")))
        await reader.readexactly(length)
    writer.write(b"GET /healthz HTTP/1.1\r\nHo")  # then stalls mid-headers on the kept-alive connection
    assert (await read_all(reader, HEADER_TIMEOUT_S + 5)).startswith(b"HTTP/1.1 408 ")
    writer.close()


async def test_headers_over_the_cap_get_431_and_big_ones_under_it_pass(port):
    async def send(head: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        try:
            return await read_all(reader, 5)
        finally:
            writer.close()

    filler = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    ok = await send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + filler * 12 + b"\r\n")
    assert ok.startswith(b"HTTP/1.1 200 "), ok[:200]
    # Complete headers past the cap, in one write (the server reads them in one go): refused too.
    big = await send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + filler * 40 + b"\r\n")
    assert big.startswith(b"HTTP/1.1 431 "), big[:200]
    # Headers past the cap that have not ended: refused at once, not after the header deadline. (All of it is
    # written before the server answers, so it closes with nothing unread and the client sees the answer.)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + filler * (MAX_HEADER_BYTES // len(filler) + 1))
    answer = await read_all(reader, 5)
    assert time.monotonic() - t0 < HEADER_TIMEOUT_S
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 431 ") and orjson.loads(body)["error"]["code"] == "headers_too_large"
    writer.close()
    # The same on a kept-alive connection after a request with a large body: the body does not count towards
    # the next request's headers, which do.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = orjson.dumps({"task": "sudoku", "puzzle": "x" * 20_000})
    writer.write(b"POST /v1/solve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(
        b"content-length")))
    await reader.readexactly(length)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + filler * (MAX_HEADER_BYTES // len(filler) + 1))
    answer = head + await read_all(reader, 5)
    assert answer.startswith(b"HTTP/1.1 422 ") and b"HTTP/1.1 431 " in answer, answer[:300]
    writer.close()


async def test_bytes_that_are_not_http_get_a_json_400(port):
    for raw in (b"GARBAGE\r\n\r\n", b"POST /v1/solve HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        head, body = (await read_all(reader, 5)).split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 400 ") and orjson.loads(body)["error"]["code"] == "invalid_http", head
        writer.close()


async def test_a_stalled_body_gets_408(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/solve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
                 b"\r\n{\"task\":")
    t0 = time.monotonic()
    answer = await read_all(reader, BODY_TIMEOUT_S + 5)
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - t0 < BODY_TIMEOUT_S + 2
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_timeout"
    writer.close()


async def test_over_the_connection_cap_is_503_with_retry_after(tmp_path):
    async with uvicorn_serving(tmp_path, max_connections=3) as p:
        held = [await asyncio.open_connection("127.0.0.1", p) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", p)
        answer = await read_all(reader, 5)
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in head.lower()
        assert orjson.loads(body)["error"]["code"] == "too_many_connections"
        for _, w in [*held, (reader, writer)]:
            w.close()
        await asyncio.sleep(0.1)  # the held sockets are gone: a new client gets in again
        async with httpx.AsyncClient(timeout=5) as c:
            assert (await c.get(f"http://127.0.0.1:{p}/healthz")).status_code == 200


async def test_over_the_inflight_cap_is_503_json_and_probes_still_answer(port):
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=30) as c:
        # Two different puzzles: identical requests would share one computation (coalescing).
        hog = [asyncio.create_task(c.post(f"{base}/v1/solve", json=solve_body(
            puzzle=variant(i), max_steps=4096, halting="max_steps", deadline_ms=3000, cache=False)))
               for i in range(2)]

        async def both_running():  # /metrics is not counted against the cap, so polling it refuses no hog
            text = (await c.get(f"{base}/metrics")).text
            return 'recursolve_running_rows{model="random"} 2.0' in text

        await wait_for(both_running)
        r = await c.post(f"{base}/v1/solve", json=solve_body(max_steps=1))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "too_many_requests_in_flight"
        for probe in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/models/random/ready"):
            assert (await c.get(base + probe)).status_code == 200, probe
        for t in hog:
            t.cancel()
        await asyncio.gather(*hog, return_exceptions=True)


def split_responses(raw: bytes) -> list[tuple[int, dict]]:
    """(status, JSON body) of each HTTP/1.1 response in raw, in order (every answer here has a Content-Length)."""
    out = []
    while raw:
        head, raw = raw.split(b"\r\n\r\n", 1)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        out.append((int(head.split(b" ")[1]), orjson.loads(raw[:length])))
        raw = raw[length:]
    return out


def raw_solve(body: bytes, extra_headers: bytes = b"") -> bytes:
    return (b"POST /v1/solve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra_headers
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def test_requests_before_bad_bytes_are_answered_first_in_order(tmp_path):
    """uvicorn wrote its 400 at once and closed, dropping the answers of the requests pipelined before the bad
    bytes (their work done, counted as client_closed). Now they come first, then the refusal, then the close."""
    bodies = [orjson.dumps(solve_body(puzzle=variant(i), max_steps=2 + i, cache=False)) for i in range(3)]
    oversized = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\r\n\r\n"
    async with uvicorn_serving(tmp_path) as port:
        for tail, status, code in ((b"GARBAGE\r\n\r\n", 400, "invalid_http"), (oversized, 431, "headers_too_large")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"".join(raw_solve(b) for b in bodies) + tail)
            answers = split_responses(await read_all(reader, 30))
            assert [a[0] for a in answers] == [200, 200, 200, status], answers
            assert [a[1]["steps"] for a in answers[:3]] == [2, 3, 4]  # in the order asked
            assert answers[3][1]["error"]["code"] == code
            writer.close()


async def test_a_protocol_upgrade_is_refused_not_run_without_its_body(tmp_path):
    """llhttp gives whatever follows an upgrade request's headers to the new protocol; uvicorn, having none, ran
    the request with an empty body (a 422 'missing body' for a body that was sent) and dropped what followed."""
    body = orjson.dumps(solve_body(max_steps=1))
    h2c = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    websocket = b"Connection: upgrade\r\nUpgrade: websocket\r\n"
    async with uvicorn_serving(tmp_path) as port:
        for upgrade in (h2c, websocket):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # One plain request before it: still answered, first.
            writer.write(raw_solve(body) + raw_solve(body, upgrade) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answers = split_responses(await read_all(reader, 30))
            assert [a[0] for a in answers] == [200, 400], answers
            assert answers[1][1]["error"]["code"] == "upgrade_not_supported"
            writer.close()
        # Without a body nothing is lost (`curl --http2` on a GET): served over HTTP/1.1, then the connection is
        # closed, since llhttp would hand what came next on it to the upgrade (before, the next request hung).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        writer.write(health + h2c + b"\r\n" + health + b"\r\n")
        raw = await read_all(reader, 10)
        assert raw.startswith(b"HTTP/1.1 200 ") and b"connection: close" in raw.lower()
        assert raw.count(b"HTTP/1.1") == 1
        writer.close()
