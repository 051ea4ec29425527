"""`Idempotency-Key` on POST /v1/solve and /v1/solve/batch (draft-ietf-httpapi-idempotency-key-header).

A request with the header is answered once; a retry with the same key and the same body gets the first
answer again (with `Idempotent-Replayed: true`), from the result cache (memory or Redis, so any replica
sharing Redis can replay it) for RECURSOLVE_IDEMPOTENCY_TTL_SECONDS. As the draft says:
- the same key with a different body: 422 `idempotency_key_reused` (the key names another request);
- the same key while its first request is still running here: 409 `idempotency_key_in_use` + Retry-After.
Bodies are compared as canonical JSON (key order and whitespace do not matter). Keys are scoped to the path
and to the API key that sent them, so two clients cannot read each other's answers by guessing keys.
Only final answers are kept: 200 and the 4xx that a retry would get again; never 408, 409, 429, 499 (the client
left) nor any 5xx (a retry should really retry those), nor a response marked `Cache-Control: no-store` (a batch
with such an item, see `is_final`). The SSE stream is not covered: its answer is a stream, not a body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import bearer_token
from app.api.errors import ApiError, count_error
from app.api.guards import route_path
from app.api.limits import read_body, replay_body
from app.cache import ResultCache

HEADER = b"idempotency-key"
PATHS = frozenset({"/v1/solve", "/v1/solve/batch"})
KEY_PREFIX = "recursolve:idempotency:"
MAX_KEY_CHARS = 255
MAX_STORED_BYTES = 4_000_000  # a bigger answer is sent but not kept (a retry then recomputes it)
NOT_STORED = frozenset({408, 409, 429, 499})
# What a replay carries of the first answer's headers. Not X-Request-ID: RequestIdMiddleware, outside this one,
# gives every response the id of the request it answers, the replay included.
KEPT_HEADERS = (b"content-type",)


def is_final(status: int) -> bool:
    """Whether a retry would get this status again, so an answer with it may be replayed."""
    return status < 500 and status not in NOT_STORED


def body_fingerprint(body: bytes) -> str:
    """sha256 of the body as canonical JSON (sorted keys, no whitespace), or of the raw bytes if it is not JSON."""
    try:
        material = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        material = body
    return hashlib.sha256(material).hexdigest()


def storage_key(idempotency_key: str, path: str, api_key: str | None) -> str:
    scope = orjson.dumps([api_key or "", path, idempotency_key])
    return KEY_PREFIX + hashlib.sha256(scope).hexdigest()


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_CHARS and all(" " <= ch <= "~" for ch in key)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, get_cache: Callable[[], ResultCache | None], ttl_seconds: int) -> None:
        self.app = app
        self.get_cache = get_cache  # the runtime's cache, which exists only once the lifespan started
        self.ttl_seconds = ttl_seconds
        self._running: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_key = None
        if scope["type"] == "http" and scope["method"] == "POST" and route_path(scope) in PATHS:
            raw_key = next((v for k, v in scope.get("headers", ()) if k == HEADER), None)
        cache = self.get_cache()
        if raw_key is None or cache is None:
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not valid_key(key):
            await self._error(scope, receive, send, ApiError(
                400, "invalid_idempotency_key", f"Idempotency-Key must be 1-{MAX_KEY_CHARS} printable ASCII "
                "characters (a UUID is a good choice)", "header Idempotency-Key"))
            return
        body = await read_body(receive)
        if body is None:  # the client went away
            return
        fingerprint = body_fingerprint(body)
        stored_at = storage_key(key, route_path(scope), bearer_token(scope.get("headers", ())))
        if stored_at in self._running:
            await self._error(scope, receive, send, ApiError(
                409, "idempotency_key_in_use", "a request with this Idempotency-Key is still running; retry after "
                "the Retry-After header's seconds to get its answer", "header Idempotency-Key",
                headers={"Retry-After": "1"}))
            return
        self._running.add(stored_at)  # before the first await: a concurrent duplicate sees it (409)
        try:
            raw = await cache.get(stored_at)
            record = _load(raw) if raw is not None else None
            if record is None:
                await self._run_and_store(scope, replay_body(body, receive), send, cache, stored_at, fingerprint)
            elif record["fingerprint"] != fingerprint:
                await self._error(scope, receive, send, ApiError(
                    422, "idempotency_key_reused", "this Idempotency-Key was used for a different request body; "
                    "use a new key for a new request", "header Idempotency-Key"))
            else:
                headers = {**record["headers"], "Idempotent-Replayed": "true"}
                await Response(bytes.fromhex(record["body"]), record["status"], headers)(scope, receive, send)
        finally:
            self._running.discard(stored_at)

    async def _run_and_store(self, scope: Scope, receive: Receive, send: Send, cache: ResultCache, stored_at: str,
                             fingerprint: str) -> None:
        status = 0
        headers: dict[str, str] = {}
        chunks: list[bytes] = []
        size = 0
        complete = no_store = False

        async def capture(message: Message) -> None:
            nonlocal status, size, complete, no_store
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.update({k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", ())
                                if k.lower() in KEPT_HEADERS})
                no_store = any(k.lower() == b"cache-control" and b"no-store" in v.lower()
                               for k, v in message.get("headers", ()))
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= MAX_STORED_BYTES:
                    chunks.append(chunk)
                complete = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, capture)
        if complete and size <= MAX_STORED_BYTES and is_final(status) and not no_store:
            record = {"fingerprint": fingerprint, "status": status, "headers": headers,
                      "body": b"".join(chunks).hex()}
            await cache.set(stored_at, orjson.dumps(record), self.ttl_seconds)

    @staticmethod
    async def _error(scope: Scope, receive: Receive, send: Send, err: ApiError) -> None:
        count_error(err)
        await err.response()(scope, receive, send)


def _load(raw: bytes) -> dict[str, Any] | None:
    """A stored record, or None for an unreadable one (recompute rather than fail)."""
    try:
        record = orjson.loads(raw)
        if isinstance(record, dict) and {"fingerprint", "status", "headers", "body"} <= set(record):
            bytes.fromhex(record["body"])  # every field as it will be read (a bad one was a 500 at replay)
            if isinstance(record["status"], int) and isinstance(record["headers"], dict):
                return record
    except (orjson.JSONDecodeError, TypeError, ValueError):
        pass
    return None
