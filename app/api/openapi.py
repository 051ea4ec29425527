"""The OpenAPI document says every error the API can answer, in the one error body.

FastAPI documents only the responses a route declares (plus its own 422 shape, which is not ours). The
guards answer before any route runs (400 body that does not parse, 401, 408, 413, 415, 503 in-flight limit),
so this adds them to every operation they apply to, points every 4xx/5xx at ErrorBody, documents the
Retry-After header, the Idempotency-Key header and, when API keys are configured, the bearer scheme.
Done on the generated document, so it holds whatever routes exist (the route modules need not know).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.api.auth import PROTECTED_PREFIXES
from app.api.schemas import ErrorBody

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}

# Status -> (description, with Retry-After).
BODY_ERRORS: dict[str, tuple[str, bool]] = {
    "400": ("The body could not be read as JSON text (e.g. not UTF-8), or a bad Idempotency-Key header.", False),
    "408": ("The body did not arrive within RECURSOLVE_BODY_TIMEOUT_S of the headers.", False),
    "409": ("A request with the same Idempotency-Key is still running.", True),
    "413": ("Body over the size limit, too many batch items, a batch over its row-step budget, or more "
            "trajectories than the model has batch rows.", False),
    "415": ("The body was not sent as 'Content-Type: application/json'.", False),
    "422": ("Bad puzzle (the codec's message and location), bad or over-budget options, a wrong JSON type "
            "(strict: true is not a number, \"10\" is not 10), or an Idempotency-Key reused for another body.",
            False),
    "429": ("The queue is full, or too many request bytes are in flight; retry after the Retry-After header's "
            "seconds.", True),
}
ANY_ERRORS: dict[str, tuple[str, bool]] = {
    "503": ("Not ready yet (models loading), draining for shutdown, or over the in-flight request limit "
            "(RECURSOLVE_MAX_INFLIGHT_REQUESTS).", True),
}
AUTH_ERROR = ("Missing or invalid API key (only when the server has RECURSOLVE_API_KEYS).", False)
IDEMPOTENT_PATHS = ("/v1/solve", "/v1/solve/batch")
IDEMPOTENCY_PARAM = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    "description": "Retrying with the same key and body returns the first answer (header Idempotent-Replayed: "
                   "true); the same key with another body is a 422. Kept for RECURSOLVE_IDEMPOTENCY_TTL_SECONDS.",
}


def _response(description: str, retry_after: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}
    if retry_after:
        out["headers"] = RETRY_AFTER
    return out


def patch_schema(schema: dict[str, Any], auth: bool, auth_metrics: bool = False) -> dict[str, Any]:
    """Add the guard errors, Retry-After, Idempotency-Key and (with `auth`) the bearer scheme, in place; the
    paths that need a key are the ones ApiKeyMiddleware guards (/metrics too with `auth_metrics`)."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    if "ErrorBody" not in schemas:
        for name, sub in ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs",
                                                                                                      {}).items():
            schemas.setdefault(name, sub)
        schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    if auth:
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer", "description": "One of the keys in RECURSOLVE_API_KEYS."}
    keyed = PROTECTED_PREFIXES + (("/metrics",) if auth_metrics else ())
    for path, item in schema.get("paths", {}).items():
        protected = path.startswith(PROTECTED_PREFIXES)  # behind the guards (limits, 429/503)
        needs_key = auth and path.startswith(keyed)
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            wanted = dict(ANY_ERRORS) if protected else {}
            if method in ("post", "put", "patch"):
                wanted |= BODY_ERRORS
            if needs_key:
                wanted["401"] = AUTH_ERROR
                op["security"] = [{"bearer": []}]
            if protected and any(code.startswith("4") for code in responses):
                wanted.setdefault("422", BODY_ERRORS["422"])  # a bad path parameter is a 422 too
            for code, (description, retry_after) in wanted.items():
                if code not in responses:
                    responses[code] = _response(description, retry_after)
            for code, response in responses.items():  # FastAPI's own 422 shape is not what we send
                if code[0] in "45" and "HTTPValidationError" in str(response.get("content", "")):
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
                if code in ("409", "429", "503") and "content" in response and response["content"].get(
                        "application/json", {}).get("schema") == ERROR_REF:
                    response.setdefault("headers", RETRY_AFTER)
            if method == "post" and path in IDEMPOTENT_PATHS:
                params = op.setdefault("parameters", [])
                if not any(p.get("name") == IDEMPOTENCY_PARAM["name"] for p in params):
                    params.append(IDEMPOTENCY_PARAM)
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in schemas and f"#/components/schemas/{unused}" not in str(schema.get("paths")):
            del schemas[unused]
    return schema


def install(app: FastAPI, auth: bool, auth_metrics: bool = False) -> None:
    """Replace app.openapi with the generated document patched once by `patch_schema`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = patch_schema(generate(), auth, auth_metrics)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
