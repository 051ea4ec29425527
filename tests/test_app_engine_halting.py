"""Every halting reason, end to end through POST /v1/solve on small real models."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from app_engine_support import PUZZLE, SOLUTION, engine_stats, make_specs, running_app, solve_body, solve_ok, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("halting")
    specs = make_specs(root, random={"batch_rows": 2}, copy={"batch_rows": 4})
    async with running_app(root, specs=specs) as (_, c):
        yield c


async def test_q_head(client):
    body = await solve_ok(client, model="eager", max_steps=16, halting="q_head", cache=False)
    assert body["halted_by"] == "q_head"
    assert body["steps"] == 1
    assert body["confidence"] > 0.99


async def test_threshold_changes_the_q_rule(client):
    # The random model's q_halt is about -5 (sigmoid 0.0067): its own rule never halts,
    # a threshold below that halts at the first step.
    body = await solve_ok(client, model="random", max_steps=6, halting="q_head", threshold=0.005, cache=False)
    assert (body["halted_by"], body["steps"]) == ("q_head", 1)
    body = await solve_ok(client, model="random", max_steps=6, halting="q_head", cache=False)
    assert (body["halted_by"], body["steps"]) == ("max_steps", 6)


async def test_max_steps_ignores_q_head(client):
    body = await solve_ok(client, model="eager", max_steps=5, halting="max_steps", cache=False)
    assert (body["halted_by"], body["steps"]) == ("max_steps", 5)
    assert body["answer"] is not None and len(body["answer"]) == 81


async def test_verified(client):
    body = await solve_ok(client, puzzle=SOLUTION, model="copy", max_steps=16, halting="verifier", cache=False)
    assert (body["halted_by"], body["steps"], body["verified"]) == ("verified", 1, True)
    assert body["answer"] == SOLUTION
    assert body["verification"] == []


async def test_unverifiable_runs_to_max_steps(client):
    body = await solve_ok(client, model="copy", max_steps=4, halting="verifier", cache=False)
    assert (body["halted_by"], body["steps"], body["verified"]) == ("max_steps", 4, False)
    assert any("empty" in reason for reason in body["verification"])


async def test_converged(client):
    # The copy model's answer is the same from step 1 on: unchanged for 2 steps after step 3.
    body = await solve_ok(client, model="copy", max_steps=50, converge_steps=2, cache=False)
    assert (body["halted_by"], body["steps"]) == ("converged", 3)


async def test_deadline_returns_best_answer_so_far(client):
    body = await solve_ok(client, model="random", max_steps=4096, halting="max_steps", deadline_ms=250)
    assert body["halted_by"] == "deadline"
    assert 0 < body["steps"] < 4096
    assert isinstance(body["answer"], str) and len(body["answer"]) == 81
    assert body["timings"]["total_ms"] < 2000
    # A deadline-cut answer is never cached.
    again = await solve_ok(client, model="random", max_steps=4096, halting="max_steps", deadline_ms=150)
    assert again["cached"] is False and again["halted_by"] == "deadline"


async def test_deadline_while_queued_is_a_200_without_answer(client):
    # Both rows of `random` busy: the next request waits and its deadline passes in the queue.
    hog = asyncio.create_task(client.post("/v1/solve", json=solve_body(
        model="random", max_steps=4096, halting="max_steps", trajectories=2, noise=0.1, seed=1,
        deadline_ms=1500, cache=False)))
    await wait_for(lambda: _running(client, "random", 2))
    body = await solve_ok(client, model="random", max_steps=4, deadline_ms=100)
    assert body["halted_by"] == "deadline"
    assert body["steps"] == 0 and body["answer"] is None and body["verified"] is False
    assert body["timings"]["queue_ms"] >= 100
    assert (await hog).json()["halted_by"] == "deadline"


async def test_ptrm_verifier_first_resolves_early_and_frees_rows(client):
    body = await solve_ok(client, puzzle=SOLUTION, model="copy", max_steps=64, trajectories=3, noise=0.0,
                       selection="verifier_first", halting="max_steps", cache=False)
    assert (body["halted_by"], body["steps"], body["trajectories"]) == ("verified", 1, 3)
    assert body["row_steps"] == 3
    assert (await engine_stats(client, "copy"))["running_rows"] == 0


async def _running(client, model, rows):
    return (await engine_stats(client, model))["running_rows"] == rows


async def test_puzzle_text_forms_come_back_in_kind(client):
    grid = [[int(ch) if ch != "." else 0 for ch in PUZZLE[r * 9:(r + 1) * 9]] for r in range(9)]
    body = await solve_ok(client, puzzle=grid, model="copy", max_steps=1)
    assert isinstance(body["answer"], list) and len(body["answer"]) == 9 and len(body["answer"][0]) == 9
    assert body["answer_text"].count("\n") >= 8
