"""A real uvicorn server on 127.0.0.1: client disconnects free rows (plain, batch and SSE), the CLI as a client."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
import pytest_asyncio
import uvicorn
from typer.testing import CliRunner

from app import metrics
from app.api.service import DISCONNECT_POLL_S, SharedDisconnect
from app.cli import app as cli_app
from app.main import create_app
from app.settings import Settings
from app_engine_support import SOLUTION, make_specs, solve_body, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    app = create_app(Settings(weights_dir=root, drain_grace_seconds=1, max_request_share=1.0),
                     make_specs(root, random={"batch_rows": 2}))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    await app.state.runtime.wait_ready(60)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield app, f"http://127.0.0.1:{port}"
    srv.should_exit = True
    await task


async def rows(base, model="random"):
    async with httpx.AsyncClient() as c:
        return (await c.get(f"{base}/v1/models/{model}")).json()["engine"]["running_rows"]


def cancelled_halts() -> float:
    return metrics.HALTS.labels(model="random", reason="cancelled")._value.get()


async def test_client_disconnect_frees_rows(server):
    _, base = server
    before = cancelled_halts()

    async def long_call():
        async with httpx.AsyncClient(timeout=60) as c:
            await c.post(f"{base}/v1/solve", json=solve_body(max_steps=4096, halting="max_steps", trajectories=2,
                                                             seed=1, cache=False))

    call = asyncio.create_task(long_call())
    await wait_for(lambda: _is(rows(base), 2))
    call.cancel()  # closes the connection: the server's watcher sees the disconnect
    with contextlib.suppress(asyncio.CancelledError):
        await call
    await wait_for(lambda: _is(rows(base), 0), timeout=2)
    assert cancelled_halts() - before == 2
    # The freed rows serve the next caller at once.
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{base}/v1/solve", json=solve_body(max_steps=3, halting="max_steps", cache=False))
    assert r.json()["timings"]["queue_ms"] < 200


async def test_a_request_whose_client_left_is_counted_and_its_idempotency_key_not_kept(server):
    """The 499 is counted as client_closed (not an error), and a retry with the same Idempotency-Key runs the
    request again instead of replaying 'the client disconnected'."""
    _, base = server
    body = solve_body(max_steps=4096, halting="max_steps", deadline_ms=1500, cache=False)
    headers = {"Idempotency-Key": "left-early"}

    def closed() -> float:
        return metrics.REQUESTS.labels(model="random", task="sudoku", status="client_closed")._value.get()

    before = closed()

    async def long_call():
        async with httpx.AsyncClient(timeout=60) as c:
            await c.post(f"{base}/v1/solve", json=body, headers=headers)

    call = asyncio.create_task(long_call())
    await wait_for(lambda: _is(rows(base), 1))
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call

    async def counted():
        return closed() - before == 1 and await rows(base) == 0

    await wait_for(counted, timeout=2)
    await asyncio.sleep(0.2)  # the idempotency layer has finished with the first request
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{base}/v1/solve", json=body, headers=headers)
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers and r.json()["halted_by"] == "deadline"


async def test_batch_disconnect_frees_every_items_rows(server):
    _, base = server
    before = cancelled_halts()

    async def long_batch():
        async with httpx.AsyncClient(timeout=60) as c:
            item = {"task": "sudoku", "puzzle": solve_body()["puzzle"]}
            await c.post(f"{base}/v1/solve/batch", json={
                "items": [item, {**item, "options": {"seed": 2}}],
                "options": {"max_steps": 4096, "halting": "max_steps", "cache": False, "seed": 1, "noise": 0.1}})

    call = asyncio.create_task(long_batch())
    await wait_for(lambda: _is(rows(base), 2))
    call.cancel()  # the items share one probe of the connection (SharedDisconnect): it sees it go for both
    with contextlib.suppress(asyncio.CancelledError):
        await call
    await wait_for(lambda: _is(rows(base), 0), timeout=2)
    assert cancelled_halts() - before == 2


async def test_a_shared_disconnect_probes_the_connection_once_per_interval():
    probes = []

    async def probe() -> bool:
        probes.append(1)
        await asyncio.sleep(0)
        return len(probes) >= 2

    gone = SharedDisconnect(probe)
    assert await asyncio.gather(*(gone() for _ in range(64))) == [False] * 64
    assert len(probes) == 1
    await asyncio.sleep(DISCONNECT_POLL_S)
    seen = await asyncio.gather(*(gone() for _ in range(64)))
    assert seen[0] and len(probes) == 2  # the second probe finds the client gone (the others saw the last answer)
    await asyncio.sleep(DISCONNECT_POLL_S)
    assert all(await asyncio.gather(*(gone() for _ in range(64))))
    assert len(probes) == 2  # gone stays gone without probing again


async def test_sse_disconnect_frees_rows_and_is_counted(server):
    _, base = server

    def closed() -> float:
        return metrics.REQUESTS.labels(model="random", task="sudoku", status="client_closed")._value.get()

    before = closed()
    async with httpx.AsyncClient(timeout=60) as c, c.stream(
            "POST", f"{base}/v1/solve/stream",
            json=solve_body(max_steps=4096, halting="max_steps", cache=False)) as r:
        seen = 0
        async for line in r.aiter_lines():
            seen += line.startswith("event: step")
            if seen == 3:
                break
        assert await rows(base) == 1
    await wait_for(lambda: _is(rows(base), 0), timeout=2)

    async def counted() -> bool:
        return closed() - before == 1

    await wait_for(counted, timeout=2)  # as a /v1/solve whose client left is (it was not counted at all)


async def test_cli_solve_against_the_server(server):
    _, base = server
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, cli_app, ["solve", SOLUTION, "--url", base, "--model", "copy",
                                                              "--halting", "verifier", "--json"])
    assert result.exit_code == 0, result.output
    assert '"halted_by": "verified"' in result.output
    result = await asyncio.to_thread(runner.invoke, cli_app, ["solve", "12k", "--url", base])
    assert result.exit_code == 2 and "bad_character" in result.output


async def _is(coro, value):
    return await coro == value
