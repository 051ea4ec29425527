"""Scheduling policy: who waits, who gets a batch row, when a row is done, how a PTRM request resolves.

A pure policy. It takes plain requests and per-step arrays and returns plain outputs (`EngineOutput`,
`StepUpdate`, `Rejected`); it resolves no future, publishes nothing, calls no verifier and holds no lock
(the engine core calls it from one thread). No tensors either, only small numpy arrays of per-row
bookkeeping, so tests drive it with plain arrays.

Policy, in short:
- The waiting queue is FIFO and counted in rows and in bytes (each request's encoded inputs, so memory of
  queued work is bounded too). A PTRM request asks for K rows, as vLLM counts a request with n samples as
  n sequences. Strict FIFO (no backfill past a big request) so a K=16 request cannot be starved by a
  stream of small ones.
- No request may hold more than `max_share` of the rows (it is refused with too_many_rows, naming the
  limit): however heavy the requests already running, the rest of the pool stays free for others, so a
  light request is never queued behind one heavy request.
- Deadlines include queue time. A request whose deadline passes while it is still queued is resolved without
  running: steps 0 and no answer (halted_by deadline). One whose client left is dropped (nobody waits for it).
- After each step every row is checked at once (vectorised): cancelled, verified, Q-head, converged, step
  limit, deadline, in that order of precedence when several fire in the same step (HALT_REASONS).
- A PTRM request frees each row as soon as that row halts; it resolves when its last row halts (selection
  policy over the K answers), at once when one row's answer passes the verifier, or when its deadline cuts
  every row (selection over the answers so far).
- halting=auto (a request with an `escalation`): when its one plain trajectory ends unverified with time left,
  the request goes on in the engine as its escalation (K noisy trajectories), queued ahead of new work (behind
  earlier escalations), so it neither goes back through an API process nor waits its turn twice. Its output
  is the escalation's answer when that verified, else the answer of whichever run the Q-head trusts more.
- Hedged escalation (halting=auto with `hedge_after` h): when the plain trajectory has run h steps unverified,
  its escalation is queued (as above) while the plain run goes on, the two runs of one request side by side,
  as a hedged request in "The Tail at Scale". The first run to verify answers and stops the other; when both
  end unverified, the Q-head picks, as above. Neither run is cut short, so a hedge can only add verified
  answers, and a request that escalates waits h steps for it instead of the plain run's whole step limit.
  The hedge is an internal request (id + HEDGE_SUFFIX) that never leaves the engine.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from app.engine.protocol import (
    DRAINING,
    ENGINE_ERROR,
    HALT_REASONS,
    QUEUE_FULL,
    TOO_MANY_ROWS,
    EngineOutput,
    EngineRequest,
    Rejected,
    SolveOptions,
    StepUpdate,
    tokens_to_bytes,
)
from models.ptrm import select_trajectory

# Halt reason codes in `update`: 0 = still running, i + 1 = HALT_REASONS[i].
_RULE_CODES = {"q_head": 0, "max_steps": 1, "verifier": 2}
HEDGE_SUFFIX = "#hedge"  # the id of a hedged escalation: its request's id + this (no output goes out under it)


@dataclass(slots=True)
class Trajectory:
    """One batch row's run. `tokens` is the last decoded answer (argmax), kept for deadlines."""

    tokens: np.ndarray | None = None
    q_halt: float = -math.inf
    steps: int = 0
    halted_by: str | None = None
    valid: bool | None = None  # verifier verdict on `tokens`, when the verifier ran on this row


@dataclass(eq=False, slots=True)
class RequestState:
    """The engine's bookkeeping for one request (plain data, never leaves the engine core)."""

    request: EngineRequest
    trajectories: list[Trajectory]
    admitted_at: float | None = None
    cancelled: bool = False
    verify_each: bool = False  # run the batched verifier after every step
    rows: list[int] = field(default_factory=list)  # rows it still holds
    first: EngineOutput | None = None  # halting=auto: the plain run's output, while its escalation runs
    queued_since: float | None = None  # when the escalation was queued (None: the request's arrival)
    # A hedged pair (module docstring): the plain run and its hedge point at each other; `is_hedge` marks the
    # hedge; `ended` holds the output of a run that ended unverified while its partner still runs.
    partner: RequestState | None = None
    is_hedge: bool = False
    ended: EngineOutput | None = None

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def caller_id(self) -> str:
        """The id the request's caller knows: a hedge's is its plain run's (its own ends in HEDGE_SUFFIX)."""
        return self.partner.id if self.is_hedge and self.partner is not None else self.id


