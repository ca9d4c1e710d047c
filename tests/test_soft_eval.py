"""The soft optimum evaluated in the pass that solves it (``World.soft_policy(..., evaluate=...)``): the same returns
and KL as the forward evaluation of its rows, on both world kinds, whole levels or blocks; the evaluation is reused
only for the very rewards and reference it was made with; the reference's log-rows are cached only within budget."""

from __future__ import annotations

import numpy as np
import pytest

import sim.worlds.base as base
from sim.build import build_setup
from sim.config import OracleConfig
from sim.worlds import Table
from tests.test_blocks import ORACLES, WORLDS

BETAS = (1e-3, 0.3, 5.0, 1e3)


def _setup(name: str):
    setup = build_setup(WORLDS[name], ORACLES.get(name, OracleConfig()), None, 4)
    world = setup.world
    other = world.table_reward(np.random.default_rng(1).normal(size=(world.n_states, world.n_actions)))
    return world, setup.oracle.reward, other


def _forward(world, policy, rewards):
    """The forward evaluation of the policy's rows as a plain table (its KL from logarithms of the rows)."""
    return world.evaluate(Table(world, world.table(policy)), rewards)


@pytest.mark.parametrize("blocked", [False, True], ids=["whole", "blocks"])
@pytest.mark.parametrize("name", WORLDS)
def test_the_pass_evaluates_the_soft_optimum_as_the_forward_pass_does(name, blocked, monkeypatch):
    world, reward, other = _setup(name)
    if blocked:
        monkeypatch.setattr(base, "BLOCK_ENTRIES", world.n_actions * 2 + 1)  # two states per block
    rewards = {"r": reward, "o": other}
    for beta in BETAS:
        pi = world.soft_policy(reward, beta, evaluate=rewards)
        got = world.evaluate(pi, rewards)
        want = _forward(world, world.soft_policy(reward, beta), rewards)
        assert got.keys() == want.keys() == {"r", "o", "kl_to_reference"}
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-10, abs=1e-12), (beta, k)
        # the soft value is the regularised objective of the optimum: mean_p V_0 = J_r(pi*) - beta KL(pi* || ref)
        v0 = float(np.mean(world.soft_values(reward, beta)[0]))
        assert v0 == pytest.approx(got["r"] - beta * got["kl_to_reference"], rel=1e-9, abs=1e-9 * max(1.0, abs(v0)))
    # strong pressure moves far from the reference, weak pressure hardly at all
    kl_strong = world.evaluate(world.soft_policy(reward, 1e-3, evaluate=rewards), rewards)["kl_to_reference"]
    kl_weak = world.evaluate(world.soft_policy(reward, 1e3, evaluate=rewards), rewards)["kl_to_reference"]
    assert kl_strong > 0.1 and 0 <= kl_weak < 1e-4


@pytest.mark.parametrize("name", ["enumerated", "markov"])
def test_the_evaluation_is_reused_only_for_the_same_rewards_and_reference(name):
    world, reward, other = _setup(name)
    rewards = {"r": reward, "o": other}
    pi = world.soft_policy(reward, 0.3, evaluate=rewards)
    assert pi.evaluated(world.ref, rewards) == world.evaluate(pi, rewards)
    copy = {"r": reward * 1.0, "o": other}  # equal numbers, another object: evaluated afresh (forward)
    assert pi.evaluated(world.ref, copy) is None
    assert pi.evaluated(world.ref, {"r": reward}) is None
    fresh = world.evaluate(pi, copy)
    assert fresh == pytest.approx(world.evaluate(pi, rewards), rel=1e-10, abs=1e-12)
    # the states' KL is read from the pass while the reference is the one it was solved against
    assert pi.kl_to(world.ref) is not None
    assert world.soft_policy(reward, 0.3).kl_to(world.ref) is None  # solved without an evaluation: nothing kept
    old_ref = world.ref
    world.ref = Table(world, np.full((world.n_states, world.n_actions), 1.0 / world.n_actions))
    assert pi.evaluated(world.ref, rewards) is None and pi.kl_to(world.ref) is None
    uniform = world.evaluate(pi, rewards)  # against the new (uniform) reference: logs of the rows
    assert uniform["kl_to_reference"] == pytest.approx(_forward(world, pi, rewards)["kl_to_reference"], rel=1e-12)
    world.ref = old_ref


def test_a_soft_planner_path_is_evaluated_by_its_pass(monkeypatch):
    """The planner's path asks for the evaluation in the pass: no forward evaluation of its points is made."""
    from sim.agents.base import AgentContext
    from sim.agents.planners import soft_planner
    from sim.config import AgentConfig

    setup = build_setup(WORLDS["markov"], ORACLES["markov"], None, 4)
    ctx = AgentContext(world=setup.world, proxy=setup.oracle.reward, channel=None, oracle=setup.oracle,
                       rng=np.random.default_rng(0))  # fmt: skip
    calls = []
    forward = base.World.evaluate

    def counting(self, policy, rewards):
        calls.append(isinstance(policy, base.LevelPolicy) and policy.evaluated(self.ref, rewards) is not None)
        return forward(self, policy, rewards)

    monkeypatch.setattr(base.World, "evaluate", counting)
    result = soft_planner(ctx, AgentConfig(name="soft_planner", path=True, beta=0.01, checkpoints=4))
    assert len(result.curve) == 4 and calls and all(calls)
    for row, beta in zip(result.curve, np.geomspace(100.0, 0.01, 4), strict=True):
        want = _forward(setup.world, setup.world.soft_policy(setup.oracle.reward, beta), ctx.rewards)
        assert row["oracle_return"] == pytest.approx(want["oracle"], rel=1e-10)
        assert row["kl_to_reference"] == pytest.approx(want["kl_to_reference"], rel=1e-10, abs=1e-12)


def test_the_reference_log_rows_are_cached_within_the_budget(monkeypatch):
    world, _, _ = _setup("markov")
    assert world.log_ref_cached()
    first = world.log_ref(2)
    assert world.log_ref(2) is first
    np.testing.assert_array_equal(first, np.log(world.ref.level(2)))
    world.ref = world.ref  # a new reference clears the cache
    monkeypatch.setattr(base, "LOG_REF_CACHE_BYTES", 8 * world.n_states * world.n_actions - 1)
    assert not world.log_ref_cached()
    again = world.log_ref(2)
    assert world.log_ref(2) is not again
    np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize("name", ["enumerated", "markov"])
def test_the_reference_is_at_kl_zero_from_itself_and_a_copy_of_it_too(name):
    world, reward, other = _setup(name)
    rewards = {"r": reward, "o": other}
    own = world.evaluate(world.ref, rewards)
    copy = world.evaluate(Table(world, world.table(world.ref).copy()), rewards)  # not the reference object: logs
    assert own["kl_to_reference"] == 0.0 and copy["kl_to_reference"] == 0.0
    assert own == copy
