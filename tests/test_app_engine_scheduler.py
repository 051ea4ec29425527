"""Scheduling policy on its own: no model, no HTTP, no event loop; rows, tokens, Q values and times are made up.

The scheduler is driven as the engine core drives it: `add`, then `schedule(now)` for admissions, then
`update(active rows, tokens, q_halt, model_halted, verified, now)` after each (imagined) ACT step.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from app.engine.protocol import (
    DRAINING,
    ENGINE_ERROR,
    QUEUE_FULL,
    TOO_MANY_ROWS,
    EngineOutput,
    EngineRequest,
    SolveOptions,
    tokens_to_bytes,
)
from app.engine.scheduler import Scheduler, StepResult

L = 4
T0 = 100.0  # every request arrives at T0 unless a test says otherwise


def req(rid: str, stream: bool = False, arrival: float = T0, **opts) -> EngineRequest:
    return EngineRequest(id=rid, model="m", inputs=tokens_to_bytes(np.zeros(L)), puzzle_identifier=0,
                         options=SolveOptions(**opts), arrival=arrival, stream=stream)


def add(s: Scheduler, *requests: EngineRequest, verify_each: bool = False) -> None:
    for r in requests:
        assert s.add(r, verify_each=verify_each) is None


def admitted_ids(s: Scheduler, now: float = T0) -> list[str]:
    return [a.state.id for a in s.schedule(now).admitted]


def step(s: Scheduler, now: float = T0, tokens=None, q=-5.0, model_halted=False, verified=None) -> StepResult:
    """One ACT step over every active row; scalars are broadcast to all rows."""
    idx = np.flatnonzero(s.active)
    n = len(idx)
    toks = np.zeros((n, L), np.int64) if tokens is None else np.asarray(tokens, np.int64)
    ver = None if verified is None else np.broadcast_to(np.asarray(verified, bool), n)
    return s.update(idx, toks, np.broadcast_to(np.asarray(q, float), n).copy(),
                    np.broadcast_to(np.asarray(model_halted, bool), n), ver, now)


def by_id(outputs: list[EngineOutput]) -> dict[str, EngineOutput]:
    return {o.id: o for o in outputs}


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# -- the queue ---------------------------------------------------------------------------------------------


def test_queue_limit_counts_rows_and_fifo_does_not_backfill():
    s = Scheduler(num_rows=4, max_queue_rows=6, seq_len=L)
    add(s, req("first", trajectories=2))
    assert admitted_ids(s) == ["first"]
    add(s, req("big", trajectories=4), req("small"))
    assert s.queued_rows == 5 and s.queued_requests == 2
    # Room is the queue limit plus the 2 rows free right now: 5 + 4 > 6 + 2.
    full = s.add(req("over", trajectories=4))
    assert full is not None and full.code == QUEUE_FULL and full.id == "over"
    assert full.retry_after_s == 3  # (5 + 4) rows / 4 rows per wave * 1 s per request, rounded up
    assert s.add(req("fits", trajectories=2)) is None  # 5 + 2 <= 6 + 2
    too_many = s.add(req("huge", trajectories=5))
    assert too_many is not None and too_many.code == TOO_MANY_ROWS and "at most 4" in too_many.message
    assert s.queued_rows == 7 and not s.is_live("over") and not s.is_live("huge")
    # 2 rows are free: `small` would fit, but it must not overtake `big` (no starvation of big requests).
    assert admitted_ids(s) == [] and s.queued_rows == 7
    s.abort(["first"])
    assert step(s).dropped == ["first"]
    assert admitted_ids(s) == ["big"] and s.running_rows == 4 and s.queued_rows == 3


def test_free_rows_count_as_room_before_the_next_schedule():
    # A burst arriving in one message is queued before `schedule` runs: idle rows must not count against it.
    s = Scheduler(num_rows=4, max_queue_rows=2, seq_len=L)
    add(s, *(req(f"r{i}") for i in range(6)))
    rejected = s.add(req("r6"))
    assert rejected is not None and rejected.code == QUEUE_FULL
    assert admitted_ids(s) == ["r0", "r1", "r2", "r3"] and s.queued_rows == 2
    rejected = s.add(req("r7"))  # no row free now: the limit is the queue alone
    assert rejected is not None and rejected.code == QUEUE_FULL


def test_draining_rejects_new_requests_and_keeps_running_ones():
    s = Scheduler(num_rows=2, max_queue_rows=8, seq_len=L)
    add(s, req("running", max_steps=2), req("queued", trajectories=2, max_steps=1))
    s.schedule(T0)
    s.stop_accepting()
    rejected = s.add(req("late"))
    assert rejected is not None and rejected.code == DRAINING and not s.accepting
    assert step(s).finished == []
    assert [o.id for o in step(s).finished] == ["running"]
    assert admitted_ids(s) == ["queued"]  # accepted before the drain: it still runs
    assert [o.id for o in step(s).finished] == ["queued"] and not s.has_work()


# -- halting rules -----------------------------------------------------------------------------------------


def test_precedence_when_several_rules_fire_in_one_step():
    s = Scheduler(num_rows=5, max_queue_rows=8, seq_len=L)
    add(s, req("a", max_steps=1, deadline_ms=10),  # max_steps and deadline together -> max_steps
        req("b", max_steps=5, deadline_ms=10),  # only the deadline
        req("c", max_steps=1))  # cancelled beats max_steps
    add(s, req("d", trajectories=2, noise=0.1, selection="verifier_first"), verify_each=True)
    assert admitted_ids(s) == ["a", "b", "c", "d"]
    s.abort(["c"])
    # Rows: a=0, b=1, c=2, d=3,4. The model's rule fires on d's rows; the verifier passes row 3 (verified beats
    # q_head) and rows 0-2, which did not ask for it (ignored).
    res = step(s, now=T0 + 1.0, model_halted=[False, False, False, True, True],
               verified=[True, True, True, True, False])
    assert res.halts == Counter(max_steps=1, deadline=1, cancelled=1, verified=1, q_head=1)
    out = by_id(res.finished)
    assert sorted(out) == ["a", "b", "d"] and res.dropped == ["c"]
    assert (out["a"].halted_by, out["b"].halted_by, out["d"].halted_by) == ("max_steps", "deadline", "verified")
    assert out["b"].tokens is not None and out["b"].steps == 1
    assert (out["d"].chosen, out["d"].valid) == (0, True)
    assert s.running_rows == 0 and not any(s.is_live(r) for r in "abcd")


def test_threshold_replaces_the_models_own_rule():
    s = Scheduler(num_rows=4, max_queue_rows=8, seq_len=L)
    add(s, req("own", max_steps=9),
        req("loose", max_steps=9, threshold=0.5),  # q_halt > logit(0.5) = 0
        req("strict", max_steps=9, threshold=0.9),  # q_halt > logit(0.9) = 2.197
        req("fixed", max_steps=3, halting="max_steps"))  # the Q head is not consulted at all
    s.schedule(T0)
    res = step(s, q=-1.0, model_halted=True)
    assert [(o.id, o.halted_by) for o in res.finished] == [("own", "q_head")]
    res = step(s, q=1.0, model_halted=False)
    assert [(o.id, o.halted_by) for o in res.finished] == [("loose", "q_head")]
    res = step(s, q=2.5, model_halted=True)
    assert sorted((o.id, o.halted_by, o.steps) for o in res.finished) == [("fixed", "max_steps", 3),
                                                                          ("strict", "q_head", 3)]


def test_verifier_halting_ignores_the_q_head():
    s = Scheduler(num_rows=1, max_queue_rows=8, seq_len=L)
    add(s, req("v", halting="verifier", max_steps=9), verify_each=True)
    s.schedule(T0)
    assert step(s, q=9.0, model_halted=True, verified=False).finished == []
    (out,) = step(s, q=-9.0, verified=True).finished
    assert (out.halted_by, out.steps, out.valid, out.q_halt) == ("verified", 2, True, -9.0)


def test_converged_counts_unchanged_steps():
    s = Scheduler(num_rows=1, max_queue_rows=8, seq_len=L)
    add(s, req("r", max_steps=20, converge_steps=2))
    s.schedule(T0)
    for toks in ([1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 5]):
        assert step(s, tokens=[toks]).finished == []
    (out,) = step(s, tokens=[[1, 2, 3, 5]]).finished  # unchanged for 2 steps (3 -> 4)
    assert (out.halted_by, out.steps, out.tokens) == ("converged", 4, tokens_to_bytes(np.array([1, 2, 3, 5])))


# -- PTRM (K rows per request) ---------------------------------------------------------------------------


def test_ptrm_frees_rows_as_they_halt_and_resolves_with_the_last():
    s = Scheduler(num_rows=3, max_queue_rows=8, seq_len=L)
    add(s, req("p", trajectories=3, max_steps=10, noise=0.1, selection="best_q"))
    s.schedule(T0)
    res = step(s, tokens=np.arange(3 * L).reshape(3, L), q=[1.0, -1.0, -2.0], model_halted=[True, False, False])
    assert res.finished == [] and s.running_rows == 2
    add(s, req("next", max_steps=10))
    assert admitted_ids(s) == ["next"] and s.state_of(0).id == "next"  # row 0 went to the next request at once
    tokens = np.array([[9] * L, [0] * L, [0] * L])
    (out,) = step(s, now=T0 + 0.5, tokens=tokens, q=[-5.0, 3.0, 0.5], model_halted=[False, True, True]).finished
    assert (out.id, out.halted_by, out.chosen, out.q_halt, out.steps) == ("p", "q_head", 1, 3.0, 2)
    assert out.row_steps == 1 + 2 + 2 and out.trajectories == 3
    assert out.confidence == pytest.approx(sigmoid(3.0)) and out.tokens == tokens_to_bytes(np.zeros(L))
    assert out.compute_ms == pytest.approx(500.0) and out.queue_ms == 0.0
    assert s.running_rows == 1 and s.is_live("next") and not s.is_live("p")


def test_verifier_first_resolves_early_and_frees_siblings():
    s = Scheduler(num_rows=4, max_queue_rows=8, seq_len=L)
    add(s, req("p", trajectories=4, max_steps=10, noise=0.1, selection="verifier_first"), verify_each=True)
    s.schedule(T0)
    assert step(s, verified=False).finished == []
    tokens = np.zeros((4, L), np.int64)
    tokens[2, 0] = 7
    res = step(s, tokens=tokens, verified=[False, False, True, False])
    (out,) = res.finished
    assert (out.halted_by, out.chosen, out.valid, out.steps) == ("verified", 2, True, 2)
    assert out.tokens == tokens_to_bytes(tokens[2]) and out.row_steps == 4 * 2  # siblings cut at step 2
    assert res.halts == Counter(verified=1)
    assert s.running_rows == 0 and not s.has_work()


def test_when_several_rows_verify_in_one_step_the_q_head_picks_as_the_stream_shows():
    """Rows 1 and 3 verify in the same step: the answer is the one the Q-head trusts more (row 3), and the stream's
    last step names that trajectory; the answer was the first by index (row 1) while the stream named the largest
    q_halt, another answer where a puzzle has several (a maze with two shortest paths)."""
    s = Scheduler(num_rows=4, max_queue_rows=8, seq_len=L)
    add(s, req("p", trajectories=4, max_steps=10, noise=0.1, selection="verifier_first", stream=True),
        verify_each=True)
    s.schedule(T0)
    tokens = np.zeros((4, L), np.int64)
    tokens[1, 0], tokens[3, 0] = 5, 7
    res = step(s, tokens=tokens, q=[4.0, 1.0, 9.0, 3.0], verified=[False, True, False, True])
    (update,) = res.steps
    (out,) = res.finished
    assert (out.chosen, out.halted_by) == (3, "verified") and out.tokens == tokens_to_bytes(tokens[3])
    assert update.trajectory == 3  # the stream's leader is that row too (row 2's q_halt is higher, unverified)
    res_tie = Scheduler(num_rows=2, max_queue_rows=8, seq_len=L)
    add(res_tie, req("t", trajectories=2, max_steps=10, noise=0.1, selection="verifier_first"), verify_each=True)
    res_tie.schedule(T0)
    (tied,) = step(res_tie, q=[2.0, 2.0], verified=[True, True]).finished
    assert tied.chosen == 0  # among verified rows of equal q_halt, the earliest


# -- requests that never run -----------------------------------------------------------------------------


def test_queued_requests_expire_or_cancel_without_running():
    s = Scheduler(num_rows=1, max_queue_rows=8, seq_len=L)
    add(s, req("running", max_steps=99), req("late", deadline_ms=50), req("gone"))
    s.schedule(T0)
    s.abort(["gone"])
    batch = s.schedule(T0 + 0.1)
    assert batch.admitted == [] and batch.dropped == ["gone"] and s.queued_rows == 0
    (late,) = batch.finished
    assert (late.id, late.halted_by, late.steps, late.tokens, late.row_steps) == ("late", "deadline", 0, None, 0)
    assert late.queue_ms == pytest.approx(100.0) and late.compute_ms == 0.0
    assert s.is_live("running") and not s.is_live("late") and not s.is_live("gone")


def test_expiry_and_cancel_are_found_separately_and_the_deadline_heap_stays_bounded():
    """schedule() looks through the queue only when a deadline passed or a queued request was cancelled; the
    heap of deadlines forgets admitted requests, so it does not grow with the requests served."""
    s = Scheduler(num_rows=1, max_queue_rows=10_000, seq_len=L)
    add(s, req("running", max_steps=99), req("soon", deadline_ms=50), req("later", deadline_ms=5_000))
    s.schedule(T0)
    assert s.schedule(T0 + 0.01).finished == []
    assert [o.id for o in s.schedule(T0 + 0.1).finished] == ["soon"] and s.queued_requests == 1
    s.abort(["later"])
    assert s.schedule(T0 + 0.2).dropped == ["later"] and s.queued_requests == 0
    # Thousands of requests that each wait, then run and halt: the heap keeps no entry for long.
    wide = Scheduler(num_rows=4, max_queue_rows=10_000, seq_len=L)
    for i in range(2_000):
        add(wide, req(f"r{i}", max_steps=1, deadline_ms=60_000))
        if i % 4 == 3:
            wide.schedule(T0 + i * 1e-3)
            assert len(step(wide, T0 + i * 1e-3).finished) == 4
    assert wide.queued_requests == 0 and len(wide._deadlines) <= 64


def test_inputs_of_the_wrong_size_are_refused_not_loaded():
    s = Scheduler(num_rows=2, max_queue_rows=8, seq_len=L)
    good = req("good")
    bad = EngineRequest("bad", good.model, inputs=good.inputs[:-4], puzzle_identifier=0, options=good.options,
                        arrival=T0)
    rejected = s.add(bad)
    assert rejected is not None and rejected.code == ENGINE_ERROR and f"takes {L} int32 tokens" in rejected.message
    assert s.add(good) is None and s.queued_requests == 1


def test_abort_of_a_running_request_frees_its_rows_at_the_next_update_without_output():
    s = Scheduler(num_rows=3, max_queue_rows=8, seq_len=L)
    add(s, req("p", stream=True, trajectories=2, max_steps=99, noise=0.1), req("other", max_steps=99))
    s.schedule(T0)
    s.abort(["p", "unknown"])
    assert s.is_live("p") and s.running_rows == 3  # its rows still run this step (the batch is already built)
    res = step(s, q=5.0, model_halted=True, now=T0 + 1.0)  # every other rule fires too: cancelled wins
    assert res.dropped == ["p"] and [o.id for o in res.finished] == ["other"]
    assert res.halts == Counter(cancelled=2, q_head=1)
    assert res.steps == []  # no stream update for a caller that left
    assert not s.is_live("p") and s.running_rows == 0
    add(s, req("again", trajectories=3))
    assert admitted_ids(s) == ["again"]


# -- streaming -------------------------------------------------------------------------------------------


def test_stream_updates_carry_the_leading_trajectory_only_for_stream_requests():
    s = Scheduler(num_rows=4, max_queue_rows=8, seq_len=L)
    add(s, req("streamer", stream=True, trajectories=3, max_steps=9, noise=0.1), req("quiet", max_steps=9))
    s.schedule(T0)
    tokens = np.arange(4 * L).reshape(4, L)
    res = step(s, tokens=tokens, q=[0.5, 2.0, -1.0, 9.0])
    (up,) = res.steps
    assert (up.id, up.step, up.trajectory, up.active_rows) == ("streamer", 1, 1, 3)
    assert up.tokens == tokens_to_bytes(tokens[1]) and up.confidence == pytest.approx(sigmoid(2.0))
    # Trajectory 1 halts on the model's rule; the update of that step still shows it (it led), the next one
    # shows the best of the two rows left.
    res = step(s, tokens=tokens, q=[0.5, 4.0, -1.0, 0.0], model_halted=[False, True, False, False])
    assert [(u.trajectory, u.step) for u in res.steps] == [(1, 2)]
    res = step(s, tokens=tokens[[0, 2, 3]], q=[-3.0, 1.0, 0.0])
    (up,) = res.steps
    assert (up.trajectory, up.step, up.active_rows) == (2, 3, 2)
    assert up.tokens == tokens_to_bytes(tokens[2])


# -- heavy requests (max_share) --------------------------------------------------------------------------


def test_no_request_may_hold_more_than_its_share_of_the_rows():
    s = Scheduler(num_rows=4, max_queue_rows=16, seq_len=L, max_share=0.5)
    rej = s.add(req("heavy", trajectories=3))
    assert rej is not None and rej.code == TOO_MANY_ROWS
    assert "at most 2 of this model's 4" in rej.message and "RECURSOLVE_MAX_REQUEST_SHARE" in rej.message
    assert not s.is_live("heavy") and s.queued_rows == 0


def test_a_light_request_always_finds_rows_beside_the_heaviest_allowed_one():
    s = Scheduler(num_rows=4, max_queue_rows=16, seq_len=L, max_share=0.5)
    add(s, req("heavy", trajectories=2, max_steps=99))
    assert admitted_ids(s) == ["heavy"]
    add(s, req("light", max_steps=1))
    assert admitted_ids(s) == ["light"] and s.running_rows == 3  # no waiting for the heavy one
    assert [o.id for o in step(s).finished] == ["light"]


# -- ending requests from outside ------------------------------------------------------------------------


def test_cut_all_resolves_running_with_their_answer_and_queued_without_one():
    s = Scheduler(num_rows=1, max_queue_rows=8, seq_len=L)
    add(s, req("running", max_steps=99), req("queued"))
    s.schedule(T0)
    step(s, tokens=[[4, 4, 4, 4]], q=1.5)
    res = s.cut(None, T0 + 2.0)
    out = by_id(res.finished)
    assert (out["running"].halted_by, out["running"].steps, out["running"].q_halt) == ("deadline", 1, 1.5)
    assert out["running"].tokens == tokens_to_bytes(np.array([4, 4, 4, 4]))
    assert (out["queued"].halted_by, out["queued"].steps, out["queued"].tokens) == ("deadline", 0, None)
    assert out["queued"].queue_ms == pytest.approx(2000.0)
    assert res.halts == Counter(deadline=1)
    assert not s.has_work() and s.queued_rows == 0 and s.running_rows == 0


def test_cut_by_id_selects_over_the_answers_so_far_and_leaves_the_rest():
    s = Scheduler(num_rows=3, max_queue_rows=8, seq_len=L)
    add(s, req("p", trajectories=2, max_steps=99, noise=0.1), req("other", max_steps=99))
    s.schedule(T0)
    tokens = np.array([[1] * L, [2] * L, [3] * L])
    step(s, tokens=tokens, q=[2.0, -1.0, 0.0], model_halted=[True, False, False])  # row 0 halts, row 1 runs on
    step(s, tokens=tokens[1:], q=[-1.0, 0.0])
    res = s.cut(["p", "unknown"], T0 + 1.0)
    (out,) = res.finished
    assert (out.id, out.halted_by, out.chosen, out.q_halt, out.row_steps) == ("p", "deadline", 0, 2.0, 1 + 2)
    assert out.tokens == tokens_to_bytes(tokens[0])
    assert res.halts == Counter(deadline=1)  # only the row still running was cut
    assert s.is_live("other") and not s.is_live("p") and s.running_rows == 1


def test_the_verifiers_last_verdict_is_kept_for_rows_cut_before_they_halt():
    """A row's verdict lives in a per-row array and is copied into its trajectory when the row is freed, by
    halting or by a cut (a drain); None: the verifier never ran on it, even if it did for the row's last owner."""
    s = Scheduler(num_rows=2, max_queue_rows=8, seq_len=L)
    add(s, req("checked", max_steps=99, halting="verifier"), verify_each=True)
    add(s, req("unchecked", max_steps=99))
    s.schedule(T0)
    step(s, verified=[False, False])
    out = by_id(s.cut(["checked", "unchecked"], T0).finished)
    assert (out["checked"].valid, out["unchecked"].valid) == (False, None)
    add(s, req("next", max_steps=99))  # on the row `checked` held
    s.schedule(T0)
    step(s, verified=[True])
    (after,) = s.cut(None, T0).finished
    assert (after.id, after.valid) == ("next", None)


