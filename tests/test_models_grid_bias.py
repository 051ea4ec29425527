"""Attention's learned 2D relative-position bias, `grid_bias: true` (models/layers.py GridRelativeBias)."""

from __future__ import annotations

import pytest
import torch

from models import ModelConfig, build_model
from models.layers import GridRelativeBias

BASE = {"arch": "trm", "vocab_size": 6, "hidden_size": 32, "num_heads": 4, "H_cycles": 1, "L_cycles": 1,
        "L_layers": 1, "puzzle_emb_ndim": 32, "puzzle_emb_len": 1, "forward_dtype": "float32", "seq_len": 25}


def test_bias_depends_on_the_grid_offset_only_and_starts_as_2d_alibi() -> None:
    prefix, side = 2, 5
    grid = GridRelativeBias(num_heads=4, prefix=prefix, side=side)
    with torch.no_grad():
        grid.table.normal_()  # any learned table: equal offsets must still share one entry
    b = grid()
    assert b.shape == (4, prefix + side * side, prefix + side * side)

    def cell(r: int, c: int) -> int:
        return prefix + r * side + c

    up = torch.stack([b[:, cell(r, c), cell(r - 1, c)] for r, c in ((1, 0), (3, 2), (4, 4))])
    assert torch.equal(up, up[0].expand_as(up))
    # the cell one row up is not the cell `side` tokens earlier in a different column: (1,0) -> (0,0) vs (1,0) -> (0,4)
    assert not torch.equal(b[:, cell(1, 0), cell(0, 0)], b[:, cell(1, 0), cell(0, 4)])
    # prefix entries are three shared slots, not grid offsets
    assert torch.equal(b[:, cell(0, 0), 0], b[:, cell(4, 4), 1])
    assert torch.equal(b[:, 0, cell(0, 0)], b[:, 1, cell(2, 3)])

    fresh = GridRelativeBias(num_heads=4, prefix=prefix, side=side)()
    # head h starts at -2^(2-h) x (Manhattan distance - 1)^+: the cell and its 4 neighbours tie at 0
    assert torch.equal(fresh[:, cell(2, 2), cell(2, 2)], torch.zeros(4))
    assert torch.equal(fresh[:, cell(2, 2), cell(1, 2)], torch.zeros(4))
    assert torch.allclose(fresh[:, cell(2, 2), cell(1, 1)], torch.tensor([-4.0, -2.0, -1.0, -0.5]))
    assert torch.allclose(fresh[0, cell(0, 0), cell(4, 4)], torch.tensor(-28.0))
    assert torch.equal(fresh[:, cell(2, 2), 0], torch.zeros(4))


def test_bias_changes_the_model_and_gets_gradient() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate(BASE | {"grid_bias": True}))
    names = [n for n, _ in model.named_parameters() if "grid_bias" in n]
    assert names == ["L_level.layers.0.self_attn.grid_bias.table"]
    x = model.embed(torch.randint(1, 6, (2, 25)), torch.zeros(2, dtype=torch.long))
    out = model.act_step(x, *model.initial_carry(2))
    out.logits.square().mean().backward()
    table = model.L_level.layers[0].self_attn.grid_bias.table
    assert table.grad is not None and table.grad.abs().sum() > 0
    with torch.no_grad():  # a different bias gives different logits: the bias is really applied
        table.zero_()
        assert not torch.allclose(model.act_step(x, *model.initial_carry(2)).logits, out.logits)


def test_off_by_default_and_needs_a_square_grid() -> None:
    plain = build_model(ModelConfig.model_validate(BASE))
    assert not any("grid_bias" in n for n, _ in plain.named_parameters())  # official checkpoints load unchanged
    with pytest.raises(ValueError, match="square seq_len"):
        build_model(ModelConfig.model_validate(BASE | {"grid_bias": True, "seq_len": 24}))


def test_the_trainer_does_not_decay_the_bias_table(tmp_path) -> None:
    from training.config import TrainConfig
    from training.make_data import make_maze
    from training.trainer import Trainer

    make_maze(tmp_path / "d", 5, 8, 2, {"all": (1, None)}, seed=1, heldout_seed=9_000_000)
    cfg = TrainConfig.model_validate({
        "name": "t", "data_dir": str(tmp_path / "d"), "runs_dir": str(tmp_path / "runs"), "max_steps": 1,
        "batch_size": 2, "weight_decay": 0.5, "eval_every_minutes": 0,
        "model": {"arch": "trm", "task": "maze", "hidden_size": 16, "num_heads": 2, "H_cycles": 1, "L_cycles": 1,
                  "L_layers": 1, "puzzle_emb_ndim": 16, "puzzle_emb_len": 1, "halt_max_steps": 2,
                  "forward_dtype": "float32", "grid_bias": True}})
    trainer = Trainer(cfg)
    decayed, kept = trainer.opt.param_groups[0]["params"], trainer.opt.param_groups[2]["params"]
    table = trainer.model.L_level.layers[0].self_attn.grid_bias.table
    assert any(t is table for t in kept) and not any(t is table for t in decayed)
    assert any(t is trainer.model.lm_head.weight for t in decayed)
    trainer.train_step()  # the table's group runs at lr x grid_bias_lr_scale (default 10)
    assert trainer.opt.param_groups[2]["lr"] == pytest.approx(10 * trainer.opt.param_groups[0]["lr"])
