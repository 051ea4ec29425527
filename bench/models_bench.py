"""ACT steps per second on this CPU: torch eager vs torch.compile vs onnxruntime, float32 vs bf16.

Models: TRM-MLP Sudoku (H3/L6, 2 layers, P=16, seq 81+16) at hidden 512 (the published size) and
hidden 128 (a small one), random weights (speed does not depend on the values). Batches 1, 8, 64, 256.
Backends: eager fp32/bf16; torch.compile fp32/bf16 of the reasoning module (the 21 network calls of
a step share one compiled graph: compiling the unrolled step takes minutes on 2 cores); onnxruntime
fp32 (the exported ACT step, models/onnx_step.py).

Method: per (model, batch) the backends are timed alternately, round by round, so background load
hits them alike. A whole ACT step is timed where it is cheap; where one step would take too long
(hidden 512 at large batches: ~0.3 s of CPU per row-step) one network call is timed and the step
time derived as calls_per_step x call time (the heads are < 0.1% of a step); the "method" column
says which. The machine is shared with background training and other jobs: compare ratios within
one run only; the load average is recorded.

    .venv/bin/python bench/models_bench.py [--threads 1] [--budget-s 540]

Writes bench/results/models-<host>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch
from torch import nn

from models import ModelConfig, build_model
from models.onnx_step import OnnxActStep, export_act_step

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 8, 64, 256)
HIDDENS = (128, 512)
BACKENDS = ("eager-fp32", "eager-bf16", "compile-fp32", "compile-bf16", "ort-fp32")
STEP_LIMIT_S = 3.0  # above this (estimated, eager fp32) time single network calls instead of whole steps


def config(hidden: int, dtype: str) -> ModelConfig:
    return ModelConfig(arch="trm", task="sudoku", seq_len=81, vocab_size=11, hidden_size=hidden, num_heads=8,
                       H_cycles=3, L_cycles=6, L_layers=2, puzzle_emb_ndim=hidden, puzzle_emb_len=16,
                       pos_encodings="none", mlp_t=True, forward_dtype=dtype)


class _CallGraph(nn.Module):
    """One network call (L_level) for the ONNX call-level timing."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, h, injection):
        return self.model.L_level(h, injection, None)


class Backend:
    def __init__(self, name: str, hidden: int, weights: dict, workdir: Path, threads: int):
        self.name = name
        dtype = "bfloat16" if name.endswith("bf16") else "float32"
        self.model = build_model(config(hidden, dtype)).eval()
        self.model.load_state_dict(weights)
        self.dtype = self.model.forward_dtype
        self.session = self.call_session = None
        if name.startswith("compile"):
            self.model.L_level = torch.compile(self.model.L_level, dynamic=True)
        if name.startswith("ort"):
            step_path = export_act_step(self.model, workdir / f"step-{hidden}.onnx", check=False)
            self.session = OnnxActStep(step_path, providers=["CPUExecutionProvider"], threads=threads)
            call_path = workdir / f"call-{hidden}.onnx"
            ex = tuple(torch.randn(2, self.model.config.total_len, hidden, generator=torch.Generator().manual_seed(i))
                       for i in range(2))  # distinct example tensors (the exporter merges identical ones)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(_CallGraph(self.model), ex, str(call_path), input_names=["h", "injection"],
                                  output_names=["out"], opset_version=18, dynamo=False,
                                  dynamic_axes={"h": {0: "b"}, "injection": {0: "b"}, "out": {0: "b"}})
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            self.call_session = ort.InferenceSession(str(call_path), opts, providers=["CPUExecutionProvider"])

    def unit(self, method: str, batch: int, seed: int) -> Callable[[], object]:
        """A zero-argument function running one ACT step or one network call on fresh random data."""
        c = self.model.config
        g = torch.Generator().manual_seed(seed)
        shape = (batch, c.total_len, c.hidden_size)
        if method == "step":
            with torch.inference_mode():
                x = self.model.embed(torch.randint(1, 11, (batch, c.seq_len), generator=g),
                                     torch.zeros(batch, dtype=torch.int32))
            z_H, z_L = (torch.randn(shape, generator=g) for _ in range(2))
            if self.session is not None:
                x = x.float()
                return lambda: self.session.act_step(x, z_H, z_L)
            x, z_H, z_L = x.to(self.dtype), z_H.to(self.dtype), z_L.to(self.dtype)
            return lambda: self.model.act_step(x, z_H, z_L)
        h, inj = (torch.randn(shape, generator=g) for _ in range(2))
        if self.call_session is not None:
            feeds = {"h": h.numpy(), "injection": inj.numpy()}
            return lambda: self.call_session.run(None, feeds)
        h, inj = h.to(self.dtype), inj.to(self.dtype)
        return lambda: self.model.L_level(h, inj, None)


