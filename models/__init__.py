"""Recursive reasoning models in plain PyTorch: TRM, HRM and PTRM sampling.

The engine drives a model one ACT step at a time through `RecursiveModel`'s step API:
`embed` once per request, `initial_carry` / `reset_rows` for fresh rows, `act_step` for one
step of every active row, and `halted` for the official halting rule.
"""

from models.checkpoint import (
    CheckpointError,
    LoadedModel,
    build_model,
    convert_official,
    load_model,
    save_model,
)
from models.config import ModelConfig
from models.hrm import HRM
from models.precision import default_cpu_dtype, default_dtype
from models.recursive import RecursiveModel, StepOutput
from models.trm import TRM

__all__ = [
    "HRM",
    "TRM",
    "CheckpointError",
    "LoadedModel",
    "ModelConfig",
    "RecursiveModel",
    "StepOutput",
    "build_model",
    "convert_official",
    "default_cpu_dtype",
    "default_dtype",
    "load_model",
    "save_model",
]
