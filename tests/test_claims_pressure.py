"""Claims of the named experiments
overoptimization, kl_penalty, regressional_control, scale_overoptimization, phase_transition:
each sanity sweep reproduces its claim; its check fails on a table where the claim does not hold, on tables of
shuffled outcomes, and (``make faults``) on the sanity sweep of a simulator with a plausible fault."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import catalog
from tests.claims import evaluate_the_proxy_as_the_oracle, grouped, sanity, shuffles_accepted

NAMES = ("overoptimization", "kl_penalty", "regressional_control", "scale_overoptimization", "phase_transition")

#: What each run measured along its path (the configuration columns, step and beta stay with their rows).
OUTCOMES = ["oracle_return", "proxy_return", "kl_to_reference"]

#: Shuffled tables per experiment. A check that accepted random outcomes with probability q >= 0.3 would accept at
#: least one of 10 shuffles with probability 1 - 0.7^10 = 97%; more shuffles cost seconds of `make test` each.
SHUFFLES = 10


# For each experiment, a table in which its claim does not hold, made from the real sanity table.
def _break_overoptimization(t):
    return t.assign(oracle_return=t["proxy_return"] + t["reference_return"])  # oracle = proxy: no peak


def _break_kl_penalty(t):
    beta = t["agent.beta"].astype(float)
    return t.assign(oracle_return=t["oracle_return"] + 20.0 * beta * t["kl_to_reference"])  # the penalty now helps


def _break_regressional_control(t):
    rm = (t["pipeline"] == "rlhf").to_numpy()
    follows = t["proxy_return"] - t["reference_proxy_return"] + t["reference_return"]
    return t.assign(oracle_return=np.where(rm, follows, t["oracle_return"]))  # the RM's oracle follows its proxy


def _break_scale_overoptimization(t):
    return t.assign(oracle_return=t["proxy_return"] + t["reference_return"])  # oracle = proxy: no peak


def _break_phase_transition(t):
    return t.assign(oracle_return=t["proxy_return"])  # the oracle follows the proxy: no collapse anywhere


BREAK = {name: globals()[f"_break_{name}"] for name in NAMES}


@pytest.mark.parametrize("name", grouped(NAMES))
def test_sanity_sweep_reproduces_the_claim_and_the_check_can_fail(name, tables):
    held, table = tables(name)
    assert held
    with pytest.raises(AssertionError):
        catalog.get(name).check(BREAK[name](table))


@pytest.mark.parametrize("name", grouped(NAMES))
def test_check_fails_on_shuffled_outcomes(name, tables):
    _, table = tables(name)
    passed = shuffles_accepted(name, table, OUTCOMES, SHUFFLES)
    assert passed == [], f"{name}: the check accepts shuffled outcomes (shuffle seeds {passed})"


# Simulator faults (make faults): each sanity sweep runs under a plausible fault, in this process, and its check fails.
@pytest.mark.fault
def test_overoptimization_fails_when_the_oracle_has_no_repetition_penalty(monkeypatch, tmp_path):
    import sim.oracle

    present = sim.oracle.token_presence
    monkeypatch.setattr(sim.oracle, "token_presence", lambda world: np.zeros_like(present(world)))  # term dropped
    held, table = sanity("overoptimization", tmp_path)
    # the reward model now represents the oracle (unigram quality): its optimum is a repeated best token
    assert table["optimal_return"].max() > 4.0 and not held


@pytest.mark.fault
def test_overoptimization_fails_when_the_proxy_is_evaluated_as_the_oracle(monkeypatch, tmp_path):
    evaluate_the_proxy_as_the_oracle(monkeypatch)
    held, table = sanity("overoptimization", tmp_path)
    assert np.allclose(table["oracle_return"], table["proxy_return"]) and not held


@pytest.mark.fault
def test_kl_penalty_fails_when_the_kl_term_is_dropped(monkeypatch, tmp_path):
    import sim.agents.ppo as ppo

    penalised = ppo.kl_penalised
    monkeypatch.setattr(ppo, "kl_penalised", lambda r, lp, lr, alive, beta: penalised(r, lp, lr, alive, 0.0))
    held, table = sanity("kl_penalty", tmp_path)
    final = table.sort_values("step").groupby(["agent.beta", "seed"]).tail(1)
    spread = final.groupby("agent.beta")["kl_to_reference"].mean()
    assert spread.min() > 0.5 * spread.max() and not held  # every penalty now ends where the weakest does


@pytest.mark.fault
def test_regressional_control_fails_when_the_noise_is_not_applied(monkeypatch, tmp_path):
    from sim.config import NoiseConfig

    monkeypatch.setattr(NoiseConfig, "active", property(lambda self: False))  # fixed noise never drawn
    held, table = sanity("regressional_control", tmp_path)
    direct = table[table["pipeline"] == "direct"]
    assert np.allclose(direct["oracle_return"] - direct["reference_return"],
                       direct["proxy_return"] - direct["reference_proxy_return"]) and not held  # fmt: skip


@pytest.mark.fault
def test_regressional_control_fails_when_the_reward_model_is_the_oracle(monkeypatch, tmp_path):
    import sim.proxy
    import sim.rlhf

    # the rlhf pipeline's reward-model fit (sim.rlhf calls sim.proxy.fit), and its teacher (made in sim.proxy)
    name = "fit"
    fit = sim.rlhf.fit

    def oracle_model(*args, **kwargs):  # the proxy ignored: the "reward model" is the teacher's view
        rm = fit(*args, **kwargs)
        rm.reward = oracle_model.perceived
        return rm

    make_teacher = sim.proxy.make_teacher

    def teacher(world, perceived, *args, **kwargs):
        oracle_model.perceived = perceived
        return make_teacher(world, perceived, *args, **kwargs)

    monkeypatch.setattr(sim.proxy, "make_teacher", teacher)
    monkeypatch.setattr(sim.rlhf, name, oracle_model)
    held, table = sanity("regressional_control", tmp_path)
    rm = table[(table["pipeline"] == "rlhf") & (table["corruption.noise.sigma"].astype(float) == 0)]
    assert np.allclose(rm["oracle_return"] - rm["reference_return"],
                       rm["proxy_return"] - rm["reference_proxy_return"]) and not held  # fmt: skip


@pytest.mark.fault
def test_scale_overoptimization_fails_when_the_oracle_has_no_stutter_penalty(monkeypatch, tmp_path):
    import sim.oracle

    stutter = sim.oracle.stutter_reward
    monkeypatch.setattr(sim.oracle, "stutter_reward", lambda world, weight: stutter(world, 0.0))  # term dropped
    held, table = sanity("scale_overoptimization", tmp_path)
    last = table.sort_values("step").groupby(["feedback.n", "seed"]).tail(1)
    assert (last["oracle_return"] > last["reference_return"]).all() and not held  # nothing collapses


@pytest.mark.fault
def test_phase_transition_fails_when_the_exploit_is_not_planted(monkeypatch, tmp_path):
    import sim.corruption.misspec as misspec

    monkeypatch.setattr(misspec, "add_exploit", lambda world, proxy, oracle, margin, length=None: proxy)
    held, table = sanity("phase_transition", tmp_path)
    assert np.allclose(table["oracle_return"], table["proxy_return"]) and not held  # proxy = oracle


@pytest.mark.fault
def test_phase_transition_fails_when_the_kl_term_is_dropped(monkeypatch, tmp_path):
    from sim.worlds.base import World

    greedy = World.greedy_policy
    monkeypatch.setattr(World, "soft_policy", lambda self, reward, beta, evaluate=None: greedy(self, reward))  # no beta
    held, table = sanity("phase_transition", tmp_path)
    assert (table.groupby("seed")["kl_to_reference"].nunique() <= 3).all() and not held  # no path: one policy
