"""Where the engine core's loop spends its time: seconds summed by phase.

An operator (and `bench/serve_bench.py`) reads from it whether the engine core is bound by its host Python
(schedule, update, messages), by the device (collect: waiting for a step's results), or has nothing to do
(idle). On a GPU the step is overlapped, so `collect` is only the device time that the host's work did not
hide; on a CPU the network step itself is `launch`.

The loop takes one `time.perf_counter()` per phase boundary and adds floats; the Prometheus counter
(recursolve_engine_loop_seconds_total) is moved forward now and then (`flush`), not on every step.
"""

from __future__ import annotations

import time

from app import metrics

PHASES = (
    "idle",  # blocked on the socket with no row active and no step in flight
    "messages",  # receiving the API processes' messages and applying them (submit, abort, cut, ...)
    "schedule",  # the scheduler's queue policy and admission
    "load",  # loading admitted requests into their rows (embedding, copies to the device)
    "noise",  # PTRM noise for the noisy requests' rows
    "launch",  # starting the step (on a CPU: the whole network step)
    "collect",  # waiting for the step's results and copying them out (on CUDA: device time not hidden)
    "update",  # the halting rules, freeing rows, building the outputs
    "send",  # sorting the outputs by API process, encoding and sending them
)
FLUSH_EVERY_S = 0.1  # a scrape lags the loop by at most this (9 counter increments each time)


class PhaseClock:
    """Seconds by phase since the engine started. Not thread-safe: the engine loop owns it."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._flushed = dict.fromkeys(PHASES, 0.0)
        self._flushed_at = time.perf_counter()

    def lap(self, phase: str, since: float) -> float:
        """Charge the time since `since` (a perf_counter reading) to `phase`; returns now, the next lap's start."""
        now = time.perf_counter()
        self.seconds[phase] += now - since
        return now

    def flush(self) -> None:
        """Move the counter forward by what was timed since the last flush (every FLUSH_EVERY_S at most)."""
        now = time.perf_counter()
        if now - self._flushed_at < FLUSH_EVERY_S:
            return
        self._flushed_at = now
        for phase, total in self.seconds.items():
            if total > self._flushed[phase]:
                metrics.ENGINE_LOOP_SECONDS.labels(phase=phase).inc(total - self._flushed[phase])
                self._flushed[phase] = total
