"""2D (axial) RoPE, `pos_encodings: rope2d`: attention scores depend on the grid offset (rows, columns)."""

from __future__ import annotations

import pytest
import torch

from models import ModelConfig, build_model
from models.layers import GridRotaryEmbedding, apply_rotary


def _scores(rot: GridRotaryEmbedding, vec: torch.Tensor) -> torch.Tensor:
    n = rot.cos.shape[0]
    q = vec.expand(1, n, 1, vec.numel()).clone()
    q, k = apply_rotary(q, q.clone(), rot.cos, rot.sin)
    return torch.einsum("bqhd,bkhd->qk", q, k)


def test_scores_depend_on_the_grid_offset_only() -> None:
    torch.manual_seed(0)
    side, prefix = 5, 2
    rot = GridRotaryEmbedding(head_dim=16, prefix=prefix, side=side, base=100.0)
    s = _scores(rot, torch.randn(16))

    def cell(r: int, c: int) -> int:
        return prefix + r * side + c

    right = [s[cell(r, c), cell(r, c + 1)] for r, c in ((0, 0), (2, 1), (4, 3))]
    down = [s[cell(r, c), cell(r + 1, c)] for r, c in ((0, 0), (1, 3), (3, 4))]
    assert torch.allclose(torch.stack(right), right[0].expand(3), atol=1e-4)
    assert torch.allclose(torch.stack(down), down[0].expand(3), atol=1e-4)
    # one row down is NOT the same as `side` tokens to the right in 1D terms: (0,4) -> (1,4) vs (0,4) -> (1,0)
    assert not torch.isclose(s[cell(0, 4), cell(1, 4)], s[cell(0, 4), cell(1, 0)], atol=1e-3)


def test_rope2d_model_runs_and_needs_a_square_grid() -> None:
    base = {"arch": "trm", "vocab_size": 6, "hidden_size": 32, "num_heads": 2, "H_cycles": 1, "L_cycles": 1,
            "L_layers": 1, "pos_encodings": "rope2d", "puzzle_emb_ndim": 32, "puzzle_emb_len": 1,
            "forward_dtype": "float32"}
    model = build_model(ModelConfig.model_validate(base | {"seq_len": 49}))
    x = model.embed(torch.ones(2, 49, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    out = model.act_step(x, *model.initial_carry(2))
    assert out.logits.shape == (2, 49, 6) and torch.isfinite(out.logits).all()
    with pytest.raises(ValueError, match="square seq_len"):
        build_model(ModelConfig.model_validate(base | {"seq_len": 50}))
    with pytest.raises(ValueError, match="divisible by 4"):
        GridRotaryEmbedding(head_dim=6, prefix=1, side=3, base=100.0)
