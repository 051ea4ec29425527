"""Typed client for the recursolve server: ``Client`` (sync) and ``AsyncClient``, typed results and errors.

Depends only on httpx and pydantic (no torch, nothing from the server's code).
"""

from recursolve_client._core import RetryPolicy
from recursolve_client.client import DEFAULT_URL, AsyncClient, Client
from recursolve_client.errors import (
    ConnectionFailed,
    InvalidPuzzle,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    Overloaded,
    RecursolveError,
    ServerError,
    TooLarge,
    Unavailable,
)
from recursolve_client.models import (
    BatchItemResult,
    BatchResponse,
    ErrorInfo,
    Health,
    ModelInfo,
    ModelList,
    ModelRef,
    SolveOptions,
    SolveRequest,
    SolveResponse,
    StepEvent,
    Timings,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "BatchItemResult",
    "BatchResponse",
    "Client",
    "ConnectionFailed",
    "ErrorInfo",
    "Health",
    "InvalidPuzzle",
    "InvalidRequest",
    "ModelInfo",
    "ModelList",
    "ModelNotFound",
    "ModelRef",
    "NotFound",
    "Overloaded",
    "RecursolveError",
    "RetryPolicy",
    "ServerError",
    "SolveOptions",
    "SolveRequest",
    "SolveResponse",
    "StepEvent",
    "Timings",
    "TooLarge",
    "Unavailable",
]
