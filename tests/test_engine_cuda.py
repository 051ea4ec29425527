"""The engine's CUDA path (marker `cuda`): run on a GPU machine whenever one is available; skipped without one.

    pytest -q -m cuda

- each bucket's CUDA graph replays exactly what the same step computes eagerly;
- the engine on CUDA gives the CPU float32 answers for the shipped Sudoku weights;
- the overlapped engine step (CUDA's default) gives the answers of launch-and-wait;
- the server on CUDA answers the README puzzle, verified;
- a maze's distance sent by the API loads what the device flood fill computes;
- PTRM noise added by the runner is the draw inject_noise makes from the same seed;
- with `wait: block` (the default) the engine sleeps while it waits for a step; with `spin` it busy-waits.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine.backends import make_backend
from app.engine.core import EngineCore
from app.engine.protocol import EngineRequest, SolveOptions
from app.engine.runner import ModelRunner, NoiseRows
from app.settings import ModelSpec, Settings
from app_engine_support import running_app
from puzzles import get_codec
from puzzles.sudoku import generate

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with -m cuda there)")]

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "trm-mlp-sudoku"
README_PUZZLE = "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3.."


def sudoku_inputs(n: int, tier: str = "medium", seed: int = 0) -> np.ndarray:
    codec, rng = get_codec("sudoku"), random.Random(seed)
    return np.stack([np.asarray(codec.encode(generate(rng, tier), 81), np.int32) for _ in range(n)])


def loaded_runner(dtype: str, device: str, rows: int, graphs: bool, compiled: bool = False) -> ModelRunner:
    runner = ModelRunner(make_backend(WEIGHTS, device=device, dtype=dtype, task="sudoku"), rows, "sudoku",
                         cuda_graphs=graphs, compile_step=compiled)
    runner.warmup()
    inputs = sudoku_inputs(rows)
    runner.load_rows(inputs, np.zeros(rows, np.int32), [[r] for r in range(rows)])
    return runner


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_graph_replay_equals_eager_for_every_bucket(dtype):
    rows = 64
    graphed = loaded_runner(dtype, "cuda", rows, graphs=True)
    eager = loaded_runner(dtype, "cuda", rows, graphs=False)
    assert graphed.cuda_graphs and set(graphed._graphs) == set(graphed.buckets)
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        for bucket in graphed.buckets:
            for n in sorted({max(1, bucket // 2 + 1), bucket}):  # a padded bucket and a full one
                idx = np.sort(rng.choice(rows, size=n, replace=False))
                got = graphed.execute(idx)
                # The eager side runs the same padded shape, so both launch the same kernels.
                padded = np.full(bucket, eager.scratch, np.int64)
                padded[:n] = idx
                want = eager._step_rows(torch.from_numpy(padded).cuda())[:n].cpu().numpy()
                s = eager.seq_len
                assert np.array_equal(got.tokens, want[:, :s].astype(np.int64)), (bucket, n)
                assert np.array_equal(got.q_halt, want[:, s]), (bucket, n)
                assert np.array_equal(got.verified, want[:, s + 2] > 0.5), (bucket, n)


def test_compiled_graphs_match_eager_float32():
    """compile: true on CUDA: each bucket's graph captures the torch.compile'd step; fused kernels round in
    another order, so answers are compared as the CPU/CUDA test compares them."""
    rows, steps = 64, 6
    compiled = loaded_runner("float32", "cuda", rows, graphs=True, compiled=True)
    eager = loaded_runner("float32", "cuda", rows, graphs=False)
    assert set(compiled._graphs) == set(compiled.buckets)
    with torch.inference_mode():
        for idx in [np.arange(rows)] * steps + [np.arange(0, rows, 3)]:
            a, b = compiled.execute(idx), eager.execute(idx)
            same_rows = (a.tokens == b.tokens).all(axis=1).mean()
            assert same_rows >= 0.95, f"only {same_rows:.0%} of answers agree between compiled and eager"
            assert np.allclose(a.q_halt, b.q_halt, atol=1e-2, rtol=1e-3)


def test_engine_on_cuda_matches_cpu_float32():
    rows, steps = 32, 8
    cpu = loaded_runner("float32", "cpu", rows, graphs=False)
    gpu = loaded_runner("float32", "cuda", rows, graphs=True)
    idx = np.arange(rows)
    with torch.inference_mode():
        for _ in range(steps):
            a, b = cpu.execute(idx), gpu.execute(idx)
    same_rows = (a.tokens == b.tokens).all(axis=1).mean()
    assert same_rows >= 0.95, f"only {same_rows:.0%} of answers agree between CPU and CUDA float32"
    assert np.allclose(a.q_halt, b.q_halt, atol=1e-2, rtol=1e-3)
    assert (a.verified <= b.verified).mean() >= 0.95  # what verifies on the CPU verifies on the GPU


def test_overlapped_engine_on_cuda_gives_the_answers_of_launch_and_wait():
    """200 medium puzzles through 64 rows with verifier halting: rows halt at different steps and change hands
    under the step in flight. Graphs of the eager step, float32; the two runs step different row counts (the
    overlapped one holds each row a step longer), and a GEMM of another height may round differently, so answers
    are compared as the CPU/CUDA test compares them."""
    spec = ModelSpec(name="m", task="sudoku", path=WEIGHTS, device="cuda", dtype="float32", batch_rows=64,
                     max_queue_rows=512, compile=False)
    inputs = sudoku_inputs(200, seed=3)
    options = SolveOptions(max_steps=8, halting="verifier")
    outputs = []
    for overlap in (False, True):
        core = EngineCore.load([spec], overlap=overlap)
        assert core.models["m"].runner.overlap is overlap and core.models["m"].runner.cuda_graphs
        core.add([EngineRequest(f"p{i}", "m", inputs=row.tobytes(), puzzle_identifier=0, options=options,
                                arrival=0.0) for i, row in enumerate(inputs)])
        done = {}
        with torch.inference_mode():
            while core.has_work():
                done |= {o.id: (o.tokens, o.steps, o.halted_by, o.valid) for o in core.step().finished}
        outputs.append(done)
    plain, overlapped = outputs
    assert sorted(plain) == sorted(overlapped) and len(plain) == 200
    same = np.mean([plain[k] == overlapped[k] for k in plain])
    assert same >= 0.98, f"only {same:.0%} of outputs agree between overlapped and launch-and-wait"
    assert sum(bool(v[3]) for v in plain.values()) >= 150  # the shipped model verifies most medium puzzles


async def test_server_on_cuda_answers_the_readme_puzzle(tmp_path):
    """The server as a GPU user starts it: CUDA graphs of the compiled step (its default on CUDA); the compile
    takes ~80 s on a cold cache."""
    spec = ModelSpec(name="trm-mlp-sudoku", task="sudoku", path=WEIGHTS, device="cuda")
    async with running_app(tmp_path, settings=Settings(weights_dir=tmp_path), specs=[spec],
                           ready_timeout=240) as (_, client):
        models = (await client.get("/v1/models")).json()["models"]
        assert models[0]["device"].startswith("cuda") and models[0]["cuda_graphs"] is True
        assert models[0]["compiled"] is True
        r = await client.post("/v1/solve", json={"task": "sudoku", "puzzle": README_PUZZLE})
        assert r.status_code == 200 and r.json()["verified"] is True, r.text


MAZE_WEIGHTS = WEIGHTS.parent / "trm-mlp-maze"


def test_maze_facts_on_cuda_load_what_the_flood_fill_loads():
    """The maze distance sent by the API lands in the CUDA runner as the device flood fill computes it."""
    from puzzles.maze import generate as generate_maze

    codec = get_codec("maze")
    mazes = [generate_maze(seed, size=9) for seed in range(16)]
    inputs = np.stack([codec.encode(m, 81) for m in mazes]).astype(np.int32)
    rows = [[r] for r in range(len(mazes))]
    prepared = []
    for facts in (None, [codec.verify_fact(m) for m in mazes]):
        runner = ModelRunner(make_backend(MAZE_WEIGHTS, device="cuda", task="maze"), 16, "maze", cuda_graphs=False)
        runner.load_rows(inputs, np.zeros(len(mazes), np.int32), rows, facts)
        prepared.append(runner.prepared[:16].cpu())
    assert torch.equal(prepared[0], prepared[1]) and bool((prepared[0] > 0).all())


def test_ptrm_noise_on_cuda_is_the_draw_of_inject_noise():
    """The runner's noise for a request's running trajectories, in the carry's dtype on the GPU, is the same
    draw `models.ptrm.inject_noise` makes from the same seed (what ptrm_solve would add)."""
    from models.ptrm import inject_noise

    runner = loaded_runner("bfloat16", "cuda", 8, graphs=False)
    before = runner.z_L.clone()
    runner.start_noise("r", seed=3)
    runner.add_noise([NoiseRows("r", 4, 0.3, "z_L", [2, 5, 6], [0, 2, 3])])
    zeros = torch.zeros(4, runner.total_len, runner.hidden, dtype=runner.z_L.dtype, device="cuda")
    _, noise = inject_noise(zeros, zeros, 0.3, "z_L", torch.Generator(device="cuda").manual_seed(3))
    assert torch.equal(runner.z_L[[2, 5, 6]], before[[2, 5, 6]] + noise[[0, 2, 3]])
    others = [0, 1, 3, 4, 7]
    assert torch.equal(runner.z_L[others], before[others])


@pytest.mark.parametrize("wait", ["block", "spin"])
def test_collect_sleeps_while_the_device_works_unless_told_to_spin(wait):
    """The step's event is a blocking one (cudaEventBlockingSync): the engine core's thread sleeps in `collect`
    and its core is free for the API processes. CUDA's default event, `spin`, holds the core for the whole wait."""
    runner = ModelRunner(make_backend(WEIGHTS, device="cuda", dtype="bfloat16", task="sudoku"), 8, "sudoku",
                         blocking_wait=wait == "block")
    runner.warmup()
    runner.load_rows(sudoku_inputs(8), np.zeros(8, np.int32), [[r] for r in range(8)])
    with torch.inference_mode():
        torch.cuda.synchronize()
        torch.cuda._sleep(400_000_000)  # ~0.2 s of device time queued ahead of the step
        launched = runner.launch(np.arange(8))
        cpu, wall = time.thread_time(), time.perf_counter()
        runner.collect(launched)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    assert wall > 0.05, "the device was not busy long enough to tell"
    if wait == "block":
        assert cpu < 0.25 * wall, (cpu, wall)
    else:
        assert cpu > 0.75 * wall, (cpu, wall)
