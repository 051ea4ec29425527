"""A maze larger than the default maze model's canvas goes to the served maze model with the smallest canvas
that holds it (issue 12: "mazes of the sizes users draw are accepted"); naming a model never reroutes."""

from __future__ import annotations

import pytest
import pytest_asyncio
import torch

from app.settings import ModelSpec
from app_engine_support import running_app, tiny_config
from models import build_model, save_model

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _maze(side: int) -> str:
    """A side x side maze: a wall border, one open corridor along row 1 from S to G."""
    rows = ["#" * side, "#S" + " " * (side - 4) + "G#"] + ["#" * side] * (side - 2)
    return "\n".join(rows)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("canvas")
    specs = []
    for i, (name, side) in enumerate((("maze7", 7), ("maze15", 15), ("maze11", 11))):
        torch.manual_seed(i)
        save_model(build_model(tiny_config(task="maze", seq_len=side * side, vocab_size=6, halt_max_steps=2)),
                   root / name)
        specs.append(ModelSpec(name=name, task="maze", path=root / name, batch_rows=4, max_queue_rows=16,
                               default_for_task=name == "maze7"))
    async with running_app(root, specs=specs) as (_, c):
        yield c


async def _solve(client, puzzle: str, **body):
    return await client.post("/v1/solve", json={"task": "maze", "puzzle": puzzle, "options": {"cache": False}} | body)


async def test_the_default_answers_what_fits_it(client):
    r = await _solve(client, _maze(7))
    assert r.status_code == 200, r.text
    assert r.json()["model"]["name"] == "maze7"


async def test_a_larger_maze_goes_to_the_smallest_canvas_that_holds_it(client):
    for side, name in ((9, "maze11"), (11, "maze11"), (13, "maze15"), (15, "maze15")):
        r = await _solve(client, _maze(side))
        assert r.status_code == 200, r.text
        assert r.json()["model"]["name"] == name, side


async def test_a_named_model_is_never_rerouted_and_too_large_says_what_is_served(client):
    r = await _solve(client, _maze(9), model="maze7")
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_large"
    assert "does not fit the model's 7x7 canvas" in r.json()["error"]["message"]
    r = await _solve(client, _maze(17))
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_large", r.text
    assert "the largest maze model served here is 'maze15' (seq_len 225)" in r.json()["error"]["message"]


async def test_a_maze_request_carries_its_shortest_distance_to_the_engine(client, monkeypatch):
    """The API works out the verifier's fact (the shortest S-G distance), so the engine core needs no flood fill;
    a maze smaller than the canvas keeps its own distance (the padding is wall)."""
    from app.engine.client import EngineClient

    sent = []
    submit = EngineClient.submit

    def spy(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(request)
        return submit(self, request, *args, **kwargs)

    monkeypatch.setattr(EngineClient, "submit", spy)
    r = await _solve(client, _maze(9))  # S at (1, 1), G at (1, 7) along one corridor: 6 steps, in the 11x11 canvas
    assert r.status_code == 200, r.text
    assert [(q.model, q.verify_fact) for q in sent] == [("maze11", 6)]
