"""Confidence calibration: ECE, the temperature fit, and storing T where evaluate (and a server) reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import ModelConfig, build_model, load_model, save_model
from training.calibrate import calibrate, write_temperature
from training.calibration import calibration_report, expected_calibration_error, fit_temperature, sigmoid
from training.evaluate import evaluate
from training.make_data import make_sudoku


def test_ece_by_hand() -> None:
    # bin 0.9: 2 answers, 1 right -> |0.5 - 0.9| = 0.4 with weight 1/2; bin 0.2: 2 answers, 0 right -> 0.2 x 1/2
    assert expected_calibration_error(np.array([0.9, 0.9, 0.2, 0.2]), np.array([1, 0, 0, 0])) == pytest.approx(0.3)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        expected_calibration_error(np.zeros(3), np.zeros(2))


def test_temperature_fit_recovers_a_known_over_confidence() -> None:
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 20_000)
    correct = rng.random(true_logit.size) < sigmoid(true_logit)
    q_halt = 4.0 * true_logit  # a Q-head 4x too sure of itself
    t = fit_temperature(q_halt, correct)
    assert 3.6 < t < 4.4
    raw, cal = calibration_report(q_halt, correct), calibration_report(q_halt, correct, t)
    assert raw["ece"] > 0.1 and cal["ece"] < 0.02


def test_nothing_to_fit_keeps_the_raw_value() -> None:
    assert fit_temperature(np.array([3.0, -1.0]), np.array([True, True])) == 1.0


def test_calibrate_writes_the_field_evaluate_reads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = tmp_path / "data"
    make_sudoku(data, {"easy": 2}, heldout_count={"easy": 3, "medium": 0, "hard": 0, "extreme": 0},
                seed=3, heldout_seed=77)
    cfg = ModelConfig(arch="trm", task="sudoku", seq_len=81, vocab_size=11, hidden_size=16, num_heads=2,
                      expansion=2, H_cycles=1, L_cycles=1, L_layers=1, mlp_t=True, pos_encodings="none",
                      puzzle_emb_ndim=16, puzzle_emb_len=1, halt_max_steps=2, forward_dtype="float32")
    folder = tmp_path / "model"
    save_model(build_model(cfg), folder, {})
    report = calibrate(folder, data / "heldout", n=3, tiers=["easy"])
    with pytest.raises(ValueError, match=r"no card\.json"):  # --write without a card stored nothing, silently
        write_temperature(folder, report, apply=False)
    first = load_model(folder).version
    (folder / "card.json").write_text(json.dumps({"name": "m", "version": first}))
    (folder / "README.md").write_text(f"# m\n\n- Architecture: TRM. Version `{first}`.\n")
    assert report["field"] == "confidence_temperature" and report["pairs"] == 6
    assert set(report["tiers"]["easy"]) == {"max_steps", "q_halt"}
    write_temperature(folder, report | {"temperature": 3.0}, apply=False)  # card only: nothing served changes
    assert "confidence_temperature" not in json.loads((folder / "config.json").read_text())
    assert json.loads((folder / "card.json").read_text())["calibration"]["applied"] is False
    write_temperature(folder, report | {"temperature": 2.5})
    assert json.loads((folder / "config.json").read_text())["confidence_temperature"] == 2.5
    card = json.loads((folder / "card.json").read_text())
    assert card["calibration"]["temperature"] == 2.5 and card["version"] == load_model(folder).version != first
    assert f"Version `{card['version']}`." in (folder / "README.md").read_text()  # the README follows the card
    res = evaluate(folder, data / "heldout", n=3, tiers=["easy"])
    assert res["confidence_temperature"] == 2.5
    cal = res["tiers"]["easy"]["calibration"]
    assert cal["max_steps"]["temperature"] == 2.5 and cal["q_halt"]["n"] == 3
