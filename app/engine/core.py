"""The engine core: every served model's scheduler and runner, stepped by one loop.

`EngineCore.step()` is one iteration for every model with work:
    batch = scheduler.schedule(now)   # pure policy
    step  = runner.launch(batch)      # tensors (a CUDA graph replay on GPUs)
    out   = runner.collect(step)      # on CUDA the previous iteration's step, collected while this one runs
    res   = scheduler.update(out)     # pure policy
and returns the plain `Outputs` to send. It does no I/O: `app.engine.core_loop` moves messages between
it and the API processes (over ZMQ, in its own process or in a thread for tests and the CLI).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app import metrics
from app.engine.backends import make_backend
from app.engine.phases import PhaseClock
from app.engine.protocol import (
    UNKNOWN_MODEL,
    EngineRequest,
    ModelInfo,
    Outputs,
    Rejected,
    tokens_from_bytes,
)
from app.engine.runner import Launched, ModelRunner, NoiseRows
from app.engine.scheduler import Scheduler, StepResult
from app.settings import ModelSpec
from models.checkpoint import confidence_temperature
from models.ptrm import DEFAULT_SIGMA
from models.verify import has_token_verifier

log = logging.getLogger(__name__)

CARD_FILE = "card.json"
IDENTIFIERS_FILE = "identifiers.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _identifiers(folder: Path) -> dict[str, int]:
    """identifiers.json is a list of names indexed by identifier (the official layout) or a name -> id map."""
    data = _read_json(folder / IDENTIFIERS_FILE) if folder.is_dir() else None
    if isinstance(data, list):
        return {str(name): i for i, name in enumerate(data)}
    if isinstance(data, dict):
        return {str(k): int(v) for k, v in data.items()}
    return {}


def resolve_device(device: str) -> str:
    """`auto`: the first CUDA device when torch sees one, else the CPU."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_batch_rows(device: str) -> int:
    """A tiny model's step costs about the same at 1 and 256 rows on a GPU; on a CPU it grows with the rows."""
    return 256 if device.startswith("cuda") else 32


@dataclass
class InFlight:
    """A launched step not yet collected, with what is needed to apply its results to the right rows."""

    launched: Launched
    epochs: np.ndarray  # the scheduler's row_epoch of its rows at launch
    t0: float  # perf_counter at launch


