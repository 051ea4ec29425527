"""``Client`` (sync) and ``AsyncClient``: the same methods, the same typed results and errors.

    with Client("http://127.0.0.1:8000") as rs:
        result = rs.solve("53..7....6..195...", task="sudoku", max_steps=16)
        print(result.answer_text, result.verified)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import httpx

from recursolve_client import _core
from recursolve_client._core import RetryPolicy
from recursolve_client.models import (
    BatchResponse,
    Health,
    ModelInfo,
    ModelList,
    SolveOptions,
    SolveResponse,
    StepEvent,
)

DEFAULT_URL = "http://127.0.0.1:8000"


def _settings(base_url: str, api_key: str | None, timeout: float, max_retries: int, max_retry_wait: float,
              headers: Mapping[str, str] | None) -> _core.Settings:
    return _core.Settings(base_url=base_url.rstrip("/"), api_key=api_key, timeout=timeout,
                          retry=RetryPolicy(max_retries=max_retries, max_wait_s=max_retry_wait), headers=headers or {})


class Client:
    """Blocking client. ``transport`` (an httpx transport) is for tests and custom networking.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer <api_key>``.
        max_retries: how many times a 429/503 is retried (0 = never).
        max_retry_wait: the longest single wait in seconds; a longer ``Retry-After`` raises at once.
    """

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 3, max_retry_wait: float = 30.0, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self._s = _settings(base_url, api_key, timeout, max_retries, max_retry_wait, headers)
        self._http = httpx.Client(base_url=self._s.base_url, headers=self._s.client_headers(), timeout=timeout,
                                  transport=transport)
        self._sleep = sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------------------------------ plumbing

    def _send(self, method: str, path: str, *, json: Any = None, request_id: str | None = None,
              stream: bool = False) -> httpx.Response:
        """One call with the retry rule applied; returns a success response (streaming if asked) or raises."""
        attempt = 0
        while True:
            request = self._http.build_request(method, path, json=json, headers=_core.request_headers(request_id))
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise _core.connection_failed(exc) from exc
            if response.is_success:
                return response
            response.read()
            response.close()
            wait = self._s.retry.wait(attempt, response)
            if wait is None:
                _core.raise_for_error(response)
            self._sleep(wait)
            attempt += 1

    # ------------------------------------------------------------------------------------------- the API

    def solve(self, puzzle: Any, *, task: str | None = None, model: str | None = None,
              options: SolveOptions | Mapping[str, Any] | None = None, request_id: str | None = None,
              **option_kwargs: Any) -> SolveResponse:
        """Solve one puzzle (``task`` or ``model`` names what solves it); options as keywords or ``options``."""
        body = _core.solve_body(puzzle, task, model, options, option_kwargs)
        return SolveResponse.model_validate(self._send("POST", "/v1/solve", json=body, request_id=request_id).json())

    def solve_batch(self, items: Iterable[Any], *, options: SolveOptions | Mapping[str, Any] | None = None,
                    request_id: str | None = None) -> BatchResponse:
        """Many puzzles in one call; each item gets its own status (``result.results[i].unwrap()`` raises it)."""
        body: dict[str, Any] = {"items": [_core.batch_item(i) for i in items]}
        if options:
            body["options"] = dict(options.model_dump(exclude_none=True) if isinstance(options, SolveOptions)
                                   else options)
        return BatchResponse.model_validate(
            self._send("POST", "/v1/solve/batch", json=body, request_id=request_id).json())

    def stream(self, puzzle: Any, *, task: str | None = None, model: str | None = None,
               options: SolveOptions | Mapping[str, Any] | None = None, request_id: str | None = None,
               **option_kwargs: Any) -> Iterator[StepEvent | SolveResponse]:
        """Yield a StepEvent after every ACT step, then the final SolveResponse; an in-stream error raises."""
        body = _core.solve_body(puzzle, task, model, options, option_kwargs)
        response = self._send("POST", "/v1/solve/stream", json=body, request_id=request_id, stream=True)
        items = _core.StreamItems(response.headers.get("x-request-id"))
        try:
            for line in response.iter_lines():
                yield from items.feed(line)
            yield from items.close()
        except httpx.TransportError as exc:  # the connection broke mid-stream
            raise _core.connection_failed(exc) from exc
        finally:
            response.close()

    def models(self, *, request_id: str | None = None) -> ModelList:
        return ModelList.model_validate(self._send("GET", "/v1/models", request_id=request_id).json())

    def model(self, name: str, *, request_id: str | None = None) -> ModelInfo:
        return ModelInfo.model_validate(self._send("GET", _core.model_path(name), request_id=request_id).json())

    def health(self, *, request_id: str | None = None) -> Health:
        """Liveness (``/healthz``); a 503 comes back as ``Health(status="failed")``, not as an error."""
        return self._health("/healthz", request_id)

    def ready(self, *, request_id: str | None = None) -> Health:
        """Readiness (``/readyz``): ``.ok`` once the models are loaded and the server is not draining."""
        return self._health("/readyz", request_id)

    def _health(self, path: str, request_id: str | None) -> Health:
        try:
            response = self._http.get(path, headers=_core.request_headers(request_id))
        except httpx.TransportError as exc:
            raise _core.connection_failed(exc) from exc
        return _core.health(response)


class AsyncClient:
    """The asyncio twin of :class:`Client` (same arguments, same methods, awaited; ``stream`` is ``async for``)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 3, max_retry_wait: float = 30.0, headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._s = _settings(base_url, api_key, timeout, max_retries, max_retry_wait, headers)
        self._http = httpx.AsyncClient(base_url=self._s.base_url, headers=self._s.client_headers(), timeout=timeout,
                                       transport=transport)
        self._sleep = sleep

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, *, json: Any = None, request_id: str | None = None,
                    stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = self._http.build_request(method, path, json=json, headers=_core.request_headers(request_id))
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise _core.connection_failed(exc) from exc
            if response.is_success:
                return response
            await response.aread()
            await response.aclose()
            wait = self._s.retry.wait(attempt, response)
            if wait is None:
                _core.raise_for_error(response)
            await self._sleep(wait)
            attempt += 1

    async def solve(self, puzzle: Any, *, task: str | None = None, model: str | None = None,
                    options: SolveOptions | Mapping[str, Any] | None = None, request_id: str | None = None,
                    **option_kwargs: Any) -> SolveResponse:
        body = _core.solve_body(puzzle, task, model, options, option_kwargs)
        response = await self._send("POST", "/v1/solve", json=body, request_id=request_id)
        return SolveResponse.model_validate(response.json())

    async def solve_batch(self, items: Iterable[Any], *, options: SolveOptions | Mapping[str, Any] | None = None,
                          request_id: str | None = None) -> BatchResponse:
        body: dict[str, Any] = {"items": [_core.batch_item(i) for i in items]}
        if options:
            body["options"] = dict(options.model_dump(exclude_none=True) if isinstance(options, SolveOptions)
                                   else options)
        response = await self._send("POST", "/v1/solve/batch", json=body, request_id=request_id)
        return BatchResponse.model_validate(response.json())

    async def stream(self, puzzle: Any, *, task: str | None = None, model: str | None = None,
                     options: SolveOptions | Mapping[str, Any] | None = None, request_id: str | None = None,
                     **option_kwargs: Any) -> AsyncIterator[StepEvent | SolveResponse]:
        body = _core.solve_body(puzzle, task, model, options, option_kwargs)
        response = await self._send("POST", "/v1/solve/stream", json=body, request_id=request_id, stream=True)
        items = _core.StreamItems(response.headers.get("x-request-id"))
        try:
            async for line in response.aiter_lines():
                for item in items.feed(line):
                    yield item
            for item in items.close():
                yield item
        except httpx.TransportError as exc:  # the connection broke mid-stream
            raise _core.connection_failed(exc) from exc
        finally:
            await response.aclose()

    async def models(self, *, request_id: str | None = None) -> ModelList:
        return ModelList.model_validate((await self._send("GET", "/v1/models", request_id=request_id)).json())

    async def model(self, name: str, *, request_id: str | None = None) -> ModelInfo:
        return ModelInfo.model_validate((await self._send("GET", _core.model_path(name), request_id=request_id)).json())

    async def health(self, *, request_id: str | None = None) -> Health:
        return await self._health("/healthz", request_id)

    async def ready(self, *, request_id: str | None = None) -> Health:
        return await self._health("/readyz", request_id)

    async def _health(self, path: str, request_id: str | None) -> Health:
        try:
            response = await self._http.get(path, headers=_core.request_headers(request_id))
        except httpx.TransportError as exc:
            raise _core.connection_failed(exc) from exc
        return _core.health(response)
