"""Typed errors: one class per HTTP status family, carrying the server's code, message and location.

    RecursolveError
    ├── ConnectionFailed         no HTTP answer at all (DNS, refused, timeout)
    ├── InvalidRequest    422    bad options or body        (code: invalid_option, invalid_request, ...)
    │   └── InvalidPuzzle 422    the puzzle cannot be read  (code: bad_character, wrong_size, ...)
    ├── NotFound          404
    │   └── ModelNotFound 404    unknown model, or no model serves the task
    ├── TooLarge          413
    ├── Overloaded        429    queue full (retried first; see Client(max_retries=...))
    ├── Unavailable       503    not ready or draining (retried first)
    └── ServerError       5xx
"""

from __future__ import annotations

from typing import Any

# 422 codes about the request rather than the puzzle itself (every other 422 code is a puzzle problem).
REQUEST_CODES = frozenset({"invalid_request", "invalid_option", "invalid_json", "unsupported_media_type",
                           "missing_task", "unknown_task", "model_task_mismatch", "over_budget",
                           "idempotency_key_reused"})
MODEL_CODES = frozenset({"model_not_found", "no_model_for_task"})


class RecursolveError(Exception):
    """Any failure; ``status`` is None when no HTTP answer came back."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error", location: str | None = None,
                 request_id: str | None = None, details: list[dict[str, Any]] | None = None,
                 accepted_forms: list[str] | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.location = location
        self.request_id = request_id
        self.details = details or []
        self.accepted_forms = accepted_forms or []
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (at {self.location})" if self.location else ""
        head = f"{self.status} {self.code}" if self.status is not None else self.code
        return f"{head}: {self.message}{where}"

    def describe(self) -> str:
        """The message with every accepted puzzle form: what an LLM needs to repair its tool call."""
        if not self.accepted_forms:
            return str(self)
        return str(self) + "\nAccepted forms:\n" + "\n".join(f"- {f}" for f in self.accepted_forms)


class ConnectionFailed(RecursolveError):
    pass


class InvalidRequest(RecursolveError):
    pass


class InvalidPuzzle(InvalidRequest):
    pass


class NotFound(RecursolveError):
    pass


class ModelNotFound(NotFound):
    pass


class TooLarge(RecursolveError):
    pass


class Overloaded(RecursolveError):
    pass


class Unavailable(RecursolveError):
    pass


class ServerError(RecursolveError):
    pass


def _class_for(status: int, code: str) -> type[RecursolveError]:
    if status == 422:
        return InvalidRequest if code in REQUEST_CODES else InvalidPuzzle
    if status == 404:
        return ModelNotFound if code in MODEL_CODES else NotFound
    if status == 413:
        return TooLarge
    if status == 429:
        return Overloaded
    if status == 503:
        return Unavailable
    if status >= 500:
        return ServerError
    return RecursolveError


def error_for(status: int, error: dict[str, Any], request_id: str | None,
              retry_after: float | None = None) -> RecursolveError:
    """The typed error for one ``{"code", "message", "location"?, ...}`` object from the server."""
    code = str(error.get("code") or f"http_{status}")
    return _class_for(status, code)(
        str(error.get("message") or f"HTTP {status}"), status=status, code=code, location=error.get("location"),
        request_id=request_id, details=error.get("details"), accepted_forms=error.get("accepted_forms"),
        retry_after=retry_after)
