"""Claims of the named experiments
label_noise, feedback_budget, pessimism, ranking_efficiency, deterministic_preferences:
each sanity sweep reproduces its claim; its check fails on a table where the claim does not hold, on tables of
shuffled outcomes, and (``make faults``) on the sanity sweep of a simulator with a plausible fault."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from experiments import catalog
from tests.claims import grouped, sanity, shuffles_accepted

NAMES = ("label_noise", "feedback_budget", "pessimism", "ranking_efficiency", "deterministic_preferences")

#: What each experiment measures (the columns a shuffle permutes together across configurations).
OUTCOMES = {
    "label_noise": ["normalized_gap", "gap", "oracle_return", "rm_accuracy_in_dist", "reward_distance"],
    "feedback_budget": ["normalized_gap", "gap", "oracle_return", "gap_covered", "gap_uncovered"],
    "pessimism": ["normalized_gap", "gap", "oracle_return"],
    "ranking_efficiency": ["reward_distance", "rm_accuracy_in_dist", "normalized_gap"],
    "deterministic_preferences": ["kl_to_reference", "oracle_return", "proxy_return"],
}
#: Shuffles per experiment. Every check is a conjunction of one-sided tests at alpha = 0.01 with minimum effect
#: sizes, so on random outcomes it should pass far less than 1% of the time; 20 fixed shuffles catch a check that
#: passes on random outcomes 15% of the time with probability 1 - 0.85^20 = 96%, at a few ms per check.
SHUFFLES = 20


# For each experiment, a table in which its claim does not hold, made from the real sanity table.
def _break_label_noise(t):
    return t.assign(normalized_gap=-t["feedback.flip"])  # the gap now falls with epsilon


def _break_feedback_budget(t):
    return t.assign(gap_uncovered=t["gap_covered"] - 1.0)  # the gap no longer sits on uncovered prompts


def _break_pessimism(t):
    hole = t["feedback.stutter_free"].astype(str).str.lower() == "true"
    key = ["feedback.n", "reward_model.pessimism", "seed"]
    full = t[~hole].set_index(key)["normalized_gap"]
    as_full = t[key].apply(tuple, axis=1).map(full)  # without stutters in the data, as with full coverage
    return t.assign(normalized_gap=t["normalized_gap"].where(~hole, as_full.to_numpy()))


def _break_ranking_efficiency(t):
    swap = {"plackett_luce": "pairs", "pairs": "plackett_luce"}  # now the split fit looks better
    return t.assign(**{"reward_model.ranking_likelihood": t["reward_model.ranking_likelihood"].map(swap)})


def _break_deterministic_preferences(t):
    dpo = (t["agent.name"] if "agent.name" in t.columns else t["agent"]) == "dpo"
    return t.assign(kl_to_reference=t["kl_to_reference"].where(~dpo, t["kl_to_reference"] * t["beta"] ** -2))


BREAK = {name: globals()[f"_break_{name}"] for name in NAMES}


@pytest.mark.parametrize("name", grouped(NAMES))
def test_sanity_sweep_reproduces_the_claim_and_the_check_can_fail(name, tables):
    held, table = tables(name)
    assert held
    with pytest.raises(AssertionError):
        catalog.get(name).check(BREAK[name](table))


@pytest.mark.parametrize("name", grouped(NAMES))
def test_check_fails_on_shuffled_outcomes(name, tables):
    """Random outcomes: the same configurations, the outcomes of other runs."""
    _, table = tables(name)
    passed = shuffles_accepted(name, table, OUTCOMES[name], SHUFFLES)
    assert passed == [], f"{name}'s check passes on shuffled outcomes (shuffle seeds {passed})"


# ---------------------------------------------------------------------------------------------- simulator faults
@pytest.mark.fault
def test_label_noise_fails_when_flips_are_not_applied(monkeypatch, tmp_path):
    from sim.feedback.teachers import Teacher

    prefer = Teacher.prefer
    monkeypatch.setattr(Teacher, "prefer", lambda self, *a: prefer(dataclasses.replace(self, flip=0.0), *a))
    held, table = sanity("label_noise", tmp_path)
    acc = table.groupby("feedback.flip")["rm_accuracy_in_dist"].mean()
    assert acc.loc[acc.index.max()] > 0.8 and not held  # labels as clean at the largest epsilon as at 0


@pytest.mark.fault
def test_label_noise_fails_when_the_teacher_ignores_its_rationality(monkeypatch, tmp_path):
    from sim.feedback.teachers import Teacher

    monkeypatch.setattr(Teacher, "_bradley_terry", lambda self, g1, g2: 0.5 * (1 + np.sign(g1 - g2)))
    held, table = sanity("label_noise", tmp_path)
    wide = table.pivot_table(index=["feedback.flip", "seed"], columns="feedback.rationality", values="normalized_gap")
    assert np.allclose(wide.iloc[:, 0], wide.iloc[:, -1]) and not held  # every teacher is a perfect one


@pytest.mark.fault
def test_feedback_budget_fails_when_the_data_ignore_prompt_coverage(monkeypatch, tmp_path):
    import sim.proxy as proxy

    collect = proxy.collect

    def everywhere(teacher, source, covered, *a, **kw):  # labels on every prompt, whatever kappa says
        return collect(teacher, source, np.arange(teacher.world.n_prompts), *a, **kw)

    monkeypatch.setattr(proxy, "collect", everywhere)  # the pipeline collects through sim.proxy.gather
    held, table = sanity("feedback_budget", tmp_path)
    last = table[(table["feedback.n"] == table["feedback.n"].max()) & (table["feedback.prompt_coverage"] < 1)]
    assert last["gap_uncovered"].astype(float).mean() < 0.25 and not held  # the "uncovered" prompts are learned


@pytest.mark.fault
def test_feedback_budget_fails_when_the_reward_model_is_never_fitted(monkeypatch, tmp_path):
    import sim.reward_models.model as model

    monkeypatch.setattr(model, "map_fit", lambda X, data, *a, **kw: np.zeros(X.shape[1]))
    held, table = sanity("feedback_budget", tmp_path)
    assert table.groupby("seed")["normalized_gap"].nunique().max() == 1 and not held  # the same policy at every N


@pytest.mark.fault
def test_pessimism_fails_when_the_posterior_has_no_spread(monkeypatch, tmp_path):
    import sim.reward_models.model as model

    monkeypatch.setattr(model, "laplace_covariance", lambda X, *a: np.zeros((X.shape[1], X.shape[1])))
    held, table = sanity("pessimism", tmp_path)
    wide = table.pivot_table(
        index=["feedback.stutter_free", "feedback.n", "seed"], columns="reward_model.pessimism", values="normalized_gap"
    )
    assert np.allclose(wide[0.0], wide[2.0]) and not held  # the lower confidence bound is the MAP estimate


@pytest.mark.fault
def test_pessimism_fails_when_the_stutter_filter_is_not_applied(monkeypatch, tmp_path):
    import sim.proxy
    import sim.rlhf

    for module in (sim.rlhf, sim.proxy):  # wherever the pipeline binds the filter
        if hasattr(module, "stutter_free"):
            monkeypatch.setattr(module, "stutter_free", lambda world, policy: policy)
    held, table = sanity("pessimism", tmp_path)
    wide = table.pivot_table(
        index=["feedback.n", "reward_model.pessimism", "seed"], columns="feedback.stutter_free", values="normalized_gap"
    )
    assert np.allclose(wide.iloc[:, 0], wide.iloc[:, 1]) and not held  # the data cover every direction


@pytest.mark.fault
def test_ranking_efficiency_fails_when_rankings_are_never_split(monkeypatch, tmp_path):
    import sim.reward_models.model as model

    monkeypatch.setattr(model, "rankings_to_pairs", lambda data: data)  # "pairs" silently fits Plackett-Luce
    held, table = sanity("ranking_efficiency", tmp_path)
    wide = table.pivot_table(
        index=["feedback.k", "feedback.n", "seed"], columns="reward_model.ranking_likelihood", values="reward_distance"
    )
    assert np.allclose(wide["pairs"], wide["plackett_luce"]) and not held


@pytest.mark.fault
def test_deterministic_preferences_fails_when_the_teacher_ignores_its_rationality(monkeypatch, tmp_path):
    from sim.feedback.teachers import Teacher

    monkeypatch.setattr(Teacher, "_bradley_terry", lambda self, g1, g2: 0.5 * (1 + np.sign(g1 - g2)))
    held, table = sanity("deterministic_preferences", tmp_path)
    wide = table.pivot_table(
        index=["agent.name", "seed", "beta"], columns="feedback.rationality", values="kl_to_reference"
    )
    assert np.allclose(wide.iloc[:, 0], wide.iloc[:, 1]) and not held  # the "stochastic" teacher is deterministic
