"""What the sync and async clients share: request bodies, headers, error mapping, the retry rule, SSE parsing.

No I/O here, so both clients behave the same by construction.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from recursolve_client.errors import ConnectionFailed, RecursolveError, error_for
from recursolve_client.models import Health, SolveOptions, SolveRequest, SolveResponse, StepEvent

RETRY_STATUSES = frozenset({429, 503})
USER_AGENT = "recursolve-client/0.1"


@dataclass(frozen=True)
class RetryPolicy:
    """Retry 429 and 503 up to ``max_retries`` times, waiting what ``Retry-After`` asks (else an exponential
    backoff from ``backoff_s``), but never longer than ``max_wait_s`` per wait: a server that asks for more
    gets the error raised at once (with ``retry_after`` set) rather than being hammered early."""

    max_retries: int = 3
    max_wait_s: float = 30.0
    backoff_s: float = 0.5

    def wait(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to sleep before retry ``attempt`` (0-based), or None to give up and raise."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        asked = retry_after(response)
        if asked is None:
            return min(self.backoff_s * 2**attempt, self.max_wait_s)
        return asked if asked <= self.max_wait_s else None


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class Settings:
    base_url: str
    api_key: str | None = None
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    headers: Mapping[str, str] = field(default_factory=dict)

    def client_headers(self) -> dict[str, str]:
        out = {"User-Agent": USER_AGENT, "Accept": "application/json", **self.headers}
        if self.api_key:
            out["Authorization"] = f"Bearer {self.api_key}"
        return out


def request_headers(request_id: str | None) -> dict[str, str]:
    return {"X-Request-ID": request_id} if request_id else {}


def solve_body(puzzle: Any, task: str | None, model: str | None, options: SolveOptions | Mapping[str, Any] | None,
               extra: Mapping[str, Any]) -> dict[str, Any]:
    """The /v1/solve body; options may come as a SolveOptions, a dict, keyword arguments, or a mix.

    Values go to the server as given: it validates strictly (``max_steps=True`` or ``"16"``, ``task="Sudoku"``
    is a 422 naming the field, raised as InvalidRequest), where validating here first would convert them
    (True to 1 step, "no" to False) or raise pydantic's own error instead of a RecursolveError."""
    if task is None and model is None:
        raise ValueError("give task= (sudoku, maze, arc) or model= (a served model name)")
    merged = {**(options.model_dump(exclude_none=True) if isinstance(options, SolveOptions) else dict(options or {})),
              **extra}
    body = {key: value for key, value in (("task", task), ("model", model)) if value is not None}
    body["puzzle"] = puzzle  # None too: the server must say it is missing
    if merged:
        body["options"] = merged
    return body


def batch_item(item: Any) -> dict[str, Any]:
    if isinstance(item, SolveRequest):
        return item.body()
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"batch items must be SolveRequest objects or dicts, got {type(item).__name__}")


def raise_for_error(response: httpx.Response) -> None:
    """Map a non-2xx response to its typed error (the body is read already)."""
    if response.is_success:
        return
    rid = response.headers.get("x-request-id")
    payload = _json_body(response)
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):  # not our error shape (a proxy's HTML page, say)
        error = {"code": f"http_{response.status_code}", "message": _text_snippet(response)}
    raise error_for(response.status_code, error, rid, retry_after(response))


def _json_body(response: httpx.Response) -> Any:
    """The body as JSON, None when it is not JSON (a proxy's page)."""
    try:
        return response.json()
    except ValueError:
        return None


def _text_snippet(response: httpx.Response) -> str:
    return response.text.strip()[:200] or response.reason_phrase


def model_path(name: str) -> str:
    """/v1/models/<name>, the name one path segment whatever it holds (``?``, ``/``, ``..``)."""
    if not name:
        raise ValueError("give a model name (GET /v1/models lists them)")
    return f"/v1/models/{quote(name, safe='')}"


def health(response: httpx.Response) -> Health:
    """/healthz or /readyz: a 503 is a Health that is not ok, also when a proxy in front answered it with a page
    of its own; any other failure raises its typed error."""
    if response.status_code != 503:
        raise_for_error(response)
    payload = _json_body(response)
    if isinstance(payload, dict) and isinstance(payload.get("status"), str):
        return Health.model_validate(payload)
    return Health(status="unavailable", detail=_text_snippet(response))


def connection_failed(exc: httpx.TransportError) -> RecursolveError:
    return ConnectionFailed(f"{type(exc).__name__}: {exc}", code="connection_failed")


class SSEParser:
    """Incremental ``text/event-stream`` parser (WHATWG rules: ``event``/``data`` fields, ``:`` comments,
    a blank line dispatches). Feed it lines; it yields (event, data) pairs."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> Iterator[tuple[str, str]]:
        line = line.rstrip("\r\n")
        if not line:
            if self._data:
                yield self._event or "message", "\n".join(self._data)
            self._event, self._data = "", []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)

    def close(self) -> Iterator[tuple[str, str]]:
        yield from self.feed("")


class StreamItems:
    """The typed items of one ``/v1/solve/stream`` response, fed its lines as they come; ``close`` raises
    ``stream_ended`` when the stream ended before its ``result`` (an ``error`` event raises as it comes)."""

    def __init__(self, request_id: str | None) -> None:
        self.request_id = request_id
        self._parser = SSEParser()
        self._answered = False

    def feed(self, line: str) -> Iterator[StepEvent | SolveResponse]:
        yield from self._typed(self._parser.feed(line))

    def close(self) -> Iterator[StepEvent | SolveResponse]:
        yield from self._typed(self._parser.close())
        if not self._answered:
            raise stream_ended(self.request_id)

    def _typed(self, events: Iterable[tuple[str, str]]) -> Iterator[StepEvent | SolveResponse]:
        for event, data in events:
            item = stream_item(event, data, self.request_id)
            if item is not None:
                self._answered = self._answered or isinstance(item, SolveResponse)
                yield item


def stream_item(event: str, data: str, request_id: str | None) -> StepEvent | SolveResponse | None:
    """One SSE event -> a typed object; an ``error`` event raises its typed error; others are skipped."""
    if event not in ("step", "result", "error"):
        return None
    body = json.loads(data)
    if event == "step":
        return StepEvent.model_validate(body)
    if event == "result":
        return SolveResponse.model_validate(body)
    error = body.get("error", body) if isinstance(body, dict) else {"message": str(body)}
    # The server says the status the error would have had as a response ({"status", "error"}, as batch items).
    status = body.get("status") if isinstance(body, dict) and isinstance(body.get("status"), int) else 500
    raise error_for(status, error, request_id)


def stream_ended(request_id: str | None) -> RecursolveError:
    """The error for a stream that closed before its ``result`` (or ``error``) event."""
    return ConnectionFailed("the stream ended before its result: the connection closed mid-answer",
                            code="stream_ended", request_id=request_id)