@torch.inference_mode()
def measure(backends: list[Backend], method: str, batch: int, budget_s: float, max_rounds: int) -> dict[str, list]:
    units = {b.name: b.unit(method, batch, seed=batch) for b in backends}
    for fn in units.values():  # warm-up: compilation, oneDNN primitive caches, ORT allocations
        fn()
    times: dict[str, list[float]] = {name: [] for name in units}
    start = time.perf_counter()
    while True:
        for name, fn in units.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds = len(times[backends[0].name])
        if rounds >= max_rounds or (rounds >= 2 and time.perf_counter() - start > budget_s):
            return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and onnxruntime intra-op threads (1: robust on a contended 2-core machine)")
    ap.add_argument("--budget-s", type=float, default=540.0, help="stop measuring new entries after this")
    ap.add_argument("--hidden", type=int, nargs="*", default=list(HIDDENS))
    ap.add_argument("--batches", type=int, nargs="*", default=list(BATCHES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    host = socket.gethostname()
    print(f"host {host}; torch {torch.__version__}, onnxruntime {ort.__version__}; {args.threads} thread(s); "
          f"load average at start {tuple(round(v, 2) for v in os.getloadavg())} on {os.cpu_count()} CPUs.\n"
          "Shared machine (background training / other jobs): absolute numbers move with the load; "
          "compare backends within one row.", flush=True)

    entries = []
    workdir = Path(tempfile.mkdtemp(prefix="models-bench-"))
    for hidden in args.hidden:
        torch.manual_seed(0)
        weights = build_model(config(hidden, "float32")).state_dict()
        t0 = time.perf_counter()
        backends = [Backend(name, hidden, weights, workdir, args.threads) for name in BACKENDS]
        calls = backends[0].model.config.H_cycles * (backends[0].model.config.L_cycles + 1)
        print(f"hidden {hidden}: backends ready in {time.perf_counter() - t0:.1f} s "
              f"(ONNX export; torch.compile happens at the first call)", flush=True)
        row_step_s = None  # eager fp32 seconds per row-step, from the last measurement
        for batch in args.batches:
            elapsed = time.perf_counter() - t_start
            est_step = None if row_step_s is None else row_step_s * batch
            method = "step" if est_step is None or est_step <= STEP_LIMIT_S else "call"
            est_unit = est_step if method == "step" or est_step is None else est_step / calls
            est_cost = (est_unit or 0.5) * len(BACKENDS) * 3  # warm-up + >= 2 rounds
            if elapsed + est_cost > args.budget_s:
                print(f"  batch {batch:4d}: skipped (estimated {est_cost:.0f} s; {elapsed:.0f} s of the "
                      f"{args.budget_s:.0f} s budget used)", flush=True)
                entries.append({"hidden": hidden, "batch": batch, "skipped": "time budget"})
                continue
            load = os.getloadavg()[0]
            times = measure(backends, method, batch, budget_s=4.0 if method == "step" else 2.0,
                            max_rounds=20 if batch <= 8 else 5)
            per = calls if method == "call" else 1
            entry = {"hidden": hidden, "batch": batch, "method": "step" if per == 1 else f"call x {calls}",
                     "rounds": len(times[BACKENDS[0]]), "load_average_1m": round(load, 2), "backends": {}}
            for name, ts in times.items():
                best, med = min(ts) * per, statistics.median(ts) * per
                entry["backends"][name] = {"steps_per_s": 1 / best, "steps_per_s_median": 1 / med,
                                           "row_steps_per_s": batch / best, "seconds_per_step": best}
            row_step_s = entry["backends"]["eager-fp32"]["seconds_per_step"] / batch
            entries.append(entry)
            cells = "  ".join(f"{n} {entry['backends'][n]['steps_per_s']:8.3f}" for n in BACKENDS)
            print(f"  batch {batch:4d} ({entry['method']}): {cells}", flush=True)

    result = {
        "host": host, "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "onnxruntime": ort.__version__, "threads": args.threads,
        "model": "TRM-MLP Sudoku, H3/L6, 2 layers, P=16 (seq 97), random weights",
        "metric": "ACT steps per second for the whole batch (best of the rounds); row_steps_per_s = x batch",
        "note": "shared CPU with background training and other jobs; backends timed alternately; compare "
                "ratios within one row only. torch.compile = compiled reasoning module (dynamic batch).",
        "load_average_1m_start_end": [load_start, round(os.getloadavg()[0], 2)],
        "entries": entries,
        "seconds_total": round(time.perf_counter() - t_start, 1),
    }
    out = ROOT / "bench" / "results" / f"models-{host}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {out} ({result['seconds_total']} s)")


def print_table(result: dict) -> None:
    head = f"{'hidden':>6} {'batch':>5} {'method':>9} " + " ".join(f"{n:>12}" for n in BACKENDS) + "   best/eager-fp32"
    print("\nACT steps/s (whole batch; row-steps/s = x batch)\n" + head)
    for e in result["entries"]:
        if "skipped" in e:
            print(f"{e['hidden']:>6} {e['batch']:>5} {'skipped':>9}")
            continue
        sps = {n: e["backends"][n]["steps_per_s"] for n in BACKENDS}
        best = max(sps, key=sps.__getitem__)
        print(f"{e['hidden']:>6} {e['batch']:>5} {e['method']:>9} " + " ".join(f"{sps[n]:12.3f}" for n in BACKENDS)
              + f"   {best} {sps[best] / sps['eager-fp32']:.2f}x")


if __name__ == "__main__":
    main()