def test_cut_before_the_first_step_has_no_answer():
    s = Scheduler(num_rows=2, max_queue_rows=8, seq_len=L)
    add(s, req("p", trajectories=2, noise=0.1))
    s.schedule(T0)
    (out,) = s.cut(["p"], T0).finished
    assert (out.halted_by, out.tokens, out.chosen, out.steps) == ("deadline", None, None, 0)
    assert s.running_rows == 0


def test_fail_all_rejects_every_live_request_and_frees_the_rows():
    s = Scheduler(num_rows=2, max_queue_rows=8, seq_len=L)
    add(s, req("running", trajectories=2), req("queued"), req("gone"))
    s.schedule(T0)
    s.abort(["gone"])
    failed = s.fail_all("boom")
    assert sorted(r.id for r in failed) == ["queued", "running"]  # nobody waits for `gone`
    assert all(r.code == ENGINE_ERROR and r.message == "boom" for r in failed)
    assert not s.has_work() and s.queued_rows == 0 and not any(s.is_live(r) for r in ("running", "queued", "gone"))
    add(s, req("after", trajectories=2))  # the engine goes on with the rows it freed
    assert admitted_ids(s) == ["after"]


def test_confidence_temperature_scales_the_confidence_not_the_halting():
    plain, tempered = (Scheduler(num_rows=1, max_queue_rows=4, seq_len=L, confidence_temperature=t) for t in (1.0, 0.5))
    for s in (plain, tempered):
        add(s, req("r", stream=True, max_steps=2, halting="q_head", threshold=0.6))
        s.schedule(T0)
    q = 0.3  # sigmoid(0.3) = 0.574 < 0.6: the threshold on q_halt itself keeps both running
    first = [step(s, q=q) for s in (plain, tempered)]
    assert [r.steps[0].confidence for r in first] == pytest.approx([sigmoid(q), sigmoid(q / 0.5)])
    assert not first[0].finished and not first[1].finished
    done = [step(s, q=q).finished[0] for s in (plain, tempered)]
    assert [d.halted_by for d in done] == ["max_steps", "max_steps"]
    assert [d.confidence for d in done] == pytest.approx([sigmoid(q), sigmoid(q / 0.5)])


