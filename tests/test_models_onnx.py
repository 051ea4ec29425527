"""ONNX export of one ACT step: onnxruntime within 1e-4 of torch float32 on the official fixtures.

Each check runs every recorded step s >= 1 at once (15 steps x B rows stacked as one batch,
which also exercises the dynamic batch axis) from the recorded carry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from models import ModelConfig
from models.onnx_step import INPUT_NAMES, OUTPUT_NAMES, OnnxActStep, export_act_step
from models_support import load_fixture, random_inputs, random_model

ORT_ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", ["trm_mlp_sudoku_fp32", "hrm_sudoku_fp32"])
def test_onnx_step_matches_torch_on_fixture(name: str, tmp_path: Path):
    loaded, e = load_fixture(name)
    m = loaded.model
    path = export_act_step(m, tmp_path / "step.onnx")
    graph = onnx.load(str(path))
    assert [i.name for i in graph.graph.input] == list(INPUT_NAMES)  # three distinct inputs, none merged
    assert [o.name for o in graph.graph.output] == list(OUTPUT_NAMES)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis

    runner = OnnxActStep(path, providers=["CPUExecutionProvider"], threads=1)
    steps, batch = e["z_H"].shape[0] - 1, e["inputs"].shape[0]
    with torch.inference_mode():
        x = m.embed(torch.from_numpy(e["inputs"]), torch.from_numpy(e["puzzle_identifiers"])).repeat(steps, 1, 1)
        z_H = torch.from_numpy(e["z_H"][:-1].reshape(steps * batch, *e["z_H"].shape[2:]))
        z_L = torch.from_numpy(e["z_L"][:-1].reshape(steps * batch, *e["z_L"].shape[2:]))
        want = m.act_step(x, z_H, z_L)
    got = runner.act_step(x, z_H, z_L)
    for what, a, b in zip(("z_H", "z_L", "logits", "q_halt", "q_continue"), got, want, strict=True):
        assert a.dtype == torch.float32 and a.shape == b.shape
        err = (a - b).abs().max().item()
        assert err <= ORT_ATOL, f"{what}: onnxruntime differs from torch by {err:.3g}"
    expected_logits = torch.from_numpy(e["logits"][1:].reshape(steps * batch, *e["logits"].shape[2:]))
    assert (got.logits - expected_logits).abs().max().item() <= 1e-3  # and from the official outputs


def test_onnx_export_of_bf16_model_computes_in_float32(tmp_path: Path):
    config = ModelConfig(arch="trm", task="sudoku", seq_len=81, vocab_size=11, hidden_size=32, num_heads=4,
                         H_cycles=1, L_cycles=2, L_layers=1, puzzle_emb_ndim=32, puzzle_emb_len=2,
                         pos_encodings="rope", forward_dtype="bfloat16", num_puzzle_identifiers=2)
    model = random_model(config, seed=2)
    runner = OnnxActStep(export_act_step(model, tmp_path / "step.onnx"), threads=1)
    fp32 = random_model(config.model_copy(update={"forward_dtype": "float32"}), seed=2)
    inputs, ids = random_inputs(config, 1)  # batch 1 (export used 2): the batch axis stays dynamic
    with torch.inference_mode():
        x = fp32.embed(inputs, ids)
        want = fp32.act_step(x, *fp32.initial_carry(1))
    got = runner(x, *fp32.initial_carry(1))
    assert np.allclose(got.logits.numpy(), want.logits.numpy(), atol=ORT_ATOL)
    assert np.allclose(got.q_halt.numpy(), want.q_halt.numpy(), atol=ORT_ATOL)
