"""Exact solvers against brute-force enumeration of complete sequences, to 1e-9."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.errors import ConfigError
from sim.oracle import make_oracle
from sim.reference import REFERENCES, make_reference
from sim.worlds import EnumeratedWorld, Table
from tests.brute import (
    brute_kl,
    brute_moments,
    brute_optimal,
    brute_return,
    brute_soft,
    seq_prob,
    seq_return,
    sequences,
)
from tests.conftest import SMALL_WORLDS, random_policy


def _setup(world, seed=0):
    """A random reward, policy and reference (arrays); the reference becomes ``world.ref``."""
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(world.n_states, world.n_actions))
    pi = random_policy(rng, r.shape)
    ref = random_policy(rng, r.shape)
    world.ref = Table(world, ref)
    return r, pi, ref


def expected_return(world, pi: np.ndarray, r: np.ndarray) -> float:
    """``J_r(pi)`` by the world's exact evaluation (which also reports the KL to ``world.ref``)."""
    return world.evaluate(Table(world, pi), {"r": Table(world, r)})["r"]


def kl_divergence(world, pi: np.ndarray) -> float:
    """Sequence-level ``KL(pi || world.ref)``."""
    return world.evaluate(Table(world, pi), {})["kl_to_reference"]


def _uniform_ref(world):
    world.ref = make_reference(world, "uniform")
    return world


def test_hand_computed_tiny_world():
    # 1 prompt, tokens {EOS, 1}, horizon 2: sequences <eos>, (1 <eos>), (1 1)
    m = _uniform_ref(EnumeratedWorld(1, 2, 2))
    r = np.array([[0.5, 1.0], [0.25, -2.0]])  # state 0 = empty prefix, state 1 = (1,)
    V = m.optimal_values(Table(m, r))
    Q = np.concatenate([m.q_level(Table(m, r), t, V[t + 1] if t + 1 < m.horizon else None) for t in range(m.horizon)])
    np.testing.assert_allclose(Q, [[0.5, 1.25], [0.25, -2.0]])
    np.testing.assert_allclose(np.concatenate(V), [1.25, 0.25])
    pi = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert expected_return(m, pi, r) == pytest.approx(0.5 * 0.5 + 0.5 * (1.0 + 0.5 * 0.25 + 0.5 * -2.0))
    np.testing.assert_allclose(np.concatenate(m.occupancy(Table(m, pi))), [1.0, 0.5])


def test_optimal_return_matches_brute_force(small_world):
    r, _, _ = _setup(small_world)
    V = small_world.optimal_values(Table(small_world, r))
    assert small_world.initial_dist @ np.concatenate(V) == pytest.approx(brute_optimal(small_world, r), abs=1e-9)
    assert small_world.optimal_return(Table(small_world, r)) == pytest.approx(brute_optimal(small_world, r), abs=1e-9)
    pi = small_world.table(small_world.greedy_policy(Table(small_world, r)))
    assert expected_return(small_world, pi, r) == pytest.approx(brute_optimal(small_world, r), abs=1e-9)


def test_policy_value_and_kl_match_brute_force(small_world):
    r, pi, ref = _setup(small_world, 1)
    assert expected_return(small_world, pi, r) == pytest.approx(brute_return(small_world, pi, r), abs=1e-9)
    V, _ = small_world.policy_values(Table(small_world, pi), Table(small_world, r))
    assert small_world.initial_dist @ np.concatenate(V) == pytest.approx(brute_return(small_world, pi, r), abs=1e-9)
    assert kl_divergence(small_world, pi) == pytest.approx(brute_kl(small_world, pi, ref), abs=1e-9)


def test_occupancy_is_probability_of_reaching(small_world):
    _, pi, _ = _setup(small_world, 2)
    d = np.concatenate(small_world.occupancy(Table(small_world, pi)))
    reach = np.zeros(small_world.n_states)
    for p, path in sequences(small_world):
        prob = small_world.initial_dist[p] * seq_prob(path, pi)
        for s, _a in path:
            reach[s] += prob
    np.testing.assert_allclose(d, reach, atol=1e-12)


@pytest.mark.parametrize("beta", [0.05, 0.3, 1.0, 7.0])
def test_soft_optimum_matches_sequence_level_formula(small_world, beta):
    r, _, ref = _setup(small_world, 3)
    R = Table(small_world, r)
    V = small_world.soft_values(R, beta)
    pi = small_world.table(small_world.soft_policy(R, beta))
    target = brute_soft(small_world, r, ref, beta)
    for _p, path in sequences(small_world):
        assert seq_prob(path, pi) == pytest.approx(target[tuple(path)], abs=1e-9)
    # the soft value is the regularised objective E[R] - beta KL at the optimum
    objective = expected_return(small_world, pi, r) - beta * kl_divergence(small_world, pi)
    assert small_world.initial_dist @ np.concatenate(V) == pytest.approx(objective, abs=1e-9)


