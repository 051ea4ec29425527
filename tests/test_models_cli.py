"""`recursolve eval-tokens` and `recursolve convert` (models/cli.py, logic in models/eval_tokens.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from models import ModelConfig, load_model
from models.cli import app
from models.eval_tokens import eval_tokens, eval_tokens_files
from models_support import FIXTURES, load_fixture, random_model, require_fixture, write_official

HRM = "hrm_sudoku_fp32"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_eval_tokens_matches_fixture(tmp_path: Path):
    require_fixture(HRM)
    _, e = load_fixture(HRM)
    out = tmp_path / "out.npz"
    result = eval_tokens_files(FIXTURES / HRM / "step_0", FIXTURES / HRM / "inputs.npy", out, steps=16)
    with np.load(out, allow_pickle=False) as f:
        assert set(f.files) >= {"logits", "q_halt_logits", "q_continue_logits", "preds", "z_H", "z_L"}
        assert f["logits"].shape == e["logits"].shape and f["preds"].shape == e["preds"].shape
        assert f["z_H"].dtype == np.float32 and f["z_H"].shape == e["z_H"].shape[1:]
        np.testing.assert_allclose(f["logits"], e["logits"], atol=1e-4)
        np.testing.assert_allclose(f["q_halt_logits"], e["q_halt_logits"], atol=1e-4)
        np.testing.assert_allclose(f["q_continue_logits"], e["q_continue_logits"], atol=1e-4)
        np.testing.assert_array_equal(f["preds"], e["preds"])
        np.testing.assert_allclose(f["z_H"], e["z_H"][-1], atol=1e-3)
        np.testing.assert_allclose(f["z_L"], e["z_L"][-1], atol=1e-3)
    assert result["logits"].dtype == np.float32


def test_eval_tokens_start_carry_continues_a_run(tmp_path: Path):
    """Steps 5..7 from the recorded carry after step 4 equal the fixture's steps 5..7."""
    require_fixture(HRM)
    _, e = load_fixture(HRM)
    np.savez(tmp_path / "carry.npz", z_H=e["z_H"][4], z_L=e["z_L"][4])
    result = eval_tokens_files(FIXTURES / HRM / "step_0", FIXTURES / HRM / "inputs.npy", tmp_path / "o.npz",
                               steps=3, start_carry=tmp_path / "carry.npz")
    np.testing.assert_allclose(result["logits"], e["logits"][5:8], atol=1e-3)
    np.testing.assert_allclose(result["z_H"], e["z_H"][7], atol=1e-3)


def test_cli_eval_tokens_and_convert(tmp_path: Path):
    config = ModelConfig(arch="trm", task="sudoku", seq_len=81, vocab_size=11, hidden_size=32, num_heads=2,
                         H_cycles=1, L_cycles=2, L_layers=1, puzzle_emb_ndim=32, puzzle_emb_len=2,
                         num_puzzle_identifiers=3, forward_dtype="float32")
    ckpt = write_official(random_model(config, seed=4), tmp_path / "run")
    tokens = np.random.default_rng(0).integers(1, 11, size=(2, 81)).astype(np.int32)
    np.save(tmp_path / "tokens.npy", tokens)
    runner = CliRunner()

    res = runner.invoke(app, ["convert", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ours")])
    assert res.exit_code == 0, res.output
    assert "version" in res.output and (tmp_path / "ours" / "model.safetensors").exists()

    outs = {}
    for name, src in (("official", ckpt), ("ours", tmp_path / "ours")):
        res = runner.invoke(app, ["eval-tokens", "--checkpoint", str(src), "--inputs", str(tmp_path / "tokens.npy"),
                                  "--puzzle-id", "2", "--steps", "3", "--dtype", "float32",
                                  "--out", str(tmp_path / f"{name}.npz")])
        assert res.exit_code == 0, res.output
        with np.load(tmp_path / f"{name}.npz") as f:
            outs[name] = {k: f[k] for k in f.files}
    assert outs["official"]["logits"].shape == (3, 2, 81, 11)
    assert outs["official"]["q_halt_logits"].shape == (3, 2)
    assert outs["official"]["preds"].shape == (2, 81)
    assert outs["official"]["z_H"].shape == (2, 83, 32)
    for key, value in outs["official"].items():  # converted weights give the same numbers
        np.testing.assert_array_equal(outs["ours"][key], value)
    # bf16 runs and still writes float32 arrays
    res = runner.invoke(app, ["eval-tokens", "--checkpoint", str(ckpt), "--inputs", str(tmp_path / "tokens.npy"),
                              "--steps", "1", "--dtype", "bfloat16", "--out", str(tmp_path / "bf16.npz")])
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "bf16.npz") as f:
        assert f["logits"].dtype == np.float32 and f["z_L"].dtype == np.float32


def test_cli_errors_are_clear(tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(app, ["convert", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "no such checkpoint" in res.output

    require_fixture(HRM)
    np.save(tmp_path / "bad.npy", np.ones((2, 80), dtype=np.int32))
    res = runner.invoke(app, ["eval-tokens", "--checkpoint", str(FIXTURES / HRM / "step_0"),
                              "--inputs", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o.npz")])
    assert res.exit_code == 1 and "inputs must be integer tokens [B, 81]" in res.output


def test_eval_tokens_validates_inputs():
    require_fixture(HRM)
    model = load_fixture(HRM)[0].model
    with pytest.raises(ValueError, match="tokens must lie in"):
        eval_tokens(model, np.full((1, 81), 11, dtype=np.int32), steps=1)
    with pytest.raises(ValueError, match="puzzle id out of range"):
        eval_tokens(model, np.ones((1, 81), dtype=np.int32), puzzle_ids=5, steps=1)
    with pytest.raises(ValueError, match="start carry z_H must have shape"):
        eval_tokens(model, np.ones((1, 81), dtype=np.int32), steps=1,
                    start_carry=(np.zeros((1, 81, 64)), np.zeros((1, 82, 64))))


def test_convert_then_load_by_task():
    require_fixture(HRM)
    assert load_model(FIXTURES / HRM / "step_0", task="sudoku").config.seq_len == 81
