"""Request ids: X-Request-ID / W3C traceparent in, the id on every response, in error bodies and in log lines."""

from __future__ import annotations

import io
import json
import logging

import httpx
import orjson
import pytest
import pytest_asyncio

from app.api.request_id import MAX_REQUEST_ID_LEN, resolve, trace_id
from app.logs import JsonLineFormatter, RequestIdFilter
from app.settings import Settings
from app_engine_support import make_specs, running_app, solve_body

in_module_loop = pytest.mark.asyncio(loop_scope="module")  # the app fixture lives on the module's loop

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def hdrs(**h: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").lower().encode(), v.encode("latin-1")) for k, v in h.items()]


@pytest.mark.parametrize("value, expected", [
    (TRACEPARENT, TRACE),
    (f"01-{TRACE}-00f067aa0ba902b7-01-future-field", TRACE),  # a later version may add fields
    (f"00-{TRACE}-00f067aa0ba902b7-01-extra", None),  # version 00 may not
    (f"ff-{TRACE}-00f067aa0ba902b7-01", None),  # version ff is invalid
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),  # all-zero trace-id
    (f"00-{TRACE}-{'0' * 16}-01", None),  # all-zero parent-id
    (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),  # hex must be lower case
    (f"00-{TRACE[:-1]}-00f067aa0ba902b7-01", None),
    ("garbage", None),
])
def test_traceparent_parsing(value: str, expected: str | None) -> None:
    assert trace_id(value.encode()) == expected


def test_resolve_order_and_validation() -> None:
    assert resolve(hdrs(x_request_id="abc-123")) == ("abc-123", None)
    # A client id wins; a valid traceparent is still echoed.
    assert resolve(hdrs(x_request_id="abc", traceparent=TRACEPARENT)) == ("abc", TRACEPARENT.encode())
    assert resolve(hdrs(traceparent=TRACEPARENT)) == (TRACE, TRACEPARENT.encode())
    ok = "x" * MAX_REQUEST_ID_LEN
    assert resolve(hdrs(x_request_id=ok))[0] == ok
    for bad in ("x" * (MAX_REQUEST_ID_LEN + 1), "has space", "tab\there", "", "caf\xe9"):
        rid, echo = resolve(hdrs(x_request_id=bad))
        assert rid != bad and len(rid) == 32 and int(rid, 16) >= 0 and echo is None, bad
    # An unusable id falls back to the trace-id, an unusable traceparent to a fresh id (and is not echoed).
    assert resolve(hdrs(x_request_id="bad id", traceparent=TRACEPARENT))[0] == TRACE
    rid, echo = resolve(hdrs(traceparent="00-nope"))
    assert len(rid) == 32 and echo is None
    # A later version's extra fields are the caller's bytes: only the four common fields are echoed.
    later = f"01-{TRACE}-00f067aa0ba902b7-01-x\xff\xfe\x80"
    assert resolve(hdrs(traceparent=later)) == (TRACE, f"01-{TRACE}-00f067aa0ba902b7-01".encode())
    assert resolve([])[0] != resolve([])[0]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app_client(tmp_path_factory):
    root = tmp_path_factory.mktemp("rid")
    settings = Settings(weights_dir=root, max_request_bytes=2_000, drain_grace_seconds=2, warmup=False)
    async with running_app(root, settings=settings, specs=make_specs(root)) as (app, client):
        yield app, client