# -- halting=auto: the escalation runs in the engine -----------------------------------------------------------


def auto_req(rid: str, k: int = 3, deadline_ms: int | None = None, **first) -> EngineRequest:
    plain = SolveOptions(halting="verifier", max_steps=first.pop("max_steps", 2), deadline_ms=deadline_ms, **first)
    noisy = SolveOptions(halting="verifier", max_steps=4, trajectories=k, noise=0.1, seed=7,
                         selection="verifier_first", deadline_ms=deadline_ms)
    return EngineRequest(id=rid, model="m", inputs=tokens_to_bytes(np.zeros(L)), puzzle_identifier=0,
                         options=plain, arrival=T0, escalation=noisy)


def test_an_unverified_plain_run_escalates_in_the_engine_ahead_of_new_work():
    s = Scheduler(num_rows=4, max_queue_rows=16, seq_len=L)
    add(s, auto_req("a"), auto_req("b"), verify_each=True)
    assert admitted_ids(s) == ["a", "b"]
    add(s, req("late", max_steps=1))
    step(s, verified=False)
    assert step(s, verified=False, q=0.5).finished == []  # both ran out of plain steps unverified: no output
    assert [st.id for st in s._waiting] == ["a", "b", "late"]  # escalations first, in their own order
    batch = s.schedule(T0 + 0.01)
    assert [a.state.id for a in batch.admitted] == ["a"] and len(batch.admitted[0].rows) == 3  # b's 3 rows wait
    tokens = np.zeros((3, L), np.int64)
    tokens[1, 0] = 9
    (out,) = step(s, T0 + 0.02, tokens=tokens, verified=[False, True, False]).finished
    assert (out.id, out.halted_by, out.valid, out.chosen, out.trajectories) == ("a", "verified", True, 2, 4)
    assert out.tokens == tokens_to_bytes(tokens[1])
    assert out.row_steps == 2 + 3 * 1 and out.elapsed_steps == 2 + 1 and out.steps == 1
    assert admitted_ids(s, T0 + 0.03) == ["b", "late"]  # then b's escalation, then the new request
    assert s.queued_requests == 0


