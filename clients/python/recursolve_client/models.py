"""Typed bodies of the recursolve HTTP API, mirroring the server's ``app/api/schemas.py``.

Every model allows extra fields and uses plain ``str`` where the server has a closed set of values, so a
newer server that adds a field or a ``halted_by`` reason never breaks an older client.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Task = Literal["sudoku", "maze", "arc"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class SolveOptions(_Body):
    """Every field optional; an absent one takes the model's default. Unknown names go to the server,
    which answers 422 ``invalid_option`` naming them (so a typo is never silently ignored)."""

    max_steps: int | None = None
    halting: Literal["auto", "q_head", "max_steps", "verifier"] | None = None
    escalate_after: int | None = None
    hedge_after: int | None = None
    fallback: Literal["none", "exact"] | None = None
    threshold: float | None = None
    converge_steps: int | None = None
    trajectories: int | None = None
    noise: float | None = None
    noise_on: Literal["z_L", "z_H", "both"] | None = None
    selection: Literal["best_q", "vote", "verifier_first"] | None = None
    seed: int | None = None
    deadline_ms: int | None = None
    cache: bool | None = None


class SolveRequest(_Body):
    task: Task | None = None
    model: str | None = None
    puzzle: Any
    options: SolveOptions = Field(default_factory=SolveOptions)

    def body(self) -> dict[str, Any]:
        out = self.model_dump(exclude_none=True)
        out["puzzle"] = self.puzzle  # None would be dropped above; the server must say it is missing
        if not out.get("options"):
            out.pop("options", None)
        return out


class ModelRef(_Body):
    name: str
    version: str


class Timings(_Body):
    queue_ms: float
    compute_ms: float
    total_ms: float


class SolveResponse(_Body):
    request_id: str | None = None
    task: str
    model: ModelRef
    answer: Any = None
    answer_text: str | None = None
    verified: bool
    verification: list[str] = Field(default_factory=list)
    confidence: float | None = None
    steps: int
    halted_by: str
    solved_by: str = "model"  # "exact" when fallback="exact" replaced an unverified model answer
    solvable: bool | None = None  # the exact solver's verdict on the puzzle (None: unknown)
    unique: bool | None = None  # exactly one solution (mazes: one shortest path); None: unknown
    overwritten: list[str] = Field(default_factory=list)  # givens the answer changed
    escalated: bool = False  # halting="auto" escalated to PTRM trajectories
    trajectories: int = 1
    chosen_trajectory: int | None = None
    row_steps: int = 0
    cached: bool = False
    coalesced: bool = False
    timings: Timings | None = None


class StepEvent(_Body):
    """One ``event: step`` of ``/v1/solve/stream``: the decoded answer after ACT step ``step``."""

    step: int
    answer: Any = None
    answer_text: str | None = None
    verified: bool | None = None  # whether this step's answer passes the exact verifier
    verification: list[str] = Field(default_factory=list)
    overwritten: list[str] = Field(default_factory=list)
    confidence: float | None = None
    trajectory: int | None = None
    active_rows: int | None = None


class ErrorDetail(_Body):
    location: str | None = None
    message: str


class ErrorInfo(_Body):
    code: str
    message: str
    location: str | None = None
    details: list[ErrorDetail] | None = None
    accepted_forms: list[str] | None = None
    request_id: str | None = None  # a batch item's own id (the batch's id, "-" and the item's index)


class BatchItemResult(_Body):
    status: int
    result: SolveResponse | None = None
    error: ErrorInfo | None = None
    retry_after_s: float | None = None  # a 429/503 item: what Retry-After would have said on its own

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.result is not None

    def unwrap(self) -> SolveResponse:
        """The result, or the typed error this item would have raised on its own."""
        if self.ok:
            assert self.result is not None
            return self.result
        from recursolve_client.errors import error_for

        raise error_for(self.status, self.error.model_dump() if self.error else {},
                        self.error.request_id if self.error else None, self.retry_after_s)


class BatchResponse(_Body):
    results: list[BatchItemResult]
    ok: int
    failed: int


class ModelInfo(_Body):
    name: str
    task: str
    default_for_task: bool = False
    architecture: str | None = None
    parameters: int | None = None
    version: str | None = None
    accuracy: Any = None


class ModelList(_Body):
    models: list[ModelInfo]
    defaults: dict[str, str] = Field(default_factory=dict)
    ready: bool = False


class Health(_Body):
    """``/healthz`` or ``/readyz``: ``ok`` is True for status "ok" or "ready" (HTTP 200)."""

    status: str
    detail: str | None = None
    models: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "ready")
