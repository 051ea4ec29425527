"""Default forward dtype per device.

CUDA: bfloat16, as the official code trains and evaluates.

CPU: bfloat16 where the CPU multiplies bf16 natively (AVX512-BF16 or AMX), float32 elsewhere.
Measured with bench/models_dtype.py on this project's machine (AMD EPYC with avx512_bf16, torch
2.13, eager, 1 thread, TRM-MLP Sudoku; results in bench/results/models-dtype-vm.json): bf16 ran
1.2-2.5x more ACT steps/s than float32 at hidden 128-512 and batch 1-32 (only the toy hidden 64 at
batch 1 was slower, 0.9x). Without native bf16, oneDNN emulates it and float32 is the faster choice.

Effect on answers: one ACT step in bf16 from the same carry keeps >= 99% of the argmax cells of
float32 (the fixtures' tolerance), but the recursion amplifies differences: on the random-weight
fixtures, 16 free steps in the other dtype agree on only 9-50% of cells. Official checkpoints were
trained and evaluated in bf16; a model trained in float32 should be checked in bf16 before serving
it that way (pass dtype="float32" to load_model to keep float32).
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