def test_a_verified_plain_run_does_not_escalate_and_a_better_first_run_is_kept():
    s = Scheduler(num_rows=4, max_queue_rows=16, seq_len=L)
    add(s, auto_req("ok"), auto_req("keep"), verify_each=True)
    s.schedule(T0)
    (out,) = step(s, verified=[True, False], q=[1.0, 2.0]).finished
    assert (out.id, out.trajectories, out.halted_by, out.elapsed_steps) == ("ok", 1, "verified", 1)
    assert step(s, verified=False, q=2.0, tokens=[[5, 5, 5, 5]]).finished == []
    s.schedule(T0)
    for _ in range(4):  # the escalation never verifies and the Q-head trusts it less: the plain answer stays
        res = step(s, verified=False, q=-1.0)
    (out,) = res.finished
    assert (out.trajectories, out.chosen, out.halted_by, out.q_halt) == (4, 0, "max_steps", 2.0)
    assert out.tokens == tokens_to_bytes(np.array([5, 5, 5, 5])) and out.row_steps == 2 + 3 * 4
    assert out.elapsed_steps == 2 + 4


def test_an_escalation_whose_deadline_passes_in_the_queue_answers_with_the_plain_run():
    s = Scheduler(num_rows=3, max_queue_rows=16, seq_len=L)
    add(s, req("hog", max_steps=99), auto_req("a", k=3, deadline_ms=100), verify_each=True)
    s.schedule(T0)
    step(s, verified=False)
    assert step(s, verified=False, q=0.5).finished == []  # a escalates; its 3 rows wait behind the hog
    batch = s.schedule(T0 + 0.2)
    (out,) = batch.finished
    assert (out.id, out.trajectories, out.halted_by, out.q_halt, out.row_steps) == ("a", 4, "max_steps", 0.5, 2)
    assert s.queued_requests == 0 and not s.is_live("a")


