"""Issue 12 on the API: adaptive compute (halting=auto), exact facts beside the neural answer, fallback=exact,
overwritten givens, and the cards' held-out accuracy in /v1/models. Tiny hand-set models (app_engine_support)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import msgspec
import pytest
import pytest_asyncio

from app.api.service import ServedModel, SolveService
from app.engine.protocol import StepUpdate
from app_engine_support import PUZZLE, SOLUTION, make_specs, running_app, solve_body, solve_ok
from puzzles import get_codec
from puzzles.maze import generate as maze
from puzzles.maze import solve as maze_solve
from puzzles.sudoku import generate as sudoku

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive")
    async with running_app(root, specs=make_specs(root)) as app_and_client:
        yield app_and_client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(running):
    return running[1]


async def test_auto_is_the_default_and_stops_at_the_first_verified_step(client):
    body = await solve_ok(client, puzzle=SOLUTION, model="copy", cache=False)  # the copy model echoes a solved grid
    assert (body["verified"], body["halted_by"], body["steps"]) == (True, "verified", 1)
    assert (body["escalated"], body["trajectories"], body["row_steps"]) == (False, 1, 1)


async def test_auto_escalates_to_k_noisy_trajectories_when_the_plain_run_fails(client):
    # copy echoes the unsolved puzzle: the plain run reaches max_steps (escalate_after's default) unverified, then
    # K = min(8, 4 rows) trajectories run up to max_steps each.
    body = await solve_ok(client, model="copy", max_steps=3, cache=False)
    assert body["verified"] is False and body["escalated"] is True
    assert body["trajectories"] == 1 + 4 and body["row_steps"] == 3 + 4 * 3
    explicit = await solve_ok(client, model="copy", max_steps=3, halting="auto", trajectories=2, cache=False)
    assert (explicit["escalated"], explicit["trajectories"], explicit["row_steps"]) == (True, 3, 3 + 2 * 3)


@pytest.mark.parametrize(("escalate_after", "plain_steps"), [(1, 1), (3, 3), (5, 4), (None, 4)])
async def test_escalate_after_is_the_plain_runs_step_limit_capped_by_max_steps(client, escalate_after, plain_steps):
    body = await solve_ok(client, model="copy", max_steps=4, escalate_after=escalate_after, cache=False)
    assert body["escalated"] is True and body["row_steps"] == plain_steps + 4 * 4


async def test_escalate_after_does_not_cut_a_run_that_is_not_auto(client):
    body = await solve_ok(client, model="copy", max_steps=4, halting="verifier", escalate_after=1, cache=False)
    assert (body["escalated"], body["steps"], body["halted_by"]) == (False, 4, "max_steps")


async def test_hedge_after_starts_the_escalation_beside_the_plain_run(running):
    service = running[0].state.runtime.service
    elapsed = {}
    for hedge_after in (None, 1, 4):  # 4: not below escalate_after (max_steps), so no hedge
        prep = service.prepare("sudoku", "copy", PUZZLE, {"max_steps": 4, "halting": "auto", "trajectories": 2,
                                                          "cache": False, "hedge_after": hedge_after})
        assert prep.options.hedge_after == (1 if hedge_after == 1 else None)  # dropped where it means nothing
        r = (await service.solve(prep)).result
        assert (r.trajectories, r.row_steps, r.valid) == (3, 4 + 2 * 4, False)
        elapsed[hedge_after] = r.elapsed_steps
    # the copy model never verifies: sequentially 4 plain steps then 4 noisy ones; hedged, the noisy ones start
    # after the plain run's first step
    assert elapsed == {None: 8, 1: 5, 4: 8}
    # The hedge draws the noise the escalation would draw without it (its seed leaves hedge_after out): random
    # weights never verify, so both runs end and the Q-head picks, the same answer either way.
    runs = []
    for hedge_after in (None, 2):
        prep = service.prepare("sudoku", "random", PUZZLE, {"max_steps": 4, "halting": "auto", "trajectories": 2,
                                                            "cache": False, "hedge_after": hedge_after})
        r = (await service.solve(prep)).result
        runs.append((r.tokens, r.q_halt, r.chosen, r.trajectories))
    assert runs[0] == runs[1] and runs[0][3] == 3
    # The default: 3 steps for a model on a GPU (its rows are nearly free), none on a CPU; 0 turns it off.
    copy = service.models["copy"]
    on_gpu = ServedModel.of(msgspec.structs.replace(copy.info, backend={**copy.info.backend, "device": "cuda:0"}))
    assert service.resolve_options(copy, {"max_steps": 8}).hedge_after is None
    assert service.resolve_options(on_gpu, {"max_steps": 8}).hedge_after == 3
    assert service.resolve_options(on_gpu, {"max_steps": 8, "hedge_after": 0}).hedge_after is None
    assert service.resolve_options(on_gpu, {"max_steps": 3}).hedge_after is None  # not below escalate_after
    plain = service.prepare("sudoku", "copy", PUZZLE, {"halting": "verifier", "hedge_after": 1})
    assert plain.options.hedge_after is None and "hedge_after" not in plain.key
    hedged = service.prepare("sudoku", "copy", PUZZLE, {"hedge_after": 1, "max_steps": 4})
    assert hedged.key != service.prepare("sudoku", "copy", PUZZLE, {"max_steps": 4}).key  # its own cache key


async def test_auto_budget_counts_the_escalation(client):
    r = await client.post("/v1/solve", json=solve_body(model="copy", max_steps=4096, halting="auto", trajectories=4))
    assert r.status_code == 422 and r.json()["error"]["code"] == "over_budget"
    assert "4096 x 5 = 20480 row-steps" in r.json()["error"]["message"]  # the plain run and K = 4 together


async def test_exact_facts_and_no_silent_fallback(client):
    body = await solve_ok(client, model="copy", max_steps=2, halting="max_steps")
    assert (body["solvable"], body["unique"], body["solved_by"]) == (True, True, "model")
    assert body["verified"] is False and body["answer"] == PUZZLE  # the model's own (unsolved) answer
    several = await solve_ok(client, puzzle="." * 81, model="copy", max_steps=1, halting="max_steps")
    assert (several["solvable"], several["unique"]) == (True, False)


async def test_a_repeated_puzzles_exact_facts_are_worked_out_once(running, monkeypatch):
    """A puzzle's facts never change: a repeat (a cache hit here) reuses them, where working them out again was a
    third of a Sudoku cache hit's API CPU. Facts that the effort cap cut short are worked out again next time."""
    from puzzles import ExactFacts
    from puzzles.sudoku import SudokuCodec

    app, client = running
    calls: list[str] = []
    real = SudokuCodec.exact

    def counted(self, puzzle, *args, **kwargs):
        calls.append(self.canonical(puzzle))
        return real(self, puzzle, *args, **kwargs)

    monkeypatch.setattr(SudokuCodec, "exact", counted)
    app.state.runtime.service._facts.clear()  # other tests of this module solved PUZZLE already
    for _ in range(3):
        body = await solve_ok(client, model="copy", max_steps=1, halting="max_steps")
        assert (body["solvable"], body["unique"]) == (True, True)
    assert calls == [PUZZLE]

    monkeypatch.setattr(app.state.runtime.service, "cache_enabled", False)  # a server with its cache off (benchmarks)
    for _ in range(2):
        await solve_ok(client, model="copy", max_steps=1, halting="max_steps")
    assert calls == [PUZZLE] * 3  # keeps no facts either: every answer pays for them, as distinct puzzles would
    monkeypatch.setattr(app.state.runtime.service, "cache_enabled", True)

    capped = ExactFacts(solvable=None, unique=None, solution=None, ms=50.0, capped=True)
    monkeypatch.setattr(SudokuCodec, "exact", lambda self, puzzle, *a, **k: calls.append("capped") or capped)
    for _ in range(2):
        body = await solve_ok(client, puzzle="." * 80 + "1", model="copy", max_steps=1, halting="max_steps")
        assert body["solvable"] is None
    assert calls.count("capped") == 2


