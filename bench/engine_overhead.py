"""The engine's Python cost per answer, without a model: what is left of a step when the network costs nothing.

On a GPU the network step is short (a 256-row step of the shipped Sudoku model replays in 3.5 ms on an H200),
so the scheduler, the runner's bookkeeping and the messages decide how many answers a second the engine core
and its in-process client can give. This measures them on any machine, with the network replaced by a null
step (its outputs cost nothing to make and never halt a row before max_steps), in three layers:

  scheduler   Scheduler alone: add, schedule, update for rounds of 128 requests on 256 rows (us per request)
  solve_mix   Scheduler alone under /v1/solve's default mix on a 256-row pool kept full: halting=auto's plain
              run (one row halting on the batched verifier, a deadline), each row verifying with probability 1/2
              a step, and --escalated of the requests never verifying, so that after 8 steps they escalate to
              K=8 noisy trajectories (the H100's medium Sudokus: 3.4%) (us per answer, by call)
  queue       Scheduler.schedule() on a full pool with 16,384 requests waiting (us per call, i.e. per step)
  core        EngineCore.add + step on a 256-row pool kept full, the runner included, no messages (us per answer)
  overlap     core, with the null step behind a simulated device that takes --device-ms per step (the H200's
              compiled step at ~170 rows: 1.5 ms) while the host goes on: launch-and-wait against the overlapped
              step (runner.overlap, CUDA's default), for requests that end at max_steps and for requests whose
              Q-head halts them at random (half the rows each step); a model of what the overlap buys on a GPU,
              not a GPU figure (the host here also computes the null step that a GPU would run)
  ptrm        core, with PTRM requests (K=8 noisy trajectories, 8 steps: what halting=auto escalates to) against
              plain ones of 8 steps: the host cost of a noisy row-step (each request's noise is drawn and added
              per step outside the CUDA graph, so on a GPU it is launches in the engine's step)
  inproc      InprocEngine + EngineClient + 256 asyncio clients in this process, as serve_bench's inproc mode
              (answers/s: the ceiling of that mode when the network costs nothing)
  process     the engine-core process of `recursolve serve` fed over ZMQ by 256 clients in a client process, as
              serve_bench's engine mode (answers/s and the engine process's CPU per answer: the engine core's
              ceiling, messages included, when the network costs nothing); one torch thread: a GPU step needs no
              CPU threads, and more would spin on the core the client process needs

Every request runs exactly --steps ACT steps (halting on max_steps), so figures compare across machines and
commits; compare them as ratios within one run.

    .venv/bin/python bench/engine_overhead.py            # writes bench/results/engine-overhead-<host>.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_layers import add_layers_argument, chosen_layers  # bench/bench_layers.py (this folder is on sys.path)

from app.engine import backends
from app.engine.protocol import EngineRequest, SolveOptions
from app.engine.runner import Launched, ModelRunner, StepArrays
from app.engine.scheduler import Scheduler
from app.settings import ModelSpec
from models import ModelConfig, build_model, save_model
from models.recursive import StepOutput
from puzzles import get_codec
from puzzles.sudoku import generate

REPO = Path(__file__).resolve().parent.parent
ROWS = 256
NAME = "null-sudoku"


def null_act_step(self: Any, x: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor) -> StepOutput:
    """The carry as it came, blank answers and a Q-head that never halts: the network at no cost."""
    n = x.shape[0]
    return StepOutput(z_H, z_L, torch.zeros(n, 81, 11, device=x.device), torch.full((n,), -5.0, device=x.device),
                      torch.zeros(n, device=x.device))


def coin_act_step(self: Any, x: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor) -> StepOutput:
    """The null step with a Q-head that halts each row with probability 1/2 per step: halts the scheduler cannot
    foresee, as a verifier's or a trained Q-head's (2 steps per request on average)."""
    n = x.shape[0]
    q_halt = torch.where(torch.rand(n, device=x.device) < 0.5, 5.0, -5.0)
    return StepOutput(z_H, z_L, torch.zeros(n, 81, 11, device=x.device), q_halt, torch.zeros(n, device=x.device))


def tiny_weights(folder: Path) -> Path:
    cfg = ModelConfig(arch="trm", task="sudoku", hidden_size=16, num_heads=2, expansion=2, H_cycles=1, L_cycles=1,
                      L_layers=1, mlp_t=True, pos_encodings="none", puzzle_emb_ndim=16, puzzle_emb_len=1,
                      halt_max_steps=16, seq_len=81, vocab_size=11, forward_dtype="float32")
    torch.manual_seed(0)
    save_model(build_model(cfg), folder)
    return folder


def measure_scheduler(rounds: int, steps: int) -> dict[str, float]:
    sched = Scheduler(ROWS, 16 * ROWS, 81)
    opts = SolveOptions(max_steps=steps, halting="max_steps")
    inputs = np.zeros(81, np.int32).tobytes()
    spent = {"add": 0.0, "schedule": 0.0, "update": 0.0}
    tokens = np.zeros((ROWS, 81), np.int32)  # as the runner hands them over
    n = 0
    for r in range(rounds):
        t = time.perf_counter()
        for i in range(ROWS // 2):
            sched.add(EngineRequest(f"{r}-{i}", NAME, inputs=inputs, puzzle_identifier=0, options=opts,
                                    arrival=0.0), verify_each=False)
        spent["add"] += time.perf_counter() - t
        n += ROWS // 2
        for _ in range(steps):
            t = time.perf_counter()
            idx = sched.schedule(time.monotonic()).active
            spent["schedule"] += time.perf_counter() - t
            t = time.perf_counter()
            k = len(idx)
            sched.update(idx, tokens[:k], np.full(k, -5.0, np.float32), np.zeros(k, bool), None, time.monotonic())
            spent["update"] += time.perf_counter() - t
    return {f"{k}_us_per_request": round(v / n * 1e6, 2) for k, v in spent.items()}


def measure_solve_mix(steps: int, escalated: float, seed: int = 0) -> dict[str, float]:
    """`steps` scheduler iterations of /v1/solve's mix (module docstring, solve_mix); the verdicts come from a
    seeded generator, so two commits see the same traffic."""
    sched = Scheduler(ROWS, 16 * ROWS, 81, max_share=0.5)
    plain = SolveOptions(max_steps=8, halting="verifier", deadline_ms=30_000)
    escalation = SolveOptions(max_steps=8, halting="verifier", trajectories=8, noise=0.3, deadline_ms=30_000,
                              selection="verifier_first", seed=1)
    inputs, tokens = np.zeros(81, np.int32).tobytes(), np.zeros((ROWS, 81), np.int32)
    rng = np.random.default_rng(seed)
    stuck: set[str] = set()  # requests whose plain run never verifies
    spent = {"add": 0.0, "schedule": 0.0, "update": 0.0}
    answers, escalations, ids = 0, 0, itertools.count()
    for _ in range(steps):
        room = ROWS - sched.running_rows - sched.queued_rows
        fresh = [EngineRequest(f"m{next(ids)}", NAME, inputs=inputs, puzzle_identifier=0, options=plain,
                               arrival=time.monotonic(), escalation=escalation) for _ in range(max(room, 0))]
        stuck.update(r.id for r, u in zip(fresh, rng.random(len(fresh)), strict=True) if u < escalated)
        t = time.perf_counter()
        for r in fresh:
            sched.add(r, verify_each=True)
        spent["add"] += time.perf_counter() - t
        t = time.perf_counter()
        idx = sched.schedule(time.monotonic()).active
        spent["schedule"] += time.perf_counter() - t
        n = len(idx)
        verified = rng.random(n) < 0.5
        for j, row in enumerate(idx.tolist()):
            s = sched.state_of(row)
            if s is not None and s.first is None and s.id in stuck:
                verified[j] = False
        t = time.perf_counter()
        result = sched.update(idx, tokens[:n], np.full(n, -1.0, np.float32), np.zeros(n, bool), verified,
                              time.monotonic())
        spent["update"] += time.perf_counter() - t
        answers += len(result.finished)
        escalations += sum(o.trajectories > 1 for o in result.finished)
    out = {f"{k}_us_per_answer": round(v / answers * 1e6, 2) for k, v in spent.items()}
    return out | {"us_per_answer": round(sum(spent.values()) / answers * 1e6, 2), "answers": answers,
                  "escalated_fraction": round(escalations / answers, 4)}


def measure_long_queue(waiting: int = 16_384, calls: int = 200) -> dict[str, float]:
    """schedule() on a full pool with `waiting` requests queued (a /v1/solve/batch load of 256 clients x 64
    items queues 16,384): what every engine step pays for a long queue."""
    sched = Scheduler(ROWS, 1 << 20, 81)
    opts = SolveOptions(max_steps=2, halting="max_steps", deadline_ms=30_000)
    inputs, now = np.zeros(81, np.int32).tobytes(), time.monotonic()
    for i in range(ROWS + waiting):
        sched.add(EngineRequest(f"q{i}", NAME, inputs=inputs, puzzle_identifier=0, options=opts, arrival=now))
    sched.schedule(now)  # fills the pool; the rest wait
    t = time.perf_counter()
    for _ in range(calls):
        sched.schedule(now)
    return {"waiting": waiting, "schedule_us": round((time.perf_counter() - t) / calls * 1e6, 1)}


def measure_core(spec: ModelSpec, seconds: float, steps: int, options: SolveOptions | None = None
                 ) -> dict[str, float]:
    from app.engine.core import EngineCore

    core = EngineCore.load([spec], warmup=True)
    codec, rng = get_codec("sudoku"), random.Random(0)
    pool = [codec.encode(generate(rng, "easy"), 81).astype(np.int32).tobytes() for _ in range(64)]
    opts = options or SolveOptions(max_steps=steps, halting="max_steps")
    ids = itertools.count()
    done, step_count, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        room = ROWS - core.models[NAME].scheduler.running_rows - core.models[NAME].scheduler.queued_rows
        if room > 0:
            core.add([EngineRequest(f"c{next(ids)}", NAME, inputs=pool[i % 64], puzzle_identifier=0, options=opts,
                                    arrival=time.monotonic()) for i in range(room)])
        done += len(core.step().finished)
        step_count += 1
    elapsed = time.perf_counter() - t0
    return {"answers_per_s": round(done / elapsed, 1), "us_per_answer": round(elapsed / max(done, 1) * 1e6, 1),
            "steps_per_s": round(step_count / elapsed, 1), "ms_per_step": round(elapsed / step_count * 1e3, 3)}


@contextlib.contextmanager
def simulated_device(step_ms: float) -> Iterator[None]:
    """ModelRunner.launch queues `step_ms` of work on a device that runs one step at a time, beside the host;
    collect waits (spinning, as a CUDA sync does by default) until that step is done."""
    launch, collect = ModelRunner.launch, ModelRunner.collect
    free_at, ready = 0.0, {}

    def sim_launch(self: ModelRunner, idx: np.ndarray) -> Launched:
        nonlocal free_at
        launched = launch(self, idx)
        free_at = max(time.perf_counter(), free_at) + step_ms / 1e3
        ready[id(launched)] = free_at
        return launched

    def sim_collect(self: ModelRunner, launched: Launched) -> StepArrays:
        until = ready.pop(id(launched))
        while time.perf_counter() < until:
            pass
        return collect(self, launched)

    ModelRunner.launch, ModelRunner.collect = sim_launch, sim_collect  # type: ignore[method-assign]
    try:
        yield
    finally:
        ModelRunner.launch, ModelRunner.collect = launch, collect  # type: ignore[method-assign]


def measure_overlap(spec: ModelSpec, seconds: float, steps: int, device_ms: float) -> dict[str, Any]:
    """Launch-and-wait against overlapped, for requests that end at max_steps (the engine sees the end coming and
    launches no wasted step) and for requests whose Q-head halts them at random (one wasted row-step each)."""
    out: dict[str, Any] = {"device_ms": device_ms}
    null_step = backends.TorchBackend.act_step
    cases = (("max_steps", null_step, SolveOptions(max_steps=steps, halting="max_steps")),
             ("q_head", coin_act_step, SolveOptions(max_steps=16, halting="q_head")))
    try:
        with simulated_device(device_ms):
            for case, act_step, options in cases:
                backends.TorchBackend.act_step = act_step  # type: ignore[method-assign]
                runs = {name: measure_core(spec.model_copy(update={"overlap": overlap}), seconds, steps, options)
                        for name, overlap in (("launch_and_wait", False), ("overlapped", True))}
                runs["answers_ratio"] = round(runs["overlapped"]["answers_per_s"]
                                              / runs["launch_and_wait"]["answers_per_s"], 3)
                out[case] = runs
    finally:
        backends.TorchBackend.act_step = null_step  # type: ignore[method-assign]
    return out


def all_answered(load: Any, layer: str) -> list[Any]:
    """The layer's samples; it fails the run when a call went unanswered (the null step never fails one)."""
    samples = load.results()
    if not samples or not all(s.ok for s in samples):
        raise SystemExit(f"{layer}: {sum(not s.ok for s in samples)} of {len(samples)} calls failed")
    return samples


