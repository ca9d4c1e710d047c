"""Claims of the named experiments
misspecification, goodhart_prevalence, reward_sparsity, tabular_vs_linear, rlhf_vs_rlfree:
each sanity sweep reproduces its claim; its check fails on tables where the claim does not hold, on tables of
shuffled outcomes, and (``make faults``) on the sanity sweep of a simulator with a plausible fault."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import catalog
from tests.claims import evaluate_the_proxy_as_the_oracle, grouped, sanity, shuffles_accepted

NAMES = ("misspecification", "goodhart_prevalence", "reward_sparsity", "tabular_vs_linear", "rlhf_vs_rlfree")

#: What each run measured (configuration columns, seeds and curve steps stay with their rows). The world's own
#: constants (optimal and reference returns) stay too: shuffling them would only rescale the outcomes.
CURVE_OUTCOMES = ["oracle_return", "proxy_return", "kl_to_reference"]
OUTCOMES = {
    "misspecification": ["gap", "normalized_gap", "oracle_return", "proxy_return", "kl_to_reference"],
    "goodhart_prevalence": CURVE_OUTCOMES,
    "reward_sparsity": CURVE_OUTCOMES,
    "tabular_vs_linear": CURVE_OUTCOMES,
    "rlhf_vs_rlfree": CURVE_OUTCOMES,
}

#: Shuffled tables per experiment. Each check needs two to four tests at p < 0.01 at once, so a table of random
#: outcomes passes with probability well below 1%; a check that accepted random outcomes with probability q >= 0.3
#: would accept at least one of 10 shuffles with probability 1 - 0.7^10 = 97%. More shuffles cost seconds each.
SHUFFLES = 10


def _span(t):
    return t["optimal_return"] - t["reference_return"]


# For each experiment, tables in which (one part of) its claim does not hold, made from the real sanity table.
def _misspecification_flat_angle(t):
    from experiments.catalog.misspecification import settings

    kind = settings(t)["kind"]
    base = t["normalized_gap"].where(kind == "angle").groupby(t["seed"]).transform("mean")
    return t.assign(normalized_gap=t["normalized_gap"].where(kind != "angle", base))  # the same gap at every angle


def _misspecification_free_omission(t):
    from experiments.catalog.misspecification import settings

    return t.assign(normalized_gap=t["normalized_gap"].where(settings(t)["kind"] != "omit", 0.0))


def _misspecification_free_length_bias(t):
    from experiments.catalog.misspecification import settings

    return t.assign(normalized_gap=t["normalized_gap"].where(settings(t)["kind"] != "bias", 0.0))


def _goodhart_prevalence_oracle_follows_proxy(t):
    return t.assign(oracle_return=t["proxy_return"])  # no drop anywhere


def _reward_sparsity_modes_swapped(t):
    swap = {"none": "terminal", "terminal": "none"}
    return t.assign(**{"corruption.sparsity.mode": t["corruption.sparsity.mode"].map(swap)})


def _reward_sparsity_reinforce_pays(t):
    hit = ((t["agent.name"] == "policy_gradient") & (t["corruption.sparsity.mode"] == "terminal")).to_numpy()
    return t.assign(oracle_return=t["oracle_return"] - 0.2 * _span(t) * hit)  # REINFORCE slowed by 0.2 throughout


def _tabular_vs_linear_learners_swapped(t):
    swap = {"q_learning": "linear_q", "linear_q": "q_learning"}
    return t.assign(**{"agent.name": t["agent.name"].map(swap)})


def _tabular_vs_linear_no_mismatch(t):
    lin = t[t["oracle.kind"] == "linear"]
    return pd.concat([lin, lin.assign(**{"oracle.kind": "nonlinear"})])  # the nonlinear oracle is the linear one


def _rlhf_vs_rlfree_dpo_as_good(t):
    few = t["feedback.n"] == t["feedback.n"].min()
    dpo = (t["agent.name"] == "dpo") & few
    return t.assign(oracle_return=t["oracle_return"] + 0.3 * _span(t) * dpo)  # DPO now ahead with few labels


def _rlhf_vs_rlfree_not_equivalent(t):
    many = (t["feedback.n"] == t["feedback.n"].max()) & (t["agent.name"] == "dpo")
    return t.assign(oracle_return=t["oracle_return"] + 0.2 * _span(t) * many)  # DPO far ahead with many labels


BREAKS = {
    name: [f for key, f in sorted(globals().items()) if key.startswith(f"_{name}_") and callable(f)] for name in NAMES
}


@pytest.mark.parametrize("name", grouped(NAMES))
def test_sanity_sweep_reproduces_the_claim_and_the_check_can_fail(name, tables):
    held, table = tables(name)
    assert held
    assert BREAKS[name]
    for broken in BREAKS[name]:
        with pytest.raises(AssertionError):
            catalog.get(name).check(broken(table))


@pytest.mark.parametrize("name", grouped(NAMES))
def test_check_fails_on_shuffled_outcomes(name, tables):
    _, table = tables(name)
    passed = shuffles_accepted(name, table, OUTCOMES[name], SHUFFLES)
    assert passed == [], f"{name}: the check accepts shuffled outcomes (shuffle seeds {passed})"


# Simulator faults (make faults): each sanity sweep runs under a plausible fault, in this process, and its check fails.
@pytest.mark.fault
def test_misspecification_fails_when_the_misweight_angle_is_ignored(monkeypatch, tmp_path):
    import sim.corruption.misspec as misspec
    from experiments.catalog.misspecification import settings

    monkeypatch.setattr(misspec, "misweight", lambda theta, alpha, rng: theta)  # the proxy keeps theta*
    held, table = sanity("misspecification", tmp_path)
    assert (table["gap"][settings(table)["kind"] == "angle"] == 0).all() and not held


@pytest.mark.fault
def test_misspecification_fails_when_the_length_bias_is_not_applied(monkeypatch, tmp_path):
    import sim.corruption.misspec as misspec
    from experiments.catalog.misspecification import settings

    per_token = misspec.per_token
    monkeypatch.setattr(misspec, "per_token", lambda world, step: per_token(world, 0.0 * step))  # lambda lost
    held, table = sanity("misspecification", tmp_path)
    assert (table["gap"][settings(table)["kind"] == "bias"] == 0).all() and not held


@pytest.mark.fault
def test_goodhart_prevalence_fails_when_the_proxy_is_evaluated_as_the_oracle(monkeypatch, tmp_path):
    evaluate_the_proxy_as_the_oracle(monkeypatch)
    held, table = sanity("goodhart_prevalence", tmp_path)
    assert np.allclose(table["oracle_return"], table["proxy_return"]) and not held


@pytest.mark.fault
def test_reward_sparsity_fails_when_the_sparsity_is_ignored(monkeypatch, tmp_path):
    import dataclasses

    import sim.build
    from sim.config import SparsityConfig

    build_channel = sim.build.build_channel

    def dense_channel(world, oracle, cfg=None, seed=0):  # the sparsity setting never reaches the channel
        return build_channel(world, oracle, dataclasses.replace(cfg, sparsity=SparsityConfig()), seed)

    monkeypatch.setattr(sim.build, "build_channel", dense_channel)
    held, table = sanity("reward_sparsity", tmp_path)
    q = table[table["agent.name"] == "q_learning"].sort_values(["env.horizon", "seed", "step"])
    dense, terminal = (q[q["corruption.sparsity.mode"] == m]["oracle_return"].to_numpy() for m in ("none", "terminal"))
    assert np.array_equal(dense, terminal) and not held  # the two schedules are the same runs


@pytest.mark.fault
def test_tabular_vs_linear_fails_when_the_nonlinear_terms_are_dropped(monkeypatch, tmp_path):
    import sim.build

    make_oracle = sim.build.make_oracle

    def linear_only(world, kind="linear", *args, **kwargs):  # the nonlinear family's extra terms never added
        return make_oracle(world, "linear" if kind == "nonlinear" else kind, *args, **kwargs)

    monkeypatch.setattr(sim.build, "make_oracle", linear_only)
    held, table = sanity("tabular_vs_linear", tmp_path)
    key = ["agent.name", "seed", "step"]
    lin, non = (table[table["oracle.kind"] == k].sort_values(key)["optimal_return"] for k in ("linear", "nonlinear"))
    assert np.allclose(lin.to_numpy(), non.to_numpy()) and not held  # the same oracle under both names


@pytest.mark.fault
def test_rlhf_vs_rlfree_fails_when_the_reward_model_prior_is_dropped(monkeypatch, tmp_path):
    from sim.reward_models import fit

    fit_bt = fit.fit_bt

    def no_prior(Z, y, prior_scale=1.0, *args, **kwargs):  # the Gaussian prior lost: (nearly) the MLE
        return fit_bt(Z, y, 1e4, *args, **kwargs)

    monkeypatch.setattr(fit, "fit_bt", no_prior)
    held, table = sanity("rlhf_vs_rlfree", tmp_path)
    from experiments.catalog.rlhf_vs_rlfree import statistics

    s = statistics(table)
    assert s["p_few"] > 0.01 and not held  # RLHF's edge over DPO with few labels is gone
