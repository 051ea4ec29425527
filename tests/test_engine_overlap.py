"""The overlapped engine step (runner.overlap, on by default on CUDA) on a CPU: collecting step t after launching
step t+1 gives every request exactly the answer of the plain launch-and-wait loop, although rows halt, are freed
and change hands while a step that ran them is still out (their results from that step are dropped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine.core import EngineCore
from app.engine.protocol import EngineOutput, EngineRequest, SolveOptions
from app.engine.scheduler import Scheduler
from app_engine_support import PUZZLE, SOLUTION, make_specs, variant
from puzzles import get_codec

CODEC = get_codec("sudoku")


def request(rid: str, model: str, puzzle: str, escalation: SolveOptions | None = None,
            **options: object) -> EngineRequest:
    tokens = np.asarray(CODEC.encode(CODEC.parse(puzzle), 81), np.int32)
    return EngineRequest(rid, model, inputs=tokens.tobytes(), puzzle_identifier=0, options=SolveOptions(**options),
                         arrival=0.0, escalation=escalation)


def waves() -> list[list[EngineRequest]]:
    """Requests arriving over several iterations, more than the rows: every halting rule, PTRM (seeded, so its
    noise is the same in both runs), requests that finish at different steps so rows change hands mid-run."""
    out: list[list[EngineRequest]] = []
    for w in range(4):
        out.append([
            request(f"r{w}-max", "random", variant(w), max_steps=2 + w, halting="max_steps"),
            request(f"r{w}-q", "eager", variant(w + 4), max_steps=8, halting="q_head"),
            request(f"r{w}-ver", "copy", SOLUTION if w % 2 else variant(w + 8), max_steps=6, halting="verifier"),
            request(f"r{w}-ptrm", "random", PUZZLE, max_steps=3 + w, halting="max_steps", trajectories=3, noise=0.3,
                    seed=10 + w),
            request(f"r{w}-conv", "copy", variant(w + 12), max_steps=9, halting="max_steps", converge_steps=2),
            # halting=auto's plain run with a hedged escalation (its rows run beside it from the plain run's 2nd step)
            request(f"r{w}-hedge", "random", variant(w + 16), max_steps=4, halting="verifier", hedge_after=1 + w % 2,
                    escalation=SolveOptions(max_steps=3, halting="verifier", trajectories=2, noise=0.3, seed=20 + w,
                                            selection="verifier_first")),
        ])
    return out


def run(core: EngineCore) -> tuple[dict[str, EngineOutput], int]:
    """Feed one wave per iteration, then step until nothing is left; the outputs by request id."""
    outputs: dict[str, EngineOutput] = {}
    pending = waves()
    iterations = 0
    with torch.inference_mode():
        while pending or core.has_work():
            if pending:
                assert not core.add(pending.pop(0)).rejected
            for o in core.step().finished:
                assert o.id not in outputs
                outputs[o.id] = o
            iterations += 1
            assert iterations < 500, "the engine never drained"
    return outputs, iterations


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    root = tmp_path_factory.mktemp("overlap")
    return make_specs(root, random={"batch_rows": 5, "max_queue_rows": 64}, eager={"batch_rows": 2,
                      "max_queue_rows": 64}, copy={"batch_rows": 3, "max_queue_rows": 64})


def test_overlapped_steps_give_the_answers_of_the_plain_loop(specs, one_torch_thread, monkeypatch):
    plain = EngineCore.load(specs, overlap=False)
    overlapped = EngineCore.load([s.model_copy(update={"overlap": True}) for s in specs])  # the models-file field
    assert not any(m.runner.overlap for m in plain.models.values())
    assert all(m.runner.overlap and m.info.backend["overlap"] for m in overlapped.models.values())
    assert not any(m.runner.overlap for m in EngineCore.load(specs[:1], warmup=False).models.values())  # CPU default
    dropped: list[int] = []
    still_running = Scheduler.still_running

    def counting(self: Scheduler, idx: np.ndarray, epochs: np.ndarray) -> np.ndarray:
        keep = still_running(self, idx, epochs)
        dropped.append(int((~keep).sum()))
        return keep

    monkeypatch.setattr(Scheduler, "still_running", counting)
    want, _ = run(plain)
    assert sum(dropped) == 0  # launch-and-wait never sees a row change under a step
    got, _ = run(overlapped)
    assert sum(dropped) > 0, "no row halted or changed hands under an overlapped step: the test tests nothing"
    assert sorted(got) == sorted(want) and len(want) == 24
    # the hedges ran beside their plain runs: max(4, hedge_after + 3) steps, not 4 + 3 one after the other
    assert [(got[f"r{w}-hedge"].trajectories, got[f"r{w}-hedge"].elapsed_steps) for w in range(4)] == [
        (3, 4), (3, 5), (3, 4), (3, 5)]
    for rid, w in want.items():
        g = got[rid]
        assert (g.tokens, g.steps, g.halted_by, g.valid, g.chosen, g.trajectories, g.row_steps) == (
            w.tokens, w.steps, w.halted_by, w.valid, w.chosen, w.trajectories, w.row_steps), rid
        assert g.q_halt == pytest.approx(w.q_halt, abs=1e-5), rid
    halted = {o.halted_by for o in want.values()}
    assert {"max_steps", "q_head", "verified", "converged"} <= halted, halted
    for core in (plain, overlapped):
        assert all(m.in_flight is None and m.scheduler.running_rows == 0 for m in core.models.values())


def test_an_overlapped_request_that_halts_on_its_q_head_costs_one_wasted_row_step(specs, one_torch_thread):
    core = EngineCore.load(specs[1:2], overlap=True)  # "eager": its Q-head halts every row after one step
    model = core.models["eager"]
    core.add([request("only", "eager", PUZZLE, max_steps=8, halting="q_head")])
    with torch.inference_mode():
        assert core.step().finished == [] and model.in_flight is not None  # step 1 launched, not yet collected
        # Its row still runs as far as the scheduler knows, so step 2 is launched before step 1 is collected.
        (done,) = core.step().finished
        assert (done.id, done.steps, done.halted_by) == ("only", 1, "q_head")
        assert model.steps_run == 2 and model.in_flight is not None and core.has_work()
        out = core.step()  # nothing to launch: step 2 is collected, and its row's result dropped
        assert not out.finished and not out.steps
    assert model.in_flight is None and not core.has_work() and model.scheduler.running_rows == 0


def test_a_row_the_step_in_flight_brings_to_max_steps_is_not_launched_again(specs, one_torch_thread):
    core = EngineCore.load(specs[:1], overlap=True)
    model = core.models["random"]
    core.add([request("short", "random", PUZZLE, max_steps=2, halting="max_steps"),
              request("long", "random", variant(1), max_steps=5, halting="max_steps")])
    finished = {}
    with torch.inference_mode():
        while core.has_work():
            finished |= {o.id: o.steps for o in core.step().finished}
    assert finished == {"short": 2, "long": 5}
    assert model.steps_run == 5  # launch-and-wait's count: no step ran only to be dropped


@pytest.mark.parametrize(("wait", "blocking"), [(None, True), ("block", True), ("spin", False)])
def test_the_models_files_wait_reaches_the_runner_and_v1_models(tmp_path, wait, blocking):
    """`wait` (default block: sleep until a CUDA step signals) is the runner's event kind, shown in the backend
    fields; on a CPU there is no event to wait on, so only the setting is carried."""
    from app.engine.core import ModelEngine

    spec = next(s for s in make_specs(tmp_path) if s.name == "copy")
    engine = ModelEngine.load(spec if wait is None else spec.model_copy(update={"wait": wait}))
    assert engine.runner.blocking_wait is blocking
    assert engine.info.backend["wait"] == ("block" if blocking else "spin")
