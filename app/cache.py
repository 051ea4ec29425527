"""Result cache: answers keyed on model version + task + canonical puzzle + the options that change the answer.

Two backends behind one protocol: `MemoryCache` (in-process LRU with TTL) and `RedisCache` (shared between
replicas). Both fail open: a cache problem never fails a solve nor slows it by more than one operation's
timeout (0.25 s by default); Redis errors are counted in recursolve_cache_errors_total{backend="redis"} and
logged once per outage. What may be cached (answers only: never deadline-cut or cancelled runs, nor unseeded
noisy results that did not verify) is the API's decision (`SolveService._cache_put`); values are opaque bytes
here (msgpack-encoded engine outputs).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app import metrics

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "recursolve:result:"
KEY_SCHEMA = 1  # bump when the key material changes, so old entries are never read back under new meaning


@runtime_checkable
class ResultCache(Protocol):
    backend: str  # "memory" | "redis" (the label of the cache metrics)

    async def get(self, key: str) -> bytes | None:
        """The stored value or None; never raises (errors are counted and logged once, then None)."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        """Store `value` for `ttl_seconds` (<= 0: not stored); never raises."""
        ...

    async def close(self) -> None: ...


def cache_key(model_version: str, task: str, canonical_puzzle: str, options: Mapping[str, Any]) -> str:
    """A stable key: sha256 over canonical JSON (sorted keys) of the model version, task, puzzle and options.

    `options` must hold exactly the options that can change the answer, which the engine supplies
    (SolveOptions.answer_options()): max_steps, the halting rule and its threshold / convergence steps,
    and for PTRM the trajectory count K, noise scale, noise target (z_L / z_H / both), selection policy
    and seed. Options that only decide whether or how long to wait (deadline_ms, the cache switch,
    streaming) must stay out, or equal requests would miss each other's entries.
    Values must be JSON types (str, int, float, bool, None, lists, dicts); the same value gives the same
    key in every process and on every replica (no Python hash randomisation involved).
    """
    material = {"v": KEY_SCHEMA, "model_version": model_version, "task": task, "puzzle": canonical_puzzle,
                "options": dict(options)}
    digest = hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{KEY_PREFIX}{task}:{digest}"


class MemoryCache:
    """In-process LRU with a per-entry TTL, bounded to `max_entries` and to `max_bytes` of keys and values
    (the least recently used go first), so large answers (ARC grids) cannot grow the process past its budget.

    Methods never await while touching the map, so they are atomic on the event loop; a lock makes
    them safe from worker threads too.
    """

    backend = "memory"
    ENTRY_OVERHEAD = 200  # bytes an entry costs beyond its key and value (dict slot, tuple, float, bytes headers)

    def __init__(self, max_entries: int = 10_000, *, max_bytes: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.nbytes = 0  # what the entries held count against max_bytes
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = metrics.CACHE_HITS.labels(backend=self.backend)
        self._misses = metrics.CACHE_MISSES.labels(backend=self.backend)

    def __len__(self) -> int:
        return len(self._data)

    def _cost(self, key: str, value: bytes) -> int:
        return len(key) + len(value) + self.ENTRY_OVERHEAD

    def _drop(self, key: str) -> None:
        _, value = self._data.pop(key)
        self.nbytes -= self._cost(key, value)

    async def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._data.get(key)
            if item is not None and item[0] <= self._clock():
                self._drop(key)
                item = None
            if item is None:
                self._misses.inc()
                return None
            self._data.move_to_end(key)
            self._hits.inc()
            return item[1]

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            return
        cost = self._cost(key, value)
        if self.max_bytes is not None and cost > self.max_bytes:
            return  # one entry bigger than the whole budget would evict everything and still not fit
        with self._lock:
            if key in self._data:
                self._drop(key)
            self._data[key] = (self._clock() + ttl_seconds, value)
            self.nbytes += cost
            while len(self._data) > self.max_entries or (self.max_bytes is not None and self.nbytes > self.max_bytes):
                self._drop(next(iter(self._data)))

    async def close(self) -> None:
        with self._lock:
            self._data.clear()
            self.nbytes = 0


class RedisCache:
    """Redis-backed cache that fails open.

    - ~100 ms socket connect and read timeouts and no retries, so a dead Redis costs a request at most
      one timeout (an overall `op_timeout` also bounds DNS lookups, which socket timeouts do not cover);
    - a circuit breaker: after a failure Redis is skipped for `breaker_seconds` (lookups count as misses),
      then one request probes it again (the pool reconnects); the other requests keep skipping until
      that probe succeeds;
    - RedisError, OSError and TimeoutError (and anything else unexpected) are caught, counted in
      recursolve_cache_errors_total{backend="redis"}, logged once when the outage starts and once when
      Redis is back. Nothing is ever raised to the caller.
    """

    backend = "redis"

    def __init__(self, url: str, *, socket_timeout: float = 0.1, op_timeout: float | None = None,
                 breaker_seconds: float = 5.0, max_connections: int = 32,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.breaker_seconds = breaker_seconds
        self.op_timeout = op_timeout if op_timeout is not None else 2.5 * socket_timeout
        self._clock = clock
        # redis-py's default pool opens a connection per concurrent command up to 100, then raises
        # MaxConnectionsError, which the breaker took for an outage; and 100 is past the FD_RESERVE (64) that the
        # connection cap leaves free. This pool holds at most max_connections; a command waits for one (within
        # op_timeout, like any slow Redis).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=None,  # the wait is bounded by op_timeout around each command
            socket_connect_timeout=socket_timeout,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),  # redis-py retries 3x with backoff by default: seconds per request
            health_check_interval=0,
            decode_responses=False,
        )
        self._client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        self._open_until = 0.0  # breaker: skip Redis until this clock time
        self._down = False  # in an outage (logged once); cleared by the first success
        self._probing = False  # one request is testing whether Redis is back
        self._hits = metrics.CACHE_HITS.labels(backend=self.backend)
        self._misses = metrics.CACHE_MISSES.labels(backend=self.backend)
        self._errors = metrics.CACHE_ERRORS.labels(backend=self.backend)

    @property
    def available(self) -> bool:
        """False while the breaker is open (for status pages; Redis must never gate readiness)."""
        return not self._down

    def _admit(self) -> bool | None:
        """None: skip Redis (breaker open); False: a normal call; True: this call probes a Redis that was down."""
        if not self._down:
            return False
        if self._clock() < self._open_until or self._probing:
            return None
        self._probing = True
        return True

    def _succeeded(self) -> None:
        if self._down:
            self._down = False
            log.info("redis cache at %s is reachable again: caching resumed", _safe_url(self.url))

    def _failed(self, op: str, err: BaseException) -> None:
        self._errors.inc()
        self._open_until = self._clock() + self.breaker_seconds
        if not self._down:
            self._down = True
            log.warning("redis cache at %s failed on %s (%s: %s): serving without it, retrying every %.0f s",
                        _safe_url(self.url), op, type(err).__name__, err or "timed out", self.breaker_seconds,
                        exc_info=not isinstance(err, RedisError | OSError | TimeoutError))

    async def get(self, key: str) -> bytes | None:
        probe = self._admit()
        if probe is None:
            self._misses.inc()
            return None
        try:
            async with asyncio.timeout(self.op_timeout):
                value = await self._client.get(key)
        except Exception as e:  # RedisError, OSError, TimeoutError, or a bug: never fail the solve
            self._failed("GET", e)
            self._misses.inc()
            return None
        finally:
            if probe:
                self._probing = False
        self._succeeded()
        if value is None:
            self._misses.inc()
            return None
        self._hits.inc()
        return bytes(value)

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            return
        probe = self._admit()
        if probe is None:
            return
        try:
            async with asyncio.timeout(self.op_timeout):
                await self._client.set(key, value, ex=int(ttl_seconds))
        except Exception as e:
            self._failed("SET", e)
            return
        finally:
            if probe:
                self._probing = False
        self._succeeded()

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception as e:  # closing a pool whose server is gone must not break shutdown
            log.debug("closing the redis client: %s", e)


def _safe_url(url: str) -> str:
    """The URL without a password, for logs: none in its user info, and none in its query (redis-py reads
    ?password= too)."""
    url = re.sub(r"([?&]password=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user + ':***' if user else '***'}@{host}"
    return url


def make_cache(settings: Settings) -> ResultCache:
    """RedisCache when settings.redis_url is set, else a MemoryCache of at most settings.cache_max_entries entries
    and settings.cache_max_bytes bytes.

    Building the Redis client does not connect, so a Redis that is down at start-up delays nothing.
    """
    if settings.redis_url:
        log.info("result cache: redis at %s", _safe_url(settings.redis_url))
        return RedisCache(settings.redis_url, max_connections=settings.redis_max_connections)
    log.info("result cache: in-process LRU (%d entries, %d bytes)", settings.cache_max_entries,
             settings.cache_max_bytes)
    return MemoryCache(settings.cache_max_entries, max_bytes=settings.cache_max_bytes)
