"""The client against scripted servers (httpx.MockTransport): retries, error mapping, headers, SSE parsing."""

from __future__ import annotations

import email.utils
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from recursolve_client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    InvalidPuzzle,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    Overloaded,
    RecursolveError,
    ServerError,
    SolveOptions,
    SolveResponse,
    StepEvent,
    TooLarge,
    Unavailable,
)
from recursolve_client._core import SSEParser

RESULT = {"request_id": "abc", "task": "sudoku", "model": {"name": "m", "version": "v1"}, "answer": "1" * 81,
          "answer_text": "1 1 1", "verified": True, "verification": [], "confidence": 0.9, "steps": 3,
          "halted_by": "q_head", "trajectories": 1, "chosen_trajectory": 0, "row_steps": 3, "cached": False,
          "coalesced": False, "timings": {"queue_ms": 1.0, "compute_ms": 2.0, "total_ms": 3.5}}


def error(status: int, code: str, message: str = "nope", headers: dict[str, str] | None = None,
          **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, **extra}},
                          headers={"X-Request-ID": "rid-1", **(headers or {})})


def scripted(*responses: httpx.Response) -> tuple[Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    """A handler answering the given responses in order, and the list of requests it saw."""
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return handler, seen


def client(handler: Callable[[httpx.Request], httpx.Response], sleeps: list[float] | None = None,
           **kw: Any) -> Client:
    return Client("http://rs.test/", transport=httpx.MockTransport(handler),
                  sleep=(sleeps.append if sleeps is not None else lambda s: None), **kw)


# ------------------------------------------------------------------------------------------------ retry


def test_429_is_retried_after_what_retry_after_asks() -> None:
    handler, seen = scripted(error(429, "queue_full", headers={"Retry-After": "2"}),
                             error(429, "queue_full", headers={"Retry-After": "0.5"}), httpx.Response(200, json=RESULT))
    sleeps: list[float] = []
    result = client(handler, sleeps).solve("." * 81, task="sudoku")
    assert isinstance(result, SolveResponse) and result.verified and result.timings.total_ms == 3.5
    assert sleeps == [2.0, 0.5] and len(seen) == 3
    assert all(json.loads(r.content) == json.loads(seen[0].content) for r in seen)  # the same body each time


def test_retries_are_bounded_and_the_last_error_is_raised_typed() -> None:
    handler, seen = scripted(*[error(429, "queue_full", "queue full", headers={"Retry-After": "1"})] * 3)
    sleeps: list[float] = []
    with pytest.raises(Overloaded) as info:
        client(handler, sleeps, max_retries=2).solve("." * 81, task="sudoku")
    assert len(seen) == 3 and sleeps == [1.0, 1.0]
    err = info.value
    assert (err.status, err.code, err.message, err.request_id, err.retry_after) == (429, "queue_full", "queue full",
                                                                                   "rid-1", 1.0)


def test_a_wait_longer_than_max_retry_wait_raises_at_once() -> None:
    handler, seen = scripted(error(503, "draining", headers={"Retry-After": "120"}))
    sleeps: list[float] = []
    with pytest.raises(Unavailable) as info:
        client(handler, sleeps, max_retry_wait=10).solve("." * 81, task="sudoku")
    assert sleeps == [] and len(seen) == 1 and info.value.retry_after == 120.0


def test_backoff_without_retry_after_and_http_date_form() -> None:
    handler, _ = scripted(error(503, "not_ready"), error(503, "not_ready"), httpx.Response(200, json=RESULT))
    sleeps: list[float] = []
    client(handler, sleeps).solve("." * 81, task="sudoku")
    assert sleeps == [0.5, 1.0]
    date = email.utils.formatdate(time.time() + 5, usegmt=True)
    handler, _ = scripted(error(429, "queue_full", headers={"Retry-After": date}), httpx.Response(200, json=RESULT))
    sleeps = []
    client(handler, sleeps).solve("." * 81, task="sudoku")
    assert len(sleeps) == 1 and 3.0 <= sleeps[0] <= 5.0


def test_non_retryable_statuses_are_not_retried() -> None:
    handler, seen = scripted(error(422, "bad_character"))
    with pytest.raises(InvalidPuzzle):
        client(handler, max_retries=5).solve("x", task="sudoku")
    assert len(seen) == 1


async def test_async_client_retries_the_same_way() -> None:
    handler, seen = scripted(error(429, "queue_full", headers={"Retry-After": "3"}), httpx.Response(200, json=RESULT))
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    async with AsyncClient("http://rs.test", transport=httpx.MockTransport(handler), sleep=sleep) as rs:
        result = await rs.solve("." * 81, model="m")
    assert result.model.name == "m" and sleeps == [3.0] and len(seen) == 2


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("status", "code", "cls"), [
    (422, "bad_character", InvalidPuzzle), (422, "contradictory_givens", InvalidPuzzle),
    (422, "invalid_option", InvalidRequest), (422, "model_task_mismatch", InvalidRequest),
    (422, "over_budget", InvalidRequest), (422, "idempotency_key_reused", InvalidRequest),
    (404, "model_not_found", ModelNotFound), (404, "no_model_for_task", ModelNotFound), (404, "not_found", NotFound),
    (413, "too_many_items", TooLarge), (429, "queue_full", Overloaded), (503, "draining", Unavailable),
    (500, "engine_error", ServerError), (418, "teapot", RecursolveError),
])
def test_each_status_maps_to_its_error_class(status: int, code: str, cls: type[RecursolveError]) -> None:
    handler, _ = scripted(error(status, code, "what is wrong", location="row 3, col 5",
                                accepted_forms=["form one: 1", "form two: 2"]))
    with pytest.raises(cls) as info:
        client(handler, max_retries=0).solve("p", task="sudoku")
    err = info.value
    assert type(err) is cls  # the most specific class, not a parent
    assert (err.status, err.code, err.location, err.request_id) == (status, code, "row 3, col 5", "rid-1")
    assert str(err) == f"{status} {code}: what is wrong (at row 3, col 5)"
    assert err.describe().endswith("Accepted forms:\n- form one: 1\n- form two: 2")
    if cls is InvalidPuzzle:
        assert isinstance(err, InvalidRequest)