@pytest.fixture
def captured():
    """JSON lines of the `app` loggers during the test, formatted as in production."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(RequestIdFilter())
    log = logging.getLogger("app")
    log.addHandler(handler)
    yield out
    log.removeHandler(handler)


@in_module_loop
async def test_client_id_is_echoed_and_used_in_the_answer(app_client) -> None:
    _, client = app_client
    r = await client.post("/v1/solve", json=solve_body(model="eager"), headers={"X-Request-ID": "client-1"})
    assert r.status_code == 200
    assert r.headers.get_list("x-request-id") == ["client-1"]  # exactly one, though the route sets it too
    assert r.json()["request_id"] == "client-1"


@in_module_loop
async def test_traceparent_gives_the_id_and_is_echoed(app_client) -> None:
    _, client = app_client
    r = await client.get("/v1/models", headers={"traceparent": TRACEPARENT})
    assert r.headers["x-request-id"] == TRACE and r.headers["traceparent"] == TRACEPARENT
    r = await client.get("/healthz")
    assert len(r.headers["x-request-id"]) == 32 and "traceparent" not in r.headers


@in_module_loop
@pytest.mark.parametrize("method, path, kwargs, status", [
    ("post", "/v1/solve", {"json": solve_body(puzzle="12x")}, 422),  # the codec's error
    ("post", "/v1/solve", {"json": {"task": "sudoku"}}, 422),  # FastAPI's validation
    ("post", "/v1/solve", {"json": solve_body(model="nope")}, 404),
    ("get", "/nowhere", {}, 404),  # Starlette's own 404
    ("post", "/v1/solve", {"content": b"{" + b" " * 3_000 + b"}",
                           "headers": {"content-type": "application/json"}}, 413),  # the body limit, a middleware
])
async def test_every_error_body_carries_the_request_id(app_client, method, path, kwargs, status) -> None:
    _, client = app_client
    headers = {"X-Request-ID": f"err-{status}", **kwargs.pop("headers", {})}
    r = await getattr(client, method)(path, headers=headers, **kwargs)
    assert r.status_code == status
    assert r.headers.get_list("x-request-id") == [f"err-{status}"]
    assert r.json()["error"]["request_id"] == f"err-{status}"


@in_module_loop
async def test_batch_items_and_sse_results_carry_the_id(app_client) -> None:
    _, client = app_client
    r = await client.post("/v1/solve/batch", json={"items": [solve_body(model="eager"), solve_body(puzzle="1")]},
                          headers={"X-Request-ID": "b-1"})
    assert r.headers["x-request-id"] == "b-1"
    first, second = r.json()["results"]
    assert first["result"]["request_id"] == "b-1-0"
    assert second["error"]["request_id"] == "b-1"
    r = await client.post("/v1/solve/stream", json=solve_body(model="eager"), headers={"X-Request-ID": "s-1"})
    assert r.headers["x-request-id"] == "s-1"
    last = r.text.strip().split("\n\n")[-1]
    assert last.startswith("event: result")
    assert orjson.loads(last.split("data: ", 1)[1])["request_id"] == "s-1"


@in_module_loop
async def test_an_unexpected_500_still_has_the_id_in_header_body_and_log(app_client, captured) -> None:
    """A 500 is rendered by Starlette's ServerErrorMiddleware, outside RequestIdMiddleware."""
    app, _ = app_client

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom-for-test", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/boom-for-test", headers={"X-Request-ID": "bug-1"})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "bug-1"
    assert r.json()["error"] == {"code": "internal_error", "request_id": "bug-1",
                                 "message": "internal error (RuntimeError); this is a server bug"}
    logged = [json.loads(line) for line in captured.getvalue().splitlines()]
    (line,) = [x for x in logged if x["logger"] == "app.api.errors"]
    assert line["request_id"] == "bug-1" and "RuntimeError: a bug" in line["exc_info"]


@in_module_loop
async def test_log_lines_inside_a_request_carry_its_id(app_client, captured) -> None:
    app, client = app_client
    log = logging.getLogger("app.test_request_id")

    async def noisy() -> dict:
        log.warning("inside the handler")
        return {}

    app.add_api_route("/noisy-for-test", noisy)
    await client.get("/noisy-for-test", headers={"traceparent": TRACEPARENT})
    (line,) = [json.loads(x) for x in captured.getvalue().splitlines()]
    assert line["message"] == "inside the handler" and line["request_id"] == TRACE
