"""MCP server at /mcp (streamable HTTP, official `mcp` SDK): the tools of app/api/tools.py over the same solve path.

Choices (the issue is silent on them):
- Stateless and JSON responses: every POST is answered on its own with one JSON body, no session id, no SSE.
  Any API process can answer any call (the engine-v2 shape runs several behind one port), nothing is held
  between calls, and plain HTTP clients and proxies need nothing special. The cost: no server-to-client
  requests or progress notifications inside a call, and GET /mcp (the server-push stream) answers 405;
  step-by-step progress stays on the REST SSE stream (POST /v1/solve/stream).
- A tool call is `SolveRequest.model_validate(to_solve_body(...))` then `routes.run_solve`: the REST API's own
  validation, errors and metrics. Every failure (bad arguments, bad puzzle, unknown model, queue full, not
  ready) is a tool result with isError, its text `<code> at <location>: <message>` and its structured content
  the REST error body plus the HTTP status it would have had; nothing reaches the client as a protocol error.
- A solve result's text is what an LLM needs (verified, confidence, steps, the answer text); its structured
  content is the full SolveResponse; the tool's output schema declares it or the error body (`solve_output_schema`).
- Origin: a request carrying an Origin header from another host is refused (403), as the MCP spec asks of
  servers (DNS rebinding); clients that send no Origin (SDKs, curl, agents) are unaffected. The Host header
  is not checked: the served host names are not known in advance (k8s services, ingresses).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import mcp_types as types
import orjson
import pydantic_core
from fastapi import FastAPI
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import ApiError, count_error, from_validation
from app.api.limits import read_body, replay_body
from app.api.routes import models_body, ready_service, run_solve
from app.api.schemas import ErrorBody, SolveRequest, SolveResponse
from app.api.tools import BY_NAME, TOOLS, json_schema, served_tasks, served_tools, to_solve_body
from app.logs import current_request_id
from app.runtime import Runtime

PATH = "/mcp"
INSTRUCTIONS = ("recursolve solves Sudoku, mazes and ARC-AGI tasks with tiny recursive reasoning models. Call "
                "solve_sudoku, solve_maze or solve_arc with the puzzle; trust an answer only when verified is true "
                "(Sudoku and mazes are always checked exactly; ARC only when the test output is given). "
                "list_models shows what is served.")
_ANNOTATIONS = types.ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                     open_world_hint=False)


def _plain(body: dict[str, Any]) -> dict[str, Any]:
    """Bodies may hold numpy values (the REST routes serialise them with orjson); MCP needs plain JSON."""
    return orjson.loads(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))


def solve_output_schema() -> dict[str, Any]:
    """A solve tool's structured result: the /v1/solve response, or (an isError result) the REST error body with
    its HTTP `status`. Both, because MCP clients on the TypeScript SDK (Claude Code, the MCP Inspector) check the
    structured content of error results against the output schema too, and threw on every tool error when the
    schema was the response's alone."""
    ok, err = SolveResponse.model_json_schema(), ErrorBody.model_json_schema()
    defs = ok.pop("$defs", {})
    for name, schema in err.pop("$defs", {}).items():
        assert defs.setdefault(name, schema) == schema, f"two schemas named {name}"
    err["properties"] |= {
        "status": {"type": "integer", "description": "The HTTP status /v1/solve answers with."},
        "retry_after_s": {"anyOf": [{"type": "integer"}, {"type": "string"}],
                          "description": "The Retry-After of a 429 or 503: seconds (or an HTTP date)."}}
    err["required"] = [*err.get("required", []), "status"]
    return {"type": "object", "anyOf": [ok, err], "$defs": defs}


def _mcp_tools() -> list[types.Tool]:
    output = solve_output_schema()
    return [types.Tool(name=t.name, description=t.description, input_schema=json_schema(t.args, strict=False),
                       output_schema=output if t.task is not None else None, annotations=_ANNOTATIONS)
            for t in TOOLS]


def error_result(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> types.CallToolResult:
    err = body.get("error", {})
    where = f" at {err['location']}" if err.get("location") else ""
    text = f"{err.get('code', 'error')}{where}: {err.get('message', '')}"
    structured: dict[str, Any] = {"status": status, **_plain(body)}
    retry = (headers or {}).get("Retry-After")
    if retry is not None:
        text += f" (retry after {retry} s)"
        structured["retry_after_s"] = int(retry) if retry.isdigit() else retry  # HTTP allows a date too
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=structured,
                                is_error=True)


def solve_result(body: dict[str, Any]) -> types.CallToolResult:
    body = _plain(body)
    if body["verified"]:
        verdict = "verified: yes (passes the exact verifier)"
    else:
        verdict = "verified: no" + (f" ({'; '.join(body['verification'])})" if body.get("verification") else "")
    conf = body.get("confidence")
    lines = [verdict, f"confidence: {conf:.3f}" if conf is not None else "confidence: unknown",
             f"steps: {body['steps']} (halted by {body['halted_by']}), model {body['model']['name']}",
             # no answer: no step ran, or the model's output decoded to none; the verdict above says which
             "answer:", body.get("answer_text") or "(none)"]
    return types.CallToolResult(content=[types.TextContent(type="text", text="\n".join(lines))],
                                structured_content=body)


