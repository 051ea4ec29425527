"""One error shape for every failure: {"error": {"code", "message", "location"?, "details"?}}.

Bad input is always a 4xx that says what to fix; a deadline is never an error (the engine
returns the best answer so far), so there is no 504.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import metrics
from app.api.budgets import BudgetExceeded
from app.api.redact import clip
from app.api.service import ClientGone, InvalidRequest, ModelNotFound
from app.engine.client import EngineRejected, EngineUnavailable
from app.engine.protocol import DRAINING, ENGINE_ERROR, QUEUE_FULL, TOO_MANY_ROWS, UNKNOWN_MODEL
from app.logs import request_id_var
from puzzles import PuzzleError

log = logging.getLogger(__name__)

# HTTP status -> the `status` label of recursolve_requests_total.
STATUS_LABEL = {400: "invalid", 401: "unauthorized", 404: "not_found", 408: "timeout", 409: "conflict",
                413: "too_large", 415: "invalid", 422: "invalid", 429: "overloaded", 499: "client_closed",
                501: "invalid", 503: "unavailable"}


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    location: str | None = None
    details: list[dict[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    accepted_forms: tuple[str, ...] = ()  # a bad puzzle: every form the task takes, one example each

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.location is not None:
            err["location"] = self.location
        if self.details:
            err["details"] = self.details
        if (rid := request_id_var.get()) is not None:
            err["request_id"] = rid
        if self.accepted_forms:
            err["accepted_forms"] = list(self.accepted_forms)
        return {"error": err}

    def response(self) -> JSONResponse:
        # The header too: a 500 is rendered by Starlette's ServerErrorMiddleware, outside RequestIdMiddleware.
        rid = request_id_var.get()
        headers = {"X-Request-ID": rid, **self.headers} if rid is not None else self.headers
        return JSONResponse(self.body(), status_code=self.status, headers=headers or None)

    @property
    def status_label(self) -> str:
        return STATUS_LABEL.get(self.status, "error")


def _loc(parts: tuple[Any, ...] | list[Any]) -> str:
    """("body", "options", "max_steps") -> "options.max_steps"; list indices as [i]."""
    out = ""
    for p in parts:
        if p == "body" and not out:
            continue
        p = p if isinstance(p, int) else clip(str(p))  # a client-chosen field name is echoed here
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "body"


def from_validation(errors: list[dict[str, Any]], prefix: tuple[Any, ...] = ()) -> ApiError:
    """Pydantic errors -> 422 in our shape; the first error is the headline, all are in details."""
    details = []
    for e in errors:
        loc = _loc((*prefix, *e.get("loc", ())))
        kind = e.get("type", "")
        if kind == "extra_forbidden":
            msg = f"unknown field {loc.rsplit('.', 1)[-1]!r}; check the spelling (see the OpenAPI schema at /docs)"
        elif kind == "json_invalid":
            msg = f"request body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}"
        elif kind == "missing":
            msg = f"missing required field {loc!r}"
        else:
            msg = f"{loc}: {e.get('msg', 'invalid value')}"
            if "input" in e and kind not in ("model_attributes_type",) and not isinstance(e["input"], dict | list):
                msg += f" (got {clip(repr(e['input']))})"
        details.append({"location": loc, "message": msg})
    code = "invalid_json" if any(e.get("type") == "json_invalid" for e in errors) else "invalid_request"
    if errors and _loc(errors[0].get("loc", ())).startswith("options"):  # the item's own place, before `prefix`
        code = "invalid_option"
    first = details[0] if details else {"location": None, "message": "invalid request"}
    return ApiError(422, code, first["message"], first["location"], details if len(details) > 1 else None)


def classify(exc: BaseException) -> ApiError:
    """Any exception from the solve path -> an ApiError (unexpected ones become a 500 with a safe message)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PuzzleError):
        return ApiError(422, exc.code, exc.message, exc.location, accepted_forms=exc.accepted)
    if isinstance(exc, BudgetExceeded):
        return ApiError(exc.status, exc.code, exc.message, exc.location)
    if isinstance(exc, InvalidRequest):
        return ApiError(422, exc.code, exc.message, exc.location)
    if isinstance(exc, ModelNotFound):
        return ApiError(404, exc.code, exc.message, exc.location)
    if isinstance(exc, ClientGone):  # nobody reads this answer; it is counted (client_closed) and logged
        return ApiError(499, "client_closed", "the client disconnected")
    if isinstance(exc, ValidationError):
        return from_validation(exc.errors(include_url=False))
    if isinstance(exc, EngineRejected):
        return _rejected(exc)
    if isinstance(exc, EngineUnavailable):
        return ApiError(503, "engine_unavailable", str(exc), headers={"Retry-After": "2"})
    log.exception("unexpected error on the solve path", exc_info=exc)
    return ApiError(500, "internal_error", f"internal error ({type(exc).__name__}); this is a server bug")


