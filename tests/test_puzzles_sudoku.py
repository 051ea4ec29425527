"""Sudoku codec, solver, generator and augmentation: properties that must hold for any puzzle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from puzzles import get_codec
from puzzles.sudoku import (
    TIER_SPECS,
    SudokuAnswer,
    apply_maps,
    augment_batch,
    augment_maps,
    generate,
    generate_batch,
    invert_maps,
    solve,
    tier_of,
)

CODEC = get_codec("sudoku")
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@pytest.fixture(scope="module")
def easy_pool() -> list:
    return [generate(seed, "easy") for seed in range(20)]


@FAST
@given(seed=seeds, tier=st.sampled_from(["easy", "medium"]))
def test_generated_puzzle_has_exactly_one_solution_and_its_tier(seed: int, tier: str) -> None:
    p = generate(seed, tier)
    res = solve(p, limit=2)
    assert res.count == 1
    assert res.solutions[0] == p.solution
    spec = TIER_SPECS[tier]
    assert spec.min_givens <= p.num_givens <= spec.max_givens
    assert tier_of(p.num_givens, res.guesses) == tier


@pytest.mark.parametrize("tier", ["hard", "extreme"])
def test_hard_tiers_need_search_and_are_unique(tier: str) -> None:
    for seed in range(2):
        p = generate(seed, tier)
        res = solve(p, limit=2)
        assert res.count == 1 and res.guesses == p.guesses
        assert tier_of(p.num_givens, res.guesses) == tier


def test_generation_is_seeded() -> None:
    assert generate(7, "medium").givens == generate(7, "medium").givens
    assert generate(7, "medium").givens != generate(8, "medium").givens


@FAST
@given(seed=seeds)
def test_solver_output_verifies(seed: int) -> None:
    p = generate(seed, "medium")
    blanked = CODEC.parse(CODEC.canonical(p))
    res = solve(blanked, limit=1)
    assert CODEC.verify(blanked, SudokuAnswer(res.solutions[0])).valid


def test_solver_counts_multiple_solutions_and_contradictions() -> None:
    assert solve("." * 81, limit=5).count == 5
    p = generate(3, "easy")
    assert p.solution is not None
    # one given changed to a digit that breaks the unique solution -> no solution (or contradiction)
    bad = list(p.solution)
    bad[0], bad[1] = bad[1], bad[0]
    assert solve(bad, limit=2).count == 0 or solve(bad, limit=2).solutions[0] != p.solution


@FAST
@given(seed=seeds, form=st.sampled_from(["string", "rows", "grid", "dict"]))
def test_encode_decode_round_trip_in_callers_form(seed: int, form: str) -> None:
    p = generate(seed % 20, "easy")
    text = CODEC.canonical(p)
    payload = {
        "string": text.replace(".", "0"),
        "rows": [text[r * 9:(r + 1) * 9] for r in range(9)],
        "grid": p.grid.tolist(),
        "dict": {"grid": text},
    }[form]
    q = CODEC.parse(payload)
    assert q.givens == p.givens
    tokens = CODEC.encode(q, 81)
    assert tokens.dtype == np.int32 and tokens.min() >= 1 and tokens.max() <= 10
    assert CODEC.decode(tokens, q).cells == q.givens
    answer = CODEC.decode(CODEC.encode_label(p, 81), q)
    assert CODEC.verify(q, answer).valid
    out = CODEC.answer_payload(answer, q)
    assert CODEC.parse(out).givens == p.solution  # the answer parses back in the caller's own form
    assert type(out) is type(payload)


def test_separators_and_blanks_are_accepted(easy_pool: list) -> None:
    p = easy_pool[0]
    rendered = CODEC.render(p)
    assert CODEC.parse(rendered).givens == p.givens
    assert CODEC.parse(CODEC.canonical(p).replace(".", "_")).givens == p.givens


def test_verify_reports_each_kind_of_problem(easy_pool: list) -> None:
    p = easy_pool[1]
    sol = list(p.solution)
    given_cell = next(i for i, v in enumerate(p.givens) if v)
    sol[given_cell] = sol[given_cell] % 9 + 1
    reasons = CODEC.verify(p, SudokuAnswer(tuple(sol))).reasons
    assert any("but the given is" in r for r in reasons)
    assert any("appears twice in row" in r for r in reasons)
    assert any("appears twice in column" in r for r in reasons)
    assert any("appears twice in box" in r for r in reasons)
    empty = CODEC.verify(p, SudokuAnswer(p.givens)).reasons
    assert any(r.endswith("is empty") for r in empty)


@FAST
@given(seed=seeds)
def test_augment_keeps_validity_and_inverts_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = generate(seed % 20, "easy")
    digit_map, index_map = augment_maps(rng)
    g = apply_maps(np.array(p.givens), digit_map, index_map)
    s = apply_maps(np.array(p.solution), digit_map, index_map)
    q = CODEC.parse(g.tolist())
    assert CODEC.verify(q, s.tolist()).valid
    inv_d, inv_i = invert_maps(digit_map, index_map)
    assert tuple(inv_d[g[inv_i]]) == p.givens


def test_augment_batch_rows_are_valid_and_distinct(easy_pool: list) -> None:
    g = np.array([p.givens for p in easy_pool])
    s = np.array([p.solution for p in easy_pool])
    ag, as_ = augment_batch(g, s, np.random.default_rng(0))
    assert ag.shape == (20, 81)
    for i in range(20):
        assert CODEC.verify(CODEC.parse(ag[i].tolist()), as_[i].tolist()).valid
        assert int((ag[i] > 0).sum()) == easy_pool[i].num_givens
    assert len({tuple(r) for r in ag}) == 20


def test_generate_batch_feeds_the_dataset_builder(tmp_path) -> None:
    from puzzles.dataset import build_sudoku_dataset, read_dataset

    g, s = generate_batch(11, "easy", 6)
    assert g.shape == s.shape == (6, 81)
    assert np.array_equal(generate_batch(11, "easy", 6)[0], g)
    for i in range(6):
        assert solve(g[i].tolist()).count == 1
    build_sudoku_dataset(tmp_path, (g, s), (g[:2], s[:2]), num_aug=2, seed=0)
    assert read_dataset(tmp_path, "train").num_examples == 18


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.", min_size=81, max_size=81))
def test_the_plain_81_character_fast_path_reads_what_the_text_path_reads(text: str) -> None:
    from puzzles.sudoku import _from_text, parse_cells

    assert parse_cells(text) == (*_from_text(text)[:2], False, None)
    assert parse_cells({"grid": text})[:3] == (_from_text(text)[0], "string", True)


def _first_clash_by_units(cells: list[int]) -> str | None:
    """The plain check the mask pass stands in front of: walk the units in order, name the first clash."""
    from puzzles.sudoku import _UNIT_NAMES, UNITS

    for u, unit in enumerate(UNITS):
        seen: dict[int, int] = {}
        for cell in unit:
            v = cells[cell]
            if v and v in seen:
                return f"digit {v} appears twice in {_UNIT_NAMES[u]}"
            if v:
                seen[v] = cell
    return None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=81, max_size=81), st.integers(0, 60))
def test_contradictory_givens_are_found_and_named_as_by_walking_the_units(cells: list[int], blanks: int) -> None:
    from puzzles.base import PuzzleError
    from puzzles.sudoku import _check_givens

    for i in range(blanks):  # sparser grids too, which often have no clash at all
        cells[(i * 37) % 81] = 0
    want = _first_clash_by_units(cells)
    try:
        _check_givens(cells)
        got = None
    except PuzzleError as err:
        got = str(err)
    assert (got is None) == (want is None) and (want is None or got.startswith(want)), (got, want)


def test_render_draws_the_grid_with_box_lines() -> None:
    codec = get_codec("sudoku")
    puzzle = codec.parse("53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79")
    assert codec.render(puzzle) == "\n".join([
        "5 3 . | . 7 . | . . .",
        "6 . . | 1 9 5 | . . .",
        ". 9 8 | . . . | . 6 .",
        "------+-------+------",
        "8 . . | . 6 . | . . 3",
        "4 . . | 8 . 3 | . . 1",
        "7 . . | . 2 . | . . 6",
        "------+-------+------",
        ". 6 . | . . . | 2 8 .",
        ". . . | 4 1 9 | . . 5",
        ". . . | . 8 . | . 7 9",
    ])
