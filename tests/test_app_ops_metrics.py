"""The two gauges the alert rules need beyond the engine's own: readiness and each model's queue capacity."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.settings import Settings
from app_engine_support import make_specs, running_app


def samples(text: str, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == name}


@pytest.mark.asyncio
async def test_ready_gauge_follows_readyz_and_capacity_is_max_queue_rows(tmp_path) -> None:
    settings = Settings(weights_dir=tmp_path, drain_grace_seconds=1, warmup=False)
    specs = make_specs(tmp_path, eager={"max_queue_rows": 24})
    async with running_app(tmp_path, settings=settings, specs=specs) as (app, client):
        assert (await client.get("/readyz")).status_code == 200
        text = (await client.get("/metrics")).text
        assert samples(text, "recursolve_ready") == {(): 1.0}
        capacity = samples(text, "recursolve_queue_capacity_rows")
        assert capacity[(("model", "eager"),)] == 24.0 and capacity[(("model", "random"),)] == 16.0

        app.state.runtime.begin_drain()  # what SIGTERM does: /readyz turns 503, and so must the gauge
        assert (await client.get("/readyz")).status_code == 503
        assert samples((await client.get("/metrics")).text, "recursolve_ready") == {(): 0.0}


@pytest.mark.asyncio
async def test_an_api_process_publishes_its_readiness_without_being_scraped(tmp_path) -> None:
    """Across API processes recursolve_ready is the largest live value, so each process must set its own as it
    changes, not only when a scrape happens to reach it (`recursolve serve` runs this every second)."""
    import asyncio

    from app import metrics
    from app_engine_support import wait_for

    settings = Settings(weights_dir=tmp_path, drain_grace_seconds=1, warmup=False)
    async with running_app(tmp_path, settings=settings, specs=make_specs(tmp_path)) as (app, _):
        runtime = app.state.runtime
        metrics.READY.set(0.0)
        publisher = asyncio.create_task(runtime._publish_accepting_every(0.01))
        try:
            await wait_for(lambda: _is(metrics.READY._value.get(), 1.0))
            runtime.begin_drain()
            await wait_for(lambda: _is(metrics.READY._value.get(), 0.0))
        finally:
            publisher.cancel()


async def _is(value: float, want: float) -> bool:
    return value == want
