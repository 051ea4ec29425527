"""Keep the cyclic garbage collector's full passes short in the serving processes, and count every pass.

An API process holds ~140k tracked objects once FastAPI, pydantic and the routes are built, the engine core
~180k after torch and the model load (more with torch.compile's imports). Objects that outlive a request by a
few milliseconds get promoted to the oldest generation, so under load CPython runs a full pass about once a
second, and each scans every one of those startup objects to free nothing: measured here, 75-107 ms per pass
in an API process at ~750 answers/s, a stall of every request that process holds and the cause of most of
the latency tail. `freeze_startup_heap` moves what exists once the process is ready into the permanent
generation (gc.freeze, as long-running CPython servers do after start-up): later passes scan only what was
allocated since. Objects are still freed by reference counting as before; only cycles among frozen objects
would outlive their last reference, and startup objects live as long as the process.

It also raises the youngest generation's threshold from CPython's 700 to YOUNG_THRESHOLD. A pass starts when
tracked allocations exceed deallocations by the threshold; almost everything a request allocates is freed by
reference counting, so under load the 700 was reached mostly by the objects of requests in flight, which each
pass scanned and promoted (an API process ran ~140 young and ~12 middle passes a second, ~4% of its CPU, on
the 2-core VM). With 10,000 the same load ran no pass in 20 s; a pass, when one comes, scans at most that many
young objects (about a millisecond), and cyclic garbage waits for at most that many allocations.

Pauses are timed in a gc callback but recorded into the histogram later, by `flush_pauses` (the engine loop
calls it every iteration, an API process every second and before /metrics renders): a pass can start inside
prometheus_client's multiprocess lock (any allocation can trigger one), and observing from the callback took
that non-reentrant lock again and hung the process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from app import metrics

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 10_000  # net tracked allocations between passes of the youngest generation (CPython: 700)

_pending: list[list[float]] = [[], [], []]  # pause seconds by generation, not yet in the histogram
_role: str | None = None
_flushing = threading.Lock()  # never taken in the gc callback


def freeze_startup_heap(role: str) -> int:
    """Collect once, freeze every tracked object and raise the youngest generation's threshold (a serving
    process, once ready); returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
    frozen = gc.get_freeze_count()
    log.info("%s: %d startup objects frozen out of garbage collection passes", role, frozen)
    return frozen


def record_pauses(role: str) -> Callable[[str, dict[str, Any]], None]:
    """Time every collector pass of this process for recursolve_gc_pause_seconds{role, generation} (recorded by
    `flush_pauses`); returns the callback installed in gc.callbacks."""
    global _role
    _role = role
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        # No locks and no metrics here: this runs wherever an allocation started the pass.
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            _pending[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    return on_gc


def flush_pauses() -> None:
    """Move the timed passes into the histogram (from ordinary code, never from a gc callback). One flusher at a
    time: in a one-process server the engine thread and the event loop both call it."""
    if _role is None or not _flushing.acquire(blocking=False):
        return
    try:
        for generation, pauses in enumerate(_pending):
            if pauses:
                taken = pauses[:]  # a pass may append meanwhile: remove only what was taken
                del pauses[:len(taken)]
                child = metrics.GC_PAUSE.labels(role=_role, generation=str(generation))
                for seconds in taken:
                    child.observe(seconds)
    finally:
        _flushing.release()


async def flush_pauses_every(seconds: float) -> None:
    """An API process's flusher task (its event loop has no step loop to do it)."""
    while True:
        await asyncio.sleep(seconds)
        flush_pauses()
