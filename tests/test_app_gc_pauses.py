"""The serving processes freeze their startup heap out of GC passes and time every pass (app/gc_pauses.py)."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from app import gc_pauses
from app.gc_pauses import YOUNG_THRESHOLD, flush_pauses, freeze_startup_heap, record_pauses
from app_engine_support import save_random, served, solve_body


def test_freezing_takes_the_startup_heap_out_of_full_passes() -> None:
    heap = [[i] for i in range(200_000)]  # long-lived containers, as a process's imports and app leave behind
    thresholds = gc.get_threshold()
    try:
        t0 = time.perf_counter()
        gc.collect()
        unfrozen_s = time.perf_counter() - t0
        frozen = freeze_startup_heap("test")
        assert frozen >= len(heap)
        assert not any(o is heap for o in gc.get_objects())  # no pass looks at them any more
        t0 = time.perf_counter()
        gc.collect()
        assert time.perf_counter() - t0 < unfrozen_s / 2
        del heap[:100]  # reference counting still frees frozen objects
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_every_pass_is_timed_by_generation_and_recorded_on_flush() -> None:
    def count(generation: str) -> float:
        return REGISTRY.get_sample_value("recursolve_gc_pause_seconds_count",
                                         {"role": "test", "generation": generation}) or 0.0

    callback = record_pauses("test")
    try:
        before = count("2")
        gc.collect()
        gc.collect(1)
        assert count("2") == before  # timed, but not recorded from inside the pass
        flush_pauses()
        assert count("2") == before + 1 and count("1") >= 1
    finally:
        gc.callbacks.remove(callback)
        gc_pauses._role = None


def test_a_pass_that_starts_inside_the_multiprocess_metrics_lock_does_not_hang(tmp_path: Path) -> None:
    # Any allocation can start a pass, including those under prometheus_client's one non-reentrant lock in
    # multiprocess mode (a new label set's mmap key is built under it): observing from the gc callback took
    # that lock again and hung the engine core under load. A collector pass at every allocation makes it
    # happen at once; the script must finish.
    script = """
import gc
from app import gc_pauses, metrics
gc_pauses.record_pauses("engine")
gc.set_threshold(1)
for i in range(300):
    metrics.HALTS.labels(model=f"m{i}", reason="q_head").inc()
gc.set_threshold(700)
gc_pauses.flush_pauses()
print("done")
"""
    root = Path(__file__).resolve().parent.parent
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
                        "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-2000:]


@pytest.mark.slow
def test_the_engine_core_and_api_processes_freeze_once_ready_and_report_their_passes(tmp_path: Path) -> None:
    save_random(tmp_path / "random")
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - name: random\n    path: {tmp_path / 'random'}\n    batch_rows: 4\n")
    log = tmp_path / "server.log"
    with served(models, env={"RECURSOLVE_LOG_LEVEL": "info"}, log_path=log) as (base, _):
        r = httpx.post(f"{base}/v1/solve", json=solve_body(max_steps=2, halting="max_steps"), timeout=30)
        assert r.status_code == 200
        deadline = time.monotonic() + 10
        while not all(f"{who}: " in log.read_text() for who in ("engine core", "API process")):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        text = httpx.get(f"{base}/metrics").text
    for who in ("engine core", "API process"):
        frozen = re.search(rf"{who}: (\d+) startup objects frozen", log.read_text())
        assert frozen is not None and int(frozen.group(1)) > 10_000, who
    for role in ("engine", "api"):  # both processes time their passes (the startup's full ones at least)
        assert re.search(rf'recursolve_gc_pause_seconds_count{{generation="2",role="{role}"}} [1-9]', text), role
