"""Ship a trained model: weights/<name>/ = model.safetensors + config.json + card.json + README.md.

The card is built only from measured things: the run's config and JSONL log (steps, wall time,
hardware), the data manifest written by make-data, and the JSON written by `evaluate`. Free text
(why these sizes, what it would take to do better) comes from a notes JSON kept beside the run config.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from models import load_model, save_model


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return cpu


def _run_summary(run_dir: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    train_rows = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_exact_max_steps" in r]
    last = train_rows[-1] if train_rows else {}
    return {"steps": max((r.get("step", 0) for r in rows), default=0),
            "wall_seconds": max((r.get("elapsed_s", 0) for r in rows), default=0),
            "final_train_metrics": {k: last.get(k) for k in ("loss", "token_acc", "exact_acc", "halted_exact",
                                                             "halted_steps", "sample_steps_per_s") if k in last},
            "quick_evals": evals}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def export_card(model_dir: Path, out: Path, eval_json: Path, run_dir: Path, notes_path: Path | None) -> Path:
    loaded = load_model(model_dir)
    train_cfg = json.loads((run_dir / "config.json").read_text())
    evaluation = json.loads(eval_json.read_text())
    # The card's accuracy must be this model's: an evaluation of another folder (or task) is refused, as card-public
    # refuses one.
    for field, mine in (("task", loaded.config.task), ("version", loaded.version)):
        if evaluation.get(field) != mine:
            raise ValueError(f"{eval_json} evaluated {field} {evaluation.get(field)!r} ({evaluation.get('model')}), "
                             f"but {model_dir} is {field} {mine!r}: evaluate this model and export with that JSON")
    notes = json.loads(notes_path.read_text()) if notes_path else {}
    data_dir = Path(train_cfg["data_dir"])
    manifest = json.loads((data_dir / "manifest.json").read_text()) if (data_dir / "manifest.json").exists() else {}
    run = _run_summary(run_dir)
    cfg = loaded.config
    training_extra = json.loads((model_dir / "config.json").read_text()).get("training", {})

    out.mkdir(parents=True, exist_ok=True)
    version = save_model(loaded.model, out, {"training": training_extra})
    card = {
        "name": out.name,
        "version": version,
        "task": cfg.task,
        "arch": cfg.arch,
        "params": loaded.model.num_parameters(),
        "model_config": cfg.model_dump(),
        "data": {"manifest": manifest, "augmentation": "on the fly" if train_cfg.get("augment", True) else "none"},
        "training": {
            "recipe": {k: train_cfg[k] for k in ("batch_size", "lr", "lr_warmup_steps", "lr_min_ratio", "weight_decay",
                                                 "betas", "grad_clip", "ema_rate", "loss", "halt_exploration_prob",
                                                 "hrm_q_bootstrap", "seed") if k in train_cfg},
            "steps": training_extra.get("step", run["steps"]),
            "wall_seconds": training_extra.get("elapsed_seconds", run["wall_seconds"]),
            "sample_steps": training_extra.get("step", run["steps"]) * train_cfg.get("batch_size", 0),
            # Without notes, what the run's config says (a CUDA run's card must not claim a CPU, as it once did).
            "hardware": notes.get("hardware") or (
                f"{train_cfg['device']} (the run's device; exported on {_hardware()})"
                if str(train_cfg.get("device", "cpu")).startswith("cuda") else f"CPU: {_hardware()}"),
            "torch": torch.__version__,
            "final_train_metrics": run["final_train_metrics"],
            "quick_evals": run["quick_evals"],
        },
        "evaluation": evaluation,
        "notes": notes,
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "README.md").write_text(_readme(card))
    return out


def _readme(card: dict[str, Any]) -> str:
    ev, tr, notes = card["evaluation"], card["training"], card["notes"]
    mc = card["model_config"]
    lines = [
        f"# {card['name']}",
        "",
        notes.get("summary", ""),
        "",
        f"- Architecture: {card['arch'].upper()}{' (MLP token mixing)' if mc.get('mlp_t') else ''}, hidden "
        f"{mc['hidden_size']}, H_cycles {mc['H_cycles']}, L_cycles {mc['L_cycles']}, L_layers {mc['L_layers']}"
        + (f", H_layers {mc['H_layers']}" if card["arch"] == "hrm" else "")
        + f", halt_max_steps {mc['halt_max_steps']}, forward dtype {mc['forward_dtype']}; "
        f"{card['params']:,} parameters. Version `{card['version']}`.",
        f"- Training: {tr['steps']:,} optimiser steps x batch {tr['recipe'].get('batch_size')} rows = "
        f"{tr['sample_steps']:,} sample-steps (one ACT step each), {tr['wall_seconds'] / 60:.0f} min of training "
        f"(evaluations and checkpoints not counted) on "
        f"{tr['hardware']}.",
        f"- Data: {notes.get('data', '')}",
        "",
        "## Held-out accuracy (puzzles never seen in training)",
        "",
        "| tier | n | exact (max steps) | verified (max steps) | exact (Q-head halt) | mean ACT steps (Q-head) "
        "| PTRM K=4 exact | PTRM K=16 exact | plain exact, same rows |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for tier, t in ev["tiers"].items():
        k4, k16 = t.get("ptrm_k4", {}), t.get("ptrm_k16", {})
        same_rows = k16.get("plain_exact_same_rows", k4.get("plain_exact_same_rows"))
        lines.append(f"| {tier} | {t['n']} | {_fmt(t['max_steps']['exact'])} | {_fmt(t['max_steps']['verified'])} | "
                     f"{_fmt(t['q_halt']['exact'])} | {t['q_halt']['mean_act_steps']:.2f} | {_fmt(k4.get('exact'))} | "
                     f"{_fmt(k16.get('exact'))} | {_fmt(same_rows)} |")
    any_ptrm = next((t[k] for t in ev["tiers"].values() for k in ("ptrm_k4", "ptrm_k16") if k in t), None)
    if any_ptrm:
        lines += ["", f"PTRM: noise sigma {any_ptrm['sigma']} on {any_ptrm['noise_on']} at every ACT step, "
                      f"best final q_halt, on the first {any_ptrm['n']} puzzles of each tier "
                      "(the last column is the plain model on those same puzzles)."]
    lines += calibration_section(ev)
    lines += ["", "## Why this size", "", notes.get("why", ""), ""]
    if notes.get("limits"):
        lines += ["## Limits and what it would take", "", notes["limits"], ""]
    lines += ["## Reproduce", "", "```", *notes.get("reproduce", []), "```", ""]
    return "\n".join(lines)


def calibration_section(ev: dict[str, Any]) -> list[str]:
    """README lines: expected calibration error of the served confidence per tier (from `evaluate`)."""
    tiers = {t: v["calibration"] for t, v in ev.get("tiers", {}).items() if "calibration" in v}
    if not tiers:
        return []
    temp = ev.get("confidence_temperature", 1.0)
    lines = ["", "## Calibration of `confidence`", "",
             f"confidence = sigmoid(q_halt / T) with T = {temp:g}; ECE = expected calibration error over 10 "
             "equal-width bins against \"the answer is exactly right\" (0 = perfect), on the same held-out puzzles.",
             "", "| tier | ECE (max steps) | mean confidence | exact | ECE (Q-head halt) | mean confidence | exact |",
             "|---|---|---|---|---|---|---|"]
    for tier, c in tiers.items():
        m, q = c["max_steps"], c["q_halt"]
        lines.append(f"| {tier} | {m['ece']:.3f} | {m['mean_confidence']:.3f} | {m['accuracy']:.3f} | "
                     f"{q['ece']:.3f} | {q['mean_confidence']:.3f} | {q['accuracy']:.3f} |")
    return lines