async def test_fallback_exact_answers_with_the_solver_and_says_so(client):
    body = await solve_ok(client, model="copy", max_steps=2, halting="max_steps", fallback="exact")
    assert (body["verified"], body["solved_by"], body["answer"]) == (True, "exact", SOLUTION)
    assert body["overwritten"] == [] and body["verification"] == []


async def test_overwritten_givens_are_listed(client):
    body = await solve_ok(client, model="random", max_steps=2, halting="max_steps", cache=False)
    answer = body["answer"] or ""
    changed = [k for k, ch in enumerate(PUZZLE) if ch != "." and len(answer) == 81 and answer[k] != ch]
    assert len(body["overwritten"]) == len(changed)
    if changed:
        r, c = divmod(changed[0], 9)
        assert body["overwritten"][0].startswith(f"r{r + 1}c{c + 1}: given {PUZZLE[changed[0]]}")


async def test_auto_needs_a_verifier(tmp_path):
    """ARC has no per-step verifier: an explicit halting=auto is a 422, and the default there is q_head."""
    pytest.importorskip("app_engine_support").make_all_task_specs  # noqa: B018 - the ARC model helper exists
    from app_engine_support import make_all_task_specs

    async with running_app(tmp_path, specs=make_all_task_specs(tmp_path)) as (app, c):
        arc = next(m for m in app.state.runtime.service.models.values() if m.task == "arc")
        task = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}
        r = await c.post("/v1/solve", json={"model": arc.name, "puzzle": task, "options": {"halting": "auto"}})
        assert r.status_code == 422 and r.json()["error"]["location"] == "options.halting"
        r = await c.post("/v1/solve", json={"model": arc.name, "puzzle": task, "options": {"max_steps": 1}})
        assert r.status_code == 200 and r.json()["solvable"] is None and r.json()["escalated"] is False