@dataclass
class ModelEngine:
    """One served model inside the engine core: its runner, its scheduler and what the API is told about it."""

    info: ModelInfo
    runner: ModelRunner
    scheduler: Scheduler
    steps_run: int = 0
    rows_stepped: int = 0  # rows launched over all steps (with runner.overlap, rows whose result is dropped too)
    in_flight: InFlight | None = None  # runner.overlap: the step launched last, collected in the next iteration
    clock: PhaseClock = field(default_factory=PhaseClock)  # the engine core's, shared by its models

    @classmethod
    def load(cls, spec: ModelSpec, *, max_share: float = 1.0, cuda_graphs: bool | None = None,
             overlap: bool | None = None) -> ModelEngine:
        """`overlap` (tests) overrides the spec's."""
        device = resolve_device(spec.device)
        rows = spec.batch_rows or default_batch_rows(device)
        queue_rows = spec.max_queue_rows or max(512, 4 * rows)
        backend = make_backend(spec.path, backend=spec.backend, device=device, dtype=spec.dtype, task=spec.task)
        loaded, cfg = backend.loaded, backend.loaded.config
        verify_task = spec.task if has_token_verifier(spec.task) else None
        compile_step = spec.compile if spec.compile is not None else device.startswith("cuda")
        runner = ModelRunner(backend, rows, verify_task, cuda_graphs=cuda_graphs, compile_step=compile_step,
                             overlap=overlap if overlap is not None else spec.overlap,
                             blocking_wait=spec.wait == "block")
        folder = Path(spec.path) if Path(spec.path).is_dir() else Path(spec.path).parent
        card = _read_json(folder / CARD_FILE)
        temperature = confidence_temperature(spec.path)
        scheduler = Scheduler(rows, queue_rows, cfg.seq_len, max_share=max_share, confidence_temperature=temperature,
                              max_queue_bytes=spec.max_queue_bytes)
        info = ModelInfo(
            name=spec.name, task=spec.task, arch=cfg.arch, version=loaded.version, source=loaded.source,
            parameters=loaded.model.num_parameters(), seq_len=cfg.seq_len, halt_max_steps=cfg.halt_max_steps,
            config={"hidden_size": cfg.hidden_size, "H_cycles": cfg.H_cycles, "L_cycles": cfg.L_cycles,
                    "L_layers": cfg.L_layers, "H_layers": cfg.H_layers, "mlp_t": cfg.mlp_t, "seq_len": cfg.seq_len,
                    "halt_max_steps": cfg.halt_max_steps, "num_puzzle_identifiers": cfg.num_puzzle_identifiers,
                    "confidence_temperature": temperature},
            backend=runner.describe(), batch_rows=rows, max_queue_rows=queue_rows,
            max_request_rows=scheduler.max_share_rows,
            default_options=dict(spec.default_options), default_noise=DEFAULT_SIGMA.get(spec.task, 0.3),
            step_verifier=verify_task is not None, limits=spec.limits.model_dump(),
            default_for_task=spec.default_for_task,
            card=card if isinstance(card, dict) else {},
            identifiers=_identifiers(folder))
        metrics.QUEUE_CAPACITY.labels(model=spec.name).set(queue_rows)
        return cls(info, runner, scheduler)

    def stats(self) -> dict[str, Any]:
        s = self.scheduler
        return {"batch_rows": s.num_rows, "running_rows": s.running_rows, "queued_rows": s.queued_rows,
                "queued_requests": s.queued_requests, "max_queue_rows": s.max_queue_rows,
                "queued_bytes": s.queued_bytes, "max_queue_bytes": s.max_queue_bytes,
                "steps_run": self.steps_run, "rows_stepped": self.rows_stepped, "accepting": s.accepting}

    def add(self, request: EngineRequest) -> Rejected | None:
        verify_each = request.options.needs_step_verifier and self.runner.verify_task is not None
        return self.scheduler.add(request, verify_each=verify_each)

    def has_work(self) -> bool:
        return self.scheduler.has_work() or self.in_flight is not None

    def step(self, now: float) -> StepResult:
        """Admit, launch a step of the active rows, and apply the halting rules to the step collected: this one,
        or with runner.overlap the one launched in the previous iteration (the device runs this one meanwhile).
        Rows that halted or changed hands after an overlapped step was launched ran it for nothing: their results
        are dropped (a request that halts on its verifier or Q-head gets one wasted row-step at its end, against
        Python that no longer waits on the device; a row the step in flight brings to max_steps is not launched
        again)."""
        result = StepResult()
        try:
            self._step(now, result)
        except Exception as e:  # a failed step fails its requests, never the loop; what it resolved still goes out
            log.exception("ACT step failed on model %s", self.info.name)
            result.rejected = self.scheduler.fail_all(f"model {self.info.name} failed during a step: {e}")
            result.failed = True
            self.runner.generators.clear()
            self.in_flight = None
        return result

    def _step(self, now: float, result: StepResult) -> None:
        """`step`'s work, into `result` as it goes: the requests `schedule` resolves (deadline passed in the
        queue) are out of the scheduler from then on, so a failure later in the step must not lose them."""
        name, sched, runner, clock = self.info.name, self.scheduler, self.runner, self.clock
        t = time.perf_counter()
        batch = sched.schedule(now)
        result.finished, result.dropped = batch.finished, batch.dropped
        for o in batch.finished:  # resolved without running: each of its trajectories stopped
            result.halts[o.halted_by] += o.trajectories
        t = clock.lap("schedule", t)
        if batch.admitted:
            inputs = b"".join([a.state.request.inputs for a in batch.admitted])  # one array, not one per request
            runner.load_rows(tokens_from_bytes(inputs).reshape(len(batch.admitted), -1),
                             np.array([a.state.request.puzzle_identifier for a in batch.admitted]),
                             [a.rows for a in batch.admitted], [a.state.request.verify_fact for a in batch.admitted])
            for a in batch.admitted:
                o = a.state.request.options
                if o.noise > 0:
                    runner.start_noise(a.state.id, o.seed)
            t = clock.lap("load", t)
        idx = batch.active
        if self.in_flight is not None:  # overlapped: the step in flight surely ends some rows (max_steps)
            idx = sched.worth_launching(idx, self.in_flight.launched.idx, self.in_flight.epochs)
        metrics.QUEUE_DEPTH.labels(model=name).set(sched.queued_rows)
        metrics.RUNNING_ROWS.labels(model=name).set(len(idx))
        flight = None  # the step launched now; with runner.overlap, swapped for the one launched before
        t = clock.lap("schedule", t)
        if len(idx):
            t0 = t
            self._add_noise(idx)
            t = clock.lap("noise", t)
            flight = InFlight(runner.launch(idx), sched.row_epoch[idx], t0)
            self.steps_run += 1
            self.rows_stepped += len(idx)
            metrics.STEP_ACTIVE_ROWS.labels(model=name).observe(len(idx))
            t = clock.lap("launch", t)
        if runner.overlap:
            flight, self.in_flight = self.in_flight, flight
        if flight is None:
            return
        out = runner.collect(flight.launched)
        t = clock.lap("collect", t)
        metrics.STEP_DURATION.labels(model=name).observe(t - flight.t0)
        ran = flight.launched.idx
        keep = sched.still_running(ran, flight.epochs)
        if not keep.all():
            ran, out = ran[keep], out.take(keep)
        step = sched.update(ran, out.tokens, out.q_halt, out.model_halted, out.verified, time.monotonic())
        result.finished += step.finished
        result.steps = step.steps
        result.halts.update(step.halts)
        result.dropped += step.dropped
        metrics.RUNNING_ROWS.labels(model=name).set(sched.running_rows)
        self._forget_noise()
        clock.lap("update", t)

    def _add_noise(self, idx: np.ndarray) -> None:
        """PTRM noise on the rows of `idx` that belong to noisy requests: a loop over those requests (a few),
        not over the step's rows (hundreds)."""
        if not self.runner.generators:
            return
        stepping = set(idx.tolist())
        noisy: list[NoiseRows] = []
        for rid in self.runner.generators:
            s = self.scheduler.live_state(rid)
            if s is None:
                continue
            rows = sorted(r for r in s.rows if r in stepping)
            if rows:
                o = s.request.options
                noisy.append(NoiseRows(rid, o.trajectories, o.noise, o.noise_on, rows,
                                       self.scheduler.row_traj[rows].tolist()))
        if noisy:
            self.runner.add_noise(noisy)

    def _forget_noise(self) -> None:
        for rid in [r for r in self.runner.generators if not self.scheduler.is_live(r)]:
            self.runner.end_noise(rid)


