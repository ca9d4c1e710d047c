"""Pins of sim.metrics against its formulas, with numbers that do not cancel (mutation testing, issue #18).

``gap = optimal - oracle`` (rounding within ``1e-9 max(1, |optimal|)`` clipped to 0, anything below left negative),
``normalized_gap = gap / (optimal - reference)`` (``None`` unless the span exceeds ``1e-12 max(1, |optimal|)``),
and the per-prompt-centred weighted Pearson distance ``sqrt((1 - rho) / 2)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.metrics import exact_metrics, gap_metrics, reward_distance
from sim.oracle import make_oracle
from sim.reference import make_reference
from sim.worlds import EnumeratedWorld


def test_gap_and_normalized_gap_by_hand():
    m = gap_metrics(3.0, 1.5, -1.0)  # gap 1.5, span 4 (optimal + reference would give 2)
    assert m == {
        "optimal_return": 3.0,
        "oracle_return": 1.5,
        "reference_return": -1.0,
        "gap": 1.5,
        "normalized_gap": 0.375,
    }
    m = gap_metrics(5.0, 4.0, 2.5)  # a positive reference: span 2.5
    assert m["gap"] == 1.0 and m["normalized_gap"] == pytest.approx(0.4, rel=1e-15)


def test_gap_rounding_is_clipped_but_a_real_negative_gap_is_not():
    # within 1e-9 * max(1, |optimal|) of the optimum: rounding, reported as exactly 0 (not -5e-7)
    assert gap_metrics(1000.0, 1000.0 + 5e-7, 0.0)["gap"] == 0.0
    assert gap_metrics(-1000.0, -1000.0 + 5e-7, -2000.0)["gap"] == 0.0  # |optimal| sets the tolerance
    assert gap_metrics(0.5, 0.5 + 5e-10, 0.0)["gap"] == 0.0  # the floor max(1, .) = 1 below |optimal| = 1
    # beyond it: a policy better than "optimal" is a bug to surface, returned as it is
    m = gap_metrics(1000.0, 1000.0 + 3e-6, 0.0)
    assert m["gap"] == pytest.approx(-3e-6, rel=1e-6)
    assert m["normalized_gap"] == pytest.approx(-3e-9, rel=1e-6)
    assert gap_metrics(0.5, 0.5 + 3e-9, 0.0)["gap"] == pytest.approx(-3e-9, rel=1e-6)
    assert gap_metrics(1.0, 1.75, 0.0)["gap"] == -0.75
    assert gap_metrics(0.5, 0.5 + 1.5e-9, 0.0)["gap"] == pytest.approx(-1.5e-9, rel=1e-6)  # floor 1, not 2
    assert gap_metrics(0.0, 1e-9, -1.0)["gap"] == -1e-9  # the tolerance is strict: -1e-9 is not clipped
    # just inside the tolerance on the other side: a tiny positive gap is kept as it is
    assert gap_metrics(1000.0, 1000.0 - 5e-7, 0.0)["gap"] == pytest.approx(5e-7, rel=1e-6)


def test_normalized_gap_is_none_only_without_a_span():
    assert gap_metrics(2.0, 1.0, 2.0)["normalized_gap"] is None  # optimal == reference
    assert gap_metrics(2.0, 1.0, 3.0)["normalized_gap"] is None  # reference above optimal: no span
    # the span threshold scales with max(1, |optimal|): 1e-7 is below 1e-12 * 1e6 = 1e-6 ...
    assert gap_metrics(1e6, 1e6, 1e6 - 1e-7)["normalized_gap"] is None
    # ... but 1e-11 is above 1e-12 when |optimal| < 1
    assert gap_metrics(0.25, 0.25, 0.25 - 1e-11)["normalized_gap"] == 0.0
    assert gap_metrics(0.25, 0.2, 0.25 - 0.1)["normalized_gap"] == pytest.approx(0.5, rel=1e-12)
    assert gap_metrics(0.5, 0.5, 0.5 - 1.5e-12)["normalized_gap"] == 0.0  # the floor is 1, not 2
    assert gap_metrics(0.0, 0.0, -1e-12)["normalized_gap"] is None  # strict: a span of exactly 1e-12 is none


def test_exact_metrics_are_the_world_evaluations_of_each_reward():
    world = EnumeratedWorld(2, 3, 3)
    oracle = make_oracle(world, "linear", seed=3)
    world.ref = make_reference(world, "softmax", np.random.default_rng(4))
    proxy = make_oracle(world, "linear", seed=9).reward  # a different reward: the keys cannot be swapped
    policy = world.soft_policy(proxy, 2.0)
    got = exact_metrics(world, policy, oracle.reward, proxy)
    ev = world.evaluate(policy, {"o": oracle.reward, "p": proxy})
    ref = world.evaluate(world.ref, {"o": oracle.reward, "p": proxy})
    opt = world.optimal_return(oracle.reward)
    assert ev["o"] != pytest.approx(ev["p"]) and ref["o"] != pytest.approx(ref["p"])
    expected = {
        "optimal_return": opt,
        "oracle_return": ev["o"],
        "reference_return": ref["o"],
        "gap": opt - ev["o"],
        "normalized_gap": (opt - ev["o"]) / (opt - ref["o"]),
        "proxy_return": ev["p"],
        "reference_proxy_return": ref["p"],
        "kl_to_reference": ev["kl_to_reference"],
    }
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-14), key
    assert got["kl_to_reference"] > 0.01


def _distance_by_loops(true, proxy, weights, prompt) -> float:
    """The same distance written out prompt by prompt (a reference independent of the bincount code)."""
    w = weights / weights.sum()
    x, y = true.astype(float).copy(), proxy.astype(float).copy()
    for p in np.unique(prompt):
        mine = prompt == p
        if w[mine].sum() > 0:
            x[mine] -= (w[mine] * true[mine]).sum() / w[mine].sum()
            y[mine] -= (w[mine] * proxy[mine]).sum() / w[mine].sum()
    rho = (w * x * y).sum() / np.sqrt((w * x * x).sum() * (w * y * y).sum())
    return float(np.sqrt((1 - rho) / 2))


def test_reward_distance_by_hand_with_uneven_weights():
    true = np.array([1.0, 3.0, 0.5, 2.0, -1.0, 4.0, 0.0])
    proxy = np.array([2.0, 2.5, -0.5, 3.0, 1.0, 1.5, 0.25])
    weights = np.array([0.5, 1.0, 2.0, 0.25, 1.5, 0.75, 3.0])  # not normalised
    prompt = np.array([0, 0, 1, 1, 1, 2, 2])
    want = _distance_by_loops(true, proxy, weights, prompt)
    assert 0.2 < want < 0.9
    assert reward_distance(true, proxy, weights, prompt) == pytest.approx(want, rel=1e-12)
    # without the per-prompt centring the value differs (the centring is tested, not assumed)
    assert _distance_by_loops(true, proxy, weights, np.zeros(7, dtype=int)) != pytest.approx(want, rel=1e-3)


def test_reward_distance_ignores_a_prompt_without_weight():
    true = np.array([1.0, 3.0, 0.5, 2.0, -1.0, 7.0, 5.0])
    proxy = np.array([2.0, 2.5, -0.5, 3.0, 1.0, -4.0, 9.0])
    weights = np.array([0.5, 1.0, 2.0, 0.25, 1.5, 0.0, 0.0])
    prompt = np.array([0, 0, 1, 1, 1, 2, 2])
    got = reward_distance(true, proxy, weights, prompt)
    assert np.isfinite(got)
    assert got == pytest.approx(reward_distance(true[:5], proxy[:5], weights[:5], prompt[:5]), rel=1e-12)
    assert got == pytest.approx(_distance_by_loops(true[:5], proxy[:5], weights[:5], prompt[:5]), rel=1e-12)


def test_reward_distance_constant_thresholds_scale_with_the_returns():
    true = np.array([1.0, 3.0, 0.5, 2.0])
    w = np.array([1.0, 2.0, 1.0, 0.5])
    prompt = np.array([0, 0, 1, 1])
    v = 0.7592592592592593  # the w-weighted within-prompt variance of true, by hand: 41 / 54
    assert reward_distance(true, true, w, prompt) == 0.0
    # returns equal to 1e6 + 1e-7 true are constant to rounding: variance 7.6e-15 <= 1e-24 * (1e6)^2
    flat = 1e6 + 1e-7 * true
    assert reward_distance(true, flat, w, prompt) == pytest.approx(np.sqrt(0.5), rel=1e-12)
    assert reward_distance(flat, true, w, prompt) == pytest.approx(np.sqrt(0.5), rel=1e-12)
    # 1e6 + 1e-5 true varies: variance 7.6e-11 > 1e-12, and it is perfectly correlated with true (up to rounding)
    varied = 1e6 + 1e-5 * true
    assert reward_distance(true, varied, w, prompt) < 1e-3
    assert reward_distance(varied, true, w, prompt) < 1e-3
    # below 1e-24 * max(1, |R|)^2 of variance a return vector is constant, however small every return is
    assert reward_distance(1e-13 * true, 2e-13 * true, w, prompt) == pytest.approx(np.sqrt(0.5), rel=1e-12)
    c = np.sqrt(2e-24 / v)  # variance exactly 2e-24, above the floor 1e-24 (a floor of 2 would make it constant)
    assert reward_distance(c * true, 0.3 * true, w, prompt) == pytest.approx(0.0, abs=1e-7)
    assert reward_distance(0.3 * true, c * true, w, prompt) == pytest.approx(0.0, abs=1e-7)
    # the threshold is on the normalised weights: weights in other units change nothing
    assert reward_distance(true, 1e-13 * true, 400 * w, prompt) == pytest.approx(np.sqrt(0.5), rel=1e-12)
    assert reward_distance(1e-13 * true, true, 400 * w, prompt) == pytest.approx(np.sqrt(0.5), rel=1e-12)
    # small returns are not constant: 1e-9 * true has variance ~1e-18, far above 1e-24 * max(1, .)^2 = 1e-24
    assert reward_distance(true, 1e-9 * true, w, prompt) == pytest.approx(0.0, abs=1e-7)
    assert reward_distance(1e-9 * true, -true, w, prompt) == pytest.approx(1.0, rel=1e-12)


def test_reward_distance_clips_rounding_past_perfect_correlation():
    true = np.array([1.0, 3.0, 0.5, 2.0])
    w = np.array([1.0, 2.0, 1.0, 0.5])
    prompt = np.array([0, 0, 1, 1])
    # at some of these scalings rho is computed as 1 + 2e-16 (or -1 - 2e-16): clipped, not NaN or above 1
    d = [reward_distance(true, k * true, w, prompt) for k in np.linspace(0.1, 10, 400)]
    d_neg = [reward_distance(true, -k * true, w, prompt) for k in np.linspace(0.1, 10, 400)]
    assert np.all(np.isfinite(d)) and max(d) < 1e-7
    assert max(d_neg) == 1.0 and min(d_neg) > 1 - 1e-12
