"""The MCP endpoint (/mcp), driven by the official `mcp` SDK client over streamable HTTP against the real app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import jsonschema
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from app.api.tools import BY_NAME, anthropic_tools
from app.settings import Settings
from app_engine_support import PUZZLE, SOLUTION, make_all_task_specs, make_specs, running_app

pytestmark = pytest.mark.asyncio(loop_scope="module")

SOLVE_TOOLS = ("solve_sudoku", "solve_maze", "solve_arc")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app_client(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp")
    settings = Settings(weights_dir=root, drain_grace_seconds=2)
    async with running_app(root, settings=settings, specs=make_all_task_specs(root)) as (app, client):
        yield app, client


@contextlib.asynccontextmanager
async def mcp_client(app: Any, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK's Client over its streamable HTTP transport, wired to the app in-process."""
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test", timeout=60)
    async with http, Client(streamable_http_client("http://test/mcp", http_client=http), mode=mode) as client:
        yield client


@pytest.fixture(params=["auto", "legacy"])
def mode(request) -> str:
    """auto: the SDK's default (2026 per-request protocol); legacy: the initialize handshake of 2025 clients."""
    return request.param


async def test_lists_the_four_tools_with_the_rest_derived_schemas(app_client, mode):
    app, _ = app_client
    async with mcp_client(app, mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {*SOLVE_TOOLS, "list_models"}
    by_name = {t["name"]: t for t in anthropic_tools()}
    for name, tool in tools.items():
        assert tool.input_schema == by_name[name]["input_schema"]  # one derivation for MCP and /v1/tools
        assert tool.annotations is not None and tool.annotations.read_only_hint
        assert (tool.output_schema is not None) == (name != "list_models")
    assert tools["solve_sudoku"].input_schema["required"] == ["puzzle"]


async def test_solve_sudoku_carries_answer_verified_confidence_steps(app_client, mode):
    app, http = app_client
    args = {"puzzle": SOLUTION, "model": "copy", "options": {"max_steps": 3, "halting": "max_steps", "cache": False}}
    async with mcp_client(app, mode) as client:
        result = await client.call_tool("solve_sudoku", args)
    assert not result.is_error
    body = result.structured_content
    assert body["verified"] is True and body["answer"] == SOLUTION and body["steps"] == 3
    assert 0 < body["confidence"] < 1 and body["halted_by"] == "max_steps"
    text = result.content[0].text
    assert text.startswith("verified: yes") and "steps: 3" in text and f"confidence: {body['confidence']:.3f}" in text
    assert body["answer_text"] in text
    rest = (await http.post("/v1/solve", json={"task": "sudoku", **args})).json()
    same = ("answer", "answer_text", "verified", "confidence", "steps", "halted_by", "model")
    assert {k: body[k] for k in same} == {k: rest[k] for k in same}


async def test_unverified_answer_says_why(app_client):
    app, _ = app_client
    async with mcp_client(app) as client:
        result = await client.call_tool("solve_sudoku", {"puzzle": PUZZLE, "model": "eager",
                                                          "options": {"halting": "q_head"}})
    assert not result.is_error
    body = result.structured_content
    assert body["verified"] is False and body["verification"] and body["steps"] == 1
    assert result.content[0].text.startswith("verified: no (")


async def test_each_tool_runs_its_example_call_in_strict_form(app_client):
    """The strict-form examples (every key present, nulls for defaults) work over MCP too."""
    app, _ = app_client
    async with mcp_client(app) as client:
        for name in SOLVE_TOOLS:
            result = await client.call_tool(name, BY_NAME[name].example)
            assert not result.is_error, result.content[0].text
            body = result.structured_content
            assert body["task"] == BY_NAME[name].task and body["model"]["name"] in ("random", "maze", "arc")
            assert body["steps"] >= 1 and isinstance(body["verified"], bool)
            assert "answer:\n" in result.content[0].text
        maze = (await client.call_tool("solve_maze", BY_NAME["solve_maze"].example)).structured_content
        arc = (await client.call_tool("solve_arc", BY_NAME["solve_arc"].example)).structured_content
    assert maze["steps"] <= 8 and len(maze["answer"].splitlines()) == 5
    assert arc["steps"] <= 4 and isinstance(arc["answer"], list) and isinstance(arc["answer"][0], list)


async def test_list_models_is_the_rest_body(app_client, mode):
    app, http = app_client
    async with mcp_client(app, mode) as client:
        result = await client.call_tool("list_models", {})
    assert not result.is_error
    assert result.structured_content == (await http.get("/v1/models", params={"view": "brief"})).json()
    assert '"defaults"' in result.content[0].text


@pytest.mark.parametrize(("tool", "args", "status", "code", "location"), [
    ("solve_sudoku", {"puzzle": "12k"}, 422, "bad_character", "char 3"),
    ("solve_sudoku", {"puzzle": PUZZLE, "options": {"max_steps": 0}}, 422, "invalid_option", "options.max_steps"),
    ("solve_sudoku", {"puzzle": PUZZLE, "model": "nope"}, 404, "model_not_found", "model"),
    ("solve_sudoku", {"puzle": PUZZLE}, 422, "invalid_request", None),
    ("solve_maze", {"puzzle": 42}, 422, "bad_type", None),
    ("solve_arc", {"puzzle": {"train": []}}, 422, None, None),
    ("list_models", {"verbose": True}, 422, "invalid_request", "verbose"),
    ("solve_chess", {"puzzle": "e4"}, 404, "unknown_tool", "name"),
])
async def test_bad_input_is_a_tool_error_with_code_message_location(app_client, tool, args, status, code, location):
    app, http = app_client
    async with mcp_client(app) as client:
        result = await client.call_tool(tool, args)
        declared = {t.name: t.output_schema for t in (await client.list_tools()).tools}.get(tool)
    assert result.is_error
    if declared is not None:  # the TypeScript SDK (Claude Code) checks error results against it too, and throws
        jsonschema.validate(result.structured_content, declared)
    err = result.structured_content["error"]
    assert result.structured_content["status"] == status
    if code is not None:
        assert err["code"] == code
    if location is not None:
        assert err["location"] == location
    assert err["message"] and err["message"] in result.content[0].text
    assert result.content[0].text.startswith(err["code"])
    if tool in BY_NAME and BY_NAME[tool].task is not None:  # the REST API says the same
        rest = await http.post("/v1/solve", json={"task": BY_NAME[tool].task, **args})
        same = {k: v for k, v in err.items() if k != "request_id"}  # each call has its own request id
        assert rest.status_code == status
        assert {k: v for k, v in rest.json()["error"].items() if k != "request_id"} == same


async def test_errors_do_not_break_the_connection(app_client):
    app, _ = app_client
    async with mcp_client(app) as client:
        assert (await client.call_tool("solve_sudoku", {"puzzle": "bad"})).is_error
        ok = await client.call_tool("solve_sudoku", {"puzzle": SOLUTION, "model": "copy"})
    assert not ok.is_error and ok.structured_content["verified"] is True


async def test_cross_origin_browser_requests_are_refused(app_client):
    _, http = app_client
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    r = await http.post("/mcp", json=ping, headers={"Origin": "http://evil.example", "Accept": "application/json, "
                                                    "text/event-stream"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    r = await http.post("/mcp", json=ping, headers={"Origin": "http://test", "Accept": "application/json, "
                                                    "text/event-stream"})
    assert r.status_code != 403


async def test_get_is_405_not_a_stream_held_open(app_client):
    _, http = app_client
    r = await http.get("/mcp", headers={"Accept": "text/event-stream"})
    assert r.status_code == 405 and r.headers["allow"] == "POST"  # DELETE too is 405: no sessions to end


async def test_a_draining_server_answers_a_tool_error_with_retry_after(tmp_path):
    async with running_app(tmp_path, specs=make_specs(tmp_path)) as (app, _):
        app.state.runtime.begin_drain()
        async with mcp_client(app) as client:
            result = await client.call_tool("solve_sudoku", {"puzzle": PUZZLE})
            listed = await client.call_tool("list_models", {})
            declared = {t.name: t.output_schema for t in (await client.list_tools()).tools}["solve_sudoku"]
    jsonschema.validate(result.structured_content, declared)  # retry_after_s included
    assert result.is_error and result.structured_content["status"] == 503
    assert result.structured_content["error"]["code"] == "draining"
    assert result.structured_content["retry_after_s"] == 1 and "retry after 1 s" in result.content[0].text
    assert not listed.is_error  # listing still works while draining


async def test_a_solve_tool_takes_no_task_argument(app_client):
    """solve_sudoku solves Sudokus: a `task` argument (not in its schema) is refused, not obeyed."""
    app, _ = app_client
    async with mcp_client(app) as client:
        result = await client.call_tool("solve_sudoku", {"puzzle": PUZZLE, "task": "maze"})
    assert result.is_error and result.structured_content["status"] == 422
    assert result.structured_content["error"]["location"] == "task"


@pytest.mark.parametrize("bad_id", [{"a": 1}, [1], True, None, 1.5])
async def test_a_request_id_that_is_not_a_string_or_integer_is_an_invalid_request(app_client, bad_id):
    """The SDK read it as a notification: 202, nothing run, no answer ever, so the client waited for good."""
    _, http = app_client
    accept = {"Accept": "application/json, text/event-stream"}
    call = {"jsonrpc": "2.0", "id": bad_id, "method": "tools/call",
            "params": {"name": "solve_sudoku", "arguments": {"puzzle": PUZZLE}}}
    r = await http.post("/mcp", json=call, headers=accept)
    assert r.status_code == 400, r.text
    error = r.json()
    assert error["id"] is None and error["error"]["code"] == -32600 and "id must be" in error["error"]["message"]


async def test_valid_request_ids_and_notifications_still_pass(app_client):
    _, http = app_client
    accept = {"Accept": "application/json, text/event-stream"}
    for good_id in ("", 7):
        r = await http.post("/mcp", json={"jsonrpc": "2.0", "id": good_id, "method": "ping"}, headers=accept)
        assert r.status_code == 200 and r.json()["id"] == good_id, r.text
    r = await http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=accept)
    assert r.status_code == 202


async def test_a_bad_id_in_json_only_the_sdk_reads_is_refused_too(app_client):
    """NaN is not JSON to orjson, but the SDK's parser takes it: the id check reads such a body as the SDK does."""
    _, http = app_client
    raw = b'{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"solve_sudoku","arguments":{"x":NaN}}}'
    r = await http.post("/mcp", content=raw, headers={"Accept": "application/json, text/event-stream",
                                                      "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == -32600, r.text
