"""Memory bounds (issue 11 item 3): the engine queue in bytes, the in-process cache in bytes, and the bytes of
request bodies an API process holds at once."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.api.limits import BodyLimitMiddleware
from app.cache import MemoryCache
from app.engine.protocol import QUEUE_FULL, EngineRequest, SolveOptions, tokens_to_bytes
from app.engine.scheduler import Scheduler
from app.settings import ModelSpec, Settings, with_server_defaults
from app_engine_support import engine_stats, make_specs, running_app, solve_body

L = 4  # tokens per request: 16 bytes of int32 inputs
ROW_BYTES = 4 * L


def req(rid: str) -> EngineRequest:
    return EngineRequest(id=rid, model="m", inputs=tokens_to_bytes(np.zeros(L)), puzzle_identifier=0,
                         options=SolveOptions(max_steps=1), arrival=100.0)


# -- the engine queue in bytes -------------------------------------------------------------------------


def test_queue_refuses_by_bytes_when_rows_would_still_fit():
    s = Scheduler(num_rows=1, max_queue_rows=100, seq_len=L, max_queue_bytes=2 * ROW_BYTES)
    # 2 requests of queue room plus the one free row: three are taken before `schedule` runs.
    assert [s.add(req(r)) for r in "abc"] == [None, None, None]
    assert s.queued_bytes == 3 * ROW_BYTES
    rejected = s.add(req("d"))
    assert rejected is not None and rejected.code == QUEUE_FULL
    assert "bytes" in rejected.message and "max_queue_bytes" in rejected.message and rejected.retry_after_s >= 1
    assert s.queued_rows == 3  # the row limit (100) was nowhere near
    assert [a.state.id for a in s.schedule(100.0).admitted] == ["a"]
    assert s.queued_bytes == 2 * ROW_BYTES  # `a` left the queue; no free row now, so the queue is full
    assert s.add(req("e")) is not None


def test_queue_bytes_are_given_back_when_queued_requests_leave():
    s = Scheduler(num_rows=1, max_queue_rows=100, seq_len=L, max_queue_bytes=2 * ROW_BYTES)
    assert [s.add(req(r)) for r in "abc"] == [None] * 3
    s.schedule(100.0)
    s.abort(["b"])  # cancelled while queued: dropped at the next schedule
    s.schedule(100.0)
    assert s.queued_bytes == ROW_BYTES
    s.cut(["c"], 100.0)  # a drain's grace ran out: resolved unstarted
    assert s.queued_bytes == 0 and s.queued_requests == 0
    s.fail_all("boom")
    assert s.queued_bytes == 0


def test_an_empty_queue_takes_one_request_over_the_byte_limit():
    s = Scheduler(num_rows=1, max_queue_rows=100, seq_len=L, max_queue_bytes=8)
    assert s.add(req("a")) is None
    s.schedule(100.0)  # `a` holds the only row
    assert s.add(req("big")) is None  # 16 bytes > 8, but alone it can never fit: never refused
    assert s.add(req("next")) is not None


def test_without_a_byte_limit_only_rows_count():
    s = Scheduler(num_rows=1, max_queue_rows=3, seq_len=L)
    assert [s.add(req(r)) for r in "abcd"] == [None] * 4
    assert s.add(req("e")) is not None  # rows: 3 queued + 1 free row


def test_server_default_fills_specs_that_leave_it_out(tmp_path):
    settings = Settings(weights_dir=tmp_path, max_queue_bytes=12345)
    own = ModelSpec(name="own", task="sudoku", path=tmp_path, max_queue_bytes=999)
    left = ModelSpec(name="left", task="sudoku", path=tmp_path)
    assert [s.max_queue_bytes for s in with_server_defaults([own, left], settings)] == [999, 12345]


async def test_engine_reports_its_byte_limit(tmp_path):
    settings = Settings(weights_dir=tmp_path, warmup=False, max_queue_bytes=5000, drain_grace_seconds=1)
    async with running_app(tmp_path, settings, make_specs(tmp_path)[:1]) as (_, client):
        stats = await engine_stats(client, "random")
        assert stats["max_queue_bytes"] == 5000 and stats["queued_bytes"] == 0
        r = await client.post("/v1/solve", json=solve_body(max_steps=1, halting="max_steps"))
        assert r.status_code == 200, r.text


# -- the cache in bytes --------------------------------------------------------------------------------


def cost(key: str, value: bytes) -> int:
    return len(key) + len(value) + MemoryCache.ENTRY_OVERHEAD


async def test_cache_evicts_least_recently_used_by_bytes():
    value = b"x" * 100
    cache = MemoryCache(1000, max_bytes=3 * cost("k0", value))
    for i in range(3):
        await cache.set(f"k{i}", value, 60)
    assert len(cache) == 3 and cache.nbytes == 3 * cost("k0", value)
    assert await cache.get("k0") == value  # k0 is now the most recent: k1 goes first
    await cache.set("k3", value, 60)
    assert await cache.get("k1") is None
    assert [await cache.get(k) is not None for k in ("k0", "k2", "k3")] == [True, True, True]
    await cache.set("k4", b"y" * 250, 60)  # worth 2.5 small entries: two more must go
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    assert await cache.get("k4") is not None and await cache.get("k3") is not None


async def test_cache_bytes_follow_overwrites_and_refuses_an_entry_bigger_than_the_budget():
    cache = MemoryCache(10, max_bytes=1000)
    await cache.set("a", b"1" * 300, 60)
    await cache.set("a", b"2" * 10, 60)  # overwrite: the old value's bytes are given back
    assert cache.nbytes == cost("a", b"2" * 10)
    await cache.set("huge", b"z" * 5000, 60)
    assert await cache.get("huge") is None and await cache.get("a") == b"2" * 10  # nothing evicted for it
    await cache.close()
    assert cache.nbytes == 0


def test_cache_byte_budget_must_be_positive():
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryCache(10, max_bytes=0)


# -- bytes of request bodies held by an API process ----------------------------------------------------


def body_app(release: asyncio.Event, max_inflight_bytes: int) -> BodyLimitMiddleware:
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        await release.wait()
        return JSONResponse({"got": len(body)})

    return BodyLimitMiddleware(Starlette(routes=[Route("/", echo, methods=["POST"])]), max_bytes=10_000,
                               max_inflight_bytes=max_inflight_bytes, retry_after_s=2)


async def test_bodies_over_the_process_budget_get_429_until_memory_is_given_back():
    release = asyncio.Event()
    app = body_app(release, max_inflight_bytes=5000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        first = asyncio.ensure_future(client.post("/", content=b"a" * 3000))
        while app.inflight_bytes == 0:
            await asyncio.sleep(0.001)
        assert app.inflight_bytes == 3000
        small = asyncio.ensure_future(client.post("/", content=b"b" * 1500))  # fits beside it
        while app.inflight_bytes < 4500:
            await asyncio.sleep(0.001)
        refused = await client.post("/", content=b"c" * 3000)  # 7500 > 5000
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "2"
        err = refused.json()["error"]
        assert err["code"] == "too_many_bytes_in_flight" and "RECURSOLVE_MAX_INFLIGHT_BYTES" in err["message"]
        release.set()
        assert [(await f).json()["got"] for f in (first, small)] == [3000, 1500]
        assert app.inflight_bytes == 0
        again = await client.post("/", content=b"c" * 3000)
        assert again.status_code == 200


async def test_one_body_alone_is_never_over_the_process_budget():
    release = asyncio.Event()
    release.set()
    app = body_app(release, max_inflight_bytes=2000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.post("/", content=b"a" * 8000)  # over the budget, under max_bytes (10,000)
        assert r.status_code == 200 and r.json() == {"got": 8000}
        assert (await client.post("/", content=b"a" * 10_001)).status_code == 413  # the size limit still holds
    assert app.inflight_bytes == 0