@dataclass(frozen=True)
class Admission:
    state: RequestState
    rows: list[int]


@dataclass
class SchedulerOutput:
    """What `schedule` decided: rows to load, the rows to step, requests resolved without running."""

    admitted: list[Admission]
    active: np.ndarray  # int64 row indices to step this iteration
    finished: list[EngineOutput]
    dropped: list[str]  # cancelled requests forgotten without an output (their callers are gone), by caller id


@dataclass
class StepResult:
    """What one iteration decided: finished requests, stream updates, halt counts (for metrics); when the step
    failed, the requests it rejected (`fail_all`)."""

    finished: list[EngineOutput] = field(default_factory=list)
    steps: list[StepUpdate] = field(default_factory=list)
    halts: Counter[str] = field(default_factory=Counter)
    dropped: list[str] = field(default_factory=list)  # cancelled requests forgotten without an output, by caller id
    rejected: list[Rejected] = field(default_factory=list)
    failed: bool = False  # the step raised: every request the model held is in `rejected` (or was cancelled)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


class Scheduler:
    def __init__(self, num_rows: int, max_queue_rows: int, seq_len: int, max_share: float = 1.0,
                 confidence_temperature: float = 1.0, max_queue_bytes: int | None = None) -> None:
        self.num_rows = num_rows
        self.max_queue_rows = max_queue_rows
        self.max_queue_bytes = max_queue_bytes  # None: rows only
        self._waiting_bytes = 0
        self.row_bytes = 4 * seq_len  # one request's int32 inputs
        self.max_share_rows = max(1, math.floor(max_share * num_rows))
        # confidence = sigmoid(q_halt / T), T fitted on a validation split (training/calibrate.py); halting and
        # PTRM selection use q_halt itself.
        self.temperature = confidence_temperature
        self._waiting: deque[RequestState] = deque()
        self._waiting_rows = 0
        self._states: dict[str, RequestState] = {}  # every request not yet resolved, waiting or running
        # Waiting requests by deadline (a heap; entries of admitted ones are skipped when they surface), and the
        # count of cancelled waiting ones: `schedule` scans the queue only when one of them says it must. A scan
        # on every step cost 2.1 ms with 16,384 requests queued (a /v1/solve/batch load), ~0.13 us each.
        self._deadlines: list[tuple[float, int, RequestState]] = []
        self._deadline_seq = 0
        self._cancelled_waiting = 0
        self.accepting = True
        self.avg_request_s = 1.0  # EWMA of admitted-to-resolved time, for Retry-After

        r = num_rows
        self.row_state: list[RequestState | None] = [None] * r
        self.row_traj = np.zeros(r, np.int64)
        self.active = np.zeros(r, bool)
        # How many times each row was handed to a request: the engine core collects a step after launching the
        # next (runner overlap), so a row can halt and change hands while a step that ran it is still out.
        self.row_epoch = np.zeros(r, np.int64)
        self.steps = np.zeros(r, np.int64)
        self.unchanged = np.zeros(r, np.int64)
        self.max_steps = np.zeros(r, np.int64)
        self.threshold = np.full(r, np.nan)
        self.rule = np.zeros(r, np.int8)
        self.converge = np.zeros(r, np.int64)
        self.deadline = np.full(r, np.inf)
        self.verify_each = np.zeros(r, bool)
        self.cancelled = np.zeros(r, bool)
        self.stream = np.zeros(r, bool)
        self.last_tokens = np.zeros((r, seq_len), np.int32)  # as answers: a cut request's answer is one of these
        self.last_q = np.full(r, -np.inf)
        # The verifier's verdict on each row's last answer (1 passed, 0 failed, -1 never checked), copied into the
        # row's Trajectory only when the row is freed: a per-row Python write after every step cost ~1 us a row.
        self.row_valid = np.full(r, -1, np.int8)
        self.hedge_at = np.zeros(r, np.int64)  # halting=auto's plain run: the step its hedge starts after (0: none)
        self._free = list(range(r))  # a heap: the lowest free rows are handed out first

    # -- requests in -------------------------------------------------------------------------------

    def add(self, request: EngineRequest, verify_each: bool = False) -> Rejected | None:
        """Queue a request, or say why not (every refusal but an unknown model's, which the engine core makes)."""
        rows = request.rows
        # An auto request must be able to run its escalation too.
        need = max(rows, request.escalation.trajectories) if request.escalation is not None else rows
        if need > self.max_share_rows:
            return Rejected(request.id, TOO_MANY_ROWS,
                            f"{need} trajectories need {need} batch rows, but one request may hold "
                            f"at most {self.max_share_rows} of this model's {self.num_rows} "
                            f"(RECURSOLVE_MAX_REQUEST_SHARE, so others always find rows); "
                            f"ask for at most {self.max_share_rows}")
        if len(request.inputs) != self.row_bytes:  # rows are loaded as one array: every request must fit its row
            return Rejected(request.id, ENGINE_ERROR, f"inputs are {len(request.inputs)} bytes; this model takes "
                            f"{self.row_bytes // 4} int32 tokens ({self.row_bytes} bytes)")
        if not self.accepting:
            return Rejected(request.id, DRAINING,
                            "the server is draining and accepts no new requests; retry on another replica")
        # Rows free right now count as room too: requests that arrive in one message are queued before the
        # next `schedule` admits them, and would otherwise count against the queue while rows sit idle.
        if self._waiting_rows + rows > self.max_queue_rows + len(self._free):
            retry = self.retry_after(rows)
            return Rejected(request.id, QUEUE_FULL, f"queue full: {self._waiting_rows} rows waiting (limit "
                            f"{self.max_queue_rows}); retry in {retry} s", retry)
        size = request.nbytes
        # As with rows, free rows count as room (requests of one message are queued before `schedule` admits
        # them), and an empty queue always takes one request: none is refused for a limit it cannot meet alone.
        room = None if self.max_queue_bytes is None else self.max_queue_bytes + len(self._free) * self.row_bytes
        if room is not None and self._waiting and self._waiting_bytes + size > room:
            retry = self.retry_after(rows)
            return Rejected(request.id, QUEUE_FULL, f"queue full: {self._waiting_bytes} bytes of inputs waiting "
                            f"(limit {self.max_queue_bytes}, max_queue_bytes); retry in {retry} s", retry)
        state = RequestState(request, [Trajectory() for _ in range(request.rows)], verify_each=verify_each)
        self._states[request.id] = state
        self._waiting.append(state)
        self._watch_deadline(state)
        self._count_waiting(state, +1)
        return None

    def abort(self, ids: list[str]) -> None:
        """The callers left: queued requests are dropped at the next `schedule`, running rows at the next
        `update` (nothing is sent back for them)."""
        for s in self._runs_of(ids):  # a hedged request's hedge too
            if s.admitted_at is None and not s.cancelled:
                self._cancelled_waiting += 1
            s.cancelled = True
            if s.rows:
                self.cancelled[s.rows] = True

    def _runs_of(self, ids: list[str]) -> list[RequestState]:
        """The live runs of these requests: each one's own, and its hedge when one runs."""
        return [self._states[k] for rid in ids for k in (rid, rid + HEDGE_SUFFIX) if k in self._states]

    def retry_after(self, extra_rows: int = 0) -> int:
        """Seconds until the queue has room, estimated from the queue length and the recent request time."""
        waves = (self._waiting_rows + extra_rows) / self.num_rows
        return max(1, math.ceil(waves * self.avg_request_s))

    def stop_accepting(self) -> None:
        self.accepting = False

    # -- state -------------------------------------------------------------------------------------

    @property
    def queued_rows(self) -> int:
        return self._waiting_rows

    @property
    def queued_bytes(self) -> int:
        return self._waiting_bytes

    @property
    def queued_requests(self) -> int:
        return len(self._waiting)

    @property
    def running_rows(self) -> int:
        return int(self.active.sum())

    def has_work(self) -> bool:
        return bool(self._waiting) or bool(self.active.any())

    def state_of(self, row: int) -> RequestState | None:
        return self.row_state[row]

    def still_running(self, idx: np.ndarray, epochs: np.ndarray) -> np.ndarray:
        """bool [n]: which rows `idx`, launched when their epochs were `epochs`, still run the same trajectory
        (not halted, freed or handed to another request since; only an overlapped step can see such rows)."""
        return self.active[idx] & (self.row_epoch[idx] == epochs)

    def worth_launching(self, idx: np.ndarray, in_flight: np.ndarray, epochs: np.ndarray) -> np.ndarray:
        """The rows of `idx` (active) to launch while a step of the rows `in_flight` (their epochs then: `epochs`)
        is still out: not those that step brings to their max_steps, whose next step would surely be wasted."""
        running = in_flight[self.still_running(in_flight, epochs)]
        ending = running[self.steps[running] + 1 >= self.max_steps[running]]
        return np.setdiff1d(idx, ending, assume_unique=True) if len(ending) else idx

    def live_state(self, request_id: str) -> RequestState | None:
        """The state of a waiting or running request, None once it is resolved, cancelled or cut."""
        return self._states.get(request_id)

    def is_live(self, request_id: str) -> bool:
        """Waiting or running (not yet resolved, cancelled or cut)."""
        return request_id in self._states

    # -- one iteration -----------------------------------------------------------------------------

    def schedule(self, now: float) -> SchedulerOutput:
        """Drop queued requests that were cancelled or ran out of time; move waiting requests into free rows."""
        finished: list[EngineOutput] = []
        dropped: list[str] = []
        if self._waiting_expired(now) or self._cancelled_waiting:
            self._cancelled_waiting = 0
            keep: deque[RequestState] = deque()
            for s in self._waiting:
                if s.cancelled or s.request.deadline <= now:
                    self._count_waiting(s, -1)
                    del self._states[s.id]
                    if s.cancelled:  # nobody waits for a cancelled request's answer
                        dropped.append(s.caller_id)
                    elif (out := self._unstarted(s, "deadline", now)) is not None:
                        finished.append(out)
                else:
                    keep.append(s)
            self._waiting = keep
        admitted: list[Admission] = []
        while self._waiting and len(self._free) >= self._waiting[0].request.rows:  # FIFO, no backfill
            admitted.append(self._admit(self._waiting.popleft(), now))
        if admitted:
            self._place(admitted)
        return SchedulerOutput(admitted, np.flatnonzero(self.active), finished, dropped)

    def _watch_deadline(self, s: RequestState) -> None:
        if s.request.deadline < math.inf:
            self._deadline_seq += 1
            heapq.heappush(self._deadlines, (s.request.deadline, self._deadline_seq, s))

    def _waiting_expired(self, now: float) -> bool:
        """Whether a waiting request's deadline has passed (the heap's top entries up to `now`, consumed)."""
        heap, expired = self._deadlines, False
        while heap and heap[0][0] <= now:
            s = heapq.heappop(heap)[2]
            expired |= s.admitted_at is None and s.id in self._states
        if len(heap) > 2 * len(self._waiting) + 64:  # admitted requests' entries: drop them now and then
            heap[:] = [e for e in heap if e[2].admitted_at is None and e[2].id in self._states]
            heapq.heapify(heap)
        return expired

    def _admit(self, s: RequestState, now: float) -> Admission:
        self._count_waiting(s, -1)
        rows = [heapq.heappop(self._free) for _ in range(s.request.rows)]
        s.admitted_at = now
        s.rows = rows
        for row in rows:
            self.row_state[row] = s
        return Admission(s, rows)

    def _place(self, admitted: list[Admission]) -> None:
        """The per-row arrays of every request admitted this step, one write per array (per request, a dozen
        small numpy writes each cost more than the values they set: at GPU rates a step admits 100+)."""
        idx = np.fromiter((r for a in admitted for r in a.rows), np.int64)
        counts = [len(a.rows) for a in admitted]

        def per_row(values: list[Any], dtype: Any) -> np.ndarray:
            return np.repeat(np.asarray(values, dtype=dtype), counts)

        states = [a.state for a in admitted]
        opts = [s.request.options for s in states]
        self.active[idx] = True
        self.row_epoch[idx] += 1
        self.row_traj[idx] = np.arange(len(idx)) - np.repeat(np.cumsum(counts) - counts, counts)  # 0..K-1 each
        self.cancelled[idx] = per_row([s.cancelled for s in states], bool)
        self.stream[idx] = per_row([s.request.stream for s in states], bool)
        self.steps[idx] = 0
        self.unchanged[idx] = 0
        self.max_steps[idx] = per_row([o.max_steps for o in opts], self.max_steps.dtype)
        self.threshold[idx] = per_row([o.threshold_logit for o in opts], self.threshold.dtype)
        self.rule[idx] = per_row([_RULE_CODES[o.halting] for o in opts], self.rule.dtype)
        self.converge[idx] = per_row([o.converge_steps or 0 for o in opts], self.converge.dtype)
        self.deadline[idx] = per_row([s.request.deadline for s in states], self.deadline.dtype)
        self.verify_each[idx] = per_row([s.verify_each for s in states], bool)
        self.last_q[idx] = -np.inf
        self.row_valid[idx] = -1
        self.hedge_at[idx] = per_row([(s.request.options.hedge_after or 0) if s.request.escalation is not None else 0
                                      for s in states], self.hedge_at.dtype)

    def update(self, idx: np.ndarray, tokens: np.ndarray, q_halt: np.ndarray, model_halted: np.ndarray,
               verified: np.ndarray | None, now: float) -> StepResult:
        """Apply every halting rule to the rows `idx` that just ran one step; free what halted.

        tokens [n, seq_len] (argmax of the logits), q_halt [n], model_halted [n] (the model's own rule),
        verified [n] (the batched verifier's verdict; None when no row asked for it).
        """
        steps = self.steps[idx] + 1
        self.steps[idx] = steps
        same = (steps > 1) & (tokens == self.last_tokens[idx]).all(axis=1)
        unchanged = np.where(same, self.unchanged[idx] + 1, 0)
        self.unchanged[idx] = unchanged
        self.last_tokens[idx] = tokens
        self.last_q[idx] = q_halt

        threshold = self.threshold[idx]
        own_rule = np.isnan(threshold)
        q_rule = (self.rule[idx] == _RULE_CODES["q_head"]) & np.where(
            own_rule, model_halted, q_halt > np.where(own_rule, 0.0, threshold))
        cancelled = self.cancelled[idx]
        checked = self.verify_each[idx] & ~cancelled
        ok = checked & (verified if verified is not None else False)
        fired = {"cancelled": cancelled, "verified": ok, "q_head": q_rule,
                 "converged": (self.converge[idx] > 0) & (unchanged >= self.converge[idx]),
                 "max_steps": steps >= self.max_steps[idx], "deadline": self.deadline[idx] <= now}
        # the first reason that fired, in HALT_REASONS' order of precedence
        code = np.select([fired[r] for r in HALT_REASONS], list(range(1, len(HALT_REASONS) + 1)), default=0)

        out = StepResult()
        out.steps = self._step_updates(idx, tokens, q_halt, steps, cancelled, ok)
        hedge_at = self.hedge_at[idx]
        for j in np.flatnonzero((hedge_at > 0) & (steps == hedge_at) & (code == 0)).tolist():
            self._hedge(self.row_state[idx[j]], now)
        if checked.any():
            self.row_valid[idx[checked]] = ok[checked]
        touched: dict[str, RequestState] = {}
        halted = np.flatnonzero(code)
        if len(halted):
            # What every halted row needs, read out of the arrays once (per-row numpy reads cost more than the
            # values); `answers` is a fresh array, so each trajectory keeps a row of it without a copy of its own.
            rows = idx[halted]
            answers = np.asarray(tokens[halted], np.int32)  # the wire's dtype: tokens_to_bytes then copies nothing
            codes = code[halted]
            self.active[rows] = False
            self.cancelled[rows] = False
            out.halts.update({HALT_REASONS[c - 1]: n for c, n in enumerate(np.bincount(codes).tolist()) if n})
            row_states, free = self.row_state, self._free
            for k, (row, t, c, q, n, v) in enumerate(zip(rows.tolist(), self.row_traj[rows].tolist(), codes.tolist(),
                                                         q_halt[halted].tolist(), steps[halted].tolist(),
                                                         self.row_valid[rows].tolist(), strict=True)):
                s = row_states[row]
                row_states[row] = None
                traj = s.trajectories[t]
                traj.tokens, traj.q_halt, traj.steps, traj.halted_by = answers[k], q, n, HALT_REASONS[c - 1]
                traj.valid = None if v < 0 else v == 1
                s.rows.remove(row)
                heapq.heappush(free, row)
                touched[s.id] = s
        for s in touched.values():
            if s.id not in self._states:  # a hedged run whose partner verified earlier in this loop stopped it
                continue
            result = self._maybe_resolve(s, now)
            if result is not None:
                out.finished.append(result)
            elif s.cancelled and s.id not in self._states:
                out.dropped.append(s.caller_id)
        return out

    def _release(self, s: RequestState) -> None:
        """Free the rows `s` still holds; a trajectory cut short keeps its progress (for the row-step count) and its
        last verdict."""
        for row in list(s.rows):
            traj = s.trajectories[self.row_traj[row]]
            if traj.halted_by is None:
                traj.steps, traj.valid = int(self.steps[row]), self._verdict(row)
            self._free_row(s, row)

    def _verdict(self, row: int) -> bool | None:
        """The verifier's verdict on the row's last answer (None: it never ran on this row)."""
        v = int(self.row_valid[row])
        return None if v < 0 else v == 1

    def _free_row(self, s: RequestState, row: int) -> None:
        self.active[row] = False
        self.cancelled[row] = False
        self.row_state[row] = None
        s.rows.remove(row)
        heapq.heappush(self._free, row)

    def _maybe_resolve(self, s: RequestState, now: float) -> EngineOutput | None:
        trajs = s.trajectories
        if len(trajs) == 1:  # the usual request: its one row halted, so it resolves with it
            halted_by = trajs[0].halted_by
            if halted_by == "cancelled":
                self._finish(s, None, "cancelled", now)
                return None
            return self._finish(s, 0, halted_by, now)
        reasons = [t.halted_by for t in trajs]
        if "cancelled" in reasons:
            self._finish(s, None, "cancelled", now)
            return None  # the caller is gone: nothing to send
        if "verified" in reasons:  # several rows verified in this step: the one the Q-head trusts most, as the
            # stream's last step names it (the earliest on ties)
            verified = [k for k, r in enumerate(reasons) if r == "verified"]
            chosen, halted_by = max(verified, key=lambda k: (trajs[k].q_halt, -k)), "verified"
        elif s.rows:
            return None  # siblings still running
        else:
            chosen = self._select(s)
            halted_by = "deadline" if "deadline" in reasons else trajs[chosen].halted_by
        return self._finish(s, chosen, halted_by, now)

    def _select(self, s: RequestState) -> int:
        trajs = s.trajectories
        if len(trajs) == 1:
            return 0
        opts = s.request.options
        valid = [bool(t.valid) for t in trajs] if opts.selection == "verifier_first" else None
        return select_trajectory(opts.selection, [t.tokens.tobytes() for t in trajs], [t.q_halt for t in trajs],
                                 valid)

    def _finish(self, s: RequestState, chosen: int | None, halted_by: str, now: float,
                escalate: bool = True) -> EngineOutput | None:
        """Free whatever rows the request still holds and build its output; None when the run was halting=auto's
        plain run and its escalation now follows (`escalate` False: never, as when a drain cuts it)."""
        self._release(s)
        self._states.pop(s.id, None)
        admitted = s.admitted_at if s.admitted_at is not None else now
        traj = s.trajectories[chosen] if chosen is not None else None
        has_answer = traj is not None and traj.tokens is not None
        self.avg_request_s = 0.8 * self.avg_request_s + 0.2 * max(now - admitted, 1e-3)
        steps = [t.steps for t in s.trajectories]
        longest = max(steps, default=0)
        out = EngineOutput(
            id=s.id,
            tokens=tokens_to_bytes(traj.tokens) if has_answer else None,
            confidence=_sigmoid(traj.q_halt / self.temperature) if has_answer else None,
            q_halt=traj.q_halt if has_answer else None,
            steps=traj.steps if traj is not None else longest,
            halted_by=halted_by,
            trajectories=len(steps),
            chosen=chosen if has_answer else None,
            row_steps=sum(steps),
            valid=traj.valid if has_answer else None,
            queue_ms=(admitted - self._queued_since(s)) * 1000.0,
            compute_ms=(now - admitted) * 1000.0,
            elapsed_steps=longest,
        )
        if s.partner is not None:
            return self._settle_pair(s, out, now)
        if s.first is not None:  # the escalation ended
            return _better_run(s.first, out)
        esc = s.request.escalation
        if (escalate and esc is not None and not s.cancelled and not out.valid and out.tokens is not None
                and halted_by not in ("deadline", "cancelled") and s.request.deadline > now):
            self._queue_escalation(s, out, esc, now)
            return None
        return out

    def _queue_escalation(self, s: RequestState, first: EngineOutput, esc: SolveOptions, now: float) -> None:
        """The same request again as its escalation, at the front of the queue behind earlier escalations: it
        has waited its turn once, and it was accepted, so the queue limits do not apply to it."""
        s.first, s.queued_since, s.admitted_at = first, now, None
        s.request = msgspec.structs.replace(s.request, options=esc, escalation=None)
        s.trajectories = [Trajectory() for _ in range(esc.trajectories)]
        self._states[s.id] = s
        self._queue_ahead(s)

    def _queue_ahead(self, s: RequestState) -> None:
        ahead = 0  # the escalations already waiting: they stand at the front, in the order they came
        while ahead < len(self._waiting) and (self._waiting[ahead].first is not None or self._waiting[ahead].is_hedge):
            ahead += 1
        self._waiting.insert(ahead, s)
        self._count_waiting(s, +1)
        self._watch_deadline(s)

    def _unqueue(self, s: RequestState) -> None:
        """Take a waiting request out of the queue (a cut, or a hedge whose partner verified)."""
        self._waiting.remove(s)
        self._count_waiting(s, -1)

    def _count_waiting(self, s: RequestState, sign: int) -> None:
        """The queue's totals, which its limits read (`add`), as `s` joins (+1) or leaves (-1) it."""
        self._waiting_rows += sign * s.request.rows
        self._waiting_bytes += sign * s.request.nbytes

    # -- hedged escalation -------------------------------------------------------------------------

    def _hedge(self, s: RequestState | None, now: float) -> None:
        """Queue the escalation of the plain run `s` beside it (the plain run goes on). Not when the two runs
        together would hold more than a request's share of the rows: then the escalation follows the plain run
        as without a hedge."""
        esc = s.request.escalation if s is not None else None
        if s is None or esc is None or s.partner is not None or s.cancelled or \
                len(s.rows) + esc.trajectories > self.max_share_rows:
            return
        request = msgspec.structs.replace(s.request, id=s.id + HEDGE_SUFFIX, options=esc, escalation=None)
        hedge = RequestState(request, [Trajectory() for _ in range(esc.trajectories)], verify_each=s.verify_each,
                             queued_since=now, partner=s, is_hedge=True)
        s.partner = hedge
        self._states[hedge.id] = hedge
        self._queue_ahead(hedge)

    def _settle_pair(self, s: RequestState, out: EngineOutput, now: float) -> EngineOutput | None:
        """One run of a hedged pair ended with `out`: the request's output when it verified (the partner is
        stopped) or when the partner ended too; None while the partner still runs, or when the caller left."""
        partner = s.partner
        assert partner is not None
        if out.halted_by == "cancelled":
            return None
        if partner.id in self._states:
            if not out.valid:
                s.ended = out
                return None
            other = self._stop(partner, now)
        else:
            other = partner.ended
            assert other is not None
        plain, hedge = (other, out) if s.is_hedge else (out, other)
        owner = partner if s.is_hedge else s
        return _hedged(plain, hedge, owner.request.options.hedge_after or 0,
                       (now - (owner.admitted_at if owner.admitted_at is not None else now)) * 1000.0)

    def _stop(self, s: RequestState, now: float) -> EngineOutput:
        """Stop a run whose partner verified: free its rows (or take it out of the queue); what it cost, its
        time in the queue included (the plain run's is the request's)."""
        admitted = s.admitted_at if s.admitted_at is not None else now
        if s.admitted_at is None:
            self._unqueue(s)
        self._release(s)
        self._states.pop(s.id, None)
        steps = [t.steps for t in s.trajectories]
        return EngineOutput(id=s.id, tokens=None, confidence=None, q_halt=None, steps=max(steps, default=0),
                            halted_by="cancelled", trajectories=len(steps), chosen=None, row_steps=sum(steps),
                            valid=None, queue_ms=(admitted - self._queued_since(s)) * 1000.0,
                            compute_ms=(now - admitted) * 1000.0, elapsed_steps=max(steps, default=0))

    @staticmethod
    def _queued_since(s: RequestState) -> float:
        return s.queued_since if s.queued_since is not None else s.request.arrival

    def _unstarted(self, s: RequestState, halted_by: str, now: float) -> EngineOutput | None:
        out = EngineOutput(id=s.id, tokens=None, confidence=None, q_halt=None, steps=0, halted_by=halted_by,
                           trajectories=s.request.rows, chosen=None, row_steps=0, valid=None,
                           queue_ms=(now - self._queued_since(s)) * 1000.0, compute_ms=0.0)
        if s.partner is not None:
            return self._settle_pair(s, out, now)
        return out if s.first is None else _better_run(s.first, out)

    def _step_updates(self, idx: np.ndarray, tokens: np.ndarray, q_halt: np.ndarray, steps: np.ndarray,
                      cancelled: np.ndarray, verified: np.ndarray) -> list[StepUpdate]:
        """For streaming requests: the leading trajectory after this step (a verified one first, then the largest
        q_halt: the one the request's answer takes when it ends here), under the id its caller knows.
        halting=auto's escalation (after the plain run, or beside it as a hedge) numbers its trajectories 1..K
        after the plain run's 0, as the request's output does (`chosen`)."""
        best: dict[str, int] = {}
        for j in np.flatnonzero(self.stream[idx] & ~cancelled):
            rid = self.row_state[idx[j]].caller_id
            if rid not in best or (verified[j], q_halt[j]) > (verified[best[rid]], q_halt[best[rid]]):
                best[rid] = j
        updates = []
        for rid, j in best.items():
            s = self.row_state[idx[j]]
            escalated = s.is_hedge or s.first is not None
            updates.append(StepUpdate(id=rid, step=int(steps[j]), tokens=tokens_to_bytes(tokens[j]),
                                      confidence=_sigmoid(float(q_halt[j]) / self.temperature),
                                      trajectory=int(self.row_traj[idx[j]]) + escalated, active_rows=len(s.rows)))
        return updates

    # -- ending requests from outside --------------------------------------------------------------

    def cut(self, ids: list[str] | None, now: float) -> StepResult:
        """Resolve these requests (None: every request) now with their answers so far, halted_by deadline;
        queued ones resolve without an answer. The grace period of a drain ran out."""
        out = StepResult()
        runs = list(self._states.values()) if ids is None else self._runs_of(ids)
        for s in runs:  # a hedged request's two runs: the second one cut settles the pair
            if s.id in self._states:
                cut = self._cut_run(s, now, out)
                if cut is not None:
                    out.finished.append(cut)
        return out

    def _cut_run(self, s: RequestState, now: float, out: StepResult) -> EngineOutput | None:
        if s.admitted_at is None:  # still queued
            self._unqueue(s)
            del self._states[s.id]
            return self._unstarted(s, "deadline", now)
        for row in list(s.rows):
            traj = s.trajectories[self.row_traj[row]]
            if self.steps[row] > 0:
                traj.tokens, traj.q_halt = self.last_tokens[row].copy(), float(self.last_q[row])
            traj.steps, traj.halted_by, traj.valid = int(self.steps[row]), "deadline", self._verdict(row)
            out.halts["deadline"] += 1
            self._free_row(s, row)
        started = [k for k, t in enumerate(s.trajectories) if t.tokens is not None]
        chosen = self._select(s) if len(started) == len(s.trajectories) else (started[0] if started else None)
        return self._finish(s, chosen, "deadline", now, escalate=False)

    def fail_all(self, message: str) -> list[Rejected]:
        """The step itself failed: every request, running or queued, is rejected with `message`."""
        ids = dict.fromkeys(s.caller_id for s in self._states.values() if not s.cancelled)
        failed = [Rejected(rid, ENGINE_ERROR, message) for rid in ids]
        for s in list(self._states.values()):
            for row in list(s.rows):
                self._free_row(s, row)
        self._states.clear()
        self._waiting.clear()
        self._deadlines.clear()
        self._cancelled_waiting = 0
        self._waiting_rows = 0
        self._waiting_bytes = 0
        return failed


