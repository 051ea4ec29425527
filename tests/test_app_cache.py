"""In-process result cache (LRU + TTL), cache keys and the backend choice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from app.cache import MemoryCache, RedisCache, ResultCache, cache_key, make_cache
from app.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counter(name: str, backend: str) -> float:
    return REGISTRY.get_sample_value(name, {"backend": backend}) or 0.0


async def test_round_trip_and_protocol() -> None:
    cache = MemoryCache(4)
    assert isinstance(cache, ResultCache)
    assert await cache.get("a") is None
    await cache.set("a", b"\x00answer", 60)
    assert await cache.get("a") == b"\x00answer"
    await cache.set("a", b"newer", 60)  # overwrite
    assert await cache.get("a") == b"newer"
    await cache.close()
    assert len(cache) == 0


async def test_lru_evicts_least_recently_used_first() -> None:
    cache = MemoryCache(3)
    for k in "abc":
        await cache.set(k, k.encode(), 60)
    assert await cache.get("a") == b"a"  # a is now the most recently used: b is the oldest
    await cache.set("d", b"d", 60)
    assert len(cache) == 3
    assert await cache.get("b") is None
    assert [await cache.get(k) for k in "acd"] == [b"a", b"c", b"d"]
    await cache.set("c", b"c2", 60)  # a write refreshes recency too: order is now a, d, c
    await cache.set("e", b"e", 60)
    assert await cache.get("a") is None
    assert [await cache.get(k) for k in "dce"] == [b"d", b"c2", b"e"]


async def test_ttl_expiry() -> None:
    clock = FakeClock()
    cache = MemoryCache(10, clock=clock)
    await cache.set("short", b"1", 5)
    await cache.set("long", b"2", 50)
    clock.now += 4.9
    assert await cache.get("short") == b"1"
    clock.now += 0.2
    assert await cache.get("short") is None
    assert len(cache) == 1  # the expired entry was dropped, not only hidden
    assert await cache.get("long") == b"2"
    clock.now += 100
    assert await cache.get("long") is None
    await cache.set("never", b"3", 0)  # ttl <= 0: not stored
    assert await cache.get("never") is None


async def test_hits_and_misses_counted() -> None:
    clock = FakeClock()
    cache = MemoryCache(2, clock=clock)
    hits0 = counter("recursolve_cache_hits_total", "memory")
    misses0 = counter("recursolve_cache_misses_total", "memory")
    await cache.get("x")  # miss
    await cache.set("x", b"1", 10)
    await cache.get("x")  # hit
    await cache.get("x")  # hit
    clock.now += 11
    await cache.get("x")  # expired: miss
    assert counter("recursolve_cache_hits_total", "memory") - hits0 == 2
    assert counter("recursolve_cache_misses_total", "memory") - misses0 == 2


async def test_concurrent_use_stays_bounded() -> None:
    cache = MemoryCache(50)

    async def worker(i: int) -> None:
        for j in range(200):
            await cache.set(f"{i}:{j}", b"v", 60)
            await cache.get(f"{i}:{j - 1}")
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(i) for i in range(8)))
    assert len(cache) == 50


def test_rejects_empty_bound() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCache(0)


def test_cache_key_is_stable_and_order_free() -> None:
    opts = {"max_steps": 16, "halting": "q_head", "threshold": 0.0, "trajectories": 1}
    k1 = cache_key("abc123", "sudoku", "53..7....", opts)
    k2 = cache_key("abc123", "sudoku", "53..7....", dict(reversed(list(opts.items()))))
    assert k1 == k2
    assert k1.startswith("recursolve:result:sudoku:") and len(k1.rsplit(":", 1)[1]) == 64
    # Golden value: the key must not change between processes or releases (replicas share one Redis);
    # a deliberate change of the key material bumps KEY_SCHEMA and this value.
    assert cache_key("v", "maze", "p", {"max_steps": 16, "seed": None}) == (
        "recursolve:result:maze:fc491de314de58c1fbcc22002292eb053e1b7394d68a74f5595cee628f194629")


@pytest.mark.parametrize("change", [
    {"model_version": "abc124"},
    {"task": "maze"},
    {"canonical_puzzle": "53..7...1"},
    {"options": {"max_steps": 17}},
    {"options": {"max_steps": 16, "seed": 1}},
])
def test_cache_key_changes_with_each_part(change: dict) -> None:
    base = {"model_version": "abc123", "task": "sudoku", "canonical_puzzle": "53..7....", "options": {"max_steps": 16}}
    assert cache_key(**base) != cache_key(**(base | change))


def test_make_cache_picks_backend(tmp_path: Path) -> None:
    memory = make_cache(Settings(weights_dir=tmp_path, cache_max_entries=7))
    assert isinstance(memory, MemoryCache) and memory.backend == "memory" and memory.max_entries == 7
    redis = make_cache(Settings(weights_dir=tmp_path, redis_url="redis://127.0.0.1:1/0"))  # no connection yet
    assert isinstance(redis, RedisCache) and redis.backend == "redis"
    asyncio.run(redis.close())


def test_metric_names_exposed() -> None:
    from app import metrics

    body, content_type = metrics.render_metrics()
    assert content_type.startswith("text/plain")
    text = body.decode()
    for name in ("recursolve_cache_hits_total", "recursolve_cache_misses_total", "recursolve_cache_errors_total"):
        assert f'{name}{{backend="redis"}}' in text and f'{name}{{backend="memory"}}' in text
    metrics.STEP_DURATION.labels(model="m").observe(0.0007)
    metrics.REQUESTS.labels(model="m", task="sudoku", status="ok").inc()
    text = metrics.render_metrics()[0].decode()
    assert 'recursolve_step_duration_seconds_bucket{le="0.001",model="m"} 1.0' in text
    assert 'recursolve_requests_total{model="m",status="ok",task="sudoku"}' in text


def test_a_redis_url_is_logged_without_its_password() -> None:
    from app.cache import _safe_url

    assert _safe_url("redis://user:s3cret@cache:6379/0") == "redis://user:***@cache:6379/0"
    assert _safe_url("redis://cache:6379/0?password=s3cret&db=1") == "redis://cache:6379/0?password=***&db=1"
    assert "s3cret" not in _safe_url("rediss://:s3cret@cache:6380/0?Password=s3cret")
