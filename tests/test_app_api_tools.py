"""GET /v1/tools: OpenAI strict-mode and Anthropic tool definitions whose example calls the REST API accepts."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
import pytest
import pytest_asyncio

from app.api.schemas import SolveOptionsIn, SolveRequest
from app.api.tools import TOOLS, json_schema, to_solve_body
from app.main import create_app
from app.settings import Settings
from app_engine_support import make_all_task_specs, make_specs, running_app, save_copy

module_loop = pytest.mark.asyncio(loop_scope="module")  # the async tests share the module-scoped app

TOOL_NAMES = {"solve_sudoku", "solve_maze", "solve_arc", "list_models"}
# What OpenAI's strict mode accepts on every model (constraint keywords such as minimum are not in it).
STRICT_KEYWORDS = {"type", "description", "properties", "required", "additionalProperties", "items", "enum",
                   "anyOf"}
JSON_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}


def strict_violations(node: Any, where: str = "$") -> list[str]:
    """Every way `node` breaks OpenAI's strict function-schema rules, recursively."""
    if not isinstance(node, dict):
        return [f"{where}: not a schema object"]
    out = [f"{where}: keyword {k!r} not allowed in strict mode" for k in node if k not in STRICT_KEYWORDS]
    types = node.get("type")
    if "anyOf" in node:
        for i, branch in enumerate(node["anyOf"]):
            out += strict_violations(branch, f"{where}.anyOf[{i}]")
    elif types is None:
        out.append(f"{where}: no type")
    for t in [types] if isinstance(types, str) else types or []:
        if t not in JSON_TYPES:
            out.append(f"{where}: unknown type {t!r}")
    if "enum" in node and None in node["enum"] and not (isinstance(types, list) and "null" in types):
        out.append(f"{where}: enum allows null but type does not")
    if types == "array" or (isinstance(types, list) and "array" in types):
        if "items" not in node:
            out.append(f"{where}: array without items")
        else:
            out += strict_violations(node["items"], f"{where}[]")
    if types == "object" or (isinstance(types, list) and "object" in types):
        props = node.get("properties")
        if props is None:
            out.append(f"{where}: object without properties")
            props = {}
        if node.get("additionalProperties") is not False:
            out.append(f"{where}: additionalProperties is not false")
        if sorted(node.get("required", [])) != sorted(props):
            out.append(f"{where}: required {node.get('required')} is not every property {sorted(props)}")
        for name, prop in props.items():
            out += strict_violations(prop, f"{where}.{name}")
    return out


