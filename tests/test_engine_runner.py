"""The model runner on a CPU: the bucket padding of the CUDA-graph path (run eagerly here) gives every active
row what an unpadded step gives it, never touches the rows that did not run, and the scratch row absorbs the
padding. The graphs themselves are tested on a GPU (tests/test_engine_cuda.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine.backends import make_backend
from app.engine.runner import ModelRunner, NoiseRows, batch_buckets
from app_engine_support import SOLUTION, save_random, variant
from puzzles import get_codec

ROWS = 8


def test_buckets_pad_at_most_twice_and_by_under_32_rows_above_32():
    assert batch_buckets(1) == [1]
    assert batch_buckets(8) == [1, 2, 4, 8]
    assert batch_buckets(12) == [1, 2, 4, 8, 12]
    assert batch_buckets(256) == [1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256]
    assert batch_buckets(100) == [1, 2, 4, 8, 16, 32, 64, 96, 100]
    for rows in (1, 12, 32, 100, 256, 1000):
        for n in range(1, rows + 1):
            bucket = next(x for x in batch_buckets(rows) if x >= n)
            assert bucket <= 2 * n and (n <= 32 or bucket - n < 32), (rows, n, bucket)


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    folder = save_random(tmp_path_factory.mktemp("runner") / "random")
    codec = get_codec("sudoku")
    puzzles = [SOLUTION] + [variant(i) for i in range(ROWS - 1)]
    inputs = np.stack([np.asarray(codec.encode(codec.parse(p), 81), np.int32) for p in puzzles])

    def make(pad: bool) -> ModelRunner:
        runner = ModelRunner(make_backend(folder, dtype="float32", task="sudoku"), ROWS, "sudoku",
                             pad_to_buckets=pad)
        runner.load_rows(inputs, np.zeros(ROWS, np.int32), [[r] for r in range(ROWS)])
        return runner

    return make(True), make(False)


@pytest.mark.parametrize("active", [[0], [1, 2, 3], [0, 2, 4, 6, 7], list(range(ROWS))])
def test_padded_step_equals_the_unpadded_one_and_leaves_other_rows_alone(runners, active, one_torch_thread):
    padded, plain = runners
    idx = np.asarray(active)
    idle = np.setdiff1d(np.arange(ROWS), idx)
    before = padded.z_H[idle].clone(), padded.z_L[idle].clone()
    with torch.inference_mode():
        a, b = padded.execute(idx), plain.execute(idx)
    assert a.tokens.shape == (len(idx), 81) and np.array_equal(a.tokens, b.tokens)
    assert np.allclose(a.q_halt, b.q_halt, atol=1e-5) and np.array_equal(a.model_halted, b.model_halted)
    assert np.array_equal(a.verified, b.verified)
    assert torch.equal(padded.z_H[idle], before[0]) and torch.equal(padded.z_L[idle], before[1])
    assert torch.allclose(padded.z_H[idx], plain.z_H[idx], atol=1e-5)


def test_the_verifier_runs_on_each_rows_own_inputs(runners):
    """Row 0 holds a solved grid: answers that echo each row's own inputs verify only there."""
    padded, _ = runners
    tokens = padded.inputs[:ROWS].clone()  # what a model that copies its input would answer
    from models.verify import verify_batch

    assert verify_batch("sudoku", padded.inputs[:ROWS], tokens).tolist() == [True] + [False] * (ROWS - 1)


