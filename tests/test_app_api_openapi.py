"""The OpenAPI document: every example in it is accepted by the API (tiny Sudoku, maze and ARC models), and it
lists every error status in the one error body."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from app.settings import ModelSpec, Settings
from app_engine_support import running_app, save_random, tiny_config
from models import build_model, save_model

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app_client(tmp_path_factory):
    root = tmp_path_factory.mktemp("openapi")
    for task, cfg in (("maze", tiny_config(task="maze", seq_len=100, vocab_size=6)),  # mazes up to 10 a side
                      ("arc", tiny_config(task="arc", seq_len=900, vocab_size=12))):
        save_model(build_model(cfg), root / task)
    specs = [ModelSpec(name="sudoku", task="sudoku", path=save_random(root / "sudoku"), batch_rows=16),
             ModelSpec(name="maze", task="maze", path=root / "maze", batch_rows=2),
             ModelSpec(name="arc", task="arc", path=root / "arc", batch_rows=2)]
    async with running_app(root, settings=Settings(weights_dir=root), specs=specs) as (app, c):
        yield app, c


def examples(spec: dict[str, Any]) -> dict[str, list[Any]]:
    """Every example of the request schemas and of the request bodies' media types."""
    schemas = spec["components"]["schemas"]
    found = {name: list(schemas[name].get("examples", [])) for name in ("SolveRequest", "SolveOptionsIn",
                                                                         "BatchRequest")}
    for path, item in spec["paths"].items():
        for op in item.values():
            media = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            for ex in [media.get("example"), *[e.get("value") for e in media.get("examples", {}).values()]]:
                if ex is not None:
                    found.setdefault(path, []).append(ex)
    return found


async def test_every_example_is_accepted(app_client):
    _, client = app_client
    spec = (await client.get("/openapi.json")).json()
    found = examples(spec)
    assert len(found["SolveRequest"]) >= 4 and found["SolveOptionsIn"] and found["BatchRequest"]
    tasks = {ex["task"] for ex in found["SolveRequest"]}
    assert tasks == {"sudoku", "maze", "arc"}
    calls = [("/v1/solve", ex) for ex in found["SolveRequest"]]
    calls += [("/v1/solve", {**found["SolveRequest"][0], "options": opts}) for opts in found["SolveOptionsIn"]]
    calls += [("/v1/solve/batch", ex) for ex in found["BatchRequest"]]
    calls += [(path, ex) for path, exs in found.items() if path.startswith("/") for ex in exs]
    for path, body in calls:
        r = await client.post(path, json=body)
        assert r.status_code == 200, (path, body, r.text)
        if path.endswith("/batch"):
            assert all(item["status"] == 200 for item in r.json()["results"]), r.text


async def test_every_error_status_is_documented_in_the_one_error_body(app_client):
    _, client = app_client
    spec = (await client.get("/openapi.json")).json()
    for path in ("/v1/solve", "/v1/solve/batch", "/v1/solve/stream"):
        responses = spec["paths"][path]["post"]["responses"]
        for code in ("400", "408", "413", "415", "422", "429", "503"):
            assert responses[code]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"}, (path, code)
        assert "Retry-After" in responses["429"]["headers"] and "Retry-After" in responses["503"]["headers"]
        assert "401" not in responses  # no API keys configured here: the document says what this server does
    names = [p["name"] for p in spec["paths"]["/v1/solve"]["post"]["parameters"]]
    assert names == ["Idempotency-Key"]
    assert "HTTPValidationError" not in str(spec)
    request = spec["components"]["schemas"]["SolveRequest"]
    assert request["required"] == ["puzzle"]
    assert {t.get("type") for t in request["properties"]["puzzle"]["anyOf"]} == {"string", "array", "object"}
    assert {"type": "null"} in request["properties"]["task"]["anyOf"]  # optional, and may be sent as null


async def test_with_api_keys_the_document_says_so(tmp_path):
    async with running_app(tmp_path, settings=Settings(weights_dir=tmp_path, api_keys="k"), specs=[]) as (_, c):
        spec = (await c.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    solve = spec["paths"]["/v1/solve"]["post"]
    assert solve["security"] == [{"bearer": []}] and "401" in solve["responses"]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    assert "security" not in spec["paths"]["/metrics"]["get"]
    # RECURSOLVE_AUTH_METRICS: the scrape needs a key too, and the document says so
    settings = Settings(weights_dir=tmp_path, api_keys="k", auth_metrics=True)
    async with running_app(tmp_path, settings=settings, specs=[]) as (_, c):
        spec = (await c.get("/openapi.json")).json()
    assert spec["paths"]["/metrics"]["get"]["security"] == [{"bearer": []}]