def _rejected(exc: EngineRejected) -> ApiError:
    if exc.code == TOO_MANY_ROWS:
        return ApiError(413, "too_many_trajectories", exc.message, "options.trajectories")
    if exc.code == QUEUE_FULL:
        return ApiError(429, "queue_full", f"{exc.message}: the server is at capacity", None,
                        headers={"Retry-After": str(exc.retry_after_s)})
    if exc.code == DRAINING:
        return ApiError(503, "draining", exc.message, headers={"Retry-After": "1"})
    if exc.code == UNKNOWN_MODEL:
        return ApiError(404, "model_not_found", exc.message, "model")
    assert exc.code == ENGINE_ERROR, exc.code
    return ApiError(500, "engine_error", exc.message)


def is_json_media_type(content_type: str) -> bool:
    """application/json or application/<anything>+json, parameters (charset) allowed, case-insensitive."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def count_error(err: ApiError, model: str = "-", task: str = "-") -> None:
    metrics.REQUESTS.labels(model=model, task=task, status=err.status_label).inc()


def _unreadable_body(cause: BaseException | None) -> str:
    """Why FastAPI could not read a JSON body (it says only "There was an error parsing the body"): JSON that
    does not parse is a 422 before this; these are the bodies that parse into something Python will not hold."""
    if isinstance(cause, RecursionError):
        return "the request body's JSON is nested too deeply to read (keep it to a few hundred levels)"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "the request body's JSON has an integer too long to read (over 4,300 digits)"
    return "the request body could not be read: send JSON text encoded as UTF-8"


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = from_validation(list(exc.errors()))
        content_type = request.headers.get("content-type", "")
        if err.location == "body" and content_type and not is_json_media_type(content_type):
            # The classic `curl -d '{...}'`: the body was sent as a form, not as JSON.
            err.message = (f"the request body must be a JSON object sent with 'Content-Type: application/json' "
                           f"(got {content_type!r})")
            err.code = "unsupported_media_type"
        count_error(err)
        return err.response()

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
                 415: "unsupported_media_type"}
        message = str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's wording
            message = _unreadable_body(exc.__cause__)
        if exc.status_code == 405 and "Allow" in headers:
            headers["Allow"] = allowed = _with_head(headers["Allow"])
            message = f"{request.method} is not allowed on {clip(request.url.path)}; use {allowed}"
        err = ApiError(exc.status_code, codes.get(exc.status_code, "http_error"), message,
                       "body" if exc.status_code == 400 else None, headers=headers)
        if exc.status_code == 400:  # a bad body, counted like the other bad-input answers
            count_error(err)
        return err.response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        err = classify(exc)
        count_error(err)
        return err.response()


def _with_head(allow: str) -> str:
    """A 405's Allow header with HEAD beside GET: every GET path answers HEAD (app/api/guards.py)."""
    methods = [m.strip() for m in allow.split(",") if m.strip()]
    if "GET" in methods and "HEAD" not in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")
    return ", ".join(methods)
