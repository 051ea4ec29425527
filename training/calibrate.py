"""Fit the confidence temperature of a model folder on a validation split and store it in the folder.

The served confidence is sigmoid(q_halt / T) with T = config.json's `confidence_temperature` (1.0 when
absent). The validation split must be disjoint from the held-out tiers the card reports (make-data with
other seeds), and should hold right and wrong answers (several tiers), else nothing can be fitted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import load_model
from models.checkpoint import content_version
from training.calibration import calibration_report, fit_temperature
from training.data import load_examples
from training.evaluate import exact_rows, run_plain, tiers_of

FIELD = "confidence_temperature"


def calibrate(model_path: str | Path, val_heldout: str | Path, *, n: int = 200, tiers: list[str] | None = None,
              threads: int | None = 1, device: str = "cpu") -> dict[str, Any]:
    """Fit T on every (q_halt, exactly right) pair a server could report: the Q-head-halted answer and the
    max-steps answer of each validation puzzle. Returns the fit and per-tier ECE before / after."""
    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_path, device=device).model
    val = Path(val_heldout)
    per_tier: dict[str, tuple[np.ndarray, ...]] = {}
    for tier in tiers or tiers_of(val):
        ex = load_examples(val / tier, "test")
        m = min(n, len(ex))
        res = run_plain(model, ex.inputs[:m], ex.puzzle_identifiers[:m])
        labels = ex.labels[:m]
        per_tier[tier] = (res.final_q_halt, exact_rows(res.final_tokens, labels), res.halt_q_halt,
                          exact_rows(res.halt_tokens, labels))
    q = np.concatenate([np.concatenate([v[0], v[2]]) for v in per_tier.values()])
    ok = np.concatenate([np.concatenate([v[1], v[3]]) for v in per_tier.values()])
    t = fit_temperature(q, ok)
    report: dict[str, Any] = {"field": FIELD, "temperature": round(t, 4), "formula": "sigmoid(q_halt / T)",
                              "validation": str(val), "pairs": int(q.size), "tiers": {}}
    for tier, (fq, fok, hq, hok) in per_tier.items():
        report["tiers"][tier] = {policy: {"raw": calibration_report(qq, okk, 1.0),
                                          "calibrated": calibration_report(qq, okk, t)}
                                 for policy, qq, okk in (("max_steps", fq, fok), ("q_halt", hq, hok))}
    report["pooled"] = {"raw": calibration_report(q, ok, 1.0), "calibrated": calibration_report(q, ok, t)}
    return report


def write_temperature(model_path: str | Path, report: dict[str, Any], apply: bool = True) -> None:
    """Store the fit in card.json (what people read) and, with `apply`, T in config.json (what a server reads;
    this changes the model version, which hashes config.json). Without `apply` the served T stays 1."""
    folder = Path(model_path)
    if apply:
        cfg_path = folder / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg[FIELD] = report["temperature"]
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    card_path = folder / "card.json"
    if not card_path.exists():
        if not apply:
            raise ValueError(f"{folder} has no card.json to store the fit in: calibrate the exported weights "
                             "(weights/<name>), add --apply to serve it, or keep the fit with --out")
        return
    card = json.loads(card_path.read_text())
    card["calibration"] = report | {"applied": apply}
    old, card["version"] = card.get("version"), content_version(folder)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    readme = folder / "README.md"
    if old and old != card["version"] and readme.exists():  # --apply changed config.json, so the version moved
        readme.write_text(readme.read_text().replace(f"Version `{old}`", f"Version `{card['version']}`"))
