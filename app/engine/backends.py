"""Step backends: the one piece of the engine that runs the network.

A backend embeds inputs, makes a fresh carry and runs one ACT step on a batch of rows. The torch
backend calls the model directly (bf16 on CUDA and on CPUs with native bf16, else float32); the onnxruntime backend
runs the exported ACT step (`models.onnx_step.OnnxActStep`) and keeps the torch module only for
the cheap per-request parts (embedding, initial carry, halting rule).
With no dtype configured, models.default_dtype picks the measured faster one for the device.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch

from models import LoadedModel, StepOutput, default_dtype, load_model

log = logging.getLogger(__name__)

ONNX_FILE = "act_step.onnx"  # an export shipped beside the weights is used as is


class Backend(Protocol):
    name: str
    device: torch.device
    loaded: LoadedModel

    @property
    def dtype(self) -> torch.dtype: ...
    def embed(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor: ...
    def fresh_carry(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def act_step(self, x: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor) -> StepOutput: ...
    def model_halted(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor: ...
    def describe(self) -> dict[str, Any]: ...


class TorchBackend:
    name = "torch"

    def __init__(self, loaded: LoadedModel, device: str) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.device = torch.device(device)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.forward_dtype

    def embed(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        return self.model.embed(inputs.to(self.device), puzzle_identifiers.to(self.device))

    def fresh_carry(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.initial_carry(rows, device=self.device)

    def act_step(self, x: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor) -> StepOutput:
        return self.model.act_step(x, z_H, z_L)

    def model_halted(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        return self.model.halted(q_halt, q_continue)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch.")}


class OnnxBackend(TorchBackend):
    """ACT steps through onnxruntime; float32 in and out (the exported graph's precision)."""

    name = "onnx"

    def __init__(self, loaded: LoadedModel, device: str) -> None:
        super().__init__(loaded, "cpu")  # embedding and carry stay in torch on the host
        from models.onnx_step import OnnxActStep, export_act_step

        path = Path(loaded.path) / ONNX_FILE if Path(loaded.path).is_dir() else None
        if path is None or not path.exists():
            # Exported once per process into a temp dir: the weights folder may be read-only.
            self._tmp = tempfile.TemporaryDirectory(prefix="recursolve-onnx-")
            path = Path(self._tmp.name) / ONNX_FILE
            log.info("exporting %s to ONNX at %s", loaded.path, path)
            export_act_step(self.model, path)
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda")
                     else ["CPUExecutionProvider"])
        self.session = OnnxActStep(str(path), providers=providers)
        self.onnx_device = device

    def act_step(self, x: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor) -> StepOutput:
        return self.session.act_step(x, z_H, z_L)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.onnx_device, "dtype": "float32"}


def make_backend(path: str | Path, *, backend: str = "torch", device: str = "cpu", dtype: str | None = None,
                 task: str | None = None) -> Backend:
    """Load the weights at `path` and wrap them in the requested backend."""
    if backend == "onnx":
        # The exported graph computes in float32 whatever the config says.
        return OnnxBackend(load_model(path, task=task, dtype="float32", device="cpu"), device)
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r}; use 'torch' or 'onnx'")
    loaded = load_model(path, task=task, dtype=dtype or default_dtype(device), device=device)
    return TorchBackend(loaded, device)
