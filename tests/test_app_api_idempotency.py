"""Idempotency-Key on /v1/solve and /v1/solve/batch: a retry gets the first answer, another body with the same
key is a 422, a retry while the first still runs is a 409; kept in the result cache with its TTL."""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio

from app.api.idempotency import body_fingerprint, storage_key
from app.settings import Settings
from app_engine_support import make_specs, running_app, solve_body, variant, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app_client(tmp_path_factory):
    root = tmp_path_factory.mktemp("idem")
    async with running_app(root, settings=Settings(weights_dir=root, idempotency_ttl_seconds=60),
                           specs=make_specs(root)) as (app, c):
        yield app, c


def key(k: str) -> dict[str, str]:
    return {"Idempotency-Key": k}


async def test_a_stored_record_that_cannot_be_replayed_is_recomputed_not_a_500():
    from app.api.idempotency import _load

    good = {"fingerprint": "f", "status": 200, "headers": {}, "body": "7b7d"}
    assert _load(json.dumps(good).encode()) == good
    for bad in ({**good, "body": "zz"}, {**good, "status": "200"}, {**good, "headers": []}, {**good, "body": 5}):
        assert _load(json.dumps(bad).encode()) is None, bad


async def test_fingerprint_ignores_json_layout_and_keys_are_scoped():
    assert body_fingerprint(b'{"a": 1, "b": [1, 2]}') == body_fingerprint(b'{"b":[1,2],"a":1}')
    assert body_fingerprint(b'{"a": 1}') != body_fingerprint(b'{"a": 2}')
    assert body_fingerprint(b"not json") != body_fingerprint(b"not json!")
    assert storage_key("k", "/v1/solve", None) != storage_key("k", "/v1/solve/batch", None)
    assert storage_key("k", "/v1/solve", "api-key-1") != storage_key("k", "/v1/solve", "api-key-2")


async def test_a_retry_gets_the_first_answer(app_client):
    _, c = app_client
    # Unseeded noisy PTRM: a recomputation would differ (and is not result-cached unless verified).
    body = solve_body(puzzle=variant(1), max_steps=3, halting="max_steps", trajectories=2, noise=0.5)
    first = await c.post("/v1/solve", json=body, headers=key("retry-1"))
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    again = await c.post("/v1/solve", json=body, headers=key("retry-1"))
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()  # the same request_id, answer and timings: the first response itself
    # The header names this HTTP exchange (its log lines); the replayed body keeps the first request's id.
    assert again.json()["request_id"] == first.json()["request_id"] != again.headers["x-request-id"]
    other = await c.post("/v1/solve", json=body, headers=key("retry-2"))  # a new key is a new request
    assert other.json()["request_id"] != first.json()["request_id"]
    plain = await c.post("/v1/solve", json=body)  # and no key, no replay
    assert plain.json()["request_id"] != first.json()["request_id"]


async def test_the_same_key_with_another_body_is_422(app_client):
    _, c = app_client
    assert (await c.post("/v1/solve", json=solve_body(max_steps=1), headers=key("reused"))).status_code == 200
    r = await c.post("/v1/solve", json=solve_body(max_steps=2), headers=key("reused"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "idempotency_key_reused"
    assert r.json()["error"]["location"] == "header Idempotency-Key"


async def test_errors_a_retry_would_get_again_are_kept_transient_ones_are_not(app_client):
    _, c = app_client
    bad = solve_body(puzzle="12x")
    assert (await c.post("/v1/solve", json=bad, headers=key("bad"))).status_code == 422
    r = await c.post("/v1/solve", json=bad, headers=key("bad"))
    assert r.status_code == 422 and r.headers["idempotent-replayed"] == "true"


async def test_a_retry_while_the_first_runs_is_409(app_client):
    _, c = app_client
    body = solve_body(model="copy", max_steps=4096, halting="max_steps", deadline_ms=1500, cache=False)
    first = asyncio.create_task(c.post("/v1/solve", json=body, headers=key("slow")))

    async def running():
        return (await c.get("/v1/models/copy")).json()["engine"]["running_rows"] == 1

    await wait_for(running)
    r = await c.post("/v1/solve", json=body, headers=key("slow"))
    assert r.status_code == 409 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "idempotency_key_in_use"
    done = await first
    assert done.status_code == 200
    # halted_by=deadline answers are not result-cached, but the idempotent replay still returns this one.
    r = await c.post("/v1/solve", json=body, headers=key("slow"))
    assert r.json() == done.json() and r.headers["idempotent-replayed"] == "true"


async def test_batch_replays_and_bad_keys(app_client):
    _, c = app_client
    body = {"items": [solve_body(max_steps=2, cache=False), solve_body(puzzle="12x")]}
    first = await c.post("/v1/solve/batch", json=body, headers=key("batch-1"))
    again = await c.post("/v1/solve/batch", json=body, headers=key("batch-1"))
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    # The same key on /v1/solve is another request (keys are per path).
    r = await c.post("/v1/solve", json=solve_body(max_steps=1), headers=key("batch-1"))
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    for bad in ("x" * 256, "tab\there"):
        r = await c.post("/v1/solve", json=solve_body(max_steps=1), headers=key(bad))
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_idempotency_key"


async def test_a_batch_with_an_item_a_retry_would_redo_is_not_kept(app_client):
    """Items over the queue's room get 429 inside the batch's 200: the batch is marked no-store and a retry with
    the same key runs again instead of replaying those 429s."""
    _, c = app_client
    body = {"items": [solve_body(puzzle=variant(i), model="copy", max_steps=2048, halting="max_steps",
                                 deadline_ms=300, cache=False) for i in range(24)]}  # copy: 4 rows + 16 queued
    first = await c.post("/v1/solve/batch", json=body, headers=key("batch-429"))
    statuses = {r["status"] for r in first.json()["results"]}
    assert first.status_code == 200 and 429 in statuses and first.headers["cache-control"] == "no-store"
    again = await c.post("/v1/solve/batch", json=body, headers=key("batch-429"))
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    whole = await c.post("/v1/solve/batch", json={"items": [solve_body(max_steps=1)]}, headers=key("batch-ok"))
    assert "cache-control" not in whole.headers


async def test_entries_expire_with_the_ttl(app_client):
    app, c = app_client
    body = solve_body(puzzle=variant(2), max_steps=1)
    await c.post("/v1/solve", json=body, headers=key("ttl"))
    cache = app.state.runtime.cache
    stored = storage_key("ttl", "/v1/solve", None)
    assert await cache.get(stored) is not None
    real_clock = cache._clock  # MemoryCache: move its clock to either side of the configured 60 s TTL
    now = real_clock()
    try:
        cache._clock = lambda: now + 55
        assert await cache.get(stored) is not None
        cache._clock = lambda: now + 65
        assert await cache.get(stored) is None
    finally:
        cache._clock = real_clock
