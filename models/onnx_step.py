"""One ACT step as an ONNX graph, and an onnxruntime runner with the torch step API.

The graph takes the embedded input and the carry and returns the new carry and the heads:
inputs `x`, `z_H`, `z_L` float32 [batch, L+P, hidden]; outputs `z_H_out`, `z_L_out`, `logits`
[batch, L, vocab], `q_halt`, `q_continue` [batch]; the batch axis is dynamic. The recursion
loops are unrolled (H_cycles x L_cycles are fixed by the config). Embedding stays in torch: it
is a lookup done once per request, and the puzzle table of an ARC model would dwarf the graph.

`OnnxActStep.act_step` is a drop-in for `RecursiveModel.act_step` (torch tensors in and out).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from models.checkpoint import build_model
from models.recursive import RecursiveModel, StepOutput

INPUT_NAMES = ("x", "z_H", "z_L")
OUTPUT_NAMES = ("z_H_out", "z_L_out", "logits", "q_halt", "q_continue")  # ONNX names must differ from inputs
OPSET = 18
# Agreement required between onnxruntime and torch on the export's own example, one step, float32.
EXPORT_CHECK_ATOL = 1e-3


class _ActStepGraph(nn.Module):
    def __init__(self, model: RecursiveModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor):
        return tuple(self.model.act_step(x, z_H, z_L))


def float32_copy(model: RecursiveModel) -> RecursiveModel:
    """The same weights with a float32 forward dtype (the exported graph computes in float32)."""
    if model.forward_dtype == torch.float32:
        return model
    config = model.config.model_copy(update={"forward_dtype": "float32"})
    copy = build_model(config).to(next(model.parameters()).device)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def export_act_step(model: RecursiveModel, path: str | Path, *, check: bool = True) -> Path:
    """Export one float32 ACT step of `model` to `path` (a single .onnx file) and return the path.

    Uses the TorchScript-based exporter: it traces this fixed-shape, loop-unrolled step in about a
    second, where the dynamo exporter takes 15-45 s for the same graph. With `check`, the graph is
    run once in onnxruntime on the example and compared with torch.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = float32_copy(model).eval()
    c = model.config
    device = next(model.parameters()).device
    # Distinct example tensors for the three inputs: the exporter merges inputs that are the same
    # tensor object into one graph input. Batch 2, so no size-1 axis gets specialised away.
    g = torch.Generator().manual_seed(0)
    example = tuple(torch.randn(2, c.total_len, c.hidden_size, generator=g).to(device) for _ in INPUT_NAMES)
    dynamic_axes = {name: {0: "batch"} for name in (*INPUT_NAMES, *OUTPUT_NAMES)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about shape arithmetic on the batch axis
        torch.onnx.export(_ActStepGraph(model), example, str(path), input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes, opset_version=OPSET,
                          dynamo=False)
    if check:
        with torch.inference_mode():
            expected = model.act_step(*example)
        got = OnnxActStep(path, providers=["CPUExecutionProvider"]).act_step(*example)
        worst = max(float((a.float().cpu() - b).abs().max()) for a, b in zip(expected, got, strict=True))
        if not worst <= EXPORT_CHECK_ATOL:
            raise RuntimeError(f"ONNX export of {path.name} disagrees with torch by {worst:.3g} on its example")
    return path


def default_providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxActStep:
    """Runs an exported ACT step in onnxruntime; the CUDA provider when available, else the CPU."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None):
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        providers = [p for p in (providers or default_providers()) if p in available] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.providers = self.session.get_providers()
        self.output_names = [o.name for o in self.session.get_outputs()]

    def act_step(self, x: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor) -> StepOutput:
        feeds = {name: _to_numpy(t) for name, t in zip(INPUT_NAMES, (x, z_H, z_L), strict=True)}
        outs = self.session.run(self.output_names, feeds)
        return StepOutput(*(torch.from_numpy(o).to(x.device) for o in outs))

    __call__ = act_step


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())
