"""The maze cards' held-out tiers less the mazes a model could have seen in training, and its accuracy on them.

The trainer shows each training maze under a random one of the 8 rotations and reflections (training/data.py),
and small mazes repeat, so a held-out maze that is a rotation or reflection of a training maze was, in effect,
seen in training. make-data drops such training mazes since 2026-11-26; the shipped maze models were trained
before that, on sets that kept them. This regenerates a card's training and held-out mazes from their seeds
(the card's `data.manifest`), writes the held-out tiers without those mazes as a dataset, and evaluates the
model there (plain runs: max_steps and Q-head halting).

    .venv/bin/python -m training.unseen_heldout weights/trm-mlp-maze --out /tmp/unseen
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from puzzles import get_codec
from puzzles.dataset import build_maze_dataset
from training.evaluate import evaluate
from training.make_data import _maze_batch, maze_orbit


def unseen_heldout(model: Path, out: Path, threads: int = 1) -> dict[str, Any]:
    manifest = json.loads((model / "card.json").read_text())["data"]["manifest"]
    train_spec, codec = manifest["train"]["all"], get_codec("maze")
    held = {tier: _maze_batch(s["seed"], s["size"], s["count"], s["min_path_len"], s["max_path_len"], s["loops"])
            for tier, s in manifest["heldout"].items()}
    held_keys = {codec.canonical(p) for ps in held.values() for p in ps}  # dropped from training then already
    generated = _maze_batch(train_spec["seed"], train_spec["size"], train_spec["generated"], 1, None,
                            train_spec["loops"])
    train = {codec.canonical(p) for p in generated} - held_keys
    seen: dict[str, int] = {}
    for tier, puzzles in held.items():
        unseen = [p for p in puzzles if not any(k in train for k in maze_orbit(p))]
        seen[tier] = len(puzzles) - len(unseen)
        build_maze_dataset(out / tier, unseen[:1], unseen, seq_len=train_spec["size"] ** 2)
    (out / "tiers.json").write_text(json.dumps({"tiers": list(held)}))
    result = evaluate(model, out, n=max(s["count"] for s in manifest["heldout"].values()), ptrm_k=[],
                      threads=threads)
    return {"seen_in_training": seen, "tiers": {
        tier: {"n": r["n"], "max_steps_verified": round(r["max_steps"]["verified"], 4),
               "q_halt_verified": round(r["q_halt"]["verified"], 4)} for tier, r in result["tiers"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="a maze model folder with its card (weights/trm-mlp-maze)")
    ap.add_argument("--out", type=Path, required=True, help="where the unseen held-out tiers are written")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(json.dumps(unseen_heldout(args.model, args.out, args.threads), indent=2))


if __name__ == "__main__":
    main()
