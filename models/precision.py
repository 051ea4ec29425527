"""Default forward dtype per device.

CUDA: bfloat16, as the official code trains and evaluates.

CPU: bfloat16 where the CPU multiplies bf16 natively (AVX512-BF16 or AMX), float32 elsewhere.
Measured with bench/models_dtype.py on this project's machine (AMD EPYC with avx512_bf16, torch
2.13, eager, 1 thread, TRM-MLP Sudoku; bench/results/models-dtype-vm.json): bf16 ran 1.3-2.1x more
ACT steps/s than float32 at hidden 128-512 and batch 1-32 (only the toy hidden 64 at batch 1 was
slower, 0.93x); bench/models_bench.py agrees (torch.compile bf16 fastest, 1.5-2.5x eager float32).
Without native bf16, oneDNN emulates it and float32 is the faster choice.

Effect on answers, measured on the random-weight official fixtures (chaotic by construction): one
ACT step in the other dtype from the same recorded carry keeps 79-96% of the argmax cells, and 16
free steps agree on only 9-50% of cells (no whole answer). Official checkpoints were trained and
evaluated in bf16, so bf16 is their native precision; for weights trained in float32, re-run
bench/models_dtype.py (it compares solve rates for every folder under weights/) before serving them
in bf16, or pass dtype="float32" to load_model.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

CPU_DEFAULT_DTYPE = "bfloat16"  # the measured winner on CPUs with native bf16 (see above)
CUDA_DEFAULT_DTYPE = "bfloat16"
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists AVX512-BF16 or AMX-BF16 (False where it cannot be read)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def default_cpu_dtype() -> str:
    return CPU_DEFAULT_DTYPE if cpu_has_native_bf16() else "float32"


def default_dtype(device: str | torch.device = "cpu") -> str:
    """The forward dtype to run a model in on `device` when the caller does not choose one."""
    kind = torch.device(device).type
    if kind == "cpu":
        return default_cpu_dtype()
    if kind == "cuda":
        return CUDA_DEFAULT_DTYPE
    return "float32"  # mps and others: bf16 support varies