async def call_tool(runtime: Runtime, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
    """One tool call -> its result; every failure is an isError result carrying the REST error body."""
    spec = BY_NAME.get(name)
    if spec is None:
        err = ApiError(404, "unknown_tool", f"unknown tool {name!r}; tools: {', '.join(BY_NAME)}", "name")
        return error_result(err.status, err.body())
    item: SolveRequest | None = None
    try:
        spec.args.model_validate(arguments)  # the tool's own schema: a solve tool takes no `task`, say
        if spec.task is not None:
            item = SolveRequest.model_validate(to_solve_body(name, arguments))
    except ValidationError as exc:
        err = from_validation(exc.errors(include_url=False))
        count_error(err)
        return error_result(err.status, err.body())
    if item is None:
        body = _plain(await models_body(runtime, "brief"))  # the card and engine state are ~14 KB a model
        text = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=body)
    try:
        service = ready_service(runtime)
    except ApiError as err:
        count_error(err, "-", spec.task or "-")
        return error_result(err.status, err.body(), err.headers)
    status, body, headers = await run_solve(service, item, current_request_id())
    return solve_result(body) if status == 200 else error_result(status, body, headers)


def build_server(app: FastAPI) -> Server[Any]:
    tools = _mcp_tools()

    async def on_list_tools(_ctx: Any, _params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        offered = {t.name for t in served_tools(served_tasks(app.state.runtime))}
        return types.ListToolsResult(tools=[t for t in tools if t.name in offered])

    async def on_call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return await call_tool(app.state.runtime, params.name, dict(params.arguments or {}))

    return Server("recursolve", version=app.version, instructions=INSTRUCTIONS, on_list_tools=on_list_tools,
                  on_call_tool=on_call_tool)


class _Guard:
    """Refuse browser requests from other origins (DNS rebinding; requests without Origin pass) and GET.

    GET would open the standalone SSE stream for server-initiated messages; a stateless server never sends
    any, and the SDK would hold the connection open (and hold up a graceful shutdown) for nothing. The MCP
    spec lets a server without that stream answer 405; clients then carry on over POST.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            err = ApiError(405, "method_not_allowed", "this MCP server is stateless with JSON responses: POST "
                                                      "JSON-RPC messages to /mcp (there is no GET event stream)")
            await JSONResponse(err.body(), status_code=405, headers={"Allow": "POST"})(scope, receive, send)
            return
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin and urlsplit(origin).netloc != headers.get("host"):
                err = ApiError(403, "origin_not_allowed", f"cross-origin MCP request from {origin!r} refused; call "
                                                          "/mcp from the same origin or without an Origin header",
                               "Origin")
                await JSONResponse(err.body(), status_code=403)(scope, receive, send)
                return
        if scope["type"] == "http" and scope["method"] == "POST":
            body = await read_body(receive)
            if body is None:  # the client went away
                return
            if (problem := _bad_request_id(body)) is not None:
                # JSON-RPC 2.0's answer to an invalid Request object, which cannot carry the id it could not read.
                error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": problem}}
                await JSONResponse(error, status_code=400)(scope, receive, send)
                return
            receive = replay_body(body, receive)
        await self.app(scope, receive, send)


def _bad_request_id(body: bytes) -> str | None:
    """What is wrong with a request's id (a message with a method and an id that is not a string or an integer),
    else None. The SDK read such a message as a notification: 202 Accepted, nothing run and no answer ever sent,
    so the client waited for good. Bodies that are not JSON objects are the SDK's to refuse."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:  # the SDK's parser also takes NaN and Infinity: so read it with that one
        try:
            message = pydantic_core.from_json(body)
        except ValueError:
            return None
    if not isinstance(message, dict) or "method" not in message or "id" not in message:
        return None
    request_id = message["id"]
    if isinstance(request_id, str) or (isinstance(request_id, int) and not isinstance(request_id, bool)):
        return None
    return f"Invalid Request: id must be a string or an integer, not {orjson.dumps(request_id).decode()[:40]}"


def install_mcp(app: FastAPI) -> StreamableHTTPSessionManager:
    """Serve MCP at /mcp. The returned manager's `run()` must be entered in the app's lifespan."""
    max_bytes = app.state.runtime.settings.max_request_bytes
    manager = StreamableHTTPSessionManager(
        app=build_server(app), json_response=True, stateless=True, max_request_body_size=max_bytes,
        # Host checks off: see the module docstring (Origin is checked by _Guard instead).
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    app.router.routes.append(Route(PATH, endpoint=_Guard(StreamableHTTPASGIApp(manager))))
    # Stateless: the SDK logs "Terminating session: None" at INFO after every single POST.
    logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
    return manager
