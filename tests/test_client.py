"""The typed client (clients/python) against the real app in-process: results, streams, errors, batch, health.

The client is its own package; it is put on sys.path here so a plain checkout runs this without installing it.
Its scripted-server unit tests (retries, SSE parsing, error classes) live in clients/python/tests/.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))

import httpx
import pytest
import pytest_asyncio

from app.settings import Settings
from app_engine_support import PUZZLE, SOLUTION, make_specs, running_app
from recursolve_client import (
    AsyncClient,
    InvalidPuzzle,
    InvalidRequest,
    ModelNotFound,
    SolveResponse,
    StepEvent,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def rs(tmp_path_factory):
    root = tmp_path_factory.mktemp("client")
    settings = Settings(weights_dir=root, max_batch_items=4, drain_grace_seconds=2)
    async with (running_app(root, settings=settings, specs=make_specs(root)) as (app, _),
                AsyncClient("http://test", transport=httpx.ASGITransport(app=app), max_retries=0) as client):
        yield client


async def test_solve_returns_a_typed_result(rs: AsyncClient) -> None:
    result = await rs.solve(SOLUTION, model="copy", max_steps=1, cache=False)
    assert isinstance(result, SolveResponse)
    assert result.verified and result.answer == SOLUTION and result.task == "sudoku"
    assert result.model.name == "copy" and result.steps == 1 and result.timings.total_ms > 0
    assert result.request_id
    assert (result.solved_by, result.solvable, result.unique, result.overwritten, result.escalated) == (
        "model", True, True, [], False)


async def test_an_llm_written_puzzle_is_answered_in_its_own_form(rs: AsyncClient) -> None:
    rows = [SOLUTION[i * 9:(i + 1) * 9] for i in range(9)]
    table = "\n".join(["| " + " | ".join(f"c{i}" for i in range(1, 10)) + " |", "|" + "---|" * 9]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    result = await rs.solve(f"Here is my sudoku:\n```\n{table}\n```\nThanks!", model="copy", max_steps=1)
    assert result.verified and result.answer.splitlines()[0].startswith("| c1 | c2")
    assert result.answer.splitlines()[2] == "| " + " | ".join(rows[0]) + " |"


async def test_stream_yields_steps_then_the_result(rs: AsyncClient) -> None:
    items = [item async for item in rs.stream(PUZZLE, model="random", max_steps=3, halting="max_steps",
                                              cache=False)]
    assert [type(i) for i in items] == [StepEvent] * 3 + [SolveResponse]
    assert [i.step for i in items[:3]] == [1, 2, 3]
    assert all(0 < i.confidence < 1 and len(i.answer) == 81 for i in items[:3])
    assert items[-1].steps == 3 and items[-1].halted_by == "max_steps" and items[-1].answer == items[2].answer


async def test_a_bad_puzzle_raises_invalid_puzzle_with_place_and_forms(rs: AsyncClient) -> None:
    with pytest.raises(InvalidPuzzle) as info:
        await rs.solve("12k" + "." * 78, model="random")
    err = info.value
    assert (err.status, err.code, err.location) == (422, "bad_character", "char 3")
    assert err.request_id and len(err.accepted_forms) >= 5 and "Accepted forms:" in err.describe()
    with pytest.raises(InvalidPuzzle) as streamed:
        [_ async for _ in rs.stream("5" * 81, model="random")]
    assert streamed.value.code == "contradictory_givens"


async def test_bad_options_and_unknown_models_raise_their_classes(rs: AsyncClient) -> None:
    with pytest.raises(InvalidRequest) as info:
        await rs.solve(PUZZLE, model="random", max_step=3)  # misspelt: the server names it
    assert not isinstance(info.value, InvalidPuzzle) and info.value.location == "options.max_step"
    with pytest.raises(ModelNotFound) as missing:
        await rs.solve(PUZZLE, model="nope")
    assert missing.value.status == 404 and "random" in missing.value.message
    with pytest.raises(ModelNotFound):
        await rs.model("nope")


async def test_batch_models_and_health(rs: AsyncClient) -> None:
    batch = await rs.solve_batch([{"task": "sudoku", "model": "copy", "puzzle": SOLUTION},
                                  {"task": "sudoku", "model": "copy", "puzzle": "5" * 81}], options={"max_steps": 1})
    assert (batch.ok, batch.failed) == (1, 1) and batch.results[0].unwrap().verified
    with pytest.raises(InvalidPuzzle, match="appears twice"):
        batch.results[1].unwrap()
    listed = await rs.models()
    assert {m.name for m in listed.models} == {"random", "eager", "copy"} and listed.defaults["sudoku"] == "random"
    assert (await rs.model("copy")).task == "sudoku"
    assert (await rs.health()).ok and (await rs.ready()).ok