def test_an_error_body_that_is_not_ours_still_raises_typed() -> None:
    handler, _ = scripted(httpx.Response(502, text="<html>Bad gateway</html>"))
    with pytest.raises(ServerError) as info:
        client(handler).models()
    assert info.value.code == "http_502" and "Bad gateway" in info.value.message


def test_connection_errors_are_typed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ConnectionFailed) as info:
        client(handler).solve("p", task="sudoku")
    assert info.value.status is None and "refused" in str(info.value)


def test_solve_needs_a_task_or_a_model() -> None:
    handler, seen = scripted()
    with pytest.raises(ValueError, match=r"task= .* or model="):
        client(handler).solve("p")
    assert seen == []


# ------------------------------------------------------------------------------------- request shape


def test_headers_and_body() -> None:
    handler, seen = scripted(httpx.Response(200, json=RESULT))
    rs = client(handler, api_key="sk-test", headers={"X-Team": "a"})
    rs.solve([[0] * 9] * 9, task="sudoku", options=SolveOptions(max_steps=8), seed=3, request_id="trace-42")
    req = seen[0]
    assert req.url == "http://rs.test/v1/solve"
    assert req.headers["authorization"] == "Bearer sk-test" and req.headers["x-request-id"] == "trace-42"
    assert req.headers["x-team"] == "a" and req.headers["user-agent"].startswith("recursolve-client/")
    assert json.loads(req.content) == {"task": "sudoku", "puzzle": [[0] * 9] * 9,
                                       "options": {"max_steps": 8, "seed": 3}}


def test_no_auth_header_without_a_key_and_no_empty_options() -> None:
    handler, seen = scripted(httpx.Response(200, json=RESULT))
    client(handler).solve("p", model="m")
    assert "authorization" not in seen[0].headers and "x-request-id" not in seen[0].headers
    assert json.loads(seen[0].content) == {"model": "m", "puzzle": "p"}


@pytest.mark.parametrize("kwargs", [{"task": "Sudoku"}, {"task": "sudoku", "halting": "Verifier"},
                                    {"task": "sudoku", "max_steps": True}, {"task": "sudoku", "max_steps": "16"},
                                    {"task": "sudoku", "options": {"cache": "no"}}])
def test_values_go_to_the_server_as_given_and_its_422_is_invalid_request(kwargs: dict[str, Any]) -> None:
    """The server validates strictly; the client neither converts a value (True to 1 step, "no" to False) nor
    raises pydantic's error in place of the server's typed one."""
    handler, seen = scripted(error(422, "invalid_option", "max_steps must be an integer", location="options.max_steps"))
    with pytest.raises(InvalidRequest):
        client(handler).solve("p", **kwargs)
    sent = json.loads(seen[0].content)
    given = {**kwargs.pop("options", {}), **{k: v for k, v in kwargs.items() if k != "task"}}
    assert sent["task"] == kwargs["task"] and sent.get("options", {}) == given


