"""A step that raises (a CUDA error, out of memory) fails the requests its model held, never the engine loop, and
still hands out what the iteration resolved before it failed: a request whose deadline passed in the queue."""

from __future__ import annotations

import time

import numpy as np

from app.engine.core import EngineCore
from app.engine.protocol import ENGINE_ERROR, EngineRequest, SolveOptions
from app_engine_support import PUZZLE, make_specs
from puzzles import get_codec

CODEC = get_codec("sudoku")


def request(rid: str, arrival: float, **options: object) -> EngineRequest:
    tokens = np.asarray(CODEC.encode(CODEC.parse(PUZZLE), 81), np.int32)
    return EngineRequest(rid, "random", inputs=tokens.tobytes(), puzzle_identifier=0,
                         options=SolveOptions(halting="max_steps", **options), arrival=arrival)


def test_a_failed_step_rejects_what_it_held_and_still_answers_what_it_resolved(tmp_path, monkeypatch):
    core = EngineCore.load(make_specs(tmp_path, random={"batch_rows": 1}), warmup=False)
    model = core.models["random"]
    now = time.monotonic()
    assert not core.add([request("running", now, max_steps=8)]).rejected
    core.step()  # "running" holds the one row from here on
    # "late" waits behind it with a deadline that has already passed; "cancelled" leaves while queued.
    assert not core.add([request("late", now - 10, max_steps=8, deadline_ms=1),
                         request("waiting", now, max_steps=8), request("cancelled", now, max_steps=8)]).rejected
    core.abort(["cancelled"])

    def boom(*_: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(model.runner, "launch", boom)
    out = core.step()  # schedule resolves "late" (deadline) and drops "cancelled", then the launch fails
    assert [(o.id, o.halted_by, o.tokens) for o in out.finished] == [("late", "deadline", None)]
    assert sorted(r.id for r in out.rejected) == ["running", "waiting"]
    assert all(r.code == ENGINE_ERROR and "CUDA error" in r.message for r in out.rejected)
    assert not core.has_work() and not core._owner and model.in_flight is None
    monkeypatch.undo()  # the model serves again
    assert not core.add([request("after", time.monotonic(), max_steps=1)]).rejected
    assert [o.id for o in core.step().finished] == ["after"]
