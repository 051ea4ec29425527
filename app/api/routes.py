"""HTTP routes. Thin: validate, hand over to the SolveService, render; errors go through `errors.classify`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.sse import EventSourceResponse
from pydantic import ValidationError

from app import metrics
from app.api.budgets import BudgetExceeded, batch_row_steps, check_batch_budget
from app.api.errors import ApiError, classify, count_error, from_validation
from app.api.idempotency import is_final
from app.api.redact import clip
from app.api.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorBody,
    HealthBody,
    SolveRequest,
    SolveResponse,
)
from app.api.service import ClientGone, Outcome, Prepared, SharedDisconnect, SolveService
from app.engine.protocol import StepUpdate, tokens_from_bytes
from app.gc_pauses import flush_pauses
from app.logs import current_request_id
from app.runtime import Runtime

ModelsView = Literal["full", "brief"]

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown model, or no model serves the task."},
    413: {"model": ErrorBody, "description": "Body over the size limit, too many batch items, or more "
                                              "trajectories than the model has batch rows."},
    422: {"model": ErrorBody, "description": "Bad puzzle (the codec's message and location) or bad options."},
    429: {"model": ErrorBody, "description": "Queue full; retry after the Retry-After header's seconds."},
    503: {"model": ErrorBody, "description": "Not ready yet (models loading) or draining for shutdown."},
}


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _service(request: Request, body: SolveRequest | None = None) -> SolveService:
    """The solve service when it may take work, else the 503 to answer, counted (with `body`'s labels)."""
    try:
        return ready_service(_runtime(request))
    except ApiError as err:
        count_error(err, *_labels(None, body))
        raise


def ready_service(rt: Runtime) -> SolveService:
    """The solve service when it may take work, else the 503 ApiError to answer (also used by app/api/mcp.py)."""
    if rt.service is None or not rt.ready:
        raise ApiError(503, "not_ready", rt.not_ready_reason(), headers={"Retry-After": "2"})
    if rt.service.draining:
        rt.last_turned_away = time.monotonic()
        raise ApiError(503, "draining", "the server is draining for shutdown; retry on another replica",
                       headers={"Retry-After": "1"})
    return rt.service


def _labels(service: SolveService | None, item: SolveRequest | None) -> tuple[str, str]:
    """Metric labels for a failed request: only served names, so a typo cannot mint new series."""
    if item is None or service is None:
        return "-", (item.task or "-") if item is not None else "-"
    if item.model is not None:
        model = item.model if item.model in service.models else "-"
    else:
        model = service.defaults.get(item.task or "", "-")
    return model, item.task or (service.models[model].task if model != "-" else "-")


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json", headers=headers)


async def run_solve(service: SolveService, item: SolveRequest, request_id: str, started: float | None = None,
                    is_disconnected: Any = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Solve one request body: (status, JSON body, headers). Every failure becomes a status + error body, counted
    once. The one entry point of the solve path for the REST routes and the MCP tools."""
    started = time.monotonic() if started is None else started
    try:
        prep = service.prepare(item.task, item.model, item.puzzle, item.options.model_dump(exclude_none=True),
                               started)
        outcome = await service.solve(prep, is_disconnected)
        return 200, service.render(prep, outcome, request_id), {}
    except Exception as exc:
        err = classify(exc)
        count_error(err, *_labels(service, item))
        return err.status, err.body(), err.headers


@router.post("/v1/solve", operation_id="solve", response_model=SolveResponse, responses=ERRORS,
             summary="Solve one puzzle", tags=["solve"])
async def solve(body: SolveRequest, request: Request) -> Response:
    """Solve a Sudoku, maze or ARC puzzle. Returns the answer in the form it was given, as text, whether it
    passes the exact verifier, the model's confidence, how many ACT steps ran and why it stopped."""
    started = time.monotonic()
    service = _service(request, body)
    rid = current_request_id()
    status, payload, headers = await run_solve(service, body, rid, started, request.is_disconnected)
    return _json(payload, status, {"X-Request-ID": rid, **headers})


@router.post("/v1/solve/batch", operation_id="solve_batch", response_model=BatchResponse, responses=ERRORS,
             summary="Solve many puzzles, each with its own status", tags=["solve"])
async def solve_batch(body: BatchRequest, request: Request) -> Response:
    """Every item is validated and solved on its own and gets its own status (200, 404, 413, 422, 429, 503);
    the batch itself answers 200. Items share the engine's batch rows with all other traffic."""
    started = time.monotonic()
    service = _service(request)
    limit = _runtime(request).settings.max_batch_items
    if len(body.items) > limit:
        err = ApiError(413, "too_many_items", f"{len(body.items)} items in one batch; the limit is {limit} "
                                              "(RECURSOLVE_MAX_BATCH_ITEMS): split the batch", "items")
        count_error(err)
        raise err
    shared = body.options.model_dump(exclude_none=True) if body.options is not None else {}
    try:  # the batch's items together, as each will resolve its options (413)
        check_batch_budget(batch_row_steps(service, body.items, shared), _runtime(request).settings.batch_row_steps_cap)
    except BudgetExceeded as exc:
        count_error(err := classify(exc))
        raise err from None
    rid = current_request_id()
    gone = SharedDisconnect(request.is_disconnected)  # one probe of the connection for all the items

    async def one(i: int, raw: dict[str, Any]) -> dict[str, Any]:
        try:
            item = SolveRequest.model_validate(raw)
        except ValidationError as exc:
            err = from_validation(exc.errors(include_url=False), ("items", i))
            count_error(err)
            return {"status": err.status, "error": err.body()["error"] | {"request_id": f"{rid}-{i}"}}
        if shared:
            item = item.model_copy(update={"options": item.options.model_copy(
                update={k: v for k, v in shared.items() if getattr(item.options, k) is None})})
        status, payload, headers = await run_solve(service, item, f"{rid}-{i}", started, gone)
        if status == 200:
            return {"status": status, "result": payload}
        retry = (headers or {}).get("Retry-After")  # what the header says on its own (429, 503), machine-readable
        return {"status": status, **payload} | ({"retry_after_s": int(retry)} if retry and retry.isdigit() else {})

    results = await asyncio.gather(*(one(i, raw) for i, raw in enumerate(body.items)))
    ok = sum(1 for r in results if r["status"] == 200)
    headers = {"X-Request-ID": rid}
    if not all(is_final(r["status"]) for r in results):  # a retry would redo those items: not an answer to keep
        headers["Cache-Control"] = "no-store"
    return _json({"results": results, "ok": ok, "failed": len(results) - ok}, headers=headers)


@router.post("/v1/solve/stream", operation_id="solve_stream", responses={
    **ERRORS, 200: {"description": "Server-sent events: `step` after every ACT step ({step, answer, answer_text, "
                                   "verified, verification, overwritten, confidence, trajectory, active_rows}), "
                                   "then one `result` (a SolveResponse) or one `error` ({status, error}: the "
                                   "status it would have had as a response).",
                    "content": {"text/event-stream": {}}}},
             summary="Solve one puzzle, streaming every ACT step (SSE)", tags=["solve"])
async def solve_stream(body: SolveRequest, request: Request) -> Response:
    started = time.monotonic()
    rid = current_request_id()
    service = None
    try:  # every error before the stream, the 503 of a server not ready included, is counted below
        service = ready_service(_runtime(request))
        prep = service.prepare(body.task, body.model, body.puzzle, body.options.model_dump(exclude_none=True),
                               started)
        events = await service.stream(prep)
    except Exception as exc:  # before the stream starts: a normal JSON error
        err = classify(exc)
        count_error(err, *_labels(service, body))
        return err.response()
    return EventSourceResponse(_sse(service, prep, events, rid), headers={"X-Request-ID": rid,
                                                                          "Cache-Control": "no-cache"})


def _sse_event(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n\n"


async def _sse(service: SolveService, prep: Prepared, events: AsyncIterator[StepUpdate | Outcome | None],
               rid: str) -> AsyncIterator[bytes]:
    answered = False
    try:
        async for ev in events:
            if ev is None:
                yield b": keep-alive\n\n"
            elif isinstance(ev, StepUpdate):
                yield _sse_event("step", {"step": ev.step, **service.answer_fields(prep, tokens_from_bytes(ev.tokens)),
                                          "confidence": ev.confidence, "trajectory": ev.trajectory,
                                          "active_rows": ev.active_rows})
            else:
                answered = True  # render counts it
                yield _sse_event("result", service.render(prep, ev, rid))
    except (asyncio.CancelledError, GeneratorExit):
        # Starlette cancels the stream when the client disconnects (inside this generator while it waits for a
        # step), or closes the generator later (when it was blocked in send): counted as a /v1/solve whose client
        # left is. (A server shutdown that cuts streams past its grace period is counted so too.)
        if not answered:
            count_error(classify(ClientGone()), prep.model.name, prep.task)
        raise
    except Exception as exc:  # after the headers went out: report in-band
        err = classify(exc)
        count_error(err, prep.model.name, prep.task)
        yield _sse_event("error", {"status": err.status, **err.body()})  # the status it would have had, as batch items
    finally:
        await events.aclose()


async def models_body(runtime: Runtime, view: ModelsView = "full") -> dict[str, Any]:
    """The /v1/models body: every served model with its card and the engine's live state (`full`), or with what
    one picks a model by (`brief`: name, task, default, architecture, size, version, accuracy)."""
    s = runtime.service
    if s is None:
        return {"models": [], "defaults": {}, "ready": False}
    if view == "brief":
        models = [m.summary(default=s.defaults.get(m.task) == m.name) for m in s.models.values()]
    else:
        stats = await s.engine.stats()
        models = [m.describe(default=s.defaults.get(m.task) == m.name, engine=stats.get(m.name))
                  for m in s.models.values()]
    return {"models": models, "defaults": s.defaults, "ready": runtime.ready}


_VIEW_DOC = ("full: each model's card, config, backend and live engine state (for operators); brief: name, task, "
             "default_for_task, architecture, parameters, version and accuracy figures, a few hundred bytes a model "
             "(what the list_models tool returns to an LLM).")


@router.get("/v1/models", operation_id="list_models", summary="Served models", tags=["models"])
async def list_models(request: Request,
                      view: Annotated[ModelsView, Query(description=_VIEW_DOC)] = "full") -> JSONResponse:
    return JSONResponse(await models_body(_runtime(request), view))


@router.get("/v1/models/{name}", operation_id="get_model", summary="One served model",
            responses={404: ERRORS[404], 503: ERRORS[503]}, tags=["models"])
async def get_model(name: str, request: Request) -> JSONResponse:
    """Task, architecture, parameters, dtype, device, backend, version hash, the card's measured accuracy and
    the live engine state (batch rows, running rows, queued rows). 503 while the engine has not said which
    models it serves (start-up): whether this one is among them is not known yet."""
    rt = _runtime(request)
    s = rt.service
    if s is None:
        raise ApiError(503, "not_ready", rt.not_ready_reason(), headers={"Retry-After": "2"})
    model = s.models.get(name)
    if model is None:
        raise ApiError(404, "model_not_found", f"unknown model {clip(name)!r}; served models: "
                       f"{', '.join(sorted(s.models))}", "name")
    stats = await s.engine.stats()
    return JSONResponse(model.describe(default=s.defaults.get(model.task) == model.name, engine=stats.get(name)))


@router.get("/healthz", operation_id="healthz", response_model=HealthBody, tags=["health"],
            summary="Liveness: the process is up (503 only if loading the models failed)")
@router.get("/v2/health/live", operation_id="v2_health_live", response_model=HealthBody, tags=["health"],
            summary="KServe / Open Inference Protocol v2 liveness alias")
async def healthz(request: Request) -> JSONResponse:
    rt = _runtime(request)
    if rt.load_error is not None:
        return JSONResponse({"status": "failed", "detail": rt.load_error}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/readyz", operation_id="readyz", response_model=HealthBody, tags=["health"],
            responses={503: {"model": HealthBody}},
            summary="Readiness: models loaded and warmed, not draining (never depends on Redis)")
@router.get("/v2/health/ready", operation_id="v2_health_ready", response_model=HealthBody, tags=["health"],
            responses={503: {"model": HealthBody}}, summary="KServe / Open Inference Protocol v2 readiness alias")
async def readyz(request: Request) -> JSONResponse:
    rt = _runtime(request)
    if rt.accepting and rt.service is not None:
        return JSONResponse({"status": "ready", "models": {m.name: m.version for m in rt.service.models.values()}})
    return JSONResponse({"status": "not_ready", "detail": rt.not_ready_reason()}, status_code=503)


@router.get("/v2/models/{name}/ready", operation_id="v2_model_ready", response_model=HealthBody, tags=["health"],
            responses={404: ERRORS[404], 503: {"model": HealthBody}},
            summary="KServe / Open Inference Protocol v2 per-model readiness")
async def model_ready(name: str, request: Request) -> JSONResponse:
    rt = _runtime(request)
    if rt.service is not None and name not in rt.service.models:
        raise ApiError(404, "model_not_found", f"unknown model {clip(name)!r}; served models: "
                       f"{', '.join(sorted(rt.service.models))}", "name")
    if rt.accepting and rt.service is not None:
        return JSONResponse({"status": "ready", "models": {name: rt.service.models[name].version}})
    return JSONResponse({"status": "not_ready", "detail": rt.not_ready_reason()}, status_code=503)


@router.get("/metrics", operation_id="metrics", tags=["health"], summary="Prometheus metrics",
            response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def prometheus_metrics(request: Request) -> Response:
    rt = _runtime(request)
    # Set at scrape time too (each API process also sets it every second), so it follows /readyz exactly (the
    # RecursolveNotReady alert uses it).
    metrics.READY.set(float(rt.accepting))
    flush_pauses()  # this process's GC passes up to now (the others flush every second)
    data, content_type = metrics.render_metrics()
    return Response(data, media_type=content_type)