def test_a_drain_cuts_an_escalation_with_the_better_answer_so_far():
    s = Scheduler(num_rows=4, max_queue_rows=16, seq_len=L)
    add(s, auto_req("a"), verify_each=True)
    s.schedule(T0)
    step(s, verified=False, q=3.0)
    step(s, verified=False, q=3.0)
    s.schedule(T0)
    step(s, verified=False, q=-2.0)
    (out,) = s.cut(None, T0 + 1).finished
    assert (out.trajectories, out.q_halt, out.chosen, out.halted_by) == (4, 3.0, 0, "max_steps")
    assert s.running_rows == 0 and not s.has_work()


def test_an_escalation_that_could_never_run_is_refused_up_front():
    s = Scheduler(num_rows=4, max_queue_rows=16, seq_len=L, max_share=0.5)
    rejected = s.add(auto_req("a", k=3))
    assert rejected is not None and rejected.code == TOO_MANY_ROWS and "ask for at most 2" in rejected.message


# -- halting=auto with hedge_after: the escalation starts beside the plain run -----------------------------------


def hedged(s: Scheduler, rid: str = "a", k: int = 3, hedge_after: int = 1, max_steps: int = 3) -> None:
    """A hedged auto request admitted and stepped to its hedge: the plain run has run `hedge_after` steps
    unverified and its escalation (k rows) is queued."""
    add(s, auto_req(rid, k=k, max_steps=max_steps, hedge_after=hedge_after), verify_each=True)
    s.schedule(T0)
    for _ in range(hedge_after):
        assert rid not in by_id(step(s, verified=False, q=0.5).finished)