def no_refs_and_closed_objects(node: Any, where: str = "$") -> list[str]:
    """The rules both formats share: no $ref/$defs, additionalProperties false on every object."""
    out: list[str] = []
    if isinstance(node, dict):
        out += [f"{where}: {k}" for k in ("$ref", "$defs", "definitions") if k in node]
        if node.get("type") == "object" and node.get("additionalProperties") is not False:
            out.append(f"{where}: additionalProperties is not false")
        for k, v in node.items():
            out += no_refs_and_closed_objects(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += no_refs_and_closed_objects(v, f"{where}[{i}]")
    return out


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    async with running_app(root, settings=Settings(weights_dir=root, drain_grace_seconds=2),
                           specs=make_all_task_specs(root)) as (_, c):
        yield c


def test_the_checker_catches_what_the_issue_reported():
    """The REST schema as it is (options a $ref, optional fields not required, puzzle an untyped anyOf of three
    JSON types) fails the rules."""
    problems = strict_violations(SolveRequest.model_json_schema())
    assert any("'$ref'" in p for p in problems)
    assert any("$.puzzle" in p for p in problems)
    assert any("required" in p for p in problems)
    assert any("'default'" in p for p in problems)
    assert strict_violations({"type": "object", "properties": {"a": {"type": "integer", "minimum": 1}},
                              "required": ["a"], "additionalProperties": False}) == [
        "$.a: keyword 'minimum' not allowed in strict mode"]


@module_loop
async def test_openai_tools_are_valid_in_strict_mode(client):
    r = await client.get("/v1/tools", params={"format": "openai"})
    assert r.status_code == 200
    body = r.json()
    assert body["format"] == "openai"
    assert {t["function"]["name"] for t in body["tools"]} == TOOL_NAMES
    for tool in body["tools"]:
        assert tool["type"] == "function"
        fn = tool["function"]
        assert fn["strict"] is True and re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", fn["name"]) and fn["description"]
        params = fn["parameters"]
        assert params["type"] == "object" and "anyOf" not in params  # the root must be a plain object
        assert strict_violations(params) == [], fn["name"]
        assert no_refs_and_closed_objects(params) == []


@module_loop
async def test_anthropic_tools_are_name_description_input_schema(client):
    body = (await client.get("/v1/tools", params={"format": "anthropic"})).json()
    assert body["format"] == "anthropic"
    assert {t["name"] for t in body["tools"]} == TOOL_NAMES
    for tool in body["tools"]:
        assert set(tool) == {"name", "description", "input_schema"}
        schema = tool["input_schema"]
        assert schema["type"] == "object" and no_refs_and_closed_objects(schema) == []
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["required"] == (["puzzle"] if tool["name"] != "list_models" else [])


@module_loop
async def test_the_default_format_is_openai_and_an_unknown_one_is_a_422(client):
    assert (await client.get("/v1/tools")).json()["format"] == "openai"
    r = await client.get("/v1/tools", params={"format": "gemini"})
    assert r.status_code == 422 and r.json()["error"]["location"] == "query.format"


@module_loop
async def test_every_solve_option_is_in_the_tool_schemas(client):
    """Derived, not copied: each SolveOptionsIn field (with its description) appears in every solve tool."""
    for fmt in ("openai", "anthropic"):
        for tool in (await client.get("/v1/tools", params={"format": fmt})).json()["tools"]:
            name, schema = ((tool["function"]["name"], tool["function"]["parameters"]) if fmt == "openai"
                            else (tool["name"], tool["input_schema"]))
            if name == "list_models":
                continue
            options = next(b for b in schema["properties"]["options"]["anyOf"] if b.get("type") == "object")
            assert list(options["properties"]) == list(SolveOptionsIn.model_fields)
            for name, field in SolveOptionsIn.model_fields.items():
                assert options["properties"][name]["description"].startswith(field.description)


def test_strict_mode_keeps_the_limits_in_the_description():
    relaxed = json_schema(SolveOptionsIn, strict=False)["properties"]["max_steps"]
    strict = json_schema(SolveOptionsIn, strict=True)["properties"]["max_steps"]
    assert (relaxed["minimum"], relaxed["maximum"]) == (1, 4096)
    assert strict["type"] == ["integer", "null"] and "minimum" not in strict
    assert strict["description"].endswith("(>= 1, <= 4096)")


@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
@module_loop
async def test_each_example_call_fits_its_schema_and_the_rest_api_accepts_it(client, fmt):
    body = (await client.get("/v1/tools", params={"format": fmt})).json()
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in body["tools"]} if fmt == "openai" else \
        {t["name"]: t["input_schema"] for t in body["tools"]}
    assert {e["tool"] for e in body["examples"]} == TOOL_NAMES
    for example in body["examples"]:
        jsonschema.validate(example["arguments"], schemas[example["tool"]])
        rest = example["rest"]
        if rest["method"] == "POST":
            assert rest["body"] == to_solve_body(example["tool"], example["arguments"])
            r = await client.post(rest["path"], json=rest["body"])
        else:
            r = await client.get(rest["path"])
        assert r.status_code == 200, (example["tool"], r.text)


def test_null_fields_of_a_strict_call_are_dropped_for_rest():
    args = {"puzzle": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]], "output": None}],
                       "test_index": None, "id": None},
            "model": None, "options": {"max_steps": 4, "seed": None}}
    assert to_solve_body("solve_arc", args) == {
        "task": "arc", "puzzle": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]},
        "options": {"max_steps": 4}}


@pytest.mark.asyncio
async def test_only_the_solve_tools_of_served_tasks_are_offered(tmp_path):
    """A server with Sudoku models only (as make_specs') offers solve_sudoku and list_models, over REST and MCP:
    an LLM handed solve_arc there would only ever get no_model_for_task back."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with running_app(tmp_path) as (app, client):
        for fmt, name_of in (("openai", lambda t: t["function"]["name"]), ("anthropic", lambda t: t["name"])):
            body = (await client.get("/v1/tools", params={"format": fmt})).json()
            assert [name_of(t) for t in body["tools"]] == ["solve_sudoku", "list_models"]
            assert [e["tool"] for e in body["examples"]] == ["solve_sudoku", "list_models"]
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test", timeout=60)
        async with http, Client(streamable_http_client("http://test/mcp", http_client=http)) as mcp:
            assert [t.name for t in (await mcp.list_tools()).tools] == ["solve_sudoku", "list_models"]
            refused = await mcp.call_tool("solve_arc", {"puzzle": {"train": [], "test": []}})
    assert refused.is_error  # not offered, and still answered with a tool error when called anyway


@pytest.mark.asyncio
async def test_a_starting_server_offers_the_tools_of_its_configured_models(tmp_path):
    """Before the engine has reported its models (no lifespan run here), the tools follow the configuration: the
    weights folders, as the engine reads them, or the specs it was given. An unreadable configuration offers all."""
    save_copy(tmp_path / "weights" / "copy")
    for settings, specs in ((Settings(weights_dir=tmp_path / "weights"), None),
                            (Settings(weights_dir=tmp_path), make_specs(tmp_path))):
        app = create_app(settings, specs)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            body = (await client.get("/v1/tools")).json()
        assert [t["function"]["name"] for t in body["tools"]] == ["solve_sudoku", "list_models"]
    app = create_app(Settings(weights_dir=tmp_path, models_file=tmp_path / "missing.yaml"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        body = (await client.get("/v1/tools")).json()
    assert len(body["tools"]) == len(TOOLS)
