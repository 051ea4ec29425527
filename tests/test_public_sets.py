"""The public evaluation set (training/public_sets.py) and how cards and /v1/models report it. Offline:
archives are built here; the real pyeda sdist is only fetched by `recursolve-train public-sudoku`."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from app.api.service import held_out_accuracy, public_accuracy
from puzzles.sudoku import generate
from training.public_sets import TOP95, attach_to_card, fetch_sdist, load_public_set, make_public_sudoku

ROOT = Path(__file__).resolve().parents[1]


def _archive(tmp_path: Path, puzzles: list[str], solutions: list[str]):
    """A source archive laid out like pyeda's in a fresh cache folder, and a spec pinned to its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, lines in ((TOP95.puzzles, puzzles), (TOP95.solutions, solutions)):
            data = "\r\n".join(lines).encode() + b"\r\n"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    cache = tmp_path / f"cache{len(list(tmp_path.glob('cache*')))}"
    cache.mkdir()
    (cache / TOP95.sdist).write_bytes(buf.getvalue())
    return replace(TOP95, sha256=hashlib.sha256(buf.getvalue()).hexdigest()), cache


def _pair(seed: int) -> tuple[str, str]:
    p = generate(seed, "hard")
    return "".join(str(d) if d else "." for d in p.givens), "".join(map(str, p.solution))


def test_set_is_read_checked_and_written_in_the_official_layout(tmp_path: Path) -> None:
    pairs = [_pair(s) for s in (1, 2, 3)]
    spec, cache = _archive(tmp_path, [p for p, _ in pairs], [s for _, s in pairs])
    givens, solutions = load_public_set(spec, cache)
    assert givens.shape == solutions.shape == (3, 81)
    assert (givens[0] > 0).sum() == 81 - pairs[0][0].count(".") and "".join(map(str, solutions[2])) == pairs[2][1]
    info = make_public_sudoku(tmp_path / "out", cache, spec)
    assert info["count"] == 3 and info["package"] == "pyeda==0.29.0"
    assert (tmp_path / "out" / "heldout" / "top95" / "test" / "dataset.json").exists()
    assert json.loads((tmp_path / "out" / "heldout" / "tiers.json").read_text())["tiers"] == ["top95"]


def test_a_wrong_solution_or_another_archive_is_refused(tmp_path: Path) -> None:
    (p1, s1), (_, s2) = _pair(1), _pair(2)
    spec, cache = _archive(tmp_path, [p1], [s2])
    with pytest.raises(ValueError, match="puzzle 1: the shipped solution is not the unique solution"):
        load_public_set(spec, cache)
    with pytest.raises(ValueError, match="is not the pinned"):
        fetch_sdist(replace(spec, sha256="0" * 64), cache)
    spec, cache = _archive(tmp_path, [p1[:80]], [s1])
    with pytest.raises(ValueError, match="line 1: expected 81 cells, got 80"):
        load_public_set(spec, cache)


def test_shipped_card_reports_public_figures_apart_from_its_held_out_tiers(tmp_path: Path) -> None:
    card = json.loads((ROOT / "weights" / "trm-mlp-sudoku" / "card.json").read_text())
    assert set(held_out_accuracy(card)) == {"easy", "medium", "hard", "extreme"}
    pub = public_accuracy(card)
    assert set(pub) == {"top95"} and pub["top95"]["package"] == "pyeda==0.29.0" and pub["top95"]["n"] == 95
    assert 0 <= pub["top95"]["exact_max_steps"] <= pub["top95"]["exact_ptrm_k16"] <= 1
    assert public_accuracy({"evaluation": {}}) is None


def test_attach_replaces_the_readme_section_instead_of_adding_one(tmp_path: Path) -> None:
    model = tmp_path / "m"
    shutil.copytree(ROOT / "weights" / "trm-mlp-sudoku", model)
    card = json.loads((model / "card.json").read_text())
    ev = {"version": card["version"], "device": "cpu", "threads": 1,
          "tiers": {"top95": card["public_evaluation"]["tiers"]["top95"]}}
    (tmp_path / "eval.json").write_text(json.dumps(ev))
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    (heldout / "tiers.json").write_text(json.dumps({"tiers": ["top95"], "info": card["public_evaluation"]["sets"]}))
    for _ in range(2):
        attach_to_card(model, tmp_path / "eval.json", heldout)
    readme = (model / "README.md").read_text()
    assert readme.count("## Public expert puzzles") == 1 and readme.startswith("# trm-mlp-sudoku")
    ev["version"] = "other"
    (tmp_path / "eval.json").write_text(json.dumps(ev))
    with pytest.raises(ValueError, match="evaluated version other"):
        attach_to_card(model, tmp_path / "eval.json", heldout)