@pytest.mark.parametrize("task", ["sudoku", "maze"])
async def test_an_engine_verified_answer_renders_as_the_codecs_own_check_would(task):
    """render trusts the engine's token verifier for a verified answer (models/verify.py, the codec's verdict
    row for row) and skips the codec's check; the fields must be the ones that check gives."""
    codec = get_codec(task)
    for seed in range(5):
        if task == "sudoku":
            puzzle = sudoku(seed, "medium")
            answer = codec.decode(codec.encode_label(puzzle), puzzle)
        else:
            puzzle = maze(seed, size=9)
            answer = maze_solve(puzzle)
        assert codec.verify(puzzle, answer).valid
        prep = SimpleNamespace(model=SimpleNamespace(codec=codec), puzzle=puzzle)
        assert SolveService._answer(prep, answer, engine_verified=True) == SolveService._answer(prep, answer)


async def test_a_stream_of_an_auto_request_runs_what_v1_solve_runs(client):
    """halting=auto streams the plain run and then its escalation (trajectories 1..K), and ends with the answer
    /v1/solve gives; it used to stop after the plain run, unverified where /v1/solve escalates (the playground
    showed 'not verified' for puzzles the API verifies), while its budget was charged for the escalation."""
    unsolved = sudoku(__import__("random").Random(11), "medium")
    text = get_codec("sudoku").canonical(unsolved)
    r = await client.post("/v1/solve/stream", json=solve_body(puzzle=text, model="copy", max_steps=2,
                                                               halting="auto", trajectories=2, cache=False))
    assert r.status_code == 200
    events = [(block.split("\n")[0][len("event: "):], json.loads(block.split("\n")[1][len("data: "):]))
              for block in r.text.strip().split("\n\n") if block.startswith("event: ")]
    steps = [data for kind, data in events if kind == "step"]
    result = next(data for kind, data in events if kind == "result")
    assert [s["trajectory"] for s in steps][:2] == [0, 0] and {s["trajectory"] for s in steps[2:]} <= {1, 2}
    assert len(steps) == 2 + 2  # the plain run's 2 steps, then the escalation's 2 (one event a step)
    body = await solve_ok(client, puzzle=text, model="copy", max_steps=2, halting="auto", trajectories=2, cache=False)
    same = ("escalated", "trajectories", "row_steps", "verified", "answer", "halted_by")
    assert {k: result[k] for k in same} == {k: body[k] for k in same}
    assert (result["escalated"], result["trajectories"], result["row_steps"]) == (True, 3, 2 + 2 * 2)


async def test_a_hedged_escalation_streams_under_the_callers_id(running):
    """With hedge_after (a GPU's default), the escalation runs beside the plain run as an internal request of its
    own; its steps reach the stream too (as trajectories 1..K), not only the plain run's."""
    service = running[0].state.runtime.service
    prep = service.prepare("sudoku", "copy", PUZZLE, {"max_steps": 4, "halting": "auto", "trajectories": 2,
                                                      "cache": False, "hedge_after": 1})
    trajectories = []
    result = None
    async for event in await service.stream(prep):
        if isinstance(event, StepUpdate):
            trajectories.append(event.trajectory)
        elif event is not None:
            result = event.result
    assert trajectories[0] == 0 and {1, 2} & set(trajectories) and 0 in trajectories[1:]  # both runs, interleaved
    assert result is not None and (result.trajectories, result.valid) == (3, False)
