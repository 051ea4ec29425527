"""The onnxruntime backend against the torch one on the same weights, and tasks other than Sudoku."""

from __future__ import annotations

import pytest
import pytest_asyncio

from app.settings import ModelSpec
from app_engine_support import PUZZLE, running_app, save_random, solve_body, tiny_config
from models import build_model, save_model

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAZE = "#######\n#S    #\n# ### #\n#   # #\n### # #\n#G    #\n#######"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    path = save_random(root / "random")
    maze_cfg = tiny_config(task="maze", seq_len=100, vocab_size=6)  # a 10x10 canvas: mazes up to 10 a side
    save_model(build_model(maze_cfg), root / "maze")
    specs = [ModelSpec(name="torch", task="sudoku", path=path, dtype="float32", batch_rows=2,
                       default_options={"max_steps": 3, "halting": "max_steps"}),
             ModelSpec(name="onnx", task="sudoku", path=path, backend="onnx", batch_rows=2),
             ModelSpec(name="bf16", task="sudoku", path=path, dtype="bfloat16", batch_rows=2),
             ModelSpec(name="maze", task="maze", path=root / "maze", batch_rows=2)]
    async with running_app(root, specs=specs) as (_, c):
        yield c


async def test_onnx_backend_matches_torch(client):
    runs = {}
    for name in ("torch", "onnx"):
        r = await client.post("/v1/solve", json=solve_body(model=name, max_steps=6, halting="max_steps",
                                                           cache=False))
        assert r.status_code == 200, r.text
        runs[name] = r.json()
    assert runs["onnx"]["answer"] == runs["torch"]["answer"]
    assert runs["onnx"]["confidence"] == pytest.approx(runs["torch"]["confidence"], abs=1e-4)
    info = (await client.get("/v1/models/onnx")).json()
    assert (info["backend"], info["dtype"]) == ("onnx", "float32")
    # Same weights, same version: the cache key is shared on purpose (the answers agree).
    assert info["version"] == (await client.get("/v1/models/torch")).json()["version"]


async def test_bf16_on_cpu(client):
    r = await client.post("/v1/solve", json=solve_body(model="bf16", max_steps=4, halting="max_steps", trajectories=2,
                                                       noise=0.3, seed=2, cache=False))
    assert r.status_code == 200, r.text
    assert r.json()["steps"] == 4
    assert (await client.get("/v1/models/bf16")).json()["dtype"] == "bfloat16"


async def test_maze_answer_comes_back_as_maze_text(client):
    r = await client.post("/v1/solve", json={"task": "maze", "puzzle": MAZE, "options": {"max_steps": 2}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == "maze"
    rows = body["answer"].split("\n")
    assert len(rows) == 7 and all(len(row) == 7 for row in rows)
    r = await client.post("/v1/solve", json={"task": "maze", "puzzle": MAZE.split("\n")})
    assert isinstance(r.json()["answer"], list)


async def test_maze_too_big_for_the_model_is_422(client):
    big = "\n".join(["#" * 12] + ["#S" + " " * 9 + "#"] + ["#" + " " * 10 + "#"] * 8 + ["#" + " " * 9 + "G#"]
                    + ["#" * 12])
    r = await client.post("/v1/solve", json={"task": "maze", "puzzle": big})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "too_large" and "10x10" in r.json()["error"]["message"]


async def test_default_model_is_the_first_trm_for_the_task(client):
    r = await client.post("/v1/solve", json={"task": "sudoku", "puzzle": PUZZLE, "options": {"max_steps": 1}})
    assert r.json()["model"]["name"] == "torch"


async def test_model_default_options_apply_under_the_request(client):
    body = (await client.post("/v1/solve", json={"task": "sudoku", "puzzle": PUZZLE})).json()
    assert (body["steps"], body["halted_by"]) == (3, "max_steps")
    body = (await client.post("/v1/solve", json={"task": "sudoku", "puzzle": PUZZLE,
                                                 "options": {"max_steps": 2}})).json()
    assert body["steps"] == 2