def test_the_compiled_step_gives_what_the_eager_one_gives(runners, one_torch_thread):
    """compile_step: the same step through torch.compile (inductor; on CPU it builds C++), on the same rows."""
    _, plain = runners
    compiled = ModelRunner(plain.backend, ROWS, "sudoku", compile_step=True)
    compiled.load_rows(plain.inputs[:ROWS].int().numpy(), np.zeros(ROWS, np.int32), [[r] for r in range(ROWS)])
    fresh = ModelRunner(plain.backend, ROWS, "sudoku")
    fresh.load_rows(plain.inputs[:ROWS].int().numpy(), np.zeros(ROWS, np.int32), [[r] for r in range(ROWS)])
    assert compiled.describe()["compiled"] and not fresh.describe()["compiled"]
    with torch.inference_mode():
        for idx in (np.arange(ROWS), np.array([1, 4, 6]), np.arange(ROWS)):  # one dynamic compile serves both
            a, b = compiled.execute(idx), fresh.execute(idx)
            assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.verified, b.verified)
            assert np.allclose(a.q_halt, b.q_halt, atol=1e-5)
            assert np.array_equal(a.model_halted, b.model_halted)
    assert torch.allclose(compiled.z_H[:ROWS], fresh.z_H[:ROWS], atol=1e-4)