def test_the_hedge_starts_beside_the_plain_run_and_the_first_to_verify_answers():
    s = Scheduler(num_rows=8, max_queue_rows=16, seq_len=L)
    hedged(s, hedge_after=1)
    assert [st.id for st in s._waiting] == ["a#hedge"] and s.running_rows == 1  # the plain run goes on
    add(s, req("late", max_steps=9))
    assert admitted_ids(s) == ["a#hedge", "late"]  # the hedge ahead of new work
    assert s.running_rows == 1 + 3 + 1
    tokens = np.zeros((5, L), np.int64)
    tokens[2, 0] = 9  # the hedge's second trajectory (rows: plain, hedge x3, late)
    (out,) = step(s, tokens=tokens, verified=[False, False, True, False, False]).finished
    assert (out.id, out.halted_by, out.valid, out.chosen, out.trajectories) == ("a", "verified", True, 2, 4)
    assert out.tokens == tokens_to_bytes(tokens[2])
    # the plain run stopped with the answer: 2 steps of its own, 3 hedge rows one step each
    assert out.row_steps == 2 + 3 and out.elapsed_steps == max(2, 1 + 1) and out.steps == 1
    assert s.running_rows == 1 and s.is_live("late") and not s.is_live("a") and not s.is_live("a#hedge")


