"""Default forward dtypes per device."""

from __future__ import annotations

from models import default_cpu_dtype, default_dtype
from models.precision import CPU_DEFAULT_DTYPE, cpu_has_native_bf16


def test_default_dtypes():
    assert default_dtype("cuda") == "bfloat16"  # as the official code
    assert default_dtype("cuda:1") == "bfloat16"
    assert default_dtype("cpu") == default_cpu_dtype()
    # bf16 was measured faster on CPUs that multiply it natively; emulated bf16 is not worth it.
    assert default_cpu_dtype() == (CPU_DEFAULT_DTYPE if cpu_has_native_bf16() else "float32")
    assert default_dtype("meta") == "float32"
