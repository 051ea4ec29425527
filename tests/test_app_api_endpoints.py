"""The HTTP surface: SSE stream, batch, models, health, metrics, OpenAPI, and errors that say what to fix."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import orjson
import pytest
import pytest_asyncio

from app.main import create_app
from app.settings import ModelSpec, Settings
from app_engine_support import PUZZLE, SOLUTION, make_specs, running_app, solve_body, variant
from models import default_dtype

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    settings = Settings(weights_dir=root, max_batch_items=4, max_request_bytes=20_000, drain_grace_seconds=2)
    async with running_app(root, settings=settings, specs=make_specs(root)) as (_, c):
        yield c


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


async def test_sse_stream_sends_every_step_then_the_result(client):
    r = await client.post("/v1/solve/stream", json=solve_body(model="random", max_steps=5, halting="max_steps",
                                                              cache=False))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    steps = [data for kind, data in events if kind == "step"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]
    assert all(len(s["answer"]) == 81 and 0 < s["confidence"] < 1 for s in steps)
    kind, result = events[-1]
    assert kind == "result" and result["steps"] == 5 and result["halted_by"] == "max_steps"
    assert result["answer"] == steps[-1]["answer"]


async def test_sse_errors_before_the_stream_are_plain_json(client):
    r = await client.post("/v1/solve/stream", json=solve_body(puzzle="12k"))  # ('x' is a blank)
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_character"
    assert len(r.json()["error"]["accepted_forms"]) >= 5


async def test_batch_items_each_get_their_own_status(client):
    items = [
        solve_body(model="eager"),
        solve_body(puzzle="5" * 81, model="eager"),  # contradictory givens
        {"task": "maze", "puzzle": "#####\n#S G#\n#####"},  # no maze model here
        solve_body(model="eager", max_step=3),  # misspelt option
    ]
    r = await client.post("/v1/solve/batch", json={"items": items, "options": {"max_steps": 2, "halting": "q_head"}})
    assert r.status_code == 200
    body = r.json()
    assert [x["status"] for x in body["results"]] == [200, 422, 404, 422]
    assert (body["ok"], body["failed"]) == (1, 3)
    assert body["results"][0]["result"]["steps"] == 1  # eager halts at once, within the shared max_steps
    assert body["results"][1]["error"]["code"] == "contradictory_givens"
    assert body["results"][2]["error"]["code"] == "no_model_for_task"
    assert "max_step" in body["results"][3]["error"]["message"]
    assert body["results"][3]["error"]["location"] == "items[3].options.max_step"
    # Each item's error is the one it would get on its own (invalid_option, not invalid_request), with its own id.
    alone = (await client.post("/v1/solve", json=solve_body(model="eager", max_step=3))).json()["error"]
    assert body["results"][3]["error"]["code"] == alone["code"] == "invalid_option"
    assert body["results"][3]["error"]["request_id"] == r.headers["x-request-id"] + "-3"


async def test_batch_over_the_item_limit_is_413(client):
    r = await client.post("/v1/solve/batch", json={"items": [solve_body()] * 5})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_items"


async def test_models_endpoints(client):
    r = await client.get("/v1/models")
    body = r.json()
    assert {m["name"] for m in body["models"]} == {"random", "eager", "copy"}
    assert body["defaults"] == {"sudoku": "random"}
    m = (await client.get("/v1/models/copy")).json()
    for field in ("task", "architecture", "parameters", "dtype", "device", "backend", "version", "accuracy"):
        assert field in m
    # No dtype configured: the measured default for this CPU (models.default_dtype).
    assert (m["task"], m["architecture"], m["backend"], m["dtype"]) == ("sudoku", "trm", "torch", default_dtype("cpu"))
    assert m["engine"]["batch_rows"] == 4
    r = await client.get("/v1/models/nope")
    assert r.status_code == 404 and "copy" in r.json()["error"]["message"]


async def test_the_brief_models_view_is_what_a_model_is_picked_by(tmp_path):
    """?view=brief (and the list_models tool) keeps name, task, default, architecture, size, version and the
    accuracy figures, and drops the card, config and engine state: ~14 KB a shipped model, ~4k tokens to an LLM."""
    import shutil

    from app_engine_support import save_copy

    folder = save_copy(tmp_path / "copy")
    shutil.copy(REPO / "weights" / "trm-mlp-sudoku" / "card.json", folder / "card.json")
    spec = ModelSpec(name="copy", task="sudoku", path=folder, batch_rows=2)
    async with running_app(tmp_path, specs=[spec]) as (_, c):
        full = (await c.get("/v1/models")).json()
        r = await c.get("/v1/models", params={"view": "brief"})
        bad = await c.get("/v1/models", params={"view": "short"})
        tools = (await c.get("/v1/tools")).json()
    brief = r.json()
    assert (brief["defaults"], brief["ready"]) == (full["defaults"], full["ready"]) == ({"sudoku": "copy"}, True)
    (b,), (f,) = brief["models"], full["models"]
    assert list(b) == ["name", "task", "default_for_task", "architecture", "parameters", "version", "accuracy",
                       "public_accuracy"]
    assert {k: b[k] for k in list(b)[:6]} == {k: f[k] for k in list(b)[:6]}
    figures = {tier: {k: v for k, v in row.items() if k == "n" or k.startswith("exact_")}
               for tier, row in f["accuracy"].items()}
    assert b["accuracy"] == figures and b["accuracy"]["medium"]["exact_q_halt"] > 0.5
    assert "calibration" in str(f["public_accuracy"]) and "calibration" not in str(b["public_accuracy"])
    assert b["public_accuracy"]["top95"]["n"] == f["public_accuracy"]["top95"]["n"]
    assert len(r.content) < 1500 < 10000 < len(orjson.dumps(full))
    assert bad.status_code == 422 and bad.json()["error"]["location"] == "query.view"
    assert {"tool": "list_models", "arguments": {}, "rest": {"method": "GET", "path": "/v1/models?view=brief"}} \
        in tools["examples"]


async def test_health_and_readiness(client):
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/v2/models/copy/ready"):
        r = await client.get(path)
        assert r.status_code == 200, path
    assert (await client.get("/v2/models/nope/ready")).status_code == 404


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_metrics_move_after_traffic(client):
    before = (await client.get("/metrics")).text
    r = await client.post("/v1/solve", json=solve_body(puzzle=variant(5), model="random", max_steps=3, cache=False))
    assert r.status_code == 200
    await client.post("/v1/solve", json=solve_body(puzzle="bad"))
    assert "text/plain" in (await client.get("/metrics")).headers["content-type"]
    checks = [
        ("recursolve_requests_total", {"model": "random", "task": "sudoku", "status": "ok"}, 1),
        ("recursolve_requests_total", {"model": "random", "task": "sudoku", "status": "invalid"}, 1),
        ("recursolve_halts_total", {"model": "random", "reason": "max_steps"}, 1),
        ("recursolve_request_act_steps_sum", {"model": "random"}, 3),
        ("recursolve_step_duration_seconds_count", {"model": "random"}, 3),
        ("recursolve_answers_total", {"model": "random", "verified": "false"}, 1),
        ("recursolve_request_duration_seconds_count", {"model": "random", "task": "sudoku"}, 1),
    ]

    def moved(after: str) -> list:
        lagging = [(n, lab) for n, lab, d in checks if metric(after, n, **lab) - metric(before, n, **lab) < d]
        if not re.search(r'recursolve_running_rows\{model="random"\} 0', after):
            lagging.append(("recursolve_running_rows", "not back to 0"))
        return lagging

    # The worker thread records halts and gauges just after it resolves the request: allow it a moment.
    for _ in range(50):
        lagging = moved((await client.get("/metrics")).text)
        if not lagging:
            break
        await asyncio.sleep(0.02)
    assert not lagging, lagging


@pytest.mark.parametrize(("body", "status", "code", "location"), [
    ({"task": "sudoku"}, 422, "invalid_request", "puzzle"),
    (solve_body(max_steps=0), 422, "invalid_option", "options.max_steps"),
    (solve_body(threshold=1.5), 422, "invalid_option", "options.threshold"),
    (solve_body(halting="sometimes"), 422, "invalid_option", "options.halting"),
    (solve_body(turbo=True), 422, "invalid_option", "options.turbo"),
    ({"task": "chess", "puzzle": PUZZLE}, 422, "invalid_request", "task"),
    (solve_body(puzzle=12), 422, "bad_type", None),
    (solve_body(puzzle=PUZZLE[:80]), 422, "wrong_size", None),
    (solve_body(model="nope"), 404, "model_not_found", "model"),
    ({"task": "arc", "puzzle": {"train": [], "test": []}}, 404, "no_model_for_task", "task"),
    (solve_body(trajectories=64), 413, "too_many_trajectories", "options.trajectories"),
    ({"puzzle": PUZZLE}, 422, "missing_task", "task"),
])
async def test_bad_input_is_a_4xx_that_says_what_to_fix(client, body, status, code, location):
    r = await client.post("/v1/solve", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err.get("location") == location
    assert len(err["message"]) > 10


async def test_malformed_and_oversized_bodies(client):
    r = await client.post("/v1/solve", content=b'{"task": "sudoku", "puzzle": ',
                          headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json"
    r = await client.post("/v1/solve", json=solve_body(puzzle="." * 30_000))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    async def chunks():  # no Content-Length: counted as it streams in
        for _ in range(30):
            yield b" " * 1000

    r = await client.post("/v1/solve", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = await client.post("/v1/solve", content=orjson.dumps(solve_body()),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]
    # media types are case-insensitive: a JSON body that is not an object is a plain validation error
    r = await client.post("/v1/solve", content=b"[]", headers={"content-type": "Application/JSON"})
    assert r.status_code == 422 and r.json()["error"]["code"] != "unsupported_media_type", r.text
    r = await client.get("/v1/solve")
    assert r.status_code == 405 and "error" in r.json()


async def test_openapi_has_operation_ids_and_examples(client):
    spec = (await client.get("/openapi.json")).json()
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"solve", "solve_batch", "solve_stream", "list_models", "get_model", "healthz", "readyz",
            "metrics"} <= ops
    assert spec["components"]["schemas"]["SolveRequest"]["examples"]


async def test_draining_refuses_new_work_and_finishes_running(tmp_path):
    specs = make_specs(tmp_path, random={"batch_rows": 2})
    async with running_app(tmp_path, specs=specs) as (app, c):
        running = asyncio.create_task(c.post("/v1/solve", json=solve_body(max_steps=150, halting="max_steps")))
        await asyncio.sleep(0.2)
        app.state.runtime.begin_drain()
        r = await c.get("/readyz")
        assert r.status_code == 503 and "draining" in r.json()["detail"]
        r = await c.post("/v1/solve", json=solve_body(puzzle=SOLUTION, model="copy", max_steps=1))
        assert r.status_code == 503 and r.json()["error"]["code"] == "draining"
        done = await running
        assert done.status_code == 200 and done.json()["steps"] == 150


async def test_failed_model_load_is_not_ready(tmp_path):
    app = create_app(Settings(weights_dir=tmp_path), [ModelSpec(name="broken", task="sudoku",
                                                                path=tmp_path / "missing")])
    async with app.router.lifespan_context(app):
        with pytest.raises(RuntimeError, match="no such checkpoint"):
            await app.state.runtime.wait_ready(30)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.get("/healthz")).status_code == 503
            r = await c.get("/readyz")
            assert r.status_code == 503 and "loading models failed" in r.json()["detail"]
            r = await c.post("/v1/solve", json=solve_body())
            assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
            # which models are served is not known: not a 404 (which a client would take as final)
            r = await c.get("/v1/models/broken")
            assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready" and "retry-after" in r.headers


async def test_invalid_model_default_options_fail_the_start(tmp_path):
    spec = make_specs(tmp_path)[0].model_copy(update={"default_options": {"halting": "sometimes"}})
    app = create_app(Settings(weights_dir=tmp_path), [spec])
    async with app.router.lifespan_context(app):
        with pytest.raises(RuntimeError, match="invalid default_options"):
            await app.state.runtime.wait_ready(30)


@pytest.mark.asyncio
async def test_a_batch_item_turned_away_says_when_to_retry(tmp_path):
    """An item refused for a full queue (429) carries the Retry-After it would have had on its own, readable by
    a program (retry_after_s; the Python client's Overloaded.retry_after), not only in the message."""
    async with running_app(tmp_path, specs=make_specs(tmp_path, copy={"batch_rows": 1, "max_queue_rows": 1})) as (
            _, client):
        # distinct options: identical items would share one run (coalesced)
        items = [solve_body(model="copy", max_steps=60 + k, halting="max_steps", cache=False) for k in range(4)]
        r = await client.post("/v1/solve/batch", json={"items": items})
    body = r.json()
    refused = [x for x in body["results"] if x["status"] == 429]
    assert refused and all(x["error"]["code"] == "queue_full" and x["retry_after_s"] >= 1 for x in refused)
