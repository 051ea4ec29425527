"""PTRM sampling: noise injection, the selection policies and the offline reference solver."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models import ModelConfig
from models.ptrm import (
    DEFAULT_NOISE_ON,
    NOISE_TARGETS,
    SELECTION_POLICIES,
    inject_noise,
    ptrm_solve,
    select_trajectory,
)
from models_support import random_inputs, random_model

CONFIG = ModelConfig(arch="trm", task="sudoku", seq_len=81, vocab_size=11, hidden_size=32, num_heads=2,
                     H_cycles=2, L_cycles=2, L_layers=1, puzzle_emb_ndim=32, puzzle_emb_len=2,
                     num_puzzle_identifiers=2, mlp_t=True, pos_encodings="none", forward_dtype="float32",
                     halt_max_steps=4)


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine
    yield random_model(CONFIG, seed=11)
    torch.set_num_threads(threads)


def plain_run(model, inputs, ids, steps):
    with torch.inference_mode():
        x = model.embed(inputs, ids)
        z_H, z_L = model.initial_carry(inputs.shape[0])
        for _ in range(steps):
            out = model.act_step(x, z_H, z_L)
            z_H, z_L = out.z_H, out.z_L
    return out


# -- inject_noise -------------------------------------------------------------------------------

def test_defaults_documented():
    assert DEFAULT_NOISE_ON == "z_L" and NOISE_TARGETS == ("z_L", "z_H", "both")
    assert SELECTION_POLICIES == ("best_q", "vote", "verifier_first")


def test_sigma_zero_returns_inputs_and_draws_nothing():
    z_H, z_L = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    g = torch.Generator().manual_seed(1)
    state = g.get_state()
    for target in NOISE_TARGETS:
        a, b = inject_noise(z_H, z_L, 0.0, target, g)
        assert a is z_H and b is z_L
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("target", NOISE_TARGETS)
def test_noise_goes_where_asked(target: str):
    z_H, z_L = torch.zeros(2, 5, 64), torch.zeros(2, 5, 64)
    n_H, n_L = inject_noise(z_H, z_L, 0.5, target, torch.Generator().manual_seed(3))
    assert (n_H is z_H) == (target == "z_L")  # an untouched latent is the same object
    assert (n_L is z_L) == (target == "z_H")
    noisy = [t for t, name in ((n_H, "z_H"), (n_L, "z_L")) if target in (name, "both")]
    for t in noisy:
        assert abs(t.std().item() - 0.5) < 0.05 and abs(t.mean().item()) < 0.05
    if target == "both":
        assert not torch.equal(n_H, n_L)


def test_noise_is_seeded_and_dtype_independent():
    z = torch.zeros(2, 5, 8)
    a = inject_noise(z, z, 0.3, "z_L", torch.Generator().manual_seed(5))[1]
    b = inject_noise(z, z, 0.3, "z_L", torch.Generator().manual_seed(5))[1]
    c = inject_noise(z.bfloat16(), z.bfloat16(), 0.3, "z_L", torch.Generator().manual_seed(5))[1]
    assert torch.equal(a, b)
    assert c.dtype == torch.bfloat16 and torch.equal(c, a.bfloat16())
    # Adding noise to zeros and then to a carry equals adding it to the carry (the engine does the former).
    carry = torch.randn(2, 5, 8)
    direct = inject_noise(carry, carry, 0.3, "z_L", torch.Generator().manual_seed(5))[1]
    assert torch.equal(direct, carry + a)


def test_bad_noise_settings():
    z = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="noise_on"):
        inject_noise(z, z, 0.1, "x", torch.Generator())
    with pytest.raises(ValueError, match="sigma"):
        inject_noise(z, z, -1.0, "z_L", torch.Generator())
    with pytest.raises(ValueError, match="sigma"):
        inject_noise(z, z, math.nan, "z_L", torch.Generator())


# -- select_trajectory --------------------------------------------------------------------------

def test_best_q():
    assert select_trajectory("best_q", ["a", "b", "c"], [0.1, 2.0, -1.0]) == 1
    assert select_trajectory("best_q", ["a", "b", "c"], [2.0, 2.0, -1.0]) == 0  # earliest on ties


def test_vote_weights_by_sigmoid_q():
    keys = ["a", "b", "b", "c"]
    # Two so-so votes for b (2 x sigmoid(0) = 1.0) beat one confident a (sigmoid(3) = 0.95).
    assert select_trajectory("vote", keys, [3.0, 0.0, 0.1, -5.0]) == 2  # b's best-q member
    # ...but not two hopeless ones (2 x sigmoid(-4) = 0.036).
    assert select_trajectory("vote", keys, [3.0, -4.0, -4.0, -5.0]) == 0
    # Tie between answers: the earliest-seen answer wins.
    assert select_trajectory("vote", ["x", "y"], [1.0, 1.0]) == 0


def test_verifier_first():
    assert select_trajectory("verifier_first", list("abc"), [5.0, 0.0, 1.0], [False, True, True]) == 1
    assert select_trajectory("verifier_first", list("abc"), [0.0, 5.0, 1.0], [False, False, False]) == 1
    assert select_trajectory("verifier_first", list("abc"), [0.0, 5.0, 1.0], None) == 1


def test_selection_errors():
    with pytest.raises(ValueError, match="unknown selection policy"):
        select_trajectory("oracle", ["a"], [0.0])
    with pytest.raises(ValueError, match="no trajectories"):
        select_trajectory("best_q", [], [])
    with pytest.raises(ValueError, match="one entry per trajectory"):
        select_trajectory("best_q", ["a"], [0.0, 1.0])


# -- ptrm_solve ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("sigma", "noise_on", "says"), [(-1.0, "z_L", "sigma"), (math.nan, "z_L", "sigma"),
                                                         (0.0, "bogus", "noise_on")])
def test_ptrm_solve_refuses_bad_noise_settings_even_when_no_noise_would_be_drawn(model, sigma, noise_on, says):
    inputs, ids = random_inputs(CONFIG, 1)
    with pytest.raises(ValueError, match=says):
        ptrm_solve(model, inputs, ids, K=2, sigma=sigma, noise_on=noise_on, steps=1, seed=0)


def test_sigma_zero_reproduces_plain_trm_exactly(model):
    """Bit for bit against a plain run of the same batch shape (each puzzle repeated K times, as ptrm_solve lays
    out its rows): a different batch size may change a multithreaded matmul's blocking, and so the last bit."""
    inputs, ids = random_inputs(CONFIG, 2)
    k = 3
    plain = plain_run(model, inputs.repeat_interleave(k, 0), ids.repeat_interleave(k, 0), 4)
    res = ptrm_solve(model, inputs, ids, K=k, sigma=0.0, steps=4, seed=0)
    want_tokens = plain.logits.argmax(-1).numpy().reshape(2, k, -1)
    want_q = plain.q_halt.numpy().reshape(2, k)
    assert np.array_equal(res.tokens, want_tokens[:, 0])
    for j in range(k):  # every trajectory is the plain run, bit for bit
        assert np.array_equal(res.trajectory_tokens[:, j], want_tokens[:, j])
        assert np.array_equal(res.q_halt[:, j], want_q[:, j])