def test_a_failed_compile_falls_back_to_the_eager_step(runners, monkeypatch, caplog):
    """A machine whose compiler is missing or broken still serves: warm-up logs the failure and steps eagerly."""
    _, plain = runners

    def broken_compile(fn, **_):
        def compiled(*args, **kwargs):
            raise RuntimeError("no C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    runner = ModelRunner(plain.backend, ROWS, "sudoku", compile_step=True)
    assert runner.compiled
    runner.warmup()
    assert not runner.compiled and "torch.compile of the ACT step failed" in caplog.text
    runner.load_rows(plain.inputs[:ROWS].int().numpy(), np.zeros(ROWS, np.int32), [[r] for r in range(ROWS)])
    with torch.inference_mode():
        assert runner.execute(np.arange(3)).tokens.shape == (3, 81)


def test_compile_defaults_to_on_for_cuda_and_off_on_a_cpu(tmp_path, monkeypatch):
    from app.engine import core
    from app.settings import ModelSpec

    folder = save_random(tmp_path / "random")
    seen: list[bool] = []

    class Recording(ModelRunner):
        def __init__(self, *args, compile_step: bool = False, **kwargs):
            seen.append(compile_step)
            super().__init__(*args, compile_step=False, **kwargs)  # no compile needed to see the choice

    monkeypatch.setattr(core, "ModelRunner", Recording)
    monkeypatch.setattr(core, "make_backend", lambda path, **kw: make_backend(path, **(kw | {"device": "cpu"})))
    for device, given, want in [("cpu", None, False), ("cuda", None, True), ("cuda", False, False),
                                ("cpu", True, True)]:
        spec = ModelSpec(name="m", task="sudoku", path=folder, device=device, batch_rows=4, compile=given)
        core.ModelEngine.load(spec, cuda_graphs=False)
        assert seen[-1] is want, (device, given)


@pytest.mark.parametrize("noise_on", ["z_L", "z_H", "both"])
@pytest.mark.parametrize(("rows", "trajs"), [([2, 3, 5], [0, 1, 2]), ([3, 6], [1, 2]), ([7], [2])])
def test_ptrm_noise_lands_on_each_running_trajectorys_row(runners, noise_on, rows, trajs):
    """K=3 trajectories: each step draws the noise of all K (the stream does not depend on which still run) and
    adds trajectory t's slice to its row; rows not named, and latents not chosen, stay as they were."""
    runner, _ = runners
    before = runner.z_H.clone(), runner.z_L.clone()
    runner.start_noise("r", seed=11)
    runner.add_noise([NoiseRows("r", 3, 0.5, noise_on, rows, trajs)])
    runner.end_noise("r")
    g = torch.Generator().manual_seed(11)
    shape = (3, runner.total_len, runner.hidden)
    draws = {}
    for name in (("z_H", "z_L") if noise_on == "both" else (noise_on,)):
        draws[name] = 0.5 * torch.randn(shape, generator=g, dtype=torch.float32)
    others = np.setdiff1d(np.arange(runner.z_H.shape[0]), rows)
    for name, after, was in (("z_H", runner.z_H, before[0]), ("z_L", runner.z_L, before[1])):
        assert torch.equal(after[others], was[others])
        expect = was[rows] + draws[name][trajs].to(was.dtype) if name in draws else was[rows]
        assert torch.equal(after[rows], expect), name
    runner.z_H.copy_(before[0])
    runner.z_L.copy_(before[1])


def test_one_steps_noise_for_several_requests_is_each_ones_own_draw(runners):
    """Three noisy requests in one step (K, sigma and latents of their own): each row gets the draw its request's
    generator makes alone, as if the requests were noised one by one; one add per latent does it."""
    runner, _ = runners
    before = runner.z_H.clone(), runner.z_L.clone()
    requests = [NoiseRows("a", 2, 0.5, "z_L", [0, 1], [0, 1]), NoiseRows("b", 3, 1.5, "both", [4, 6], [2, 0]),
                NoiseRows("c", 1, 0.25, "z_H", [7], [0])]
    for seed, r in enumerate(requests):
        runner.start_noise(r.key, seed=seed)
    runner.add_noise(requests)
    shape = (runner.total_len, runner.hidden)
    expect = [before[0].clone(), before[1].clone()]
    for seed, r in enumerate(requests):
        g = torch.Generator().manual_seed(seed)
        for latent, name in enumerate(("z_H", "z_L")):
            if r.noise_on in (name, "both"):
                draw = r.sigma * torch.randn((r.k, *shape), generator=g, dtype=torch.float32)
                expect[latent][r.rows] += draw[r.trajs].to(expect[latent].dtype)
        runner.end_noise(r.key)
    assert torch.equal(runner.z_H, expect[0]) and torch.equal(runner.z_L, expect[1])
    runner.z_H.copy_(before[0])
    runner.z_L.copy_(before[1])


def test_maze_facts_from_the_api_replace_the_engines_flood_fill(tmp_path, monkeypatch):
    """A maze request's shortest S-G distance worked out by the API (the codec's verify_fact) loads the same
    verifier input as the engine's own flood fill, which then never runs; an unreachable goal reads -1; a
    correct path verifies with either."""
    import app.engine.runner as runner_module
    from app_engine_support import tiny_config
    from models import build_model, save_model
    from models.verify import verify_batch
    from puzzles.maze import MazePuzzle, generate

    save_model(build_model(tiny_config(task="maze", seq_len=81, vocab_size=6)), tmp_path / "maze")
    codec = get_codec("maze")
    mazes = [generate(seed, size=9) for seed in range(5)]
    walled = MazePuzzle(rows=("#########", "#S #   G#", *["#########"] * 7), start=(1, 1), goal=(1, 7))
    mazes.append(walled)  # a wall between S and G
    inputs = np.stack([codec.encode(m, 81) for m in mazes]).astype(np.int32)
    rows = [[r] for r in range(len(mazes))]

    def load(facts: list[int | None] | None) -> ModelRunner:
        runner = ModelRunner(make_backend(tmp_path / "maze", dtype="float32", task="maze"), 8, "maze")
        runner.load_rows(inputs, np.zeros(len(mazes), np.int32), rows, facts)
        return runner

    flood = load(None)
    facts = [codec.verify_fact(m) for m in mazes]
    assert facts[-1] == -1 and all(f > 0 for f in facts[:-1])

    def no_flood_fill(*args: object) -> None:
        raise AssertionError("the engine ran its flood fill although the API sent the facts")

    monkeypatch.setattr(runner_module, "prepare_batch", no_flood_fill)
    told = load(facts)
    n = len(mazes)
    assert torch.equal(told.prepared[:n], flood.prepared[:n])
    solved = torch.as_tensor(np.stack([codec.encode_label(m, 81) for m in mazes[:-1]]).astype(np.int64))
    assert verify_batch("maze", told.inputs[: n - 1], solved, told.prepared[: n - 1]).all()
