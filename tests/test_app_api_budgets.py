"""Cost budgets: per-model caps over server defaults that a request may lower but never raise, a batch charged
the sum of its items, and the server's default deadline."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import pytest_asyncio

from app.api.budgets import BudgetExceeded, budget_for, check_batch_budget, check_budget, server_limits
from app.settings import ModelLimits, Settings, SettingsError, get_settings, read_models_file
from app_engine_support import make_specs, running_app, solve_body

module_loop = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Opts:
    max_steps: int = 16
    trajectories: int = 1
    deadline_ms: int | None = None


SERVER = ModelLimits(max_steps=100, max_trajectories=8, max_row_steps=200, max_deadline_ms=5000)


@pytest.mark.parametrize(("opts", "location", "words"), [
    (Opts(max_steps=101), "options.max_steps", ["max_steps=101", "cap of 100", "RECURSOLVE_MAX_STEPS_CAP"]),
    (Opts(trajectories=9), "options.trajectories", ["trajectories=9", "cap of 8", "RECURSOLVE_TRAJECTORIES_CAP"]),
    (Opts(max_steps=100, trajectories=3), "options", ["100 x 3 = 300", "cap of 200", "RECURSOLVE_ROW_STEPS_CAP"]),
    (Opts(deadline_ms=5001), "options.deadline_ms", ["deadline_ms=5001", "RECURSOLVE_DEADLINE_MS_CAP"]),
])
def test_over_a_server_cap_names_the_cap_the_value_and_the_setting(opts, location, words):
    with pytest.raises(BudgetExceeded) as e:
        check_budget(opts, budget_for("m", ModelLimits(), SERVER))
    assert (e.value.status, e.value.code, e.value.location) == (422, "over_budget", location)
    for w in words:
        assert w in e.value.message


def test_a_model_cap_overrides_the_server_default_and_says_where_it_is_set():
    budget = budget_for("big", ModelLimits(max_steps=500, max_row_steps=1000), SERVER)
    check_budget(Opts(max_steps=400, trajectories=2), budget)  # over the server default, within the model's
    with pytest.raises(BudgetExceeded, match=r"limits.max_steps of model 'big' in the models file"):
        check_budget(Opts(max_steps=501), budget)
    with pytest.raises(BudgetExceeded, match="RECURSOLVE_TRAJECTORIES_CAP"):  # not set per model: the server's
        check_budget(Opts(max_steps=1, trajectories=9), budget)
    check_budget(Opts(max_steps=100, trajectories=2, deadline_ms=5000), budget_for("m", ModelLimits(), SERVER))


def test_batch_budget_is_the_sum_of_its_items():
    check_batch_budget([100, 100], 200)
    with pytest.raises(BudgetExceeded) as e:
        check_batch_budget([100, 100, 1], 200)
    assert (e.value.status, e.value.code, e.value.location) == (413, "batch_over_budget", "items")
    assert "201 row-steps" in e.value.message and "RECURSOLVE_BATCH_ROW_STEPS_CAP" in e.value.message


def test_server_limits_from_settings_and_defaults():
    assert server_limits() == ModelLimits(max_steps=4096, max_trajectories=64, max_row_steps=16384,
                                          max_deadline_ms=300_000)
    s = Settings(max_steps_cap=7, trajectories_cap=2, row_steps_cap=9, deadline_ms_cap=1000, default_deadline_ms=900)
    assert server_limits(s) == ModelLimits(max_steps=7, max_trajectories=2, max_row_steps=9, max_deadline_ms=1000)
    assert Settings().default_deadline_ms == 30_000


def test_default_deadline_over_the_cap_is_a_settings_error(monkeypatch):
    monkeypatch.setenv("RECURSOLVE_DEFAULT_DEADLINE_MS", "5000")
    monkeypatch.setenv("RECURSOLVE_DEADLINE_MS_CAP", "1000")
    with pytest.raises(SettingsError, match="RECURSOLVE_DEFAULT_DEADLINE_MS=5000 is over"):
        get_settings()


def test_models_file_limits(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "models.yaml").write_text(
        "models:\n  - {name: a, task: sudoku, path: m, limits: {max_steps: 64, max_row_steps: 256}}\n"
        "  - {name: b, task: sudoku, path: m}\n")
    a, b = read_models_file(tmp_path / "models.yaml")
    assert a.limits == ModelLimits(max_steps=64, max_row_steps=256) and b.limits == ModelLimits()
    (tmp_path / "bad.yaml").write_text("models:\n  - {name: a, task: sudoku, path: m, limits: {max_stpes: 1}}\n")
    with pytest.raises(ValueError, match="max_stpes"):
        read_models_file(tmp_path / "bad.yaml")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("budgets")
    specs = make_specs(root)
    specs[0] = specs[0].model_copy(update={"limits": ModelLimits(max_steps=50, max_row_steps=80)})  # random
    settings = Settings(weights_dir=root, default_deadline_ms=300, trajectories_cap=4, batch_row_steps_cap=100)
    async with running_app(root, settings=settings, specs=specs) as (_, c):
        yield c


@module_loop
async def test_api_refuses_over_the_model_cap_with_422(client):
    r = await client.post("/v1/solve", json=solve_body(model="random", max_steps=51))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert (err["code"], err["location"]) == ("over_budget", "options.max_steps")
    assert "limits.max_steps of model 'random'" in err["message"]
    r = await client.post("/v1/solve", json=solve_body(model="random", max_steps=41, trajectories=2, seed=1))
    assert r.status_code == 422 and "41 x 2 = 82" in r.json()["error"]["message"]
    # The hog of the issue (4096 steps x 32 trajectories) on a model without its own limits: the server's caps.
    r = await client.post("/v1/solve", json=solve_body(model="copy", max_steps=4096, trajectories=32, seed=1))
    assert r.status_code == 422 and "RECURSOLVE_TRAJECTORIES_CAP" in r.json()["error"]["message"]


@module_loop
async def test_api_lower_than_the_caps_is_served(client):
    # Its own deadline: this module's default (300 ms, for the test below) cut it at 30 steps once on a loaded CPU.
    r = await client.post("/v1/solve", json=solve_body(model="random", max_steps=40, trajectories=2, seed=1,
                                                       halting="max_steps", cache=False, deadline_ms=10_000))
    assert r.status_code == 200, r.text
    assert r.json()["row_steps"] == 80


@module_loop
async def test_default_deadline_cuts_a_request_without_one(client):
    r = await client.post("/v1/solve", json=solve_body(model="copy", max_steps=4096, halting="max_steps",
                                                       cache=False))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["halted_by"] == "deadline" and body["steps"] < 4096
    assert body["timings"]["total_ms"] < 3000


@module_loop
async def test_batch_over_its_row_step_budget_is_413(client):
    item = solve_body(model="copy", max_steps=30, halting="max_steps", cache=False)
    r = await client.post("/v1/solve/batch", json={"items": [item] * 4})  # 4 x 30 = 120 > 100
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "batch_over_budget"
    # Shared options count as the items will use them; an item invalid on its own does not count.
    r = await client.post("/v1/solve/batch", json={"items": [solve_body(model="copy"), solve_body(model="nope")],
                                                   "options": {"max_steps": 50, "halting": "max_steps"}})
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == [200, 404]
    # halting=auto (the default here) counts its escalation as a single request does: 4 x 10 x (1 + K = 2) = 120
    r = await client.post("/v1/solve/batch", json={"items": [solve_body(model="copy", max_steps=10)] * 4})
    assert r.status_code == 413 and "120 row-steps" in r.json()["error"]["message"], r.text
