"""Public expert Sudoku puzzles for evaluation only (issue 12 item 6): Norvig's "top95" as PyPI ships it.

The set is the magictour top95 list (Guenter Stertenbrink) that Peter Norvig's "Solving Every Sudoku
Puzzle" uses as its hard benchmark: 95 puzzles, 17-26 givens. We never train on it. The copy we read is
the one inside the pyeda 0.29.0 source distribution (BSD-2-Clause, `pyeda/logic/test/top95.txt`, with its
solutions in `top95_solns.txt`), fetched by `pip download` and pinned by the archive's sha256, so the
figure in a card can be reproduced on any machine that reaches PyPI, with nothing vendored here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from puzzles.dataset import build_sudoku_dataset
from puzzles.sudoku import solve_digits


@dataclass(frozen=True)
class PublicSudokuSet:
    name: str
    package: str
    version: str
    sdist: str
    sha256: str
    puzzles: str  # path inside the archive
    solutions: str
    source: str


TOP95 = PublicSudokuSet(
    name="top95", package="pyeda", version="0.29.0", sdist="pyeda-0.29.0.tar.gz",
    sha256="efd4d3e548079ca059f44f9babb9bd67b332ec1762897324fcceb8da1d0f5fed",
    puzzles="pyeda-0.29.0/pyeda/logic/test/top95.txt", solutions="pyeda-0.29.0/pyeda/logic/test/top95_solns.txt",
    source="magictour top95 (G. Stertenbrink), Norvig's hard benchmark, as shipped in the pyeda 0.29.0 sdist")


def fetch_sdist(spec: PublicSudokuSet, cache: Path) -> Path:
    """The package's source archive in `cache` (downloaded by pip if absent), checked against its sha256."""
    archive = cache / spec.sdist
    if not archive.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"{spec.package}=={spec.version}", "-d", str(cache)], check=True)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != spec.sha256:
        raise ValueError(f"{archive}: sha256 {digest} is not the pinned {spec.sha256}")
    return archive


def _grids(text: str) -> np.ndarray:
    rows = [line.strip() for line in text.splitlines() if line.strip()]
    bad = [i for i, r in enumerate(rows) if len(r) != 81]
    if bad:
        raise ValueError(f"line {bad[0] + 1}: expected 81 cells, got {len(rows[bad[0]])}")
    return np.array([[0 if ch in ".0" else int(ch) for ch in r] for r in rows], dtype=np.int64)


