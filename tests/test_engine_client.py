"""The engine boundary without HTTP: an in-process engine core (inproc:// socket, its own thread) and the
asynchronous client, exchanging only plain messages (app/engine/protocol.py)."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from app.engine.client import EngineClient, EngineRejected, InprocEngine
from app.engine.protocol import DRAINING, EngineRequest, SolveOptions, tokens_from_bytes
from app_engine_support import SOLUTION, make_specs
from puzzles import get_codec


def request(model: str, puzzle: str = SOLUTION, **opts) -> EngineRequest:
    codec = get_codec("sudoku")
    tokens = np.asarray(codec.encode(codec.parse(puzzle), 81), np.int32)
    return EngineRequest(id=uuid.uuid4().hex, model=model, inputs=tokens.tobytes(), puzzle_identifier=0,
                         options=SolveOptions(**opts), arrival=time.monotonic())


@pytest.mark.asyncio
async def test_submit_stats_drain(tmp_path):
    engine = InprocEngine(make_specs(tmp_path), warmup=False)
    engine.start()
    client = EngineClient(engine.address, engine.ctx)
    await client.start()
    try:
        ready = await client.wait_ready(60)
        assert ready.error is None and {m.name for m in ready.models} == {"random", "eager", "copy"}
        out = await client.submit(request("copy", max_steps=3, halting="verifier"))
        assert (out.halted_by, out.steps, out.valid) == ("verified", 1, True)
        assert "".join(map(str, tokens_from_bytes(out.tokens) - 1)) == SOLUTION  # token = digit + 1
        stats = (await client.stats())["copy"]
        assert (stats["steps_run"], stats["rows_stepped"]) == (1, 1)
        two = await client.submit(request("copy", max_steps=3, halting="max_steps", trajectories=2, noise=0.1,
                                          seed=1))
        assert (two.steps, two.row_steps) == (3, 6)
        stats = (await client.stats())["copy"]
        assert (stats["steps_run"], stats["rows_stepped"]) == (4, 7)  # each step ran the request's 2 rows
        await client.drain()  # a message like any other: later submits are refused, nothing else changes
        with pytest.raises(EngineRejected) as err:
            await client.submit(request("copy", max_steps=1))
        assert err.value.code == DRAINING
    finally:
        await client.close()
        await engine.stop()


@pytest.mark.asyncio
async def test_stats_say_where_the_engine_loop_spent_its_time(tmp_path):
    """The loop's seconds by phase (app/engine/phases.py): every phase of a step is charged, nothing is charged
    twice (the phases sum to no more than the engine thread's lifetime), and an idle engine's time is idle."""
    from app.engine.phases import PHASES

    t0 = time.perf_counter()
    engine = InprocEngine(make_specs(tmp_path), warmup=False)
    engine.start()
    client = EngineClient(engine.address, engine.ctx)
    await client.start()
    try:
        await client.wait_ready(60)
        await client.submit(request("copy", max_steps=3, halting="max_steps", trajectories=2, noise=0.1, seed=1))
        before = await client.query_stats()
        assert before is not None and set(before.loop_s) == set(PHASES)
        for phase in ("messages", "schedule", "load", "noise", "launch", "collect", "update", "send"):
            assert before.loop_s[phase] > 0, phase
        assert sum(before.loop_s.values()) <= time.perf_counter() - t0
        time.sleep(0.3)  # the engine thread waits for work meanwhile
        after = await client.query_stats()
        assert after is not None
        assert after.loop_s["idle"] - before.loop_s["idle"] >= 0.2
        assert after.loop_s["launch"] == before.loop_s["launch"]  # no step ran
    finally:
        await client.close()
        await engine.stop()


def test_a_closed_client_leaves_nothing_that_stops_the_next_one(tmp_path):
    """Clients started and closed one after another in one process, each in its own event loop (the benchmark's
    clients, a test's): pyzmq's monitor endpoint of a closed client used to stay bound under a name made from the
    socket's fd, so the next client whose socket got that fd failed to start (ZMQError: Address already in use)."""
    import asyncio

    import zmq

    address = f"ipc://{tmp_path}/engine.sock"
    engine = zmq.Context.instance().socket(zmq.ROUTER)  # a stand-in: start() only connects
    engine.setsockopt(zmq.LINGER, 0)
    engine.bind(address)

    async def start_and_close() -> None:
        client = EngineClient(address)
        await client.start()
        await asyncio.sleep(0.05)  # the connection is up, the monitor has reported it
        await client.close()

    try:
        for _ in range(4):
            asyncio.run(start_and_close())
    finally:
        engine.close(0)


def test_requests_expired_in_the_queue_all_count_as_halts(tmp_path):
    """Two requests that expire while queued, in one schedule: both are counted (one per trajectory)."""
    from app.engine.core import ModelEngine

    spec = next(s for s in make_specs(tmp_path) if s.name == "copy")
    engine = ModelEngine.load(spec)
    for k in (1, 2):
        assert engine.add(request("copy", trajectories=k, deadline_ms=1)) is None
    result = engine.step(time.monotonic() + 1.0)
    assert [o.halted_by for o in result.finished] == ["deadline", "deadline"]
    assert result.halts["deadline"] == 3