@pytest.mark.parametrize("noise_on", NOISE_TARGETS)
def test_noise_makes_trajectories_differ_and_seed_reproduces(model, noise_on: str):
    inputs, ids = random_inputs(CONFIG, 2)
    a = ptrm_solve(model, inputs, ids, K=4, sigma=1.0, noise_on=noise_on, steps=3, seed=123)
    b = ptrm_solve(model, inputs, ids, K=4, sigma=1.0, noise_on=noise_on, steps=3, seed=123)
    c = ptrm_solve(model, inputs, ids, K=4, sigma=1.0, noise_on=noise_on, steps=3, seed=124)
    assert len(set(a.q_halt[0].tolist())) == 4, "trajectories of one puzzle must differ"
    assert np.array_equal(a.q_halt, b.q_halt) and np.array_equal(a.trajectory_tokens, b.trajectory_tokens)
    assert a.chosen == b.chosen and np.array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.q_halt, c.q_halt)


def test_each_puzzle_has_its_own_stream(model):
    """Puzzle i of a batch gets the same trajectories as a single request with the same seed."""
    inputs, ids = random_inputs(CONFIG, 2)
    both = ptrm_solve(model, inputs, ids, K=2, sigma=0.5, steps=2, seed=[7, 9])
    alone = ptrm_solve(model, inputs[1:], ids[1:], K=2, sigma=0.5, steps=2, seed=9)
    assert np.allclose(both.q_halt[1], alone.q_halt[0], atol=1e-5)
    assert np.array_equal(both.trajectory_tokens[1], alone.trajectory_tokens[0])


def test_policies_in_ptrm_solve(model):
    inputs, ids = random_inputs(CONFIG, 1)
    kw = dict(K=5, sigma=1.0, steps=2, seed=1)
    best = ptrm_solve(model, inputs, ids, policy="best_q", **kw)
    assert best.chosen[0] == int(np.argmax(best.q_halt[0]))
    assert np.array_equal(best.tokens[0], best.trajectory_tokens[0, best.chosen[0]])

    # vote on a decoded answer: everything decodes to the same answer -> the best-q trajectory of it
    vote = ptrm_solve(model, inputs, ids, policy="vote", decode=lambda t: "same", **kw)
    assert vote.chosen == best.chosen

    # verifier_first: the verifier accepts only trajectory 3's answer
    target = best.trajectory_tokens[0, 3]
    ver = ptrm_solve(model, inputs, ids, policy="verifier_first", verify=lambda t: bool(np.array_equal(t, target)),
                     **kw)
    assert ver.valid is not None and ver.valid[0, 3]
    assert ver.chosen[0] == int(np.argmax(ver.valid[0]))  # the first valid one
    none_valid = ptrm_solve(model, inputs, ids, policy="verifier_first", verify=lambda t: False, **kw)
    assert none_valid.chosen == best.chosen  # falls back to best_q
    with pytest.raises(ValueError, match="needs a verify function"):
        ptrm_solve(model, inputs, ids, policy="verifier_first", **kw)