class EngineCore:
    """All served models of one device. Not thread-safe: one loop owns it."""

    def __init__(self, models: dict[str, ModelEngine]) -> None:
        self.models = models
        self.clock = PhaseClock()  # where the loop's time goes (the loop times its messages; each model its step)
        for m in models.values():
            m.clock = self.clock
        self._owner: dict[str, str] = {}  # request id -> model name, until its output is sent

    @classmethod
    def load(cls, specs: list[ModelSpec], *, warmup: bool = True, max_share: float = 1.0,
             cuda_graphs: bool | None = None, overlap: bool | None = None) -> EngineCore:
        models: dict[str, ModelEngine] = {}
        for spec in specs:
            engine = ModelEngine.load(spec, max_share=max_share, cuda_graphs=cuda_graphs, overlap=overlap)
            if warmup:
                engine.runner.warmup()
            models[spec.name] = engine
            log.info("model %s (%s, %s) ready: version %s", spec.name, spec.task, engine.info.backend,
                     engine.info.version)
        return cls(models)

    def infos(self) -> list[ModelInfo]:
        return [m.info for m in self.models.values()]

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: m.stats() for name, m in self.models.items()}

    def has_work(self) -> bool:
        return any(m.has_work() for m in self.models.values())

    def add(self, requests: list[EngineRequest]) -> Outputs:
        out = Outputs()
        for req in requests:
            model = self.models.get(req.model)
            rejected = (Rejected(req.id, UNKNOWN_MODEL, f"the engine serves no model {req.model!r}")
                        if model is None else model.add(req))
            if rejected is not None:
                out.rejected.append(rejected)
                continue
            self._owner[req.id] = req.model
            if req.stream:
                out.accepted.append(req.id)
        return out

    def abort(self, ids: list[str]) -> None:
        for name, group in self._by_model(ids).items():
            self.models[name].scheduler.abort(group)

    def cut(self, ids: list[str]) -> Outputs:
        out = Outputs()
        now = time.monotonic()
        for name, group in self._by_model(ids).items():
            self._collect(out, name, self.models[name].scheduler.cut(group, now))
        return out

    def drain(self) -> None:
        """Stop admitting: each later request is rejected with `draining` (running ones go on)."""
        for m in self.models.values():
            m.scheduler.stop_accepting()

    def step(self) -> Outputs:
        out = Outputs()
        for name, model in self.models.items():
            if not model.has_work():
                continue
            with torch.inference_mode():
                result = model.step(time.monotonic())
            t = time.perf_counter()
            self._collect(out, name, result)
            self.clock.lap("update", t)
        return out

    def _collect(self, out: Outputs, name: str, result: StepResult) -> None:
        for reason, n in result.halts.items():
            metrics.HALTS.labels(model=name, reason=reason).inc(n)
        for rid in [o.id for o in result.finished] + result.dropped:
            self._owner.pop(rid, None)
        if result.failed:  # the model holds no request now (the rejected, and cancelled ones that get nothing)
            self._owner = {rid: m for rid, m in self._owner.items() if m != name}
        out.finished += result.finished
        out.steps += result.steps
        out.rejected += result.rejected

    def _by_model(self, ids: list[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rid in ids:
            name = self._owner.get(rid)
            if name is not None:
                groups.setdefault(name, []).append(rid)
        return groups
