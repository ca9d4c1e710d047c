"""Exact solvers against brute-force enumeration of complete sequences, to 1e-9."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.errors import ConfigError
from sim.mdp import TextMDP
from sim.oracle import make_oracle
from sim.reference import REFERENCES, make_reference
from sim.solvers import (
    backward_induction,
    expected_return,
    greedy_policy,
    kl_divergence,
    occupancy,
    optimal_policy,
    policy_values,
    soft_optimal,
)
from tests.brute import brute_kl, brute_optimal, brute_return, brute_soft, seq_prob, sequences
from tests.conftest import SMALL_WORLDS, random_policy


def _setup(mdp, seed=0):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(mdp.n_states, mdp.n_actions))
    pi = random_policy(rng, r.shape)
    ref = random_policy(rng, r.shape)
    return r, pi, ref


def test_hand_computed_tiny_world():
    # 1 prompt, tokens {EOS, 1}, horizon 2: sequences <eos>, (1 <eos>), (1 1)
    m = TextMDP(1, 2, 2)
    r = np.array([[0.5, 1.0], [0.25, -2.0]])  # state 0 = empty prefix, state 1 = (1,)
    V, Q = backward_induction(m, r)
    np.testing.assert_allclose(Q, [[0.5, 1.25], [0.25, -2.0]])
    np.testing.assert_allclose(V, [1.25, 0.25])
    pi = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert expected_return(m, pi, r) == pytest.approx(0.5 * 0.5 + 0.5 * (1.0 + 0.5 * 0.25 + 0.5 * -2.0))
    np.testing.assert_allclose(occupancy(m, pi), [1.0, 0.5])


def test_optimal_return_matches_brute_force(small_world):
    r, _, _ = _setup(small_world)
    V, _ = backward_induction(small_world, r)
    assert small_world.initial_dist @ V == pytest.approx(brute_optimal(small_world, r), abs=1e-9)
    pi = optimal_policy(small_world, r)
    assert expected_return(small_world, pi, r) == pytest.approx(brute_optimal(small_world, r), abs=1e-9)


def test_policy_value_and_kl_match_brute_force(small_world):
    r, pi, ref = _setup(small_world, 1)
    assert expected_return(small_world, pi, r) == pytest.approx(brute_return(small_world, pi, r), abs=1e-9)
    V, _ = policy_values(small_world, pi, r)
    assert small_world.initial_dist @ V == pytest.approx(brute_return(small_world, pi, r), abs=1e-9)
    assert kl_divergence(small_world, pi, ref) == pytest.approx(brute_kl(small_world, pi, ref), abs=1e-9)


def test_occupancy_is_probability_of_reaching(small_world):
    _, pi, _ = _setup(small_world, 2)
    d = occupancy(small_world, pi)
    reach = np.zeros(small_world.n_states)
    for p, path in sequences(small_world):
        prob = small_world.initial_dist[p] * seq_prob(path, pi)
        for s, _a in path:
            reach[s] += prob
    np.testing.assert_allclose(d, reach, atol=1e-12)


@pytest.mark.parametrize("beta", [0.05, 0.3, 1.0, 7.0])
def test_soft_optimum_matches_sequence_level_formula(small_world, beta):
    r, _, ref = _setup(small_world, 3)
    V, _, pi = soft_optimal(small_world, r, ref, beta)
    target = brute_soft(small_world, r, ref, beta)
    for _p, path in sequences(small_world):
        assert seq_prob(path, pi) == pytest.approx(target[tuple(path)], abs=1e-9)
    # the soft value is the regularised objective E[R] - beta KL at the optimum
    objective = expected_return(small_world, pi, r) - beta * kl_divergence(small_world, pi, ref)
    assert small_world.initial_dist @ V == pytest.approx(objective, abs=1e-9)


def test_soft_optimum_limits_are_stable():
    m = TextMDP(2, 4, 3)
    r, _, ref = _setup(m, 4)
    opt = brute_optimal(m, r)
    _, _, pi_small = soft_optimal(m, r, ref, 1e-6)
    assert np.all(np.isfinite(pi_small))
    assert expected_return(m, pi_small, r) == pytest.approx(opt, abs=1e-9)
    _, _, pi_big = soft_optimal(m, r, ref, 1e6)
    assert np.all(np.isfinite(pi_big))
    assert np.abs(pi_big - ref).max() < 1e-5
    assert expected_return(m, pi_big, r) == pytest.approx(expected_return(m, ref, r), abs=1e-5)


@pytest.mark.parametrize("beta", [0.0, -1.0, float("inf"), float("nan")])
def test_soft_optimum_rejects_bad_beta(beta):
    m = TextMDP(1, 3, 2)
    with pytest.raises(ConfigError, match="agent.beta"):
        soft_optimal(m, np.zeros((m.n_states, 3)), np.full((m.n_states, 3), 1 / 3), beta)


def test_kl_zero_only_at_reference():
    m = TextMDP(2, 3, 3)
    rng = np.random.default_rng(5)
    ref = random_policy(rng, (m.n_states, 3))
    assert kl_divergence(m, ref, ref) == 0.0
    other = ref.copy()
    other[0] = [1.0, 0.0, 0.0]
    assert kl_divergence(m, other, ref) > 0
    # KL ignores unvisited states: changing a state the policy never reaches changes nothing
    pi = greedy_policy(rng.normal(size=(m.n_states, 3)))
    d = occupancy(m, pi)
    unvisited = np.flatnonzero(d == 0)[0]
    pi2 = pi.copy()
    pi2[unvisited] = [0.2, 0.3, 0.5]
    assert kl_divergence(m, pi2, ref) == kl_divergence(m, pi, ref)


def test_kl_infinite_outside_support():
    m = TextMDP(1, 3, 2)
    ref = np.tile([0.5, 0.5, 0.0], (m.n_states, 1))
    pi = np.tile([0.0, 0.0, 1.0], (m.n_states, 1))
    assert kl_divergence(m, pi, ref) == np.inf


@pytest.mark.parametrize("kind", REFERENCES)
def test_reference_policies_are_distributions_with_full_support(kind):
    m = TextMDP(2, 4, 4)
    ref = make_reference(m, kind, np.random.default_rng(0))
    np.testing.assert_allclose(ref.sum(axis=1), 1.0)
    assert np.all(ref > 0)


def test_eos_hazard_rises_with_depth():
    m = TextMDP(1, 4, 5)
    ref = make_reference(m, "eos_hazard")
    p = [ref[m.level(t)[0], 0] for t in range(5)]
    assert np.all(np.diff(p) > 0)
    with pytest.raises(ConfigError, match="env.eos"):
        make_reference(TextMDP(1, 4, 3, eos=False), "eos_hazard")


# ---------------------------------------------------------------- properties
world_st = st.sampled_from(SMALL_WORLDS)


@given(world=world_st, seed=st.integers(0, 2**32 - 1))
def test_gap_nonnegative_for_any_policy(world, seed):
    m = TextMDP(*world)
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(m.n_states, m.n_actions))
    pi = random_policy(rng, r.shape, sharp=3.0)
    V, _ = backward_induction(m, r)
    assert m.initial_dist @ V - expected_return(m, pi, r) >= -1e-12


@given(world=world_st, seed=st.integers(0, 2**32 - 1))
def test_kl_nonnegative_and_zero_iff_equal(world, seed):
    m = TextMDP(*world)
    rng = np.random.default_rng(seed)
    pi = random_policy(rng, (m.n_states, m.n_actions))
    ref = random_policy(rng, (m.n_states, m.n_actions))
    assert kl_divergence(m, pi, ref) > 0
    assert kl_divergence(m, ref, ref) == 0.0


@given(world=world_st, seed=st.integers(0, 2**32 - 1))
def test_soft_optimum_moves_monotonically_between_reference_and_optimum(world, seed):
    m = TextMDP(*world)
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(m.n_states, m.n_actions))
    ref = random_policy(rng, r.shape)
    opt = m.initial_dist @ backward_induction(m, r)[0]
    J_ref = expected_return(m, ref, r)
    betas = [1e4, 10.0, 1.0, 0.1, 1e-3]
    J = [expected_return(m, soft_optimal(m, r, ref, b)[2], r) for b in betas]
    # J(beta) is non-increasing in beta: the return moves toward the optimum as beta -> 0
    assert np.all(np.diff(J) >= -1e-9)
    assert J[0] == pytest.approx(J_ref, abs=1e-3 * (1 + abs(J_ref)))
    assert J[-1] == pytest.approx(opt, abs=0.05 * (1 + abs(opt)))
    assert all(J_ref - 1e-9 <= j <= opt + 1e-9 for j in J)


@given(
    world=world_st,
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["linear", "nonlinear", "length", "stutter", "repetition"]),
)
def test_dense_and_sequence_forms_give_equal_returns(world, seed, kind):
    m = TextMDP(*world)
    dense = make_oracle(m, kind, "dense", seed).reward
    seq = make_oracle(m, kind, "sequence", seed).reward
    assert np.all(seq[~m.terminal_mask()] == 0)
    pi = random_policy(np.random.default_rng(seed), dense.shape)
    assert expected_return(m, pi, seq) == pytest.approx(expected_return(m, pi, dense), abs=1e-9)
    assert m.initial_dist @ backward_induction(m, seq)[0] == pytest.approx(
        m.initial_dist @ backward_induction(m, dense)[0], abs=1e-9
    )
