"""What crosses the boundary between the API processes and the engine core: plain data only.

Every message is a msgspec Struct, sent as msgpack over ZMQ; token arrays travel as raw int32 bytes.
Nothing here holds an asyncio object, a future, a lock or a closure, so the same messages serve the
engine core in its own process (ipc://) and in a thread of the API process (inproc://, tests and the CLI).

    API -> engine:  Hello, Submit, Abort, Cut, Drain, StatsQuery, Shutdown
    engine -> API:  Ready, Outputs (finished results, step updates, rejections, stream acceptances), Stats

Times are `time.monotonic()` values: CLOCK_MONOTONIC is one clock for every process of a machine, so an
arrival time stamped in an API process is comparable with the engine core's clock.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import msgspec
import numpy as np

# "auto" never reaches the engine: the API runs it as a verifier-halting request, then maybe a PTRM one.
HaltingRule = Literal["auto", "q_head", "max_steps", "verifier"]
# Why a trajectory stopped, in precedence order when several fire in the same step (the one place they are
# spelled out: the scheduler, the metrics labels and the API schema all read this).
HaltReason = Literal["cancelled", "verified", "q_head", "converged", "max_steps", "deadline"]
HALT_REASONS: tuple[str, ...] = get_args(HaltReason)

# Rejection codes (the API maps each to an HTTP status).
QUEUE_FULL, DRAINING, TOO_MANY_ROWS, UNKNOWN_MODEL, ENGINE_ERROR = (
    "queue_full", "draining", "too_many_rows", "unknown_model", "engine_error")


class SolveOptions(msgspec.Struct, frozen=True, omit_defaults=True):
    """Engine-side options, already validated and filled with defaults (the API schema does that).

    `threshold` is a probability on sigmoid(q_halt); None keeps the model's own rule (TRM: q_halt > 0,
    HRM: q_halt > q_continue). `converge_steps` halts a row whose decoded answer has not changed for that
    many consecutive steps (None: off).
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
    fallback: Literal["none", "exact"] = "none"  # API side only: answer with the exact solver when unverified
    # API side only: halting=auto's plain run escalates after this many unverified steps (resolved by the API)
    escalate_after: int | None = None
    # halting=auto: the escalation starts beside the plain run once it has run this many steps unverified (the
    # engine's hedged escalation, Scheduler); None or >= escalate_after: only after the plain run ends
    hedge_after: int | None = None

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
        if self.halting == "auto":
            opts["escalate_after"] = self.escalate_after
            if self.hedge_after is not None:  # which run answers first can change the answer
                opts["hedge_after"] = self.hedge_after
        return opts


def tokens_to_bytes(tokens: np.ndarray) -> bytes:
    return np.ascontiguousarray(tokens, dtype=np.int32).tobytes()


def tokens_from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.int32)


# -- API -> engine -------------------------------------------------------------------------------------


class EngineRequest(msgspec.Struct, frozen=True):
    """One puzzle to solve. `inputs` are the encoded tokens (int32 bytes, the model's seq_len)."""

    id: str
    model: str
    inputs: bytes
    puzzle_identifier: int
    options: SolveOptions
    arrival: float  # time.monotonic() when the HTTP request arrived: queue time counts from here
    stream: bool = False  # send a StepUpdate after every ACT step, and Accepted once queued
    # halting=auto: the options of a second run (K noisy trajectories) that starts in the engine, ahead of new
    # work, when the first run ends unverified with time left; the output is the better of the two (see
    # Scheduler). None: one run.
    escalation: SolveOptions | None = None
    # What the batched verifier needs beyond the tokens, worked out by the API from the parsed puzzle (the codec's
    # verify_fact; maze: the shortest S-G distance). None: the engine computes it (models.verify.prepare_batch).
    verify_fact: int | None = None

    @property
    def rows(self) -> int:
        """Batch rows this request holds once admitted (K for PTRM), and counts in the queue limit."""
        return self.options.trajectories

    @property
    def nbytes(self) -> int:
        """What a queued request holds in memory, as the queue's byte limit counts it: its encoded inputs."""
        return len(self.inputs)

    @property
    def deadline(self) -> float:
        return self.arrival + self.options.deadline_ms / 1000.0 if self.options.deadline_ms is not None else math.inf