def measure_inproc(spec: ModelSpec, seconds: float, steps: int) -> dict[str, float]:
    import serve_bench as sb  # the benchmark's own inproc mode, so both measure the same thing

    rng = random.Random(1)
    load = sb.Load(ROWS, seconds, min(2.0, seconds / 4), [generate(rng, "medium") for _ in range(200)])
    window, extra = asyncio.run(sb.run_inproc(load, sb.bench_spec(spec.path, "cpu", ROWS, 16 * ROWS), steps))
    return {k: v for k, v in sb.summarise(all_answered(load, "inproc"), *window).items()
            if k in ("throughput_rps", "mean_act_steps")} | {
        "mean_rows_per_step": extra.get("mean_rows_per_step")}


def null_engine_process(address: str, specs: list[ModelSpec], options: dict[str, Any]) -> None:
    """The engine-core process's entry with the null network step (a spawned process imports this module anew)."""
    from app.engine.core_loop import engine_process_main

    backends.TorchBackend.act_step = null_act_step  # type: ignore[method-assign]
    engine_process_main(address, specs, options)


def measure_process(spec: ModelSpec, seconds: float, steps: int) -> dict[str, float]:
    import serve_bench as sb

    rng = random.Random(1)
    load = sb.Load(ROWS, seconds, min(2.0, seconds / 4), [generate(rng, "medium") for _ in range(200)])
    with tempfile.TemporaryDirectory(prefix="engine-overhead-ipc-") as tmp:
        window, extra = sb.run_engine(load, sb.bench_spec(spec.path, "cpu", ROWS, 16 * ROWS), steps, 1, Path(tmp),
                                      entry=null_engine_process, torch_threads=1)
    summary = sb.summarise(all_answered(load, "process"), *window)
    answers = summary["answers"]
    return {"throughput_rps": summary["throughput_rps"], "mean_act_steps": summary["mean_act_steps"],
            "mean_rows_per_step": extra.get("mean_rows_per_step"),
            "engine_cpu_us_per_answer": round(1e6 * extra["engine_cpu_s"] / answers, 1) if answers else None,
            "engine_loop_ms_per_step": extra.get("engine_loop_ms_per_step")}