def test_soft_optimum_limits_are_stable():
    m = EnumeratedWorld(2, 4, 3)
    r, _, ref = _setup(m, 4)
    opt = brute_optimal(m, r)
    pi_small = m.table(m.soft_policy(Table(m, r), 1e-6))
    assert np.all(np.isfinite(pi_small))
    assert expected_return(m, pi_small, r) == pytest.approx(opt, abs=1e-9)
    pi_big = m.table(m.soft_policy(Table(m, r), 1e6))
    assert np.all(np.isfinite(pi_big))
    assert np.abs(pi_big - ref).max() < 1e-5
    assert expected_return(m, pi_big, r) == pytest.approx(expected_return(m, ref, r), abs=1e-5)


@pytest.mark.parametrize("beta", [0.0, -1.0, float("inf"), float("nan")])
def test_soft_optimum_rejects_bad_beta(beta):
    m = EnumeratedWorld(1, 3, 2)
    m.ref = Table(m, np.full((m.n_states, 3), 1 / 3))
    with pytest.raises(ConfigError, match="agent.beta"):
        m.soft_values(Table(m, np.zeros((m.n_states, 3))), beta)
    with pytest.raises(ConfigError, match="agent.beta"):
        m.soft_policy(Table(m, np.zeros((m.n_states, 3))), beta)


def test_kl_zero_only_at_reference():
    m = EnumeratedWorld(2, 3, 3)
    rng = np.random.default_rng(5)
    ref = random_policy(rng, (m.n_states, 3))
    m.ref = Table(m, ref)
    assert kl_divergence(m, ref) == 0.0
    other = ref.copy()
    other[0] = [1.0, 0.0, 0.0]
    assert kl_divergence(m, other) > 0
    # KL ignores unvisited states: changing a state the policy never reaches changes nothing
    pi = m.table(m.greedy_policy(Table(m, rng.normal(size=(m.n_states, 3))))).copy()
    assert np.all(pi.max(axis=1) == 1.0)  # deterministic
    d = np.concatenate(m.occupancy(Table(m, pi)))
    unvisited = np.flatnonzero(d == 0)[0]
    pi2 = pi.copy()
    pi2[unvisited] = [0.2, 0.3, 0.5]
    assert kl_divergence(m, pi2) == kl_divergence(m, pi)


def test_kl_infinite_outside_support():
    m = EnumeratedWorld(1, 3, 2)
    m.ref = Table(m, np.tile([0.5, 0.5, 0.0], (m.n_states, 1)))
    pi = np.tile([0.0, 0.0, 1.0], (m.n_states, 1))
    assert kl_divergence(m, pi) == np.inf


@pytest.mark.parametrize("kind", REFERENCES)
def test_reference_policies_are_distributions_with_full_support(kind):
    m = EnumeratedWorld(2, 4, 4)
    ref = m.table(make_reference(m, kind, np.random.default_rng(0)))
    assert ref.shape == (m.n_states, m.n_actions)
    np.testing.assert_allclose(ref.sum(axis=1), 1.0)
    assert np.all(ref > 0)


def test_eos_hazard_rises_with_depth():
    m = EnumeratedWorld(1, 4, 5)
    ref = m.table(make_reference(m, "eos_hazard"))
    p = [ref[m.level(t)[0], 0] for t in range(5)]
    assert np.all(np.diff(p) > 0)
    with pytest.raises(ConfigError, match="env.eos"):
        make_reference(EnumeratedWorld(1, 4, 3, eos=False), "eos_hazard")


# ------------------------------------------------ what the world interface adds
def test_return_moments_match_brute_force(small_world):
    r, pi, _ = _setup(small_world, 6)
    m1, m2 = small_world.return_moments(Table(small_world, pi), Table(small_world, r))
    b1, b2 = brute_moments(small_world, pi, r)
    assert m1 == pytest.approx(b1, abs=1e-9)
    assert m2 == pytest.approx(b2, abs=1e-9)
    assert m2 - m1 * m1 > 0  # a random policy's return has a spread