def load_public_set(spec: PublicSudokuSet, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(givens [N, 81] with 0 blanks, solutions [N, 81]); every solution is checked to be the unique one."""
    with tarfile.open(fetch_sdist(spec, cache)) as tar:
        read = {p: tar.extractfile(p).read().decode() for p in (spec.puzzles, spec.solutions)}
    givens, solutions = _grids(read[spec.puzzles]), _grids(read[spec.solutions])
    if givens.shape != solutions.shape:
        raise ValueError(f"{len(givens)} puzzles but {len(solutions)} solutions")
    for i, (g, s) in enumerate(zip(givens, solutions, strict=True)):
        exact = solve_digits(g.tolist(), limit=2)
        if exact.count != 1 or tuple(s.tolist()) != exact.solutions[0]:
            raise ValueError(f"puzzle {i + 1}: the shipped solution is not the unique solution "
                             f"({exact.count} found)")
    return givens, solutions


def make_public_sudoku(out: Path, cache: Path, spec: PublicSudokuSet = TOP95) -> dict:
    """`out/heldout/<name>/test/` in the official layout (the `evaluate` command reads it) + tiers.json."""
    givens, solutions = load_public_set(spec, cache)
    build_sudoku_dataset(out / "heldout" / spec.name, (givens[:1], solutions[:1]), (givens, solutions))
    clues = (givens > 0).sum(1)
    info = {"count": len(givens), "source": spec.source, "package": f"{spec.package}=={spec.version}",
            "archive_sha256": spec.sha256, "path": spec.puzzles,
            "givens_min_mean_max": [int(clues.min()), round(float(clues.mean()), 1), int(clues.max())],
            "use": "evaluation only; never in any training set"}
    (out / "heldout" / "tiers.json").write_text(json.dumps({"tiers": [spec.name], "info": {spec.name: info}}, indent=2))
    return info


README_BEGIN, README_END = "<!-- public-evaluation -->", "<!-- /public-evaluation -->"


def attach_to_card(model_dir: Path, eval_json: Path, heldout: Path) -> dict:
    """Record an `evaluate` run on a public set in the model's card.json (`public_evaluation`) and README.md.

    Kept apart from the card's own held-out tiers: those rank models and back the card's claims about the
    distribution it was trained for; this one says how the model does on puzzles from elsewhere."""
    ev = json.loads(eval_json.read_text())
    sets = json.loads((heldout / "tiers.json").read_text())["info"]
    card_path = model_dir / "card.json"
    card = json.loads(card_path.read_text())
    if ev.get("version") != card.get("version"):
        raise ValueError(f"{eval_json} evaluated version {ev.get('version')}, the card is {card.get('version')}")
    card["public_evaluation"] = {"sets": {t: sets[t] for t in ev["tiers"]}, "tiers": ev["tiers"],
                                 "device": ev.get("device"), "threads": ev.get("threads"),
                                 "reproduce": _commands(model_dir, ev)}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    readme = model_dir / "README.md"
    text = readme.read_text() if readme.exists() else ""
    section = "\n".join(public_section(card["public_evaluation"]))
    if README_BEGIN in text:
        head, rest = text.split(README_BEGIN, 1)
        text = head + section + rest.split(README_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    readme.write_text(text)
    return card["public_evaluation"]


def _commands(model_dir: Path, ev: dict) -> list[str]:
    t = next(iter(ev["tiers"].values()))
    ks = ",".join(k.removeprefix("ptrm_k") for k in t if k.startswith("ptrm_k"))
    ptrm = next((v for k, v in t.items() if k.startswith("ptrm_k")), None)
    ptrm_flags = f" --ptrm-k {ks} --ptrm-n {ptrm['n']} --sigma {ptrm['sigma']}" if ptrm else " --ptrm-k ''"
    return ["recursolve-train public-sudoku --out data/public-sudoku",
            f"recursolve-train evaluate {model_dir} --heldout data/public-sudoku/heldout --n {t['n']}{ptrm_flags} "
            "--out runs/public/eval.json",
            f"recursolve-train card-public {model_dir} --eval-json runs/public/eval.json "
            "--heldout data/public-sudoku/heldout"]


def public_section(pub: dict) -> list[str]:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = [README_BEGIN, "## Public expert puzzles (evaluation only, never trained on)", ""]
    for name, info in pub["sets"].items():
        t = pub["tiers"][name]
        lo, mean, hi = info["givens_min_mean_max"]
        lines += [f"**{name}**: {info['count']} puzzles, {lo}-{hi} givens (mean {mean}); {info['source']} "
                  f"(`pip download {info['package']}`, archive sha256 `{info['archive_sha256'][:16]}...`).", "",
                  "| policy | exact | verified | mean ACT steps |", "|---|---|---|---|",
                  f"| plain, max steps | {pct(t['max_steps']['exact'])} | {pct(t['max_steps']['verified'])} | "
                  f"{t['max_steps']['mean_act_steps']:.2f} |",
                  f"| plain, Q-head halt | {pct(t['q_halt']['exact'])} | {pct(t['q_halt']['verified'])} | "
                  f"{t['q_halt']['mean_act_steps']:.2f} |"]
        for key in sorted((k for k in t if k.startswith("ptrm_k")), key=lambda k: int(k.removeprefix("ptrm_k"))):
            p = t[key]
            lines.append(f"| PTRM K={key.removeprefix('ptrm_k')} (sigma {p['sigma']}, best q_halt) | "
                         f"{pct(p['exact'])} | {pct(p['verified'])} | {p['mean_act_steps']:.2f} |")
        lines.append("")
    lines += ["```", *pub["reproduce"], "```", README_END]
    return lines