def test_batch_items_unwrap_to_results_or_typed_errors() -> None:
    body = {"results": [{"status": 200, "result": RESULT},
                        {"status": 422, "error": {"code": "wrong_size", "message": "80 cells"}}], "ok": 1, "failed": 1}
    handler, seen = scripted(httpx.Response(200, json=body))
    out = client(handler).solve_batch([{"task": "sudoku", "puzzle": "a"}, {"task": "sudoku", "puzzle": "b"}],
                                      options={"max_steps": 4})
    assert json.loads(seen[0].content)["options"] == {"max_steps": 4}
    assert out.results[0].unwrap().steps == 3 and not out.results[1].ok
    with pytest.raises(InvalidPuzzle, match="80 cells"):
        out.results[1].unwrap()


def test_a_batch_item_error_keeps_the_items_request_id() -> None:
    body = {"results": [{"status": 429, "error": {"code": "queue_full", "message": "full", "request_id": "b-1"}}],
            "ok": 0, "failed": 1}
    handler, _ = scripted(httpx.Response(200, json=body))
    out = client(handler).solve_batch([{"task": "sudoku", "puzzle": "a"}])
    with pytest.raises(Overloaded) as info:
        out.results[0].unwrap()
    assert info.value.request_id == "b-1"


def test_a_batch_item_turned_away_carries_its_retry_after() -> None:
    body = {"results": [{"status": 429, "retry_after_s": 3,
                         "error": {"code": "queue_full", "message": "queue full", "request_id": "b-0"}}],
            "ok": 0, "failed": 1}
    handler, _ = scripted(httpx.Response(200, json=body))
    out = client(handler).solve_batch([{"task": "sudoku", "puzzle": "p"}])
    with pytest.raises(Overloaded) as info:
        out.results[0].unwrap()
    assert info.value.retry_after == 3


def test_health_and_ready_never_raise_on_503() -> None:
    handler, _ = scripted(httpx.Response(200, json={"status": "ok"}),
                          httpx.Response(503, json={"status": "not_ready", "detail": "loading 2 models"}))
    rs = client(handler)
    assert rs.health().ok
    ready = rs.ready()
    assert not ready.ok and ready.detail == "loading 2 models"


def test_a_503_page_from_a_proxy_is_a_health_that_is_not_ok() -> None:
    """A load balancer in front answers 503 with HTML of its own: still Health(ok=False), as documented."""
    page = httpx.Response(503, text="<html><body>no healthy upstream</body></html>")
    handler, _ = scripted(page, page)
    rs = client(handler)
    for probe in (rs.health, rs.ready):
        health = probe()
        assert not health.ok and health.status == "unavailable" and "no healthy upstream" in (health.detail or "")


@pytest.mark.parametrize(("name", "path"), [("trm-mlp-sudoku?x=1", "/v1/models/trm-mlp-sudoku%3Fx%3D1"),
                                            ("../models", "/v1/models/..%2Fmodels"), ("a/b", "/v1/models/a%2Fb")])
def test_a_model_name_is_one_path_segment(name: str, path: str) -> None:
    """Not a query string, a parent folder or a second segment: the info of another resource never comes back."""
    handler, seen = scripted(error(404, "model_not_found"))
    with pytest.raises(ModelNotFound):
        client(handler).model(name)
    assert seen[0].url.raw_path.decode() == path


def test_an_empty_model_name_is_refused_before_any_request() -> None:
    handler, seen = scripted()
    with pytest.raises(ValueError, match="model name"):
        client(handler).model("")
    assert not seen


def test_request_id_on_the_read_calls_too() -> None:
    handler, seen = scripted(httpx.Response(200, json={"models": []}), httpx.Response(200, json={"status": "ok"}),
                             httpx.Response(200, json={"status": "ready"}))
    rs = client(handler)
    rs.models(request_id="r-1")
    rs.health(request_id="r-2")
    rs.ready(request_id="r-3")
    assert [r.headers["x-request-id"] for r in seen] == ["r-1", "r-2", "r-3"]


# ------------------------------------------------------------------------------------------------ SSE


def sse(*events: tuple[str, Any], sep: str = "\n") -> bytes:
    out = ": keep-alive" + sep + sep
    for kind, data in events:
        out += f"event: {kind}{sep}data: {json.dumps(data)}{sep}{sep}"
    return out.encode()


STEPS = [{"step": i, "answer": "1" * 81, "answer_text": "t", "confidence": 0.1 * i, "trajectory": 0,
          "active_rows": 1} for i in (1, 2)]