LAYERS = ("scheduler", "solve_mix", "queue", "core", "overlap", "ptrm", "inproc", "process")


def measure_ptrm(spec: ModelSpec, seconds: float) -> dict[str, Any]:
    """us per row-step of plain 8-step requests and of K=8 noisy ones (8 steps, all K run to the end)."""
    out: dict[str, Any] = {}
    for name, k in (("plain", 1), ("ptrm_k8", 8)):
        opts = SolveOptions(max_steps=8, halting="max_steps", trajectories=k, noise=0.3 if k > 1 else 0.0)
        r = measure_core(spec, seconds, 8, opts)
        out[name] = r | {"us_per_row_step": round(r["us_per_answer"] / (8 * k), 2)}
    out["row_step_ratio"] = round(out["ptrm_k8"]["us_per_row_step"] / out["plain"]["us_per_row_step"], 2)
    out["noise_grouping_us_per_step"] = measure_noise_grouping(spec)
    return out


def measure_noise_grouping(spec: ModelSpec, calls: int = 2000) -> float:
    """us a step to find the rows of the noisy requests among a full pool: 2 PTRM requests (K=8) beside 240
    plain rows, the noise itself left out (ModelEngine._add_noise with the runner's add_noise a no-op)."""
    from app.engine.core import EngineCore

    core = EngineCore.load([spec], warmup=False)
    inputs = get_codec("sudoku").encode(generate(random.Random(0), "easy"), 81).astype(np.int32).tobytes()
    plain = SolveOptions(max_steps=1000, halting="max_steps")
    noisy = SolveOptions(max_steps=1000, halting="max_steps", trajectories=8, noise=0.3)
    core.add([EngineRequest(f"g{i}", NAME, inputs=inputs, puzzle_identifier=0, options=noisy if i < 2 else plain,
                            arrival=time.monotonic()) for i in range(ROWS - 14)])
    core.step()
    engine = core.models[NAME]
    idx = np.flatnonzero(engine.scheduler.active)
    engine.runner.add_noise = lambda *args: None  # type: ignore[method-assign]
    t = time.perf_counter()
    for _ in range(calls):
        engine._add_noise(idx)
    return round((time.perf_counter() - t) / calls * 1e6, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds of the core and inproc layers")
    ap.add_argument("--steps", type=int, default=2, help="ACT steps every request runs (default 2)")
    ap.add_argument("--rounds", type=int, default=200, help="scheduler rounds of 128 requests")
    ap.add_argument("--mix-steps", type=int, default=3000, help="solve_mix: scheduler iterations")
    ap.add_argument("--escalated", type=float, default=0.034, help="solve_mix: the share of requests that escalate")
    ap.add_argument("--device-ms", type=float, default=1.5, help="the overlap layer's simulated step time")
    add_layers_argument(ap, LAYERS)
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/engine-overhead-<host>.json")
    args = ap.parse_args()
    layers = chosen_layers(ap, args, LAYERS)
    backends.TorchBackend.act_step = null_act_step  # type: ignore[method-assign]
    report: dict[str, Any] = {
        "benchmark": "engine_overhead", "host": socket.gethostname(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "torch": torch.__version__},
        "rows": ROWS, "steps_per_request": args.steps,
        "note": "null network step on the CPU: only the engine's Python, the runner's tensor bookkeeping and "
                "(inproc) the client remain; compare layers and commits as ratios within one machine",
    }
    with tempfile.TemporaryDirectory(prefix="engine-overhead-") as tmp:
        spec = ModelSpec(name=NAME, task="sudoku", path=tiny_weights(Path(tmp) / "w"), device="cpu", batch_rows=ROWS,
                         max_queue_rows=16 * ROWS)
        if "scheduler" in layers:
            report["scheduler"] = s = measure_scheduler(args.rounds, args.steps)
            print("scheduler  " + ", ".join(f"{k} {v}" for k, v in s.items()))
        if "solve_mix" in layers:
            report["solve_mix"] = m = measure_solve_mix(args.mix_steps, args.escalated)
            print("solve_mix  " + ", ".join(f"{k} {v}" for k, v in m.items()))
        if "queue" in layers:
            report["long_queue"] = q = measure_long_queue()
            print("queue      " + ", ".join(f"{k} {v}" for k, v in q.items()))
        if "core" in layers:
            report["core"] = c = measure_core(spec, args.seconds, args.steps)
            print("core       " + ", ".join(f"{k} {v}" for k, v in c.items()))
        if "overlap" in layers:
            report["overlap"] = o = measure_overlap(spec, args.seconds, args.steps, args.device_ms)
            for case in ("max_steps", "q_head"):
                c = o[case]
                print(f"overlap    device {o['device_ms']} ms/step, {case} halting: launch-and-wait "
                      f"{c['launch_and_wait']['answers_per_s']}, overlapped {c['overlapped']['answers_per_s']} "
                      f"answers/s ({c['answers_ratio']}x)")
        if "ptrm" in layers:
            report["ptrm"] = p = measure_ptrm(spec, args.seconds)
            print(f"ptrm       us per row-step: plain {p['plain']['us_per_row_step']}, K=8 noisy "
                  f"{p['ptrm_k8']['us_per_row_step']} ({p['row_step_ratio']}x); finding the noisy rows "
                  f"{p['noise_grouping_us_per_step']} us a step")
        if "inproc" in layers:
            report["inproc"] = i = measure_inproc(spec, args.seconds, args.steps)
            print("inproc     " + ", ".join(f"{k} {v}" for k, v in i.items()))
        if "process" in layers:
            report["process"] = e = measure_process(spec, args.seconds, args.steps)
            print("process    " + ", ".join(f"{k} {v}" for k, v in e.items()))
    out = args.out or REPO / "bench" / "results" / f"engine-overhead-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")


if __name__ == "__main__":
    main()