class Hello(msgspec.Struct, tag=True):
    """An API process (re)connected: the engine answers with Ready once its models are loaded."""


class Submit(msgspec.Struct, tag=True):
    requests: list[EngineRequest]


class Abort(msgspec.Struct, tag=True):
    """The callers went away: free these requests' rows at the next step, send nothing back."""

    ids: list[str]


class Cut(msgspec.Struct, tag=True):
    """Resolve these requests now with their answers so far (halted_by deadline): a drain's grace ran out."""

    ids: list[str]


class Drain(msgspec.Struct, tag=True):
    """Stop admitting new requests (each later Submit is rejected with `draining`); running ones go on."""


class StatsQuery(msgspec.Struct, tag=True):
    token: int


class Shutdown(msgspec.Struct, tag=True):
    """Stop the engine loop (the in-process engine thread; a process is stopped with SIGTERM)."""


# -- engine -> API -------------------------------------------------------------------------------------


class ModelInfo(msgspec.Struct, frozen=True):
    """What the API tier needs to know about a served model, without loading it (or torch)."""

    name: str
    task: str
    arch: str
    version: str
    source: str
    parameters: int
    seq_len: int
    halt_max_steps: int
    config: dict[str, Any]
    backend: dict[str, Any]  # backend, device, dtype, cuda_graphs
    batch_rows: int
    max_request_rows: int  # the most rows (PTRM trajectories) one request may hold (the share rule)
    max_queue_rows: int
    default_options: dict[str, Any]
    default_noise: float  # PTRM sigma used when a request asks for K > 1 without a noise scale
    step_verifier: bool  # per-step verifier halting runs on the device for this task
    default_for_task: bool = False  # the models file names it its task's default
    limits: dict[str, Any] = {}  # the models file's cost caps for this model (app.settings.ModelLimits)
    card: dict[str, Any] = {}
    identifiers: dict[str, int] = {}


class Ready(msgspec.Struct, tag=True):
    models: list[ModelInfo]
    error: str | None = None  # loading failed: the engine stays up to say why, and serves nothing
    pid: int = 0


class EngineOutput(msgspec.Struct, frozen=True):
    """A finished request. `tokens` is None only when no step ran (its deadline passed, or a drain cut it, while
    it was queued)."""

    id: str
    tokens: bytes | None
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
    # ACT steps from admission to this output, both runs of an escalated request: its latency in steps (a GPU
    # step costs about the same at any row count).
    elapsed_steps: int = 0


class StepUpdate(msgspec.Struct, frozen=True):
    """After every ACT step of a streaming request: the leading trajectory's answer."""

    id: str
    step: int
    tokens: bytes
    confidence: float
    trajectory: int
    active_rows: int


class Rejected(msgspec.Struct, frozen=True):
    id: str
    code: str  # QUEUE_FULL, DRAINING, TOO_MANY_ROWS, UNKNOWN_MODEL, ENGINE_ERROR
    message: str
    retry_after_s: int = 1


class Outputs(msgspec.Struct, tag=True):
    finished: list[EngineOutput] = []
    steps: list[StepUpdate] = []
    rejected: list[Rejected] = []
    accepted: list[str] = []  # streaming requests now queued (the HTTP stream may start)

    def __bool__(self) -> bool:
        return bool(self.finished or self.steps or self.rejected or self.accepted)


class Stats(msgspec.Struct, tag=True):
    token: int
    models: dict[str, dict[str, Any]]
    loop_s: dict[str, float] = {}  # seconds the engine loop spent by phase since it started (app/engine/phases.py)


ToEngine = Hello | Submit | Abort | Cut | Drain | StatsQuery | Shutdown
FromEngine = Ready | Outputs | Stats

_encoder = msgspec.msgpack.Encoder()
_to_engine = msgspec.msgpack.Decoder(ToEngine)
_from_engine = msgspec.msgpack.Decoder(FromEngine)


def encode(msg: ToEngine | FromEngine) -> bytes:
    return _encoder.encode(msg)


def decode_to_engine(raw: bytes) -> ToEngine:
    return _to_engine.decode(raw)


def decode_from_engine(raw: bytes) -> FromEngine:
    return _from_engine.decode(raw)
