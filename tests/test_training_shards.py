"""Sharded training checkpoints: every file under the size limit, exact round trip, exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.config import TrainConfig
from training.make_data import make_sudoku
from training.shards import load_sharded, save_sharded
from training.trainer import Trainer

LIMIT = 200_000  # bytes; small enough that one tensor below must be cut into pieces


def test_round_trip_keeps_structure_values_and_file_limit(tmp_path: Path) -> None:
    big = torch.randn(120_000)  # 480 kB: cut into 4 pieces
    state = {"step": 7, "name": "x", "betas": (0.9, 0.95), "model": {"w": torch.randn(30, 20), "big": big},
             "opt": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(5, 2)}},
                     "param_groups": [{"params": [0], "lr": 1e-3}]},
             "flags": torch.tensor([True, False]), "empty": torch.zeros(0, 4), "ids": torch.arange(5),
             "bf16": torch.randn(3, 3).bfloat16()}
    folder = save_sharded(state, tmp_path / "ck", max_bytes=LIMIT)
    sizes = [p.stat().st_size for p in folder.iterdir()]
    assert max(sizes) <= LIMIT and len(sizes) >= 6, sizes
    back = load_sharded(folder)
    assert back["step"] == 7 and back["betas"] == (0.9, 0.95) and back["opt"]["param_groups"] == [{"params": [0],
                                                                                                    "lr": 1e-3}]
    for a, b in ((state["model"]["big"], back["model"]["big"]), (state["model"]["w"], back["model"]["w"]),
                 (state["opt"]["state"][0]["exp_avg"], back["opt"]["state"][0]["exp_avg"]),
                 (state["flags"], back["flags"]), (state["ids"], back["ids"]), (state["bf16"], back["bf16"])):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert back["empty"].shape == (0, 4)


def test_save_replaces_the_previous_checkpoint(tmp_path: Path) -> None:
    save_sharded({"a": torch.ones(3)}, tmp_path / "ck", max_bytes=LIMIT)
    save_sharded({"a": torch.zeros(2)}, tmp_path / "ck", max_bytes=LIMIT)
    assert torch.equal(load_sharded(tmp_path / "ck")["a"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_too_small_a_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too small"):
        save_sharded({"a": torch.ones(3)}, tmp_path / "ck", max_bytes=1000)


def test_trainer_resumes_exactly_from_small_shards(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_sudoku(data, {"easy": 16}, heldout_count=2, seed=3, heldout_seed=77)
    model = {"arch": "trm", "task": "sudoku", "hidden_size": 32, "num_heads": 2, "expansion": 2, "H_cycles": 1,
             "L_cycles": 1, "L_layers": 1, "mlp_t": True, "pos_encodings": "none", "puzzle_emb_ndim": 32,
             "puzzle_emb_len": 1, "halt_max_steps": 3, "forward_dtype": "float32"}

    def cfg(runs: Path, seed: int = 0) -> TrainConfig:
        return TrainConfig.model_validate({"name": "t", "model": model, "data_dir": str(data), "runs_dir": str(runs),
                                           "batch_size": 8, "lr": 3e-3, "lr_warmup_steps": 1, "threads": 1,
                                           "eval_every_minutes": 0, "seed": seed, "checkpoint_shard_mib": 0.08})

    full = Trainer(cfg(tmp_path / "a"))
    ref = [full.train_step()["loss"] for _ in range(6)]
    first = Trainer(cfg(tmp_path / "b"))
    got = [first.train_step()["loss"] for _ in range(3)]
    folder = first.save_checkpoint()
    files = list(folder.iterdir())
    assert max(p.stat().st_size for p in files) <= 0.08 * 2**20 and len(files) > 3
    second = Trainer(cfg(tmp_path / "b", seed=99))  # everything must come from the checkpoint
    second.load_checkpoint(folder)
    got += [second.train_step()["loss"] for _ in range(3)]
    assert got == ref and second.step == 6
