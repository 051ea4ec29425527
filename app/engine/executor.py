"""Execution: a fixed pool of batch rows and the worker thread that steps them.

Tensors only. Each iteration: ask the scheduler to admit waiting requests (embed once, fresh
carry for their rows), run one ACT step on the active rows (gathered by index; the whole pool
as is when every row is busy), add PTRM noise to the rows that asked for it, and hand the
decoded tokens and Q values back to the scheduler, which frees and resolves what halted.

The worker thread never touches asyncio objects except through `Request.resolve/publish`,
which go through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from app import metrics
from app.engine.backends import Backend
from app.engine.request import EngineError, Request
from app.engine.scheduler import Admission, Scheduler, StepReport
from models.ptrm import inject_noise

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.25  # how long an idle worker sleeps between checks if nobody wakes it


class Executor:
    """One per served model: owns the batch pool, the scheduler and the worker thread."""

    def __init__(self, name: str, backend: Backend, *, batch_rows: int, max_queue_rows: int) -> None:
        self.name = name
        self.backend = backend
        cfg = backend.loaded.config
        self.seq_len, self.total_len, self.hidden = cfg.seq_len, cfg.total_len, cfg.hidden_size
        self.scheduler = Scheduler(batch_rows, max_queue_rows, cfg.seq_len)
        self.batch_rows = batch_rows
        self.device = backend.device
        self.x = torch.zeros(batch_rows, self.total_len, self.hidden, dtype=backend.dtype, device=self.device)
        self.z_H, self.z_L = backend.fresh_carry(batch_rows)
        self._generators: dict[int, torch.Generator] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._cut = False
        self._thread: threading.Thread | None = None
        self.steps_run = 0
        self._m_rows = metrics.STEP_ACTIVE_ROWS.labels(model=name)
        self._m_step = metrics.STEP_DURATION.labels(model=name)
        self._m_queue = metrics.QUEUE_DEPTH.labels(model=name)
        self._m_running = metrics.RUNNING_ROWS.labels(model=name)
        metrics.QUEUE_CAPACITY.labels(model=name).set(max_queue_rows)

    # -- lifecycle ---------------------------------------------------------------------------------

    def warmup(self) -> None:
        """One step at batch 1 and at the full pool, so the first caller does not pay for lazy init."""
        with torch.inference_mode():
            for n in sorted({1, self.batch_rows}):
                inputs = torch.ones(n, self.seq_len, dtype=torch.int32)
                x = self.backend.embed(inputs, torch.zeros(n, dtype=torch.int32))
                z_H, z_L = self.backend.fresh_carry(n)
                self.backend.act_step(x, z_H, z_L)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"recursolve-step-{self.name}", daemon=True)
        self._thread.start()

    def submit(self, request: Request) -> None:
        """Queue a request (raises QueueFull / NotAccepting / TooManyRows) and wake the worker."""
        self.scheduler.submit(request)
        self._wake()

    def stop_accepting(self) -> None:
        self.scheduler.stop_accepting()

    @property
    def idle(self) -> bool:
        return not self.scheduler.has_work()

    def cut(self) -> None:
        """Resolve everything still running with its answer so far (the grace period ran out)."""
        with self._cond:
            self._cut = True
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        s = self.scheduler
        return {"batch_rows": self.batch_rows, "running_rows": s.running_rows, "queued_rows": s.queued_rows,
                "queued_requests": s.queued_requests, "max_queue_rows": s.max_queue_rows,
                "steps_run": self.steps_run, "accepting": s.accepting}

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # -- the loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._stop or self._cut or self.scheduler.has_work()):
                        self._cond.wait(IDLE_WAIT_S)
                    if self._cut:
                        self._cut = False
                        self._record(self.scheduler.cut_all())
                    if self._stop:
                        return
                try:
                    self.step_once()
                except Exception as e:  # a failed step must not kill the thread: fail its requests instead
                    log.exception("ACT step failed on model %s", self.name)
                    self.scheduler.abort_all(EngineError(f"model {self.name} failed during a step: {e}"))
                    self._generators.clear()

    def step_once(self) -> None:
        admitted, dropped = self.scheduler.admit()
        for _, result in dropped:  # never admitted: each of its trajectories stops before its first step
            metrics.HALTS.labels(model=self.name, reason=result.halted_by).inc(result.trajectories)
        if admitted:
            self._load_rows(admitted)
        idx = self.scheduler.active_rows()
        self._m_queue.set(self.scheduler.queued_rows)
        self._m_running.set(len(idx))
        if len(idx) == 0:
            return

        t0 = time.perf_counter()
        whole = len(idx) == self.batch_rows
        if whole:  # every row busy: no gather, no scatter
            x, z_H, z_L = self.x, self.z_H, self.z_L
        else:
            it = torch.from_numpy(idx).to(self.device)
            x, z_H, z_L = self.x.index_select(0, it), self.z_H.index_select(0, it), self.z_L.index_select(0, it)
        self._add_noise(idx, z_H, z_L)
        out = self.backend.act_step(x, z_H, z_L)
        if whole:
            self.z_H, self.z_L = out.z_H, out.z_L
        else:
            self.z_H.index_copy_(0, it, out.z_H.to(self.z_H.dtype))
            self.z_L.index_copy_(0, it, out.z_L.to(self.z_L.dtype))
        tokens = out.logits.argmax(-1).cpu().numpy()
        q_halt = out.q_halt.float().cpu().numpy()
        halted = self.backend.model_halted(out.q_halt, out.q_continue).cpu().numpy()
        self.steps_run += 1
        self._m_rows.observe(len(idx))
        self._m_step.observe(time.perf_counter() - t0)

        report = self.scheduler.decide(idx, tokens, q_halt, halted)
        self._record(report)

    def _record(self, report: StepReport) -> None:
        for reason, n in report.halts.items():
            metrics.HALTS.labels(model=self.name, reason=reason).inc(n)
        for req, _ in report.resolved:
            self._generators.pop(req.id, None)
        if report.resolved:
            self._m_running.set(self.scheduler.running_rows)

    def _load_rows(self, admitted: list[Admission]) -> None:
        """Embed each admitted request once and copy it into its K rows; fresh carry for those rows."""
        inputs = torch.from_numpy(np.stack([a.request.inputs for a in admitted]).astype(np.int32))
        ids = torch.tensor([a.request.puzzle_identifier for a in admitted], dtype=torch.int32)
        x = self.backend.embed(inputs, ids).to(self.x.dtype)
        counts = torch.tensor([len(a.rows) for a in admitted], device=x.device)
        rows = torch.tensor([r for a in admitted for r in a.rows], device=self.device)
        self.x.index_copy_(0, rows, x.repeat_interleave(counts, dim=0).to(self.device))
        z_H, z_L = self.backend.fresh_carry(len(rows))
        self.z_H.index_copy_(0, rows, z_H.to(self.z_H.dtype))
        self.z_L.index_copy_(0, rows, z_L.to(self.z_L.dtype))
        for a in admitted:
            o = a.request.options
            if o.noise > 0:
                seed = o.seed if o.seed is not None else secrets.randbits(63)
                self._generators[a.request.id] = torch.Generator(device=self.device).manual_seed(seed)

    def _add_noise(self, idx: np.ndarray, z_H: torch.Tensor, z_L: torch.Tensor) -> None:
        """PTRM: sigma * N(0, I) on each noisy request's carry at the start of every step.

        Noise is drawn for all K trajectories of the request every step, halted ones included, so a
        request's random stream does not depend on when its rows halt (same seed -> same answer,
        and the same draws as the offline `models.ptrm.ptrm_solve`). Only active rows receive it.
        """
        if not self._generators:
            return
        for req, positions, trajs in self._noisy_groups(idx):
            o = req.options
            shape = (o.trajectories, self.total_len, self.hidden)
            zeros_H = torch.zeros(shape, dtype=z_H.dtype, device=z_H.device)
            zeros_L = torch.zeros(shape, dtype=z_L.dtype, device=z_L.device)
            n_H, n_L = inject_noise(zeros_H, zeros_L, o.noise, o.noise_on, self._generators[req.id])
            pos = torch.as_tensor(positions, device=z_H.device)
            k = torch.as_tensor(trajs, device=z_H.device)
            if n_H is not zeros_H:
                z_H.index_add_(0, pos, n_H.index_select(0, k))
            if n_L is not zeros_L:
                z_L.index_add_(0, pos, n_L.index_select(0, k))

    def _noisy_groups(self, idx: np.ndarray) -> Iterable[tuple[Request, list[int], list[int]]]:
        groups: dict[int, tuple[Request, list[int], list[int]]] = {}
        s = self.scheduler
        for p, row in enumerate(idx):
            req = s.row_req[row]
            if req is not None and req.id in self._generators:
                g = groups.setdefault(req.id, (req, [], []))
                g[1].append(p)
                g[2].append(int(s.row_traj[row]))
        return groups.values()
