"""Scheduling policy on its own: no model, no HTTP; rows, tokens and Q values are made up."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.engine.request import Request, SolveOptions
from app.engine.scheduler import NotAccepting, QueueFull, Scheduler, TooManyRows

L = 4


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def req(loop, clock, verifier=None, **opts) -> Request:
    return Request(inputs=np.zeros(L, np.int32), puzzle_identifier=0, options=SolveOptions(**opts), loop=loop,
                   verifier=verifier, created=clock())


def step(s: Scheduler, tokens=None, q=-5.0, model_halted=False):
    idx = s.active_rows()
    toks = np.zeros((len(idx), L), np.int64) if tokens is None else np.asarray(tokens)
    return s.decide(idx, toks, np.full(len(idx), q), np.full(len(idx), model_halted))


def results(loop, *requests):
    loop.run_until_complete(asyncio.sleep(0))  # deliver call_soon_threadsafe callbacks
    return [r.future.result() if r.future.done() else None for r in requests]


def test_queue_limit_counts_rows_and_fifo_does_not_backfill(loop):
    clock = Clock()
    s = Scheduler(num_rows=4, max_queue_rows=6, seq_len=L, clock=clock)
    first = req(loop, clock, trajectories=2)
    s.submit(first)
    s.admit()
    big, small = req(loop, clock, trajectories=4), req(loop, clock)
    s.submit(big)
    s.submit(small)
    assert s.queued_rows == 5
    with pytest.raises(QueueFull) as full:
        s.submit(req(loop, clock, trajectories=2))  # 5 + 2 > 6 rows
    assert full.value.retry_after_s >= 1
    with pytest.raises(TooManyRows):
        s.submit(req(loop, clock, trajectories=5))
    # 2 rows are free: `small` would fit, but it must not overtake `big` (no starvation of big requests).
    admitted, _ = s.admit()
    assert admitted == [] and s.queued_rows == 5
    first.cancel()
    step(s)
    admitted, _ = s.admit()
    assert [a.request for a in admitted] == [big] and s.running_rows == 4 and s.queued_rows == 1


def test_precedence_when_several_rules_fire_in_one_step(loop):
    clock = Clock()
    s = Scheduler(num_rows=3, max_queue_rows=8, seq_len=L, clock=clock)
    a = req(loop, clock, max_steps=1, deadline_ms=10)  # max_steps and deadline together -> max_steps
    b = req(loop, clock, max_steps=5, deadline_ms=10)  # only the deadline
    c = req(loop, clock, max_steps=1)
    for r in (a, b, c):
        s.submit(r)
    s.admit()
    c.cancel()  # cancelled beats max_steps
    clock.t += 1.0
    report = step(s)
    assert report.halts == {"max_steps": 1, "deadline": 1, "cancelled": 1}
    ra, rb, rc = results(loop, a, b, c)
    assert (ra.halted_by, rb.halted_by, rc.halted_by) == ("max_steps", "deadline", "cancelled")
    assert rb.tokens is not None and rb.steps == 1
    assert s.running_rows == 0


def test_threshold_and_model_rule(loop):
    clock = Clock()
    s = Scheduler(num_rows=2, max_queue_rows=8, seq_len=L, clock=clock)
    own = req(loop, clock, max_steps=9)
    strict = req(loop, clock, max_steps=9, threshold=0.9)  # needs q_halt > logit(0.9) = 2.197
    s.submit(own)
    s.submit(strict)
    s.admit()
    step(s, q=1.0, model_halted=True)
    r_own, r_strict = results(loop, own, strict)
    assert r_own.halted_by == "q_head" and r_strict is None
    step(s, q=2.5)
    assert results(loop, strict)[0].halted_by == "q_head"


def test_converged_counts_unchanged_steps(loop):
    clock = Clock()
    s = Scheduler(num_rows=1, max_queue_rows=8, seq_len=L, clock=clock)
    r = req(loop, clock, max_steps=20, converge_steps=2)
    s.submit(r)
    s.admit()
    for toks in ([1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 5]):
        step(s, tokens=[toks])
        assert results(loop, r)[0] is None
    step(s, tokens=[[1, 2, 3, 5]])  # unchanged for 2 steps (3 -> 4)
    (res,) = results(loop, r)
    assert (res.halted_by, res.steps) == ("converged", 4)


def test_ptrm_frees_rows_as_they_halt_and_resolves_with_the_last(loop):
    clock = Clock()
    s = Scheduler(num_rows=3, max_queue_rows=8, seq_len=L, clock=clock)
    r = req(loop, clock, trajectories=3, max_steps=10, noise=0.1, selection="best_q")
    s.submit(r)
    s.admit()
    idx = s.active_rows()
    s.decide(idx, np.arange(3 * L).reshape(3, L), np.array([1.0, -1.0, -2.0]), np.array([True, False, False]))
    assert s.running_rows == 2 and results(loop, r)[0] is None
    idx = s.active_rows()
    s.decide(idx, np.zeros((2, L), np.int64), np.array([3.0, 0.5]), np.array([True, True]))
    (res,) = results(loop, r)
    assert res.chosen == 1 and res.q_halt == 3.0 and res.row_steps == 1 + 2 + 2
    assert s.running_rows == 0


def test_verifier_first_resolves_early_and_frees_siblings(loop):
    clock = Clock()
    s = Scheduler(num_rows=4, max_queue_rows=8, seq_len=L, clock=clock)
    r = req(loop, clock, verifier=lambda t: bool(t[0] == 7), trajectories=4, max_steps=10, noise=0.1,
            selection="verifier_first")
    s.submit(r)
    s.admit()
    step(s)
    assert results(loop, r)[0] is None
    tokens = np.zeros((4, L), np.int64)
    tokens[2, 0] = 7
    step(s, tokens=tokens)
    (res,) = results(loop, r)
    assert (res.halted_by, res.chosen, res.valid, res.steps) == ("verified", 2, True, 2)
    assert s.running_rows == 0


def test_queued_requests_expire_or_cancel_without_running(loop):
    clock = Clock()
    s = Scheduler(num_rows=1, max_queue_rows=8, seq_len=L, clock=clock)
    running, late, gone = req(loop, clock, max_steps=99), req(loop, clock, deadline_ms=50), req(loop, clock)
    for r in (running, late, gone):
        s.submit(r)
    s.admit()
    gone.cancel()
    clock.t += 0.1
    _, dropped = s.admit()
    assert {r.id for r, _ in dropped} == {late.id, gone.id} and s.queued_rows == 0
    r_late, r_gone = results(loop, late, gone)
    assert (r_late.halted_by, r_late.steps, r_late.tokens) == ("deadline", 0, None)
    assert r_late.queue_ms == pytest.approx(100.0)
    assert r_gone.halted_by == "cancelled"


def test_cut_all_and_no_admission_after_stop(loop):
    clock = Clock()
    s = Scheduler(num_rows=1, max_queue_rows=8, seq_len=L, clock=clock)
    running, queued = req(loop, clock, max_steps=99), req(loop, clock)
    s.submit(running)
    s.submit(queued)
    s.admit()
    step(s, tokens=[[4, 4, 4, 4]])
    s.stop_accepting()
    with pytest.raises(NotAccepting):
        s.submit(req(loop, clock))
    s.cut_all()
    loop.run_until_complete(asyncio.sleep(0))
    res = running.future.result()
    assert res.halted_by == "deadline" and res.steps == 1 and res.tokens.tolist() == [4, 4, 4, 4]
    with pytest.raises(NotAccepting):
        queued.future.result()
    assert not s.has_work()