def test_a_hedge_that_wins_reports_the_requests_time_in_the_queue():
    """The request's queue time is its plain run's, also when the hedge answers and the plain run is stopped."""
    s = Scheduler(num_rows=8, max_queue_rows=16, seq_len=L)
    add(s, auto_req("a", k=2, max_steps=3, hedge_after=1), verify_each=True)
    assert admitted_ids(s, now=T0 + 0.5) == ["a"]  # half a second in the queue
    assert not step(s, now=T0 + 0.6, verified=False, q=0.5).finished
    assert admitted_ids(s, now=T0 + 0.6) == ["a#hedge"]
    (out,) = step(s, now=T0 + 0.7, verified=[False, True, False]).finished  # rows: plain, hedge x2
    assert (out.id, out.valid, out.chosen) == ("a", True, 1)
    assert out.queue_ms == pytest.approx(500.0) and out.compute_ms == pytest.approx(200.0)


def test_a_plain_run_that_verifies_stops_its_hedge_running_or_queued():
    s = Scheduler(num_rows=8, max_queue_rows=16, seq_len=L)
    hedged(s, "running")
    s.schedule(T0)  # the hedge runs
    (out,) = step(s, verified=[True, False, False, False], q=[2.0, 0, 0, 0]).finished
    assert (out.id, out.valid, out.chosen, out.trajectories, out.q_halt) == ("running", True, 0, 4, 2.0)
    assert out.row_steps == 2 + 3 and s.running_rows == 0
    s = Scheduler(num_rows=3, max_queue_rows=16, seq_len=L)  # no room beside the hog: the hedge waits in the queue
    add(s, req("hog", max_steps=99))
    hedged(s, "queued", k=2, max_steps=4)
    assert s.schedule(T0).admitted == [] and s.queued_requests == 1
    (out,) = step(s, verified=[False, True]).finished
    assert (out.id, out.trajectories, out.row_steps) == ("queued", 3, 2)
    assert s.queued_requests == 0 and s.queued_rows == 0 and s.running_rows == 1