def _hedged(plain: EngineOutput, hedge: EngineOutput, hedge_after: int, compute_ms: float) -> EngineOutput:
    """A hedged request's output: the run that verified (the plain one when both did), else whichever run the
    Q-head trusts more; the counts cover both runs. Its steps elapsed: the longer of the plain run and the hedge
    (which started after the plain run's `hedge_after`-th step)."""
    q_plain = plain.q_halt if plain.q_halt is not None else -math.inf
    q_hedge = hedge.q_halt if hedge.q_halt is not None else -math.inf
    use_hedge = not plain.valid and hedge.tokens is not None and (bool(hedge.valid) or q_hedge >= q_plain)
    best = hedge if use_hedge else plain
    return msgspec.structs.replace(
        best, id=plain.id, trajectories=1 + hedge.trajectories, row_steps=plain.row_steps + hedge.row_steps,
        chosen=1 + hedge.chosen if use_hedge and hedge.chosen is not None else best.chosen,
        queue_ms=plain.queue_ms, compute_ms=compute_ms,
        elapsed_steps=max(plain.elapsed_steps, hedge_after + hedge.elapsed_steps))


def _better_run(first: EngineOutput, second: EngineOutput) -> EngineOutput:
    """halting=auto: the escalation's answer when it verified, else whichever run the Q-head trusts more; the
    counts (trajectories, row-steps, steps elapsed, time) cover both runs."""
    q_first = first.q_halt if first.q_halt is not None else -math.inf
    q_second = second.q_halt if second.q_halt is not None else -math.inf
    use_second = second.tokens is not None and (bool(second.valid) or q_second >= q_first)
    best = second if use_second else first
    return msgspec.structs.replace(
        best, trajectories=1 + second.trajectories, row_steps=first.row_steps + second.row_steps,
        chosen=1 + second.chosen if use_second and second.chosen is not None else best.chosen,
        queue_ms=first.queue_ms + second.queue_ms, compute_ms=first.compute_ms + second.compute_ms,
        elapsed_steps=first.elapsed_steps + second.elapsed_steps)
