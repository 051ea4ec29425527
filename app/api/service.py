"""The solve path of an API process: parse, cache, coalesce, submit to the engine, wait, render.

HTTP-free: it raises typed errors (PuzzleError, ModelNotFound, InvalidRequest, EngineRejected,
EngineUnavailable) that the API layer maps to status codes. It never imports torch: the engine core
(another process, or a thread for tests) runs the models, and tells this side what it serves (ModelInfo).

- Cache: looked up before submitting and written after, through `app.cache` (which never raises).
  Never stored: deadline-cut or cancelled results, and noisy unseeded results that did not verify
  (a different run could give a different answer; a verified one is right whatever the seed).
- Coalescing: identical deterministic requests (same cache key and same deadline_ms) in flight at
  once in this process share one engine request.
- Cancellation: the engine request is aborted when its last waiter goes away.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import numpy as np

from app import metrics
from app.api.budgets import Budget, budget_for, check_budget, server_limits
from app.api.redact import clip
from app.cache import ResultCache, cache_key
from app.engine.client import EngineClient
from app.engine.protocol import EngineOutput, EngineRequest, ModelInfo, SolveOptions, StepUpdate, tokens_from_bytes
from app.settings import ModelLimits
from puzzles import TASKS, Codec, ExactFacts, PuzzleError, get_codec

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.05
WATCH_AFTER_S = 0.2  # a request still running after this starts checking whether its client is still there
KEEPALIVE_S = 15.0  # SSE comment while a stream waits in the queue, so proxies keep it open
MAX_REASONS = 10
FACTS_KEPT = 4096  # puzzles whose exact facts SolveService keeps (a Sudoku's: ~1 KB)
OPTION_FIELDS = frozenset(SolveOptions.__struct_fields__)
AUTO_TRAJECTORIES = 8  # halting=auto: PTRM trajectories of the escalation when the request names no K
# halting=auto on a GPU: the escalation starts beside the plain run after this many unverified steps (hedge_after).
# A GPU steps 1 or 256 rows in about the same time, so the hedge's rows are nearly free there and the requests
# that escalate wait 3 steps for it instead of max_steps; on a CPU rows are the cost, so it is off by default.
# Shipped Sudoku model, medium: p99 11 -> 7 ACT steps at the same verified fraction, +19% row-steps
# (bench/auto_escalation.py --hedge-after none,3; README, Adaptive compute).
GPU_HEDGE_AFTER = 3


@dataclass(frozen=True)
class _Series:
    """A model's per-request metric series, looked up once: `labels()` costs ~2 us a call and a request
    records seven."""

    ok: Any
    duration: Any
    answers: dict[bool, Any]
    queue_wait: Any
    compute: Any
    act_steps: Any
    trajectories: Any

    @classmethod
    def of(cls, model: str, task: str) -> _Series:
        return cls(metrics.REQUESTS.labels(model=model, task=task, status="ok"),
                   metrics.REQUEST_DURATION.labels(model=model, task=task),
                   {v: metrics.ANSWERS.labels(model=model, verified=str(v).lower()) for v in (True, False)},
                   metrics.QUEUE_WAIT.labels(model=model), metrics.COMPUTE.labels(model=model),
                   metrics.REQUEST_ACT_STEPS.labels(model=model), metrics.REQUEST_TRAJECTORIES.labels(model=model))


@dataclass
class ServedModel:
    """A model as the API tier sees it: what the engine reported, and the codec for its task."""

    info: ModelInfo
    codec: Codec

    @classmethod
    def of(cls, info: ModelInfo) -> ServedModel:
        return cls(info, get_codec(info.task))

    @functools.cached_property
    def series(self) -> _Series:
        return _Series.of(self.name, self.task)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def default_hedge_after(self) -> int:
        """halting=auto's hedge_after when neither the request nor the model's default_options set one (0: none)."""
        return GPU_HEDGE_AFTER if str(self.info.backend.get("device", "")).startswith("cuda") else 0

    def puzzle_identifier(self, puzzle: Any) -> int:
        """The row of the model's puzzle-embedding table for this puzzle.

        Sudoku and maze models have one shared embedding (0). ARC models learn one per training
        task: the task `id` is looked up in the model's identifiers.json; an unknown task gets 0
        (the official "<blank>" identifier), which is what the official evaluator does too.
        """
        task_id = getattr(puzzle, "task_id", None)
        if task_id is None or not self.info.identifiers:
            return 0
        ident = self.info.identifiers.get(task_id, 0)
        return ident if ident < self.info.config.get("num_puzzle_identifiers", 1) else 0

    def summary(self, *, default: bool) -> dict[str, Any]:
        """The brief /v1/models entry (`?view=brief`, and the list_models tool's): what an LLM or a person picks a
        model by, in a few hundred bytes. The full entry adds the card, the config and the engine's state, ~14 KB
        a model, which an LLM would read as ~4k tokens each."""
        i = self.info
        return {
            "name": i.name, "task": i.task, "default_for_task": default, "architecture": i.arch,
            "parameters": i.parameters, "version": i.version,
            "accuracy": _figures(held_out_accuracy(i.card)),
            "public_accuracy": _figures(public_accuracy(i.card)),
        }

    def describe(self, *, default: bool, engine: dict[str, Any] | None) -> dict[str, Any]:
        """The /v1/models entry."""
        i = self.info
        return {
            "name": i.name, "task": i.task, "default_for_task": default, "architecture": i.arch,
            "parameters": i.parameters, "version": i.version, "source": i.source, **i.backend,
            "config": i.config,
            "accuracy": held_out_accuracy(i.card),
            "public_accuracy": public_accuracy(i.card),
            "card": i.card or None,
            "engine": engine,
        }


def held_out_accuracy(card: dict[str, Any]) -> dict[str, Any] | None:
    """Each tier's held-out exact accuracy from a model card (training/evaluate.py's `evaluation.tiers`):
    plain at max_steps, with Q-head halting, and with PTRM at each K the card measured."""
    tiers = card.get("evaluation", {}).get("tiers") if isinstance(card.get("evaluation"), dict) else None
    if not isinstance(tiers, dict):
        return card.get("accuracy") or None
    return _accuracy_rows(tiers)


def public_accuracy(card: dict[str, Any]) -> dict[str, Any] | None:
    """The same figures on public puzzle sets the card records (`public_evaluation`, evaluation only; see
    training/public_sets.py), each with where the set comes from. Never used to rank models."""
    pub = card.get("public_evaluation")
    if not isinstance(pub, dict) or not isinstance(pub.get("tiers"), dict):
        return None
    rows = _accuracy_rows(pub["tiers"]) or {}
    sets = pub.get("sets") if isinstance(pub.get("sets"), dict) else {}
    for name, row in rows.items():
        info = sets.get(name) if isinstance(sets.get(name), dict) else {}
        row["source"], row["package"] = info.get("source"), info.get("package")
    return rows or None


def _figures(rows: dict[str, Any] | None) -> dict[str, Any] | None:
    """Accuracy rows with their counts and exact-accuracy figures only (no calibration, no provenance)."""
    if rows is None:
        return None
    return {tier: {k: v for k, v in row.items() if k == "n" or k.startswith("exact_")} if isinstance(row, dict)
            else row for tier, row in rows.items()}


def _accuracy_rows(tiers: dict[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for tier, t in tiers.items():
        if not isinstance(t, dict):
            continue
        row: dict[str, Any] = {"n": t.get("n")}
        for mode in ("max_steps", "q_halt"):
            if isinstance(t.get(mode), dict):
                row[f"exact_{mode}"] = t[mode].get("exact")
        for key, v in t.items():
            if key.startswith("ptrm_") and isinstance(v, dict):
                row[f"exact_{key}"] = v.get("exact")
        if isinstance(t.get("calibration"), dict):
            row["calibration"] = t["calibration"]
        out[tier] = row
    return out or None


def default_per_task(models: dict[str, ServedModel]) -> dict[str, str]:
    """Default model per task: the one the models file marks `default_for_task`, else the one whose card shows
    the best mean held-out exact accuracy (plain, at max_steps), then a TRM before an HRM, then spec order.
    A model without measured accuracy ranks after every model with some."""
    def rank(item: tuple[int, ServedModel]) -> tuple[bool, float, int, int]:
        i, m = item
        tiers = held_out_accuracy(m.info.card) or {}
        scores = [t.get("exact_max_steps") for t in tiers.values() if isinstance(t, dict)]
        scores = [v for v in scores if isinstance(v, int | float)]
        accuracy = -(sum(scores) / len(scores)) if scores else 1.0
        return (not m.info.default_for_task, accuracy, 0 if m.info.arch == "trm" else 1, i)

    defaults: dict[str, str] = {}
    for _, m in sorted(enumerate(models.values()), key=rank):
        defaults.setdefault(m.task, m.name)
    return defaults


class ModelNotFound(LookupError):
    def __init__(self, message: str, code: str = "model_not_found", location: str = "model") -> None:
        self.message, self.code, self.location = message, code, location
        super().__init__(message)


class InvalidRequest(ValueError):
    """A well-formed request that cannot be served as asked (HTTP 422)."""

    def __init__(self, message: str, location: str | None = None, code: str = "invalid_request") -> None:
        self.message, self.code, self.location = message, code, location
        super().__init__(message)


class ClientGone(Exception):
    """The caller disconnected while waiting."""


@dataclass
class Prepared:
    """A parsed request, ready to run."""

    model: ServedModel
    puzzle: Any
    options: SolveOptions
    inputs: np.ndarray
    puzzle_identifier: int
    key: str
    canonical: str  # the puzzle in the codec's canonical text (its cache key's part; keys the exact facts)
    started: float = field(default_factory=time.monotonic)

    @property
    def task(self) -> str:
        return self.model.task

    def verifier(self, tokens: np.ndarray) -> bool:
        codec = self.model.codec
        try:
            return codec.verify(self.puzzle, codec.decode(tokens, self.puzzle)).valid
        except PuzzleError:  # an undecodable answer is not a valid one
            return False


@dataclass
class Outcome:
    result: EngineOutput
    cached: bool = False
    coalesced: bool = False

    @property
    def tokens(self) -> np.ndarray | None:
        return tokens_from_bytes(self.result.tokens) if self.result.tokens is not None else None


@dataclass(eq=False)
class _Flight:
    request_id: str
    future: asyncio.Future[EngineOutput]
    waiters: int = 0


class SolveService:
    def __init__(self, models: dict[str, ServedModel], defaults: dict[str, str], cache: ResultCache,
                 engine: EngineClient, *, default_deadline_ms: int | None = None, cache_ttl_seconds: int = 86400,
                 cache_enabled: bool = True, caps: ModelLimits | None = None) -> None:
        self.models = models
        self.caps = caps if caps is not None else server_limits()  # server-wide cost caps (app/api/budgets.py)
        self._budgets: dict[str, Budget] = {}
        self.defaults = defaults
        self.cache = cache
        self.engine = engine
        self.default_deadline_ms = default_deadline_ms
        self.cache_ttl_seconds = cache_ttl_seconds
        self.cache_enabled = cache_enabled
        self.draining = False
        self._inflight: dict[str, _Flight] = {}
        # The exact facts of recent puzzles: a puzzle's facts never change, and a repeated puzzle (a cache hit, a
        # batch's duplicate) spent a third of its API CPU working them out again (126 of 402 us a Sudoku hit).
        self._facts: collections.OrderedDict[tuple[str, str], ExactFacts | None] = collections.OrderedDict()

    # -- preparing ---------------------------------------------------------------------------------

    def model_for(self, task: str | None, name: str | None) -> ServedModel:
        if name is not None:
            model = self.models.get(name)
            if model is None:
                served = ", ".join(sorted(self.models)) or "none"
                raise ModelNotFound(f"unknown model {clip(name)!r}; served models: {served} (GET /v1/models)")
            if task is not None and model.task != task:
                raise InvalidRequest(f"model {name!r} solves {model.task!r}, not {task!r}; drop 'model' to use "
                                     f"the default {task} model", "model", code="model_task_mismatch")
            return model
        if task is None:
            raise PuzzleError("give a task (one of " + ", ".join(TASKS) + ") or a model name", "task",
                              code="missing_task")
        default = self.defaults.get(task)
        if default is None:
            served = ", ".join(sorted(self.defaults)) or "none"
            raise ModelNotFound(f"no model serves task {task!r} on this server; tasks served: {served}",
                                code="no_model_for_task", location="task")
        return self.models[default]

    def _model_that_fits(self, default: ServedModel, puzzle: Any, err: PuzzleError) -> tuple[ServedModel, np.ndarray]:
        """A puzzle too large for the task's default model (a 13x13 maze, a 9x9-canvas model) goes to the served
        model of that task with the smallest canvas that holds it: the least compute per step. Only when the
        request named no model; the response's `model` says which one answered."""
        others = sorted((m for m in self.models.values() if m.task == default.task and m is not default),
                        key=lambda m: m.info.seq_len)
        for m in others:
            if m.info.seq_len > default.info.seq_len:
                try:
                    return m, np.asarray(m.codec.encode(puzzle, m.info.seq_len), dtype=np.int32)
                except PuzzleError as again:
                    if again.code != "too_large":
                        raise
        largest = max([default, *others], key=lambda m: m.info.seq_len)
        raise PuzzleError(f"{err.message}; the largest {default.task} model served here is {largest.name!r} "
                          f"(seq_len {largest.info.seq_len})", err.location, code=err.code) from err

    def resolve_options(self, model: ServedModel, given: dict[str, Any]) -> SolveOptions:
        """Request options over the model's configured defaults over the engine defaults."""
        merged = {k: v for k, v in {**model.info.default_options, **given}.items()
                  if v is not None and k in OPTION_FIELDS}
        merged.setdefault("max_steps", model.info.halt_max_steps)
        # Tasks with an exact verifier default to adaptive compute: verify every step, escalate when stuck.
        # (one trajectory: auto; PTRM asked for explicitly: its K rows halt on the verifier).
        if model.info.step_verifier:
            merged.setdefault("halting", "auto" if merged.get("trajectories", 1) == 1 else "verifier")
        merged.setdefault("halting", "q_head")
        if merged["halting"] == "auto" and not model.info.step_verifier:
            raise InvalidRequest(f"halting 'auto' needs a per-step verifier, which {model.task} models do not have; "
                                 "use q_head, max_steps or verifier", "options.halting")
        if merged["halting"] == "auto":
            # Default: escalate only after max_steps. Earlier lowers the latency of the requests that escalate
            # and may cost accuracy on hard puzzles (the shipped Sudoku model at escalate_after 4 of 8: medium
            # p99 11 -> 8 ACT steps at the same accuracy, hard 0.680 -> 0.643 verified, within noise of 300
            # puzzles; bench/auto_escalation.py), so it is the operator's or the caller's call.
            merged["escalate_after"] = min(merged.get("escalate_after") or merged["max_steps"], merged["max_steps"])
            hedge = merged.get("hedge_after", model.default_hedge_after)
            if 0 < hedge < merged["escalate_after"]:
                merged["hedge_after"] = hedge
            else:  # 0, or the plain run ends first: no hedge (and no cache key of its own)
                merged.pop("hedge_after", None)
        else:
            merged.pop("escalate_after", None)  # meaningless here: it must not split the cache key
            merged.pop("hedge_after", None)
        k = merged.get("trajectories", 1)
        # PTRM without a noise scale: the per-task setting reported for PTRM; none for a single trajectory.
        merged.setdefault("noise", model.info.default_noise if k > 1 else 0.0)
        if "deadline_ms" not in merged and self.default_deadline_ms is not None:
            merged["deadline_ms"] = self.default_deadline_ms
        if not self.cache_enabled:
            merged["cache"] = False
        opts = msgspec.convert(merged, SolveOptions)
        budget = self._budget(model)
        check_budget(opts, budget)  # BudgetExceeded -> 422
        if opts.halting == "auto":  # the plain run and the escalation together
            check_budget(msgspec.structs.replace(opts, trajectories=self.held_trajectories(model, opts)), budget)
        return opts

    def held_trajectories(self, model: ServedModel, opts: SolveOptions) -> int:
        """The trajectories a request with these resolved options may run, each up to max_steps: halting=auto's
        plain run and its escalation's K together (what the budgets charge it)."""
        return 1 + self._escalation_k(model, opts) if opts.halting == "auto" else opts.trajectories

    def _budget(self, model: ServedModel) -> Budget:
        """The model's caps over the server's; built once per model (they change only with a new engine Ready)."""
        budget = self._budgets.get(model.name)
        if budget is None:
            budget = budget_for(model.name, ModelLimits.model_validate(model.info.limits), self.caps)
            self._budgets[model.name] = budget
        return budget

    @staticmethod
    def _escalation_k(model: ServedModel, opts: SolveOptions) -> int:
        k = opts.trajectories if opts.trajectories > 1 else AUTO_TRAJECTORIES
        return max(1, min(k, model.info.max_request_rows))

    def prepare(self, task: str | None, model_name: str | None, payload: Any, options: dict[str, Any],
                started: float | None = None) -> Prepared:
        """Parse and encode the puzzle (PuzzleError -> 422) for the chosen model."""
        model = self.model_for(task, model_name)
        codec = model.codec
        puzzle = codec.parse(payload)
        try:
            inputs = np.asarray(codec.encode(puzzle, model.info.seq_len), dtype=np.int32)
        except PuzzleError as err:
            if model_name is not None or err.code != "too_large":
                raise
            model, inputs = self._model_that_fits(model, puzzle, err)
        opts = self.resolve_options(model, options)
        canonical = codec.canonical(puzzle)
        key = cache_key(model.version, model.task, canonical, opts.answer_options())
        return Prepared(model, puzzle, opts, inputs, model.puzzle_identifier(puzzle), key, canonical,
                        started if started is not None else time.monotonic())

    # -- solving -----------------------------------------------------------------------------------

    async def solve(self, prep: Prepared, is_disconnected: Callable[[], Awaitable[bool]] | None = None) -> Outcome:
        hit = await self._cache_get(prep)
        if hit is not None:
            return hit
        if prep.options.halting == "auto":
            result, joined = await self._solve_auto(prep, is_disconnected)
        else:
            flight, joined = self._flight(prep)
            result = await self._wait(flight, is_disconnected)
        await self._cache_put(prep, result)
        return Outcome(result, coalesced=joined)

    async def _solve_auto(self, prep: Prepared, is_disconnected: Callable[[], Awaitable[bool]] | None
                          ) -> tuple[EngineOutput, bool]:
        """Adaptive compute: one plain trajectory halting on the verifier; if it ends unverified (and time is
        left), K noisy trajectories with verifier-first selection. Both runs are one engine request: the engine
        starts the escalation itself, ahead of new work, and answers with the better run (Scheduler). The
        escalation's seed comes from the cache key when the request gave none, so the same puzzle always
        escalates the same way (and can be cached)."""
        plain, escalation = self._auto_phases(prep)
        flight, joined = self._flight(plain, escalation=escalation)
        return await self._wait(flight, is_disconnected), joined

    def _auto_phases(self, prep: Prepared) -> tuple[Prepared, SolveOptions]:
        """A halting=auto request as the engine runs it: the plain run (`_plain_phase`) and its escalation, one
        engine request for /v1/solve and /v1/solve/stream alike."""
        return replace(prep, options=_plain_phase(prep.options)), self._escalation(prep)

    def _escalation(self, prep: Prepared) -> SolveOptions:
        """halting=auto's second run: K noisy trajectories halting on the verifier, verifier-first selection."""
        o = prep.options
        return msgspec.structs.replace(
            o, halting="verifier", trajectories=self._escalation_k(prep.model, o),
            noise=o.noise if o.noise > 0 else prep.model.info.default_noise, selection="verifier_first",
            seed=o.seed if o.seed is not None else self._escalation_seed(prep), escalate_after=None, hedge_after=None)

    @staticmethod
    def _escalation_seed(prep: Prepared) -> int:
        """The escalation's seed when the request gave none: from the cache key, so a puzzle always escalates the
        same way, but without hedge_after, which changes when the escalation runs and not what it draws (so a
        hedged request's escalation is the very run it would be without the hedge)."""
        o = prep.options
        if o.hedge_after is None:
            return _seed_of(prep.key)
        unhedged = msgspec.structs.replace(o, hedge_after=None).answer_options()
        return _seed_of(cache_key(prep.model.version, prep.task, prep.canonical, unhedged))

    async def stream(self, prep: Prepared) -> AsyncIterator[StepUpdate | Outcome | None]:
        """Step updates, then the Outcome. Returns once the engine queued the request, so the caller can turn
        queue-full / draining errors into a normal HTTP error before the stream starts."""
        hit = await self._cache_get(prep)
        if hit is not None:
            return _once(hit)
        events: asyncio.Queue[StepUpdate] = asyncio.Queue()
        # halting=auto streams what /v1/solve runs: the plain trajectory, then (or beside it, hedged) its escalation,
        # whose steps come as trajectories 1..K.
        if prep.options.halting == "auto":
            plain, escalation = self._auto_phases(prep)
            request = self._engine_request(plain, stream=True, escalation=escalation)
        else:
            request = self._engine_request(prep, stream=True)
        future = self.engine.submit(request, on_step=events.put_nowait)
        try:
            await self.engine.accepted(request.id)
        except BaseException:
            self.engine.abort([request.id])
            raise
        return self._stream_events(prep, request.id, future, events)

    async def _stream_events(self, prep: Prepared, request_id: str, future: asyncio.Future[EngineOutput],
                             events: asyncio.Queue[StepUpdate]) -> AsyncIterator[StepUpdate | Outcome | None]:
        """Yields None when nothing happened for KEEPALIVE_S (the caller sends an SSE comment)."""
        getter: asyncio.Future[StepUpdate] | None = None
        try:
            while True:
                getter = getter or asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({getter, future}, timeout=KEEPALIVE_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    getter = None
                    continue
                if future not in done:
                    yield None
                    continue
                while not events.empty():  # steps that arrived with the result
                    yield events.get_nowait()
                result = future.result()
                await self._cache_put(prep, result)
                yield Outcome(result)
                return
        finally:
            if getter is not None:
                getter.cancel()
            if not future.done():  # the client went away (generator closed): free the rows
                self.engine.abort([request_id])

    def _engine_request(self, prep: Prepared, stream: bool = False,
                        escalation: SolveOptions | None = None) -> EngineRequest:
        return EngineRequest(id=secrets.token_hex(16), model=prep.model.name, inputs=prep.inputs.tobytes(),
                             puzzle_identifier=prep.puzzle_identifier, options=prep.options, arrival=prep.started,
                             stream=stream, escalation=escalation,
                             verify_fact=prep.model.codec.verify_fact(prep.puzzle))

    def _flight(self, prep: Prepared, escalation: SolveOptions | None = None) -> tuple[_Flight, bool]:
        """Join an identical in-flight request, or submit a new one.

        The key is the cache key plus deadline_ms: only requests with the same time budget share a run, so
        a joiner is neither cut much earlier than it asked (by a shorter shared deadline) nor kept waiting
        past its own (by a longer one); the difference is at most the gap between their arrivals."""
        o = prep.options
        key = f"{prep.key}|{o.deadline_ms}"
        existing = self._inflight.get(key) if o.deterministic else None
        if existing is not None and not existing.future.done():
            return existing, True
        request = self._engine_request(prep, escalation=escalation)
        flight = _Flight(request.id, self.engine.submit(request))
        if o.deterministic:
            self._inflight[key] = flight
            flight.future.add_done_callback(lambda _f: self._forget(key, flight))
        return flight, False

    def _forget(self, key: str, flight: _Flight) -> None:
        if self._inflight.get(key) is flight:
            del self._inflight[key]

    async def _wait(self, flight: _Flight, is_disconnected: Callable[[], Awaitable[bool]] | None) -> EngineOutput:
        flight.waiters += 1
        watcher: asyncio.Future[None] | None = None
        try:
            # asyncio.wait, not await: cancelling this caller must not cancel a flight others may share.
            # Most answers are back within a few steps, before any watcher would have looked: only a request
            # still running after WATCH_AFTER_S gets one (a task polling the socket per request cost ~8% of an
            # API process's CPU at GPU request rates).
            waiting: set[asyncio.Future[Any]] = {flight.future}
            done, _ = await asyncio.wait(waiting, timeout=WATCH_AFTER_S if is_disconnected is not None else None)
            if not done and is_disconnected is not None:
                watcher = asyncio.ensure_future(_watch(is_disconnected))
                waiting.add(watcher)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if flight.future in done:
                return flight.future.result()
            raise ClientGone()
        finally:
            flight.waiters -= 1
            if watcher is not None:
                watcher.cancel()
            if flight.waiters == 0 and not flight.future.done():
                self.engine.abort([flight.request_id])  # nobody is waiting any more: free the rows

    # -- cache -------------------------------------------------------------------------------------

    async def _cache_get(self, prep: Prepared) -> Outcome | None:
        if not prep.options.cache:
            return None
        raw = await self.cache.get(prep.key)
        if raw is None:
            return None
        try:
            result = msgspec.msgpack.decode(raw, type=EngineOutput)
        except (msgspec.DecodeError, msgspec.ValidationError):  # a foreign or stale entry: recompute, never fail
            log.warning("ignoring unreadable cache entry %s", prep.key)
            return None
        return Outcome(msgspec.structs.replace(result, queue_ms=0.0, compute_ms=0.0), cached=True)

    async def _cache_put(self, prep: Prepared, result: EngineOutput) -> None:
        if not prep.options.cache or result.tokens is None or result.halted_by in ("deadline", "cancelled"):
            return
        if not prep.options.deterministic and not self._valid(prep, result):
            return
        await self.cache.set(prep.key, msgspec.msgpack.encode(result), self.cache_ttl_seconds)

    @staticmethod
    def _valid(prep: Prepared, result: EngineOutput) -> bool:
        if result.valid is not None:
            return result.valid
        return result.tokens is not None and prep.verifier(tokens_from_bytes(result.tokens))

    # -- rendering ---------------------------------------------------------------------------------

    def answer_fields(self, prep: Prepared, tokens: np.ndarray | None, engine_verified: bool = False
                      ) -> dict[str, Any]:
        """The answer in the caller's form, as text, the verifier's verdict and the givens it overwrote.

        `engine_verified`: the engine's token verifier (models/verify.py, the codec's verdict row for row) passed
        these very tokens, so the codec's check is not run again: a valid answer has no reasons and keeps every
        given (Sudoku) or the whole maze (Maze)."""
        if tokens is None:
            return {"answer": None, "answer_text": None, "verified": False,
                    "verification": ["no ACT step ran, so there is no answer"], "overwritten": []}
        codec = prep.model.codec
        try:
            answer = codec.decode(tokens, prep.puzzle)
        except PuzzleError as err:  # the model's output is no answer at all: say so, never a 500
            return {"answer": None, "answer_text": None, "verified": False,
                    "verification": [f"the model's output could not be decoded: {err}"], "overwritten": []}
        return self._answer(prep, answer, engine_verified)

    @staticmethod
    def _answer(prep: Prepared, answer: Any, engine_verified: bool = False) -> dict[str, Any]:
        codec = prep.model.codec
        fields = {"answer": codec.answer_payload(answer, prep.puzzle), "answer_text": codec.render(answer)}
        if engine_verified:
            return fields | {"verified": True, "verification": [], "overwritten": []}
        verdict = codec.verify(prep.puzzle, answer)
        return fields | {"verified": verdict.valid, "verification": list(verdict.reasons[:MAX_REASONS]),
                         "overwritten": codec.overwritten(prep.puzzle, answer)}

    def exact_facts(self, prep: Prepared) -> ExactFacts | None:
        """The codec's exact facts about the puzzle, from the last FACTS_KEPT puzzles when it is one of them
        (facts the effort cap cut short are not kept: a later try may get further). A server with its cache off
        (RECURSOLVE_CACHE_ENABLED=false, as the benchmarks run) keeps none either: every answer pays for them."""
        if not self.cache_enabled:
            return prep.model.codec.exact(prep.puzzle)
        key = (prep.task, prep.canonical)
        if key in self._facts:
            self._facts.move_to_end(key)
            return self._facts[key]
        facts = prep.model.codec.exact(prep.puzzle)
        if not (facts is not None and facts.capped):
            self._facts[key] = facts
            if len(self._facts) > FACTS_KEPT:
                self._facts.popitem(last=False)
        return facts

    def render(self, prep: Prepared, outcome: Outcome, request_id: str | None = None) -> dict[str, Any]:
        r = outcome.result
        fields = self.answer_fields(prep, outcome.tokens, engine_verified=r.valid is True)
        # Exact facts beside the neural answer: the bitmask solver / BFS (0.1-2 ms for a Sudoku, capped).
        facts = self.exact_facts(prep)
        solved_by = "model"
        if not fields["verified"] and prep.options.fallback == "exact" and facts is not None and facts.solution:
            fields, solved_by = self._answer(prep, facts.solution), "exact"
        total_ms = (time.monotonic() - prep.started) * 1000.0
        body = {
            "request_id": request_id,
            "task": prep.task,
            "model": {"name": prep.model.name, "version": prep.model.version},
            **fields,
            "confidence": r.confidence,
            "steps": r.steps,
            "halted_by": r.halted_by,
            "solved_by": solved_by,
            "solvable": facts.solvable if facts is not None else None,
            "unique": facts.unique if facts is not None else None,
            "escalated": prep.options.halting == "auto" and r.trajectories > 1,
            "trajectories": r.trajectories,
            "chosen_trajectory": r.chosen,
            "row_steps": r.row_steps,
            "cached": outcome.cached,
            "coalesced": outcome.coalesced,
            "timings": {"queue_ms": round(r.queue_ms, 3), "compute_ms": round(r.compute_ms, 3),
                        "total_ms": round(total_ms, 3)},
        }
        self._observe(prep, outcome, body, total_ms)
        return body

    def _observe(self, prep: Prepared, outcome: Outcome, body: dict[str, Any], total_ms: float) -> None:
        series, r = prep.model.series, outcome.result
        series.ok.inc()
        series.duration.observe(total_ms / 1000.0)
        series.answers[bool(body["verified"])].inc()
        if outcome.cached or outcome.coalesced:
            return  # the engine did no work for this caller
        series.queue_wait.observe(r.queue_ms / 1000.0)
        series.compute.observe(r.compute_ms / 1000.0)
        series.act_steps.observe(r.steps)
        series.trajectories.observe(r.trajectories)

    # -- lifecycle ---------------------------------------------------------------------------------

    def begin_drain(self) -> None:
        """Stop admission in this process (readyz and new solves turn 503); running requests go on."""
        self.draining = True

    async def drain(self, grace_s: float) -> None:
        """Let this process's requests finish within `grace_s`; then cut what still runs (each request gets its
        best answer so far, halted_by=deadline, and requests still queued resolve without an answer)."""
        self.begin_drain()
        end = time.monotonic() + grace_s
        while time.monotonic() < end and self.engine.in_flight:
            await asyncio.sleep(0.05)
        ids = self.engine.pending_ids()
        if ids:
            log.warning("grace period over: cutting %d requests still running", len(ids))
            with contextlib.suppress(Exception):
                await self.engine.cut(ids)
            cut_end = time.monotonic() + 2.0
            while time.monotonic() < cut_end and self.engine.in_flight:
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Close the cache (after `drain`)."""
        with contextlib.suppress(Exception):
            await self.cache.close()


def _plain_phase(opts: SolveOptions) -> SolveOptions:
    """halting=auto's first run: one trajectory, no noise, halting on the verifier, stopped at escalate_after steps
    (resolve_options has set it, at most max_steps) since an escalation follows when it fails."""
    return msgspec.structs.replace(opts, halting="verifier", trajectories=1, noise=0.0,
                                   max_steps=opts.escalate_after or opts.max_steps)


def _seed_of(key: str) -> int:
    """A 63-bit seed from a cache key: the same request always draws the same noise."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


class SharedDisconnect:
    """One client's disconnect check shared by many waiters (the items of a batch): the connection is probed at
    most once per DISCONNECT_POLL_S however many items ask. Each probe is a cancelled anyio scope around a
    receive (Starlette's is_disconnected), and 64 items polling it 20 times a second each kept an API process
    busy with nothing else."""

    def __init__(self, probe: Callable[[], Awaitable[bool]]) -> None:
        self.probe = probe
        self.gone = False
        self.checked = -math.inf

    async def __call__(self) -> bool:
        now = time.monotonic()
        if not self.gone and now - self.checked >= DISCONNECT_POLL_S:
            self.checked = now  # before the await: callers meanwhile get the last answer
            self.gone = await self.probe()
        return self.gone


async def _watch(is_disconnected: Callable[[], Awaitable[bool]]) -> None:
    while not await is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


async def _once(outcome: Outcome) -> AsyncIterator[StepUpdate | Outcome | None]:
    yield outcome