def test_when_both_runs_end_unverified_the_q_head_picks_and_nothing_escalates_again():
    s = Scheduler(num_rows=8, max_queue_rows=16, seq_len=L)
    hedged(s, hedge_after=1, max_steps=2)
    s.schedule(T0)
    assert step(s, verified=False, q=[3.0, -1.0, -1.0, -1.0], tokens=np.full((4, L), 5)).finished == []
    assert s.queued_requests == 0 and s.running_rows == 3  # the plain run ended; no second escalation
    for _ in range(2):
        assert step(s, verified=False, q=-1.0).finished == []
    (out,) = step(s, verified=False, q=-1.0).finished  # the hedge's 4th and last step
    assert (out.id, out.halted_by, out.chosen, out.q_halt, out.trajectories) == ("a", "max_steps", 0, 3.0, 4)
    assert out.tokens == tokens_to_bytes(np.full(L, 5)) and out.row_steps == 2 + 3 * 4
    assert out.elapsed_steps == 1 + 4 and not s.has_work()


def test_a_plain_run_that_verifies_after_its_hedge_ended_answers_whatever_the_q_head_says():
    s = Scheduler(num_rows=8, max_queue_rows=16, seq_len=L)
    hedged(s, hedge_after=1, max_steps=9)
    s.schedule(T0)
    for _ in range(3):
        step(s, verified=False, q=5.0)
    assert step(s, verified=False, q=5.0).finished == []  # the hedge ended unverified, trusted by its Q-head
    (out,) = step(s, verified=True, q=-1.0, tokens=[[7, 7, 7, 7]]).finished
    assert (out.id, out.valid, out.chosen, out.q_halt, out.elapsed_steps) == ("a", True, 0, -1.0, 6)
    assert out.tokens == tokens_to_bytes(np.full(L, 7)) and out.row_steps == 6 + 3 * 4


def test_a_hedge_that_verifies_in_the_step_its_plain_run_ends_answers_once():
    s = Scheduler(num_rows=8, max_queue_rows=16, seq_len=L)
    add(s, req("hog", trajectories=3, max_steps=1))  # rows 0-2 for one step: the hedge gets them, below the plain run
    hedged(s, hedge_after=1, max_steps=2)
    assert s.schedule(T0).admitted[0].rows == [0, 1, 2]
    # rows 0-2: the hedge, the second of them verifies; row 3: the plain run's last step, unverified
    (out,) = step(s, verified=[False, True, False, False], q=[0, 0, 0, 4.0]).finished
    assert (out.id, out.valid, out.chosen, out.trajectories, out.row_steps) == ("a", True, 2, 4, 2 + 3)
    assert not s.has_work() and s.running_rows == 0


def test_hedged_runs_are_aborted_cut_and_failed_as_one_request():
    s = Scheduler(num_rows=8, max_queue_rows=16, seq_len=L)
    hedged(s, "gone")
    s.schedule(T0)
    s.abort(["gone"])
    res = step(s, verified=False)
    assert res.finished == [] and not s.is_live("gone") and not s.is_live("gone#hedge") and s.running_rows == 0
    assert set(res.dropped) == {"gone"}  # by the id its caller knows (the engine core forgets it by that id)
    hedged(s, "left", max_steps=2)
    s.schedule(T0)
    step(s, verified=False)  # the plain run ends unverified at its max_steps; the hedge runs on
    assert not s.is_live("left") and s.is_live("left#hedge")
    s.abort(["left"])
    res = step(s, verified=False)
    assert res.finished == [] and res.dropped == ["left"] and s.running_rows == 0
    hedged(s, "cut")
    s.schedule(T0)
    step(s, verified=False, q=[-2.0, 1.0, 0.0, 0.0])
    (out,) = s.cut(["cut"], T0 + 1).finished
    assert (out.id, out.halted_by, out.trajectories, out.chosen, out.q_halt) == ("cut", "deadline", 4, 1, 1.0)
    assert not s.has_work()
    hedged(s, "failed")
    assert [r.id for r in s.fail_all("boom")] == ["failed"]


def test_no_hedge_when_both_runs_would_pass_a_requests_share_of_the_rows():
    s = Scheduler(num_rows=8, max_queue_rows=16, seq_len=L, max_share=0.5)
    hedged(s, k=4, max_steps=2)  # 1 + 4 rows > 4: the escalation waits for the plain run, as without a hedge
    assert s.queued_requests == 0
    assert step(s, verified=False).finished == []
    assert [st.id for st in s._waiting] == ["a"]
