"""Prometheus metrics of the server (names fixed by the Grafana dashboard in deploy/grafana and the alert rules).

Durations are in seconds, counters end in `_total`. Histogram buckets are explicit because the defaults stop
at 10 s and are too coarse for millisecond ACT steps.

Under `recursolve serve` the engine-core process and every API process record into prometheus_client's
multiprocess files (PROMETHEUS_MULTIPROC_DIR, set by the supervisor), and `/metrics` in any API process
shows the sum over all of them; the engine records step, halt and queue metrics the moment they happen.
Without that variable (tests, one process) the default registry is used, with the process collectors.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# `*_created` samples (one per label set) double the exposition and no dashboard query uses them.
disable_created_metrics()

CACHE_BACKENDS = ("redis", "memory")

# One ACT step of a batch: ~0.5 ms for a tiny model on a GPU up to seconds for a big batch on a busy CPU.
STEP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
# Queue wait: zero when there is room in the batch, up to the longest deadline when overloaded.
QUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Whole request (and compute alone): a cache hit takes ~1 ms, a K=100 PTRM solve on CPU tens of seconds.
REQUEST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# ACT steps per request: official TRM/HRM stop at 16, PTRM Sudoku runs D=64; larger lands in +Inf.
ACT_STEP_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# Rows in one step: batch_rows defaults to 32; 512 is the largest queue a model accepts by default.
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# One pass of the cyclic garbage collector: ~0.1 ms for the youngest generation, up to ~100 ms for a full pass
# over an unfrozen startup heap (app/gc_pauses.py).
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
# PTRM trajectories per request (K): 1 for plain TRM/HRM; the papers use 25 and 100.
TRAJECTORY_BUCKETS = (1, 2, 4, 8, 16, 25, 32, 64, 100, 128)

REQUESTS = Counter("recursolve_requests_total", "Solve requests by final status.", ["model", "task", "status"])
REQUEST_DURATION = Histogram("recursolve_request_duration_seconds",
                             "Time from arrival to answer of successful solve requests (cache hits included).",
                             ["model", "task"], buckets=REQUEST_BUCKETS)
QUEUE_WAIT = Histogram("recursolve_queue_wait_seconds", "Time a request waited before its first ACT step.",
                       ["model"], buckets=QUEUE_BUCKETS)
COMPUTE = Histogram("recursolve_compute_seconds", "Time from a request's first ACT step to its answer.",
                    ["model"], buckets=REQUEST_BUCKETS)
REQUEST_ACT_STEPS = Histogram("recursolve_request_act_steps", "ACT steps a request ran before it halted.",
                              ["model"], buckets=ACT_STEP_BUCKETS)
HALTS = Counter("recursolve_halts_total", "Trajectories that stopped, by reason.", ["model", "reason"])
STEP_ACTIVE_ROWS = Histogram("recursolve_step_active_rows", "Rows (trajectories) computed in one ACT step.",
                             ["model"], buckets=ROW_BUCKETS)
STEP_DURATION = Histogram("recursolve_step_duration_seconds",
                          "Wall time of one batched ACT step, from its launch until its results are on the host "
                          "(overlapped steps: the engine's work on the previous step included).",
                          ["model"], buckets=STEP_BUCKETS)
ENGINE_LOOP_SECONDS = Counter("recursolve_engine_loop_seconds",
                              "Seconds the engine core's loop spent, by phase (idle, messages, schedule, load, noise, "
                              "launch, collect, update, send; app/engine/phases.py): collect is waiting for the "
                              "device, idle is waiting for work, the rest is the engine's host Python.", ["phase"])
# Written by the engine core process only: "livesum" shows its value while it lives, and none once it died.
QUEUE_DEPTH = Gauge("recursolve_queue_depth", "Rows waiting for a batch slot.", ["model"],
                    multiprocess_mode="livesum")
RUNNING_ROWS = Gauge("recursolve_running_rows", "Rows currently in the running batch.", ["model"],
                     multiprocess_mode="livesum")
# For alerts: queue saturation is depth / capacity, and "not ready" must be visible to Prometheus.
QUEUE_CAPACITY = Gauge("recursolve_queue_capacity_rows", "Rows the waiting queue holds before it answers 429 "
                       "(the model's max_queue_rows).", ["model"], multiprocess_mode="livesum")
# Each API process sets its own value every second and when scraped (Runtime.accepting); across processes the
# largest (any process can serve).
READY = Gauge("recursolve_ready", "1 while this process would answer /readyz with 200 (models loaded and "
              "warmed, not draining), else 0.", multiprocess_mode="livemax")
CACHE_HITS = Counter("recursolve_cache_hits_total", "Result cache lookups that found an answer.", ["backend"])
CACHE_MISSES = Counter("recursolve_cache_misses_total",
                       "Result cache lookups that found nothing (or skipped an unavailable backend).", ["backend"])
CACHE_ERRORS = Counter("recursolve_cache_errors_total", "Result cache operations that failed.", ["backend"])
ANSWERS = Counter("recursolve_answers_total", "Answers returned, by whether the verifier accepted them.",
                  ["model", "verified"])
REQUEST_TRAJECTORIES = Histogram("recursolve_request_trajectories", "Trajectories (PTRM K) per request.",
                                 ["model"], buckets=TRAJECTORY_BUCKETS)
GC_PAUSE = Histogram("recursolve_gc_pause_seconds", "Garbage collector passes of the serving processes "
                     "(role: engine or api), by generation (2: a full pass); each stalls its whole process.",
                     ["role", "generation"], buckets=GC_BUCKETS)

# Cache series exist from the start, so a dashboard shows 0 rather than "no data" before the first lookup.
for _backend in CACHE_BACKENDS:
    for _metric in (CACHE_HITS, CACHE_MISSES, CACHE_ERRORS):
        _metric.labels(backend=_backend)


def render_metrics() -> tuple[bytes, str]:
    """Every process's metrics (multiprocess mode) or this process's registry, in the Prometheus text format."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
