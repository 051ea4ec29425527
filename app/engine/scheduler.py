"""Scheduling policy: who waits, who gets a batch row, when a row is done, how a PTRM request resolves.

No tensors here, only small numpy arrays of per-row bookkeeping. The event loop calls `submit`
(under a lock); everything else runs on the model's worker thread between two ACT steps.

Policy, in short:
- The waiting queue is FIFO and counted in rows: a PTRM request asks for K rows, as vLLM counts a
  request with n samples as n sequences. Strict FIFO (no backfill past a big request) so a K=64
  request cannot be starved by a stream of small ones.
- Deadlines include queue time. A request whose deadline passes, or whose client left, while it is
  still queued is resolved without running: steps 0 and no answer (halted_by deadline/cancelled).
- After each step every row is checked at once (vectorised): cancelled, verified, Q-head, converged,
  step limit, deadline, in that order of precedence when several fire in the same step.
- A PTRM request frees each row as soon as that row halts; it resolves when its last row halts
  (selection policy over the K answers), at once when one row's answer passes the verifier, or when
  its deadline cuts every row (selection over the answers so far).
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.engine.request import Request, Result, StepEvent
from models.ptrm import select_trajectory


class QueueFull(Exception):
    """The waiting queue holds `max_queue_rows` rows already (HTTP 429 with Retry-After)."""

    def __init__(self, queued_rows: int, limit: int, retry_after_s: int) -> None:
        self.queued_rows, self.limit, self.retry_after_s = queued_rows, limit, retry_after_s
        super().__init__(f"queue full: {queued_rows} rows waiting (limit {limit}); retry in {retry_after_s} s")


class NotAccepting(Exception):
    """The engine is draining or stopped (HTTP 503)."""


class TooManyRows(ValueError):
    """A request asks for more rows than the batch pool has: it could never be admitted (HTTP 413)."""


# Halt reason codes, in precedence order (index 0 = still running).
REASONS = ("", "cancelled", "verified", "q_head", "converged", "max_steps", "deadline")
_CANCELLED, _VERIFIED, _Q_HEAD, _CONVERGED, _MAX_STEPS, _DEADLINE = range(1, 7)
_RULE_Q, _RULE_MAX, _RULE_VERIFIER = 0, 1, 2
_RULE_CODES = {"q_head": _RULE_Q, "max_steps": _RULE_MAX, "verifier": _RULE_VERIFIER}


@dataclass(frozen=True)
class Admission:
    request: Request
    rows: list[int]


@dataclass
class StepReport:
    """What one `decide` call did, for metrics (the executor turns it into counter updates)."""

    halts: Counter[str]
    resolved: list[tuple[Request, Result]]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


class Scheduler:
    def __init__(self, num_rows: int, max_queue_rows: int, seq_len: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.num_rows = num_rows
        self.max_queue_rows = max_queue_rows
        self.clock = clock
        self._lock = threading.Lock()
        self._waiting: deque[Request] = deque()
        self._waiting_rows = 0
        self.accepting = True
        self.avg_request_s = 1.0  # EWMA of admitted-to-resolved time, for Retry-After

        # Per-row bookkeeping, touched only by the worker thread.
        r = num_rows
        self.row_req: list[Request | None] = [None] * r
        self.row_traj = np.zeros(r, np.int64)
        self.active = np.zeros(r, bool)
        self.steps = np.zeros(r, np.int64)
        self.unchanged = np.zeros(r, np.int64)
        self.max_steps = np.zeros(r, np.int64)
        self.threshold = np.full(r, np.nan)
        self.rule = np.zeros(r, np.int8)
        self.converge = np.zeros(r, np.int64)
        self.deadline = np.full(r, np.inf)
        self.verify_each = np.zeros(r, bool)
        self.last_tokens = np.zeros((r, seq_len), np.int64)
        self.last_q = np.full(r, -np.inf)
        self._free = list(range(r))  # a heap: the lowest free rows are handed out first
        self._rows_of: dict[int, list[int]] = {}  # request id -> rows it still holds

    # -- event loop side ---------------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        if request.rows > self.num_rows:
            raise TooManyRows(f"{request.rows} trajectories need {request.rows} batch rows but this model has "
                              f"{self.num_rows}; ask for at most {self.num_rows}")
        with self._lock:
            if not self.accepting:
                raise NotAccepting("the server is draining and accepts no new requests; retry on another replica")
            if self._waiting_rows + request.rows > self.max_queue_rows:
                raise QueueFull(self._waiting_rows, self.max_queue_rows, self.retry_after(request.rows))
            self._waiting.append(request)
            self._waiting_rows += request.rows

    def retry_after(self, extra_rows: int = 0) -> int:
        """Seconds until the queue has room, estimated from the queue length and the recent request time."""
        waves = (self._waiting_rows + extra_rows) / self.num_rows
        return max(1, math.ceil(waves * self.avg_request_s))

    def stop_accepting(self) -> None:
        with self._lock:
            self.accepting = False

    @property
    def queued_rows(self) -> int:
        return self._waiting_rows

    @property
    def queued_requests(self) -> int:
        return len(self._waiting)

    @property
    def running_rows(self) -> int:
        return int(self.active.sum())

    def has_work(self) -> bool:
        return bool(self._waiting) or bool(self.active.any())

    # -- worker side -------------------------------------------------------------------------------

    def admit(self, now: float | None = None) -> tuple[list[Admission], list[tuple[Request, Result]]]:
        """Move waiting requests into free rows; resolve queued requests that were cancelled or ran out of time."""
        now = self.clock() if now is None else now
        admitted: list[Admission] = []
        dropped: list[tuple[Request, Result]] = []
        with self._lock:
            if any(r.cancelled or r.deadline <= now for r in self._waiting):
                keep: deque[Request] = deque()
                for req in self._waiting:
                    if req.cancelled or req.deadline <= now:
                        self._waiting_rows -= req.rows
                        dropped.append((req, self._unstarted(req, "cancelled" if req.cancelled else "deadline", now)))
                    else:
                        keep.append(req)
                self._waiting = keep
            while self._waiting and len(self._free) >= self._waiting[0].rows:
                req = self._waiting.popleft()
                self._waiting_rows -= req.rows
                rows = [heapq.heappop(self._free) for _ in range(req.rows)]
                self._place(req, rows, now)
                admitted.append(Admission(req, rows))
        for req, result in dropped:
            req.resolve(result)
        return admitted, dropped

    def _place(self, req: Request, rows: list[int], now: float) -> None:
        o = req.options
        req.admitted_at = now
        self._rows_of[req.id] = list(rows)
        for k, row in enumerate(rows):
            self.row_req[row] = req
            self.row_traj[row] = k
        idx = np.asarray(rows)
        self.active[idx] = True
        self.steps[idx] = 0
        self.unchanged[idx] = 0
        self.max_steps[idx] = o.max_steps
        self.threshold[idx] = o.threshold_logit
        self.rule[idx] = _RULE_CODES[o.halting]
        self.converge[idx] = o.converge_steps or 0
        self.deadline[idx] = req.deadline
        self.verify_each[idx] = o.needs_step_verifier and req.verifier is not None
        self.last_q[idx] = -np.inf

    def active_rows(self) -> np.ndarray:
        return np.flatnonzero(self.active)

    def decide(self, idx: np.ndarray, tokens: np.ndarray, q_halt: np.ndarray, model_halted: np.ndarray,
               now: float | None = None) -> StepReport:
        """Apply every halting rule to the rows `idx` that just ran one step; free and resolve what halted.

        tokens [n, seq_len] (argmax of the logits), q_halt [n], model_halted [n] (the model's own rule).
        """
        now = self.clock() if now is None else now
        steps = self.steps[idx] + 1
        self.steps[idx] = steps
        same = (steps > 1) & (tokens == self.last_tokens[idx]).all(axis=1)
        unchanged = np.where(same, self.unchanged[idx] + 1, 0)
        self.unchanged[idx] = unchanged
        self.last_tokens[idx] = tokens
        self.last_q[idx] = q_halt

        reqs = [self.row_req[i] for i in idx]
        threshold = self.threshold[idx]
        own_rule = np.isnan(threshold)
        q_rule = (self.rule[idx] == _RULE_Q) & np.where(own_rule, model_halted,
                                                        q_halt > np.where(own_rule, 0.0, threshold))
        cancelled = np.fromiter((r.cancelled for r in reqs), bool, len(idx))
        verified = np.zeros(len(idx), bool)
        for j in np.flatnonzero(self.verify_each[idx] & ~cancelled):
            ok = bool(reqs[j].verifier(tokens[j]))
            verified[j] = ok
            reqs[j].trajectories[self.row_traj[idx[j]]].valid = ok
        conditions = [cancelled, verified, q_rule,
                      (self.converge[idx] > 0) & (unchanged >= self.converge[idx]),
                      steps >= self.max_steps[idx], self.deadline[idx] <= now]
        code = np.select(conditions, list(range(1, 7)), default=0)
        # Streaming callers see every step, the last one included, before the result arrives.
        self._publish_steps(idx, reqs, tokens, q_halt, steps, cancelled)

        report = StepReport(Counter(), [])
        touched: dict[int, Request] = {}
        for j in np.flatnonzero(code):
            row, req = int(idx[j]), reqs[j]
            traj = req.trajectories[self.row_traj[row]]
            traj.tokens, traj.q_halt, traj.steps = tokens[j].copy(), float(q_halt[j]), int(steps[j])
            traj.halted_by = REASONS[code[j]]
            report.halts[traj.halted_by] += 1
            self._free_row(req, row)
            touched[req.id] = req
        for req in touched.values():
            result = self._maybe_resolve(req, now)
            if result is not None:
                report.resolved.append((req, result))
        return report

    def _free_row(self, req: Request, row: int) -> None:
        self.active[row] = False
        self.row_req[row] = None
        self._rows_of[req.id].remove(row)
        heapq.heappush(self._free, row)

    def _maybe_resolve(self, req: Request, now: float) -> Result | None:
        trajs = req.trajectories
        reasons = [t.halted_by for t in trajs]
        if "cancelled" in reasons:
            chosen, halted_by = None, "cancelled"
        elif "verified" in reasons:
            chosen, halted_by = reasons.index("verified"), "verified"
        elif self._rows_of[req.id]:
            return None  # siblings still running
        else:
            chosen = self._select(req)
            halted_by = "deadline" if "deadline" in reasons else trajs[chosen].halted_by
        return self._finish(req, chosen, halted_by, now)

    def _select(self, req: Request) -> int:
        trajs = req.trajectories
        if len(trajs) == 1:
            return 0
        valid = [bool(t.valid) for t in trajs] if req.options.selection == "verifier_first" else None
        return select_trajectory(req.options.selection, [t.tokens.tobytes() for t in trajs],
                                 [t.q_halt for t in trajs], valid)

    def _finish(self, req: Request, chosen: int | None, halted_by: str, now: float) -> Result:
        """Free whatever rows the request still holds and resolve it."""
        for row in list(self._rows_of.pop(req.id, [])):
            traj = req.trajectories[self.row_traj[row]]
            if traj.halted_by is None:  # a sibling cut short: keep its progress for the row-step count
                traj.steps = int(self.steps[row])
            self.active[row] = False
            self.row_req[row] = None
            heapq.heappush(self._free, row)
        self._rows_of.pop(req.id, None)
        admitted = req.admitted_at if req.admitted_at is not None else now
        traj = req.trajectories[chosen] if chosen is not None else None
        has_answer = traj is not None and traj.tokens is not None
        result = Result(
            tokens=traj.tokens if has_answer else None,
            confidence=_sigmoid(traj.q_halt) if has_answer else None,
            q_halt=traj.q_halt if has_answer else None,
            steps=traj.steps if traj is not None else max((t.steps for t in req.trajectories), default=0),
            halted_by=halted_by,
            trajectories=len(req.trajectories),
            chosen=chosen if has_answer else None,
            row_steps=sum(t.steps for t in req.trajectories),
            valid=traj.valid if has_answer else None,
            queue_ms=(admitted - req.created) * 1000.0,
            compute_ms=(now - admitted) * 1000.0,
        )
        self.avg_request_s = 0.8 * self.avg_request_s + 0.2 * max(now - admitted, 1e-3)
        req.resolve(result)
        return result

    def _unstarted(self, req: Request, halted_by: str, now: float) -> Result:
        return Result(tokens=None, confidence=None, q_halt=None, steps=0, halted_by=halted_by,
                      trajectories=req.rows, chosen=None, row_steps=0, valid=None,
                      queue_ms=(now - req.created) * 1000.0, compute_ms=0.0)

    def _publish_steps(self, idx: np.ndarray, reqs: list[Request], tokens: np.ndarray, q_halt: np.ndarray,
                       steps: np.ndarray, cancelled: np.ndarray) -> None:
        """For streaming requests: the leading trajectory (largest q_halt) after this step."""
        best: dict[int, int] = {}
        for j, req in enumerate(reqs):
            if req.on_step is None or cancelled[j]:
                continue
            if req.id not in best or q_halt[j] > q_halt[best[req.id]]:
                best[req.id] = j
        for j in best.values():
            req = reqs[j]
            req.publish(StepEvent(step=int(steps[j]), tokens=tokens[j].copy(), confidence=_sigmoid(float(q_halt[j])),
                                  trajectory=int(self.row_traj[idx[j]]), active_rows=len(self._rows_of[req.id])))

    def abort_all(self, error: BaseException) -> int:
        """The step itself failed: fail every running request with `error` and free its rows."""
        failed = 0
        for row in self.active_rows():
            req = self.row_req[row]
            if req is None or req.id not in self._rows_of:
                continue
            for r in self._rows_of.pop(req.id):
                self.active[r] = False
                self.row_req[r] = None
                heapq.heappush(self._free, r)
            req.fail(error)
            failed += 1
        return failed

    def cut_all(self, now: float | None = None) -> StepReport:
        """Shutdown after the grace period: running requests resolve with their answers so far
        (halted_by deadline); queued ones that never started fail with NotAccepting (HTTP 503)."""
        now = self.clock() if now is None else now
        with self._lock:
            self.accepting = False
            waiting, self._waiting, self._waiting_rows = list(self._waiting), deque(), 0
        for req in waiting:
            req.fail(NotAccepting("the server shut down before this request started; retry on another replica"))
        report = StepReport(Counter(), [])
        for row in self.active_rows():
            req = self.row_req[row]
            if req is None:
                continue
            traj = req.trajectories[self.row_traj[row]]
            if self.steps[row] > 0:
                traj.tokens, traj.q_halt = self.last_tokens[row].copy(), float(self.last_q[row])
            traj.steps, traj.halted_by = int(self.steps[row]), "deadline"
            report.halts["deadline"] += 1
            self._free_row(req, row)
            if not self._rows_of[req.id]:
                started = [k for k, t in enumerate(req.trajectories) if t.tokens is not None]
                chosen = self._select(req) if len(started) == len(req.trajectories) else (
                    started[0] if started else None)
                report.resolved.append((req, self._finish(req, chosen, "deadline", now)))
        return report
