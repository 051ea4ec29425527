"""Continuous batching, PTRM rows, queue limits and coalescing, through the real app on small models."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import pytest_asyncio

from app_engine_support import engine_stats, make_specs, running_app, solve_body, variant, wait_for
from models import load_model
from models.ptrm import ptrm_solve

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    specs = make_specs(root, random={"batch_rows": 2, "max_queue_rows": 4}, eager={"batch_rows": 4},
                       copy={"batch_rows": 1, "max_queue_rows": 2})
    async with running_app(root, specs=specs) as (app, c):
        yield app, c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(env):
    return env[1]


def post(client, **kw):
    return asyncio.create_task(client.post("/v1/solve", json=solve_body(**kw)))


async def running(client, model, rows):
    return (await engine_stats(client, model))["running_rows"] == rows


async def test_short_requests_refill_rows_while_a_long_one_runs(client):
    long = post(client, model="random", max_steps=300, halting="max_steps", cache=False)
    await wait_for(lambda: running(client, "random", 1))
    first = (await client.post("/v1/solve", json=solve_body(model="random", max_steps=5, halting="max_steps",
                                                             cache=False))).json()
    assert not long.done()
    # The row the first short request left is taken by the next one at once: no waiting for the long one.
    second = (await client.post("/v1/solve", json=solve_body(puzzle=variant(0), model="random",
                                                              max_steps=5, halting="max_steps", cache=False))).json()
    assert not long.done()
    for short in (first, second):
        assert (short["steps"], short["halted_by"]) == (5, "max_steps")
        assert short["timings"]["queue_ms"] < 500
    done = (await long).json()
    assert (done["steps"], done["halted_by"]) == (300, "max_steps")
    assert done["timings"]["compute_ms"] > first["timings"]["compute_ms"] + second["timings"]["compute_ms"]


async def test_ptrm_request_holds_k_rows(client):
    ptrm = post(client, model="eager", max_steps=200, halting="max_steps", trajectories=4, noise=0.2, seed=3,
                cache=False)
    await wait_for(lambda: running(client, "eager", 4))
    # All 4 rows are taken: a plain request waits for them.
    plain = post(client, model="eager", max_steps=2, halting="max_steps", cache=False)
    await wait_for(lambda: _queued(client, "eager", 1))
    assert not plain.done()
    body = (await ptrm).json()
    assert (body["trajectories"], body["steps"], body["row_steps"]) == (4, 200, 800)
    waited = (await plain).json()
    assert waited["timings"]["queue_ms"] > 50


async def _queued(client, model, rows):
    return (await engine_stats(client, model))["queued_rows"] == rows


async def test_same_seed_same_answer(client):
    opts = dict(model="random", max_steps=8, halting="max_steps", trajectories=2, noise=0.8, cache=False)
    a = (await client.post("/v1/solve", json=solve_body(seed=123, **opts))).json()
    b = (await client.post("/v1/solve", json=solve_body(seed=123, **opts))).json()
    assert a["answer"] == b["answer"] and a["confidence"] == b["confidence"]
    assert a["chosen_trajectory"] == b["chosen_trajectory"]
    # The seed really drives the noise: another seed, another run.
    other = (await client.post("/v1/solve", json=solve_body(seed=124, **opts))).json()
    assert other["confidence"] != a["confidence"]


async def test_queue_full_is_429_with_retry_after(client):
    # copy: 1 row, queue limit 2 rows. One running + two queued fill it; the next one is turned away.
    hold = dict(model="copy", max_steps=4096, halting="max_steps", deadline_ms=1500, cache=False)
    tasks = [post(client, puzzle=variant(d), **hold) for d in (1, 2, 4)]
    await wait_for(lambda: _queued(client, "copy", 2))
    r = await client.post("/v1/solve", json=solve_body(**hold))
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "queue_full"
    # PTRM asking for more rows than the model has is too large, not overloaded.
    r = await client.post("/v1/solve", json=solve_body(model="copy", trajectories=2))
    assert r.status_code == 413 and r.json()["error"]["location"] == "options.trajectories"
    # Every accepted request is answered. Here the deadline stops each one; a GPU steps the 1-row copy model fast
    # enough to run all 4096 steps within 1.5 s (seen on an H100), so either ending is the request served.
    done = [await t for t in tasks]
    assert [d.status_code for d in done] == [200, 200, 200]
    assert all(b["halted_by"] == "deadline" or (b["halted_by"], b["steps"]) == ("max_steps", 4096)
               for b in (d.json() for d in done))


async def test_identical_requests_share_one_computation(client):
    before = (await engine_stats(client, "eager"))["steps_run"]
    opts = solve_body(puzzle=variant(1), model="eager", max_steps=40, halting="max_steps",
                      cache=False)
    a, b = await asyncio.gather(client.post("/v1/solve", json=opts), client.post("/v1/solve", json=opts))
    bodies = [a.json(), b.json()]
    assert sorted(x["coalesced"] for x in bodies) == [False, True]
    assert bodies[0]["answer"] == bodies[1]["answer"]
    assert (await engine_stats(client, "eager"))["steps_run"] - before == 40


async def test_cache_hit_says_so(client):
    body = solve_body(puzzle=variant(2), model="eager", max_steps=3)
    first = (await client.post("/v1/solve", json=body)).json()
    second = (await client.post("/v1/solve", json=body)).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["answer"] == first["answer"] and second["steps"] == first["steps"]
    grid_form = [list(variant(2)[r * 9:(r + 1) * 9]) for r in range(9)]
    third = (await client.post("/v1/solve", json=body | {"puzzle": grid_form})).json()
    assert third["cached"] is True  # the key is the canonical puzzle, the answer keeps the caller's form
    assert isinstance(third["answer"], list)
    off = (await client.post("/v1/solve", json=solve_body(puzzle=variant(2), model="eager",
                                                           max_steps=3, cache=False))).json()
    assert off["cached"] is False


async def test_engine_ptrm_matches_the_offline_reference(env):
    """Row-wise PTRM in the engine draws the same noise as models.ptrm.ptrm_solve: same answer, same choice."""
    app, client = env
    served = app.state.runtime.service.models["eager"]
    codec = served.codec
    puzzle = codec.parse(variant(7))
    spec = next(s for s in app.state.runtime._specs if s.name == "eager")
    model = load_model(spec.path, dtype=served.info.backend["dtype"]).model  # the weights the engine serves
    ref = ptrm_solve(model, codec.encode(puzzle, 81)[None], np.zeros(1, np.int64), K=3,
                     sigma=0.5, steps=6, seed=5, policy="best_q")
    body = (await client.post("/v1/solve", json=solve_body(puzzle=variant(7), model="eager", max_steps=6,
                                                           halting="max_steps", trajectories=3, noise=0.5, seed=5,
                                                           cache=False))).json()
    assert body["chosen_trajectory"] == ref.chosen[0]
    assert body["answer"] == codec.answer_payload(codec.decode(ref.tokens[0], puzzle), puzzle)
