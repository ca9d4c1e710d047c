"""Pins of the tabular learners' helpers and checks (sim.agents.tabular) by hand (mutation testing, issue #18)."""

from __future__ import annotations

import numpy as np
import pytest

from sim.agents.tabular import greedy_policy
from sim.config import AgentConfig, Config
from sim.errors import ConfigError
from sim.run import check
from sim.worlds import EnumeratedWorld


def test_greedy_policy_rows_of_some_states_are_those_of_the_whole_level():
    world = EnumeratedWorld(3, 5, 3)
    Q = np.random.default_rng(0).normal(size=(world.n_states, world.n_actions))
    policy = greedy_policy(world, Q)
    assert policy.world is world
    for t in range(world.horizon):
        lo, hi = world.level(t)
        rows = policy.level(t)
        np.testing.assert_array_equal(rows.argmax(axis=1), Q[lo:hi].argmax(axis=1))
        local = np.arange(hi - lo)[::-1]  # every state of the level, last first
        np.testing.assert_array_equal(policy.rows_at(t, local), rows[local])
        np.testing.assert_array_equal(policy.rows_at(t, local).argmax(axis=1), Q[lo + local].argmax(axis=1))


def _npg(**kw) -> Config:
    return Config(agent=AgentConfig(name="policy_gradient", **kw))


def test_the_exact_natural_gradient_refuses_a_step_beyond_one_over_beta():
    with pytest.raises(ConfigError) as err:
        check(_npg(mode="exact", natural=True, lr=3.0, beta=0.5))
    assert (err.value.field, err.value.value) == ("agent.lr", 3.0)
    assert err.value.allowed == "<= 1/agent.beta = 2 for the exact natural policy gradient (it diverges beyond)"
    check(_npg(mode="exact", natural=True, lr=2.0, beta=0.5))  # lr * beta = 1 exactly is allowed
    check(_npg(mode="exact", natural=False, lr=3.0, beta=0.5))  # the plain gradient has no such bound
    check(_npg(mode="sampled", natural=True, lr=3.0, beta=0.5))  # nor has the sampled one