@pytest.mark.parametrize("sep", ["\n", "\r\n"])
def test_stream_yields_typed_steps_then_the_result(sep: str) -> None:
    handler, _ = scripted(httpx.Response(200, content=sse(*[("step", s) for s in STEPS], ("result", RESULT), sep=sep),
                                         headers={"content-type": "text/event-stream", "X-Request-ID": "r9"}))
    items = list(client(handler).stream("p", task="sudoku", max_steps=2))
    assert [type(i) for i in items] == [StepEvent, StepEvent, SolveResponse]
    assert [i.step for i in items[:2]] == [1, 2] and items[1].confidence == pytest.approx(0.2)
    assert items[2].answer == "1" * 81


def test_stream_error_event_raises_typed_with_the_request_id() -> None:
    handler, _ = scripted(httpx.Response(200, content=sse(("step", STEPS[0]), ("error", {"error": {
        "code": "engine_error", "message": "boom"}})), headers={"X-Request-ID": "r7"}))
    got: list[Any] = []
    with pytest.raises(ServerError) as info:
        got.extend(client(handler).stream("p", task="sudoku"))
    assert info.value.request_id == "r7" and info.value.code == "engine_error"


@pytest.mark.parametrize(("status", "code", "cls"), [(503, "engine_unavailable", Unavailable),
                                                     (413, "too_many_trajectories", TooLarge),
                                                     (429, "queue_full", Overloaded)])
def test_a_stream_error_event_raises_the_class_of_the_status_it_carries(status, code, cls) -> None:
    handler, _ = scripted(httpx.Response(200, content=sse(("error", {"status": status, "error": {
        "code": code, "message": "m"}}))))
    with pytest.raises(cls) as info:
        list(client(handler).stream("p", task="sudoku"))
    assert info.value.status == status


def test_a_stream_that_ends_or_breaks_before_its_result_raises_connection_failed() -> None:
    handler, _ = scripted(httpx.Response(200, content=sse(("step", STEPS[0]))))
    got: list[Any] = []
    with pytest.raises(ConnectionFailed) as info:
        got.extend(client(handler).stream("p", task="sudoku"))
    assert info.value.code == "stream_ended" and [type(i) for i in got] == [StepEvent]

    class Broken(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield sse(("step", STEPS[0]))
            raise httpx.ReadError("connection reset by peer")

    handler, _ = scripted(httpx.Response(200, stream=Broken()))
    with pytest.raises(ConnectionFailed, match="reset"):
        list(client(handler).stream("p", task="sudoku"))


def test_steps_carry_their_verdict_and_unknown_events_are_skipped() -> None:
    step = STEPS[0] | {"verified": True, "verification": [], "overwritten": []}
    handler, _ = scripted(httpx.Response(200, content=sse(("step", step)) + b"event: ping\ndata: not json\n\n"
                                         + sse(("result", RESULT))))
    items = list(client(handler).stream("p", task="sudoku"))
    assert items[0].verified is True and isinstance(items[-1], SolveResponse)


def test_stream_errors_before_the_stream_are_retried_then_raised() -> None:
    handler, seen = scripted(error(429, "queue_full", headers={"Retry-After": "1"}), error(422, "bad_character"))
    with pytest.raises(InvalidPuzzle):
        list(client(handler).stream("p", task="sudoku"))
    assert len(seen) == 2


async def test_async_stream() -> None:
    handler, _ = scripted(httpx.Response(200, content=sse(("step", STEPS[0]), ("result", RESULT))))
    async with AsyncClient("http://rs.test", transport=httpx.MockTransport(handler)) as rs:
        items = [i async for i in rs.stream("p", task="sudoku")]
    assert [type(i) for i in items] == [StepEvent, SolveResponse]


def test_sse_parser_follows_the_event_stream_rules() -> None:
    p = SSEParser()
    lines = ["event: step", "data: {\"a\":", "data: 1}", "", ": comment", "data:x", "", "id: 3", "", "event: end"]
    out = [ev for line in lines for ev in p.feed(line)] + list(p.close())
    assert out == [("step", "{\"a\":\n1}"), ("message", "x")]  # id-only and data-less events dispatch nothing


# ------------------------------------------------------------------------------------------ packaging


def test_importing_the_client_pulls_in_neither_torch_nor_the_server() -> None:
    root = Path(__file__).resolve().parents[1]
    code = (f"import sys; sys.path.insert(0, {str(root)!r}); import recursolve_client; "
            "bad = [m for m in ('torch', 'app', 'puzzles', 'numpy') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
