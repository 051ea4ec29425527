"""Fast trainer tests on tiny models: learning, exact resume, the overlap guard, card export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import load_model
from puzzles.sudoku import generate_batch
from training.config import TrainConfig
from training.make_data import OverlapError, check_no_overlap, make_sudoku
from training.trainer import Trainer

TINY = {"arch": "trm", "task": "sudoku", "hidden_size": 32, "num_heads": 2, "expansion": 2, "H_cycles": 1,
        "L_cycles": 1, "L_layers": 1, "mlp_t": True, "pos_encodings": "none", "puzzle_emb_ndim": 32,
        "puzzle_emb_len": 1, "halt_max_steps": 3, "forward_dtype": "float32"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sudoku")
    make_sudoku(out, {"easy": 16}, heldout_count=4, seed=3, heldout_seed=77)
    return out


def _cfg(data_dir: Path, runs: Path, **kw) -> TrainConfig:
    base = {"name": "tiny", "model": TINY, "data_dir": str(data_dir), "runs_dir": str(runs), "batch_size": 8,
            "lr": 3e-3, "lr_warmup_steps": 1, "eval_every_minutes": 0, "log_every": 1, "threads": 1}
    return TrainConfig.model_validate(base | kw)


def test_make_data_layout_and_manifest(data_dir: Path) -> None:
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert manifest["overlap_check"]["shared"] == 0
    assert (data_dir / "train" / "all__inputs.npy").exists()
    tiers = json.loads((data_dir / "heldout" / "tiers.json").read_text())["tiers"]
    assert tiers == ["easy", "medium", "hard", "extreme"]
    assert all((data_dir / "heldout" / t / "test" / "dataset.json").exists() for t in tiers)


def test_mixed_maze_sizes_sit_in_the_canvas_corner_with_one_tier_per_side(tmp_path: Path) -> None:
    PAD_TOKEN = 0  # puzzles/maze.py: the official maze vocabulary's PAD
    from training.data import load_examples
    from training.make_data import make_maze

    manifest = make_maze(tmp_path, 9, 40, 3, {}, sizes=[5, 7, 9], seed=4, heldout_seed=88)
    assert list(manifest["heldout"]) == ["side5", "side7", "side9"] and manifest["train"]["all"]["canvas"] == 9
    assert manifest["train"]["all"]["size"] == [5, 7, 9]
    single = make_maze(tmp_path / "one", 7, 10, 2, {"all": (1, None)}, seed=4, heldout_seed=88)
    assert single["train"]["all"]["size"] == 7 and single["heldout"]["all"]["size"] == 7
    for side in (5, 7, 9):
        ex = load_examples(tmp_path / "heldout" / f"side{side}", "test")
        grid = ex.inputs.reshape(-1, 9, 9)
        assert (grid[:, :side, :side] != PAD_TOKEN).all() and (grid[:, side:, :] == PAD_TOKEN).all()
    train = load_examples(tmp_path, "train").inputs.reshape(-1, 9, 9)
    sides = {int((row != PAD_TOKEN).any(1).sum()) for row in train}
    assert sides == {5, 7, 9}
    with pytest.raises(ValueError, match="do not fit the 7x7 canvas"):
        make_maze(tmp_path / "x", 7, 4, 1, {}, sizes=[5, 9])


def test_no_training_maze_is_a_rotation_or_reflection_of_a_held_out_one(tmp_path: Path) -> None:
    """The trainer shows each training maze under one of the 8 dihedral transforms, so a rotated copy of a
    held-out maze in the training set is a held-out maze seen in training. Small mazes repeat often."""
    from puzzles.dihedral import dihedral
    from training.data import load_examples
    from training.make_data import make_maze

    make_maze(tmp_path, 7, 400, 60, {"all": (1, None)}, seed=4, heldout_seed=88)
    train = {g.tobytes() for g in load_examples(tmp_path, "train").inputs.reshape(-1, 7, 7)}
    held = load_examples(tmp_path / "heldout" / "all", "test").inputs.reshape(-1, 7, 7)
    seen = [g for g in held if any(dihedral(g, t).tobytes() in train for t in range(8))]
    assert not seen


def test_maze_augmentation_keeps_a_smaller_maze_in_the_canvas_corner() -> None:
    """Six of the eight dihedral maps of the whole canvas moved a 5x5 maze out of the top-left corner of a 9x9
    canvas, a layout the server never sends (it puts a smaller maze in that corner, PAD around it)."""
    from puzzles.dihedral import dihedral
    from training.data import augment_rows

    rng = np.random.default_rng(0)
    block = rng.integers(1, 5, size=(5, 5))
    canvas = np.zeros((9, 9), dtype=np.int64)
    canvas[:5, :5] = block
    inputs = np.repeat(canvas.reshape(1, 81), 64, axis=0)
    out, labels = augment_rows("maze", inputs, inputs.copy(), np.random.default_rng(1))
    seen = set()
    for row, lab in zip(out.reshape(-1, 9, 9), labels.reshape(-1, 9, 9), strict=True):
        assert (row[5:, :] == 0).all() and (row[:, 5:] == 0).all() and (row == lab).all()
        seen.add(next(t for t in range(8) if (dihedral(block, t) == row[:5, :5]).all()))
    assert len(seen) == 8  # every map still used


def test_overlap_check_catches_overlap() -> None:
    with pytest.raises(OverlapError, match="1 held-out 'easy'"):
        check_no_overlap(["a", "b"], {"easy": ["c", "b"]})
    assert check_no_overlap(["a"], {"easy": ["b"]}) == {"easy": 1}


def test_overlap_with_real_puzzles_is_caught(tmp_path: Path) -> None:
    from training.make_data import _sudoku_keys

    givens, _ = generate_batch(5, "easy", 3)
    with pytest.raises(OverlapError):
        check_no_overlap(_sudoku_keys(givens), {"easy": _sudoku_keys(givens[1:2])})


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(data_dir: Path, tmp_path: Path) -> None:
    # no exploration / halting changes: halt_max_steps 1 keeps the same rows and fresh carries every step
    cfg = _cfg(data_dir, tmp_path, model=TINY | {"halt_max_steps": 1}, augment=False, batch_size=16, lr=1e-2)
    tr = Trainer(cfg)
    losses = [tr.train_step()["lm_loss"] for _ in range(12)]
    assert losses[-1] < losses[0] - 0.05, losses


def test_resume_continues_identically(data_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    full = Trainer(_cfg(data_dir, tmp_path / "a"))
    ref = [full.train_step()["loss"] for _ in range(8)]

    first = Trainer(_cfg(data_dir, tmp_path / "b"))
    part = [first.train_step()["loss"] for _ in range(4)]
    ckpt = first.save_checkpoint()
    second = Trainer(_cfg(data_dir, tmp_path / "b", seed=123))  # different seed: everything must come from ckpt
    second.load_checkpoint(ckpt)
    part += [second.train_step()["loss"] for _ in range(4)]
    assert part == ref
    assert second.step == 8


def test_fit_deadline_checkpoint_and_export(data_dir: Path, tmp_path: Path) -> None:
    from training.evaluate import evaluate
    from training.export import export_card

    cfg = _cfg(data_dir, tmp_path / "runs", max_steps=3)
    tr = Trainer(cfg)
    tr.fit(progress=False)
    run_dir = cfg.run_dir
    assert (run_dir / "checkpoint" / "index.json").exists() and (run_dir / "model_ema" / "model.safetensors").exists()
    assert len((run_dir / "log.jsonl").read_text().splitlines()) >= 3

    result = evaluate(run_dir / "model_ema", data_dir / "heldout", n=2, ptrm_k=[2], ptrm_n=1, tiers=["easy"])
    tier = result["tiers"]["easy"]
    assert tier["n"] == 2 and 0 <= tier["q_halt"]["exact"] <= 1 and 1 <= tier["q_halt"]["mean_act_steps"] <= 3
    assert tier["ptrm_k2"]["n"] == 1
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps(result))

    other = dict(result, version="0123456789abcdef", model="runs/another/model_ema")
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="evaluated version '0123456789abcdef'"):  # another model's accuracy
        export_card(run_dir / "model_ema", tmp_path / "weights" / "tiny", tmp_path / "other.json", run_dir, None)
    out = export_card(run_dir / "model_ema", tmp_path / "weights" / "tiny", eval_json, run_dir, None)
    loaded = load_model(out)
    assert loaded.config.task == "sudoku" and loaded.config.hidden_size == 32
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["steps"] == 3 and card["evaluation"]["tiers"]["easy"]["n"] == 2
    assert "| easy |" in (out / "README.md").read_text()
    # the exported weights are the EMA weights
    ema = tr.ema_model().state_dict()
    assert all(np.allclose(ema[k].numpy(), v.numpy()) for k, v in loaded.model.state_dict().items())
