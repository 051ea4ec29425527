"""Request state: what a caller asked for, and what it got.

A `Request` lives on two threads. The event loop creates it, may cancel it, and awaits its
future; the model's worker thread fills in trajectories and resolves it. The only state the
two share is the cancel flag (a `threading.Event`) and the future, which the worker touches
only through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

HaltingRule = Literal["q_head", "max_steps", "verifier"]
HaltReason = Literal["q_head", "max_steps", "verified", "deadline", "cancelled", "converged"]
HALTING_RULES: tuple[str, ...] = ("q_head", "max_steps", "verifier")
HALT_REASONS: tuple[str, ...] = ("q_head", "max_steps", "verified", "deadline", "cancelled", "converged")

_ids = itertools.count(1)


@dataclass(frozen=True)
class SolveOptions:
    """Engine-side options, already validated and filled with defaults (the API schema does that).

    `threshold` is a probability on sigmoid(q_halt); None keeps the model's own rule (TRM:
    q_halt > 0, HRM: q_halt > q_continue). `converge_steps` halts a row whose decoded answer has
    not changed for that many consecutive steps (None: off).
    """

    max_steps: int = 16
    halting: HaltingRule = "q_head"
    threshold: float | None = None
    converge_steps: int | None = None
    trajectories: int = 1
    noise: float = 0.0
    noise_on: str = "z_L"
    selection: str = "best_q"
    seed: int | None = None
    deadline_ms: int | None = None
    cache: bool = True

    @property
    def deterministic(self) -> bool:
        """Same inputs -> same answer: no noise, or noise from a fixed seed."""
        return self.noise == 0.0 or self.seed is not None

    @property
    def threshold_logit(self) -> float:
        """The threshold as a q_halt logit (NaN = the model's own rule)."""
        if self.threshold is None:
            return math.nan
        return math.log(self.threshold / (1.0 - self.threshold))

    @property
    def needs_step_verifier(self) -> bool:
        """Whether the verifier runs after every step (not only on the final answer)."""
        return self.halting == "verifier" or (self.trajectories > 1 and self.selection == "verifier_first")

    def answer_options(self) -> dict[str, Any]:
        """The options that can change the answer: the cache and coalescing key is built from these.
        The deadline and the cache switch only decide whether a result is kept, not what it is."""
        opts: dict[str, Any] = {
            "max_steps": self.max_steps, "halting": self.halting, "threshold": self.threshold,
            "converge_steps": self.converge_steps, "trajectories": self.trajectories,
        }
        if self.noise > 0 or self.trajectories > 1:
            opts |= {"noise": self.noise, "noise_on": self.noise_on, "selection": self.selection, "seed": self.seed}
        return opts


@dataclass
class Trajectory:
    """One batch row's run. `tokens` is the last decoded answer (argmax), kept for deadlines."""

    tokens: np.ndarray | None = None
    q_halt: float = -math.inf
    steps: int = 0
    halted_by: str | None = None
    valid: bool | None = None  # verifier verdict on `tokens`, when the verifier ran on this row


@dataclass(frozen=True)
class StepEvent:
    """Published after every ACT step of a streaming request (the leading trajectory's answer)."""

    step: int
    tokens: np.ndarray
    confidence: float
    trajectory: int
    active_rows: int


@dataclass(frozen=True)
class Result:
    """What the engine returns. `tokens` is None only when no step ran (deadline or cancel while queued)."""

    tokens: np.ndarray | None
    confidence: float | None
    q_halt: float | None
    steps: int
    halted_by: str
    trajectories: int
    chosen: int | None
    row_steps: int  # ACT steps summed over all trajectories: the request's compute cost
    valid: bool | None  # verifier verdict seen in the loop (None: the loop did not verify)
    queue_ms: float
    compute_ms: float


class EngineError(RuntimeError):
    """The model step failed; every request in the batch gets this (HTTP 500, status "error")."""


@dataclass(eq=False)
class Request:
    inputs: np.ndarray  # int32 [seq_len], the encoded puzzle
    puzzle_identifier: int
    options: SolveOptions
    loop: asyncio.AbstractEventLoop
    verifier: Callable[[np.ndarray], bool] | None = None  # tokens -> valid; runs on the worker thread
    on_step: Callable[[StepEvent], None] | None = None  # called on the event loop
    created: float = field(default_factory=time.monotonic)
    id: int = field(default_factory=lambda: next(_ids))

    def __post_init__(self) -> None:
        self.future: asyncio.Future[Result] = self.loop.create_future()
        self.deadline = (self.created + self.options.deadline_ms / 1000.0
                         if self.options.deadline_ms is not None else math.inf)
        self.trajectories = [Trajectory() for _ in range(self.options.trajectories)]
        self.admitted_at: float | None = None
        self._cancel = threading.Event()

    @property
    def rows(self) -> int:
        """Batch rows this request holds once admitted (K for PTRM), and counts in the queue limit."""
        return self.options.trajectories

    # -- called from the event loop ----------------------------------------------------------------

    def cancel(self) -> None:
        """The client went away: the worker frees this request's rows at its next iteration."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # -- called from the worker thread -------------------------------------------------------------

    def resolve(self, result: Result) -> None:
        self.loop.call_soon_threadsafe(self._set, result, None)

    def fail(self, error: BaseException) -> None:
        self.loop.call_soon_threadsafe(self._set, None, error)

    def publish(self, event: StepEvent) -> None:
        if self.on_step is not None:
            self.loop.call_soon_threadsafe(self.on_step, event)

    def _set(self, result: Result | None, error: BaseException | None) -> None:
        if self.future.done():  # a waiter gave up (cancelled future): nothing to deliver
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)