def test_prompt_values_and_per_prompt_gap_match_brute_force(small_world):
    r, pi, _ = _setup(small_world, 7)
    R, Pi = Table(small_world, r), Table(small_world, pi)
    best = np.full(small_world.n_prompts, -np.inf)
    mean = np.zeros(small_world.n_prompts)
    for p, path in sequences(small_world):
        best[p] = max(best[p], seq_return(path, r))
        mean[p] += seq_prob(path, pi) * seq_return(path, r)
    np.testing.assert_allclose(small_world.prompt_values(None, R), best, atol=1e-9)
    np.testing.assert_allclose(small_world.prompt_values(Pi, R), mean, atol=1e-9)
    gap = small_world.prompt_values(None, R) - small_world.prompt_values(Pi, R)
    assert np.all(gap >= -1e-12)


def test_sequence_returns_and_probs_match_brute_force(small_world):
    r, pi, _ = _setup(small_world, 8)
    seqs = small_world.all_sequences()
    s_end, a_end = small_world.terminal_transitions()
    by_end = {(int(s), int(a)): i for i, (s, a) in enumerate(zip(s_end, a_end, strict=True))}
    returns = small_world.sequence_returns(Table(small_world, r), seqs)
    probs = small_world.sequence_probs(Table(small_world, pi))
    log_probs = small_world.sequence_log_prob(Table(small_world, pi), seqs)
    form = small_world.sequence_form(Table(small_world, r))
    for p, path in sequences(small_world):
        i = by_end[path[-1]]
        assert returns[i] == pytest.approx(seq_return(path, r), abs=1e-12)
        assert form[path[-1]] == pytest.approx(seq_return(path, r), abs=1e-12)
        assert probs[i] == pytest.approx(small_world.initial_dist[p] * seq_prob(path, pi), abs=1e-15)
        assert log_probs[i] == pytest.approx(np.log(seq_prob(path, pi)), abs=1e-12)


# ---------------------------------------------------------------- properties
world_st = st.sampled_from(SMALL_WORLDS)


@given(world=world_st, seed=st.integers(0, 2**32 - 1))
def test_gap_nonnegative_for_any_policy(world, seed):
    m = _uniform_ref(EnumeratedWorld(*world))
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(m.n_states, m.n_actions))
    pi = random_policy(rng, r.shape, sharp=3.0)
    V = m.optimal_values(Table(m, r))
    assert m.initial_dist @ np.concatenate(V) - expected_return(m, pi, r) >= -1e-12


@given(world=world_st, seed=st.integers(0, 2**32 - 1))
def test_kl_nonnegative_and_zero_iff_equal(world, seed):
    m = EnumeratedWorld(*world)
    rng = np.random.default_rng(seed)
    pi = random_policy(rng, (m.n_states, m.n_actions))
    ref = random_policy(rng, (m.n_states, m.n_actions))
    m.ref = Table(m, ref)
    assert kl_divergence(m, pi) > 0
    assert kl_divergence(m, ref) == 0.0


@given(world=world_st, seed=st.integers(0, 2**32 - 1))
def test_soft_optimum_moves_monotonically_between_reference_and_optimum(world, seed):
    m = EnumeratedWorld(*world)
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(m.n_states, m.n_actions))
    ref = random_policy(rng, r.shape)
    m.ref = Table(m, ref)
    R = Table(m, r)
    opt = m.initial_dist @ np.concatenate(m.optimal_values(R))
    J_ref = expected_return(m, ref, r)
    betas = [1e4, 10.0, 1.0, 0.1, 1e-3]
    J = [expected_return(m, m.table(m.soft_policy(R, b)), r) for b in betas]
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
    m = _uniform_ref(EnumeratedWorld(*world))
    dense = m.table(make_oracle(m, kind, "dense", seed).reward)
    seq = m.table(make_oracle(m, kind, "sequence", seed).reward)
    assert np.all(seq[~m.terminal_mask()] == 0)
    pi = random_policy(np.random.default_rng(seed), dense.shape)
    assert expected_return(m, pi, seq) == pytest.approx(expected_return(m, pi, dense), abs=1e-9)
    assert m.initial_dist @ np.concatenate(m.optimal_values(Table(m, seq))) == pytest.approx(
        m.initial_dist @ np.concatenate(m.optimal_values(Table(m, dense))), abs=1e-9
    )


def test_reassigning_the_reference_is_honoured():
    m = EnumeratedWorld(2, 3, 3)
    rng = np.random.default_rng(0)
    a, b = random_policy(rng, (m.n_states, 3)), random_policy(rng, (m.n_states, 3))
    m.ref = Table(m, a)
    assert kl_divergence(m, b) == pytest.approx(brute_kl(m, b, a), abs=1e-9)
    m.ref = Table(m, b)
    assert kl_divergence(m, b) == 0.0
