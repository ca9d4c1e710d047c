"""Pins of the agents by hand or by formula (mutation testing, issue #18): tabular helpers, planners, PPO's pieces,
DPO / IPO objectives and best-of-n (sim.agents.rl_free), the linear agents' helpers and checks.

Preference data have labels that do not cancel (1, 1/4, 0.6, 0.8) under a non-uniform pi_ref; losses are recomputed
from the world's own sequence log-probabilities, not from the objective's internals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import optimize
from scipy.special import expit, log_softmax

import sim.agents.linear as linear
import sim.agents.planners as planners
import sim.agents.ppo as ppo
import sim.agents.rl_free as rl_free
from sim import goodhart
from sim.agents import AgentContext, run_agent
from sim.agents.tabular import greedy_policy
from sim.build import build_setup
from sim.config import AgentConfig, Config, CorruptionConfig, EnvConfig, MisspecConfig, OracleConfig
from sim.errors import ConfigError
from sim.features import FeatureMap
from sim.feedback import FeedbackData
from sim.reference import make_reference
from sim.run import check
from sim.worlds import EnumeratedWorld, MarkovWorld, Sequences, Table


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


# --- sim.agents.planners ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drifting():
    """A tiny world whose proxy is 1 rad off the oracle: the oracle return of the soft planner's beta path rises to
    0.699 at its 4th point, then falls to 0.364 (the path's first point is at -0.898)."""
    s = build_setup(
        EnvConfig(n_prompts=2, vocab_size=4, horizon=3),
        OracleConfig(),
        CorruptionConfig(misspec=MisspecConfig(angle=1.0)),
        3,
    )
    proxy = s.channel.expected()
    return s, proxy, AgentContext(s.world, proxy, s.channel, s.oracle, np.random.default_rng(0))


def _oracle_return(s, policy) -> float:
    return s.world.evaluate(policy, {"o": s.oracle.reward})["o"]


def test_exact_planner_is_the_greedy_policy_of_the_proxy(drifting):
    s, proxy, ctx = drifting
    res = run_agent(ctx, AgentConfig(name="exact_planner"))
    np.testing.assert_array_equal(s.world.table(res.policy), s.world.table(s.world.greedy_policy(proxy)))
    assert res.curve == [] and res.extra == {}


def test_soft_planner_without_a_path_is_the_soft_optimum_at_its_beta(drifting):
    s, proxy, ctx = drifting
    res = run_agent(ctx, AgentConfig(beta=0.37))
    np.testing.assert_allclose(s.world.table(res.policy), s.world.table(s.world.soft_policy(proxy, 0.37)), rtol=1e-12)
    assert res.curve == [] and res.extra == {}


def test_soft_planner_path_reports_the_measures_of_its_whole_path(drifting):
    s, proxy, ctx = drifting
    res = run_agent(ctx, AgentConfig(beta=0.01, path=True, checkpoints=6, path_max_beta=20.0))
    betas = np.geomspace(20.0, 0.01, 6)
    want = [_oracle_return(s, s.world.soft_policy(proxy, b)) for b in betas]
    j0 = np.array([row["oracle_return"] for row in res.curve])
    np.testing.assert_allclose(j0, want, rtol=1e-10)
    np.testing.assert_allclose([row["beta"] for row in res.curve], betas, rtol=1e-12)
    assert int(j0.argmax()) == 3 and j0[0] < j0[-1] < j0[3]  # the path peaks in the middle: max, first, last differ
    best, worst = s.world.optimal_return(s.oracle.reward), goodhart.worst_return(s.world, s.oracle.reward)
    assert worst < j0.min() < j0.max() < best
    assert res.extra["path_best_oracle_return"] == pytest.approx(j0[3], rel=1e-12)
    assert res.extra["oracle_worst_return"] == pytest.approx(worst, rel=1e-12)
    assert res.extra["path_ndh"] == pytest.approx((j0[3] - j0[5]) / (best - worst), rel=1e-10)
    assert res.extra["path_ndh"] > 0.04  # (0.699 - 0.364) / (best - worst) = 0.045
    assert res.extra["reward_angle"] == pytest.approx(goodhart.reward_angle(s.world, s.oracle.reward, proxy), rel=1e-12)
    assert set(res.extra) == {"reward_angle", "path_ndh", "path_best_oracle_return", "oracle_worst_return"}
    assert "step_angle" not in res.curve[0]
    assert _oracle_return(s, res.policy) == pytest.approx(j0[-1], rel=1e-10)  # the policy at the path's end


def test_soft_planner_early_stop_takes_the_point_before_the_first_step_past_the_bound(drifting):
    s, proxy, ctx = drifting
    cfg = AgentConfig(beta=0.01, path=True, checkpoints=6, path_max_beta=20.0, early_stop_angle=0.3)
    res = run_agent(ctx, cfg)
    betas = np.geomspace(20.0, 0.01, 6)
    angles = goodhart.path_step_angles(s.world, proxy, [s.world.soft_policy(proxy, b) for b in betas])
    # the steps' angles: 0.974, 1.075, 1.382, ...; the bound pi/2 - 0.3 = 1.271 first breaks at step k = 2
    assert angles[1] < np.pi / 2 - 0.3 < angles[2]
    np.testing.assert_allclose([row["step_angle"] for row in res.curve[:-1]], angles, rtol=1e-10)
    assert np.isnan(res.curve[-1]["step_angle"])
    assert res.extra["early_stop_step"] == 3.0 and type(res.extra["early_stop_step"]) is float
    assert res.extra["early_stop_beta"] == pytest.approx(betas[2], rel=1e-12)
    assert type(res.extra["early_stop_beta"]) is float
    assert _oracle_return(s, res.policy) == pytest.approx(res.curve[2]["oracle_return"], rel=1e-10)
    assert len(res.curve) == 6  # the whole path is still recorded
    j0 = np.array([row["oracle_return"] for row in res.curve])
    assert res.extra["path_ndh"] == pytest.approx(
        (j0.max() - j0[-1]) / (s.world.optimal_return(s.oracle.reward) - res.extra["oracle_worst_return"]), rel=1e-10
    )


def test_soft_planner_measures_the_path_up_to_measure_entries(drifting, monkeypatch):
    s, proxy, ctx = drifting
    entries = s.world.n_states * s.world.n_actions
    cfg = AgentConfig(beta=0.01, path=True, checkpoints=4, path_max_beta=20.0)
    monkeypatch.setattr(planners, "MEASURE_ENTRIES", entries)
    assert "path_ndh" in run_agent(ctx, cfg).extra  # at the bound: measured
    monkeypatch.setattr(planners, "MEASURE_ENTRIES", entries - 1)
    unmeasured = run_agent(ctx, cfg)
    assert unmeasured.extra == {}  # beyond: the plain pressure path
    np.testing.assert_allclose(
        [row["oracle_return"] for row in unmeasured.curve],
        [_oracle_return(s, s.world.soft_policy(proxy, b)) for b in np.geomspace(20.0, 0.01, 4)],
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        s.world.table(unmeasured.policy), s.world.table(s.world.soft_policy(proxy, 0.01)), rtol=1e-12
    )
    # an early-stopping rule measures the path whatever its size
    stop = run_agent(ctx, AgentConfig(beta=0.01, path=True, checkpoints=4, path_max_beta=20.0, early_stop_angle=0.3))
    assert "early_stop_step" in stop.extra and "path_ndh" in stop.extra


def test_soft_planner_refuses_an_early_stop_angle_without_a_path():
    with pytest.raises(ConfigError) as err:
        check(Config(agent=AgentConfig(name="soft_planner", early_stop_angle=0.3)))
    assert (err.value.field, err.value.value) == ("agent.early_stop_angle", 0.3)
    assert err.value.allowed == "null unless agent.path=true (the rule walks the path)"
    check(Config(agent=AgentConfig(name="soft_planner", early_stop_angle=0.3, path=True)))
    check(Config(agent=AgentConfig(name="soft_planner", path=True)))


# --- sim.agents.ppo's pieces -----------------------------------------------------------------------------------------


def test_adam_steps_by_hand_with_its_default_moments():
    opt = ppo.Adam(2, lr=0.1)
    assert (opt.b1, opt.b2, opt.eps, opt.t) == (0.9, 0.999, 1e-8, 0)
    x = np.array([1.0, -2.0])
    g1, g2 = np.array([0.5, -4.0]), np.array([-1.0, 2.0])
    opt.step(x, g1)  # step 1: m_hat = g, v_hat = g^2: x -= lr g / (|g| + eps)
    np.testing.assert_allclose(x, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 4.0 / (4.0 + 1e-8)], rtol=1e-15)
    x1 = x.copy()
    opt.step(x, g2)
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1**2 + 0.001 * g2**2
    m_hat, v_hat = m / (1 - 0.9**2), v / (1 - 0.999**2)
    want = x1 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8)
    np.testing.assert_allclose(x, want, rtol=1e-13)
    np.testing.assert_allclose(opt.m, m, rtol=1e-14)
    np.testing.assert_allclose(opt.v, v, rtol=1e-14)
    assert opt.t == 2
    # its own moments and epsilon, given
    own = ppo.Adam(1, lr=1.0, b1=0.5, b2=0.75, eps=0.5)
    y = np.array([0.0])
    own.step(y, np.array([2.0]))  # m_hat = 2, v_hat = 4: y = -2 / (2 + 0.5)
    assert y[0] == pytest.approx(-0.8, rel=1e-14)
    own.step(y, np.array([1.0]))  # m = 0.5 * 1 + 0.5 = 1, v = 0.75 * 1 + 0.25 = 1; hats 1 / 0.75, 1 / 0.4375
    assert y[0] == pytest.approx(-0.8 - (1 / 0.75) / (np.sqrt(1 / 0.4375) + 0.5), rel=1e-14)


def test_value_function_indices_and_values_by_hand():
    world = EnumeratedWorld(2, 3, 3)  # H = 3, P = 2, V = 3: blocks of 3 (depth), 6 (prompt, depth), 12 (token, depth)
    vf = ppo.ValueFunction(world)
    assert vf.world is world and vf.w.shape == (3 + 6 + 12,) and not vf.w.any()
    np.testing.assert_array_equal(vf.offsets, [0, 3, 9])
    s0, s1, s2 = 1, world.encode(0, (2,)), world.encode(1, (1, 2))  # prompt 1 at depth 0; depth 1 and 2
    idx = vf.indices(np.array([s0, s1, s2]))
    # [t, 3 + p H + t, 9 + y H + t], y = V = 3 (BOS) at depth 0
    np.testing.assert_array_equal(idx, [[0, 3 + 3, 9 + 9], [1, 3 + 1, 9 + 6 + 1], [2, 3 + 3 + 2, 9 + 6 + 2]])
    vf.w[:] = np.arange(21) ** 1.5
    want_v = [vf.w[[2, 8, 17]].sum(), vf.w[[0, 6, 18]].sum()]
    np.testing.assert_allclose(vf(np.array([s2, s0])), want_v, rtol=1e-14)
    g = vf.gradient(np.array([s0, s2, s0]), np.array([0.5, -2.0, 1.5]))
    want = np.zeros(21)
    want[[0, 6, 18]] += (0.5 + 1.5) / 3
    want[[2, 8, 17]] += -2.0 / 3
    np.testing.assert_allclose(g, want, rtol=1e-14)
    assert vf.gradient(np.array([], dtype=np.int64), np.array([])).shape == (21,)  # an empty batch: no division by 0


@pytest.mark.parametrize("policy", ["tabular", "loglinear"])
def test_ppo_policy_logits_are_the_reference_plus_the_parameters(policy):
    world = EnumeratedWorld(2, 3, 3)
    world.ref = make_reference(world, "softmax", np.random.default_rng(1))
    pol = ppo.PPOPolicy(world, AgentConfig(name="ppo", policy=policy, templates=["position", "prompt"]))
    assert pol.world is world and pol.tabular == (policy == "tabular")
    assert pol.theta.shape == ((world.n_states * 3,) if policy == "tabular" else (3 * 3 + 2 * 3,))
    assert not pol.theta.any()
    pol.theta[:] = np.random.default_rng(2).normal(size=pol.theta.size)
    states = np.array([world.encode(1, (2, 1)), 0, world.encode(0, (1,)), 1])  # depths 2, 0, 1, 0
    log_ref = np.log(world.table(world.ref))[states]
    add = (pol.theta.reshape(-1, 3)[states] if policy == "tabular" else
           FeatureMap(world, ["position", "prompt"]).values(pol.theta, states))  # fmt: skip
    np.testing.assert_allclose(pol.logits(states), log_ref + add, rtol=1e-13)
    snap = pol.snapshot()
    theta = pol.theta.copy()
    pol.theta[:] = 0.0  # a snapshot is frozen
    for t in range(3):
        lo, hi = world.level(t)
        want = np.exp(np.log(world.table(world.ref))[lo:hi] + (
            theta.reshape(-1, 3)[lo:hi] if policy == "tabular"
            else FeatureMap(world, ["position", "prompt"]).values(theta, np.arange(lo, hi))))  # fmt: skip
        want /= want.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(snap.level(t), want, rtol=1e-12)
        np.testing.assert_allclose(snap.rows_at(t, np.array([hi - lo - 1, 0])), want[[-1, 0]], rtol=1e-12)
    # the score: sum_i coef_i (onehot(a_i) - pi(.|s_i)) through the parameters
    pol.theta[:] = theta
    s, a, coef = np.array([4, 0, 4]), np.array([1, 2, 0]), np.array([0.5, -1.5, 2.0])
    pi = np.exp(log_softmax(pol.logits(s), axis=1))
    weights = -pi * coef[:, None]
    weights[np.arange(3), a] += coef
    if policy == "tabular":
        want = np.zeros((world.n_states, 3))
        want[4] = weights[0] + weights[2]
        want[0] = weights[1]
        want = want.ravel()
    else:
        want = FeatureMap(world, ["position", "prompt"]).score_gradient(s, weights)
    np.testing.assert_allclose(pol.gradient(s, a, coef, pi), want, rtol=1e-12, atol=1e-15)


def test_ppo_templates_are_none_for_a_tabular_policy():
    assert ppo._templates(AgentConfig(name="ppo", policy="tabular", templates=["bigram"])) == []
    out = ppo._templates(AgentConfig(name="ppo", policy="loglinear", templates=("bigram", "unigram")))
    assert out == ["bigram", "unigram"] and type(out) is list


# --- sim.agents.rl_free ----------------------------------------------------------------------------------------------


def _pref_ctx(compressed: bool = False, labels=(1.0, 0.25, 0.6, 0.8)):
    """A tiny world's ctx (a softmax or bigram pi_ref, not uniform) with preferences whose labels do not cancel: 1,
    1/4, 0.6 and 0.8 on four pairs over two prompts (one sequence in two pairs). The last pool sequence (prompt 0,
    tokens 1, 1, ...) passes through the first state of levels 1 and 2."""
    env = EnvConfig(n_prompts=2, vocab_size=3, horizon=3, compressed=compressed,
                    reference="bigram" if compressed else "softmax")  # fmt: skip
    s = build_setup(env, OracleConfig(), None, 0)
    world = s.world
    pool = world.sample(world.ref, np.array([0, 0, 1, 1, 0, 0]), np.random.default_rng(5))
    pool.tokens[5], pool.length[5] = [1, 1, 2], 3
    if pool.ids is not None:
        pool.ids[5] = world.sequence_ids(Sequences(pool.prompt[5:], pool.tokens[5:], pool.length[5:]))[0]
    pairs = np.array([[0, 1], [2, 3], [4, 0], [5, 2]])
    data = FeedbackData("preferences", pool, pairs, np.array(labels), np.arange(2))
    return AgentContext(world, s.channel.expected(), s.channel, s.oracle, np.random.default_rng(0), data)


def _by_hand_loss(ctx, pi, loss, beta):
    """The loss from the policy's own sequence log-probabilities (the world's), not the objective's internals."""
    world, data = ctx.world, ctx.feedback
    lr = world.sequence_log_prob(pi, data.pool) - world.sequence_log_prob(world.ref, data.pool)
    h = lr[data.items[:, 0]] - lr[data.items[:, 1]]
    y = data.labels
    if loss == "ipo":
        c = 1 / (2 * beta)
        return float(np.mean(y * (h - c) ** 2 + (1 - y) * (h + c) ** 2))
    return float(-np.mean(y * np.log(expit(beta * h)) + (1 - y) * np.log(expit(-beta * h))))


@pytest.mark.parametrize("policy", ["tabular", "loglinear"])
@pytest.mark.parametrize("loss", ["dpo", "ipo"])
def test_preference_objective_is_the_loss_of_its_policy(loss, policy):
    ctx = _pref_ctx()
    cfg = AgentConfig(name=loss, beta=0.7, policy=policy, templates=["position", "bigram"])
    problem = rl_free.PreferenceObjective(ctx, cfg, loss)
    assert problem.loss == loss and problem.beta == 0.7 and problem.full
    x0 = problem.start()
    assert problem.dim == x0.size and (
        x0.size == 9 + 12 if policy == "loglinear" else x0.size == ctx.world.n_states * 3
    )
    assert problem.objective(x0)[0] == pytest.approx(_by_hand_loss(ctx, ctx.world.ref, loss, 0.7), rel=1e-12)
    x = x0 + 0.4 * np.random.default_rng(1).normal(size=x0.size)
    pi = problem.policy(x)
    f, g = problem.objective(x)
    assert f == pytest.approx(_by_hand_loss(ctx, pi, loss, 0.7), rel=1e-10)
    assert abs(f - problem.objective(x0)[0]) > 0.01
    eps = 1e-6
    for k in np.random.default_rng(2).choice(x.size, 6, replace=False):
        e = np.zeros(x.size)
        e[k] = eps
        fd = (problem.objective(x + e)[0] - problem.objective(x - e)[0]) / (2 * eps)
        assert g[k] == pytest.approx(fd, abs=1e-7)


@pytest.mark.parametrize("policy", ["tabular", "loglinear"])
@pytest.mark.parametrize("loss", ["dpo", "ipo"])
def test_preference_objective_on_the_data_states_alone_is_the_dense_one(loss, policy, monkeypatch):
    """Beyond DENSE_DPO_ENTRIES only the data's states carry parameters; the loss, its gradient and the policy (pi_ref
    elsewhere) are the dense objective's."""
    ctx = _pref_ctx()
    world = ctx.world
    cfg = AgentConfig(name=loss, beta=0.7, policy=policy, templates=["position", "bigram"])
    dense = rl_free.PreferenceObjective(ctx, cfg, loss)
    monkeypatch.setattr(rl_free, "DENSE_DPO_ENTRIES", world.n_states * world.n_actions - 1)
    sparse_ = rl_free.PreferenceObjective(ctx, cfg, loss)
    assert not sparse_.full and sparse_.rows.size < world.n_states
    rng = np.random.default_rng(3)
    if policy == "tabular":
        xs = sparse_.start() + 0.5 * rng.normal(size=sparse_.dim)
        xd = dense.start().reshape(world.n_states, -1)
        xd[sparse_.rows] = xs.reshape(sparse_.rows.size, -1)
        xd = xd.ravel()
        np.testing.assert_array_equal(sparse_.log_ref, np.log(world.table(world.ref))[sparse_.rows])
    else:
        xs = xd = rng.normal(size=dense.dim)
    fs, gs = sparse_.objective(xs)
    fd, gd = dense.objective(xd)
    assert fs == pytest.approx(fd, rel=1e-12)
    want = gd.reshape(world.n_states, -1)[sparse_.rows].ravel() if policy == "tabular" else gd
    np.testing.assert_allclose(gs, want, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(world.table(sparse_.policy(xs)), world.table(dense.policy(xd)), rtol=1e-12)
    assert sparse_.policy(xs).world is world
    # at the bound itself every state keeps its logits
    monkeypatch.setattr(rl_free, "DENSE_DPO_ENTRIES", world.n_states * world.n_actions)
    assert rl_free.PreferenceObjective(ctx, cfg, loss).full


def test_preference_objective_on_a_compressed_world_without_sequence_ids():
    ctx = _pref_ctx(compressed=True)
    assert ctx.feedback.pool.ids is None
    problem = rl_free.PreferenceObjective(ctx, AgentConfig(name="dpo", beta=0.7), "dpo")
    x = problem.start() + 0.4 * np.random.default_rng(1).normal(size=problem.dim)
    assert problem.objective(x)[0] == pytest.approx(_by_hand_loss(ctx, problem.policy(x), "dpo", 0.7), rel=1e-10)
    # without ids, sequences are told apart by prompt and tokens: entry 3 repeats an earlier sequence
    pool, items = ctx.feedback.pool, ctx.feedback.items
    used, local = rl_free._unique_sequences(pool, items)
    assert sorted(used.tolist()) == [0, 1, 2, 4, 5]
    np.testing.assert_array_equal(pool.tokens[used[local]], pool.tokens[items])
    np.testing.assert_array_equal(pool.prompt[used[local]], pool.prompt[items])


def test_unique_sequences_merge_repeats_by_id_or_by_tokens():
    world = EnumeratedWorld(2, 3, 3)
    every = world.all_sequences()
    pool = every.take(np.array([4, 9, 4, 2, 9]))  # entries 0 and 2, 1 and 4 are the same sequences
    items = np.array([[0, 1], [2, 3], [4, 0]])
    for p in (pool, Sequences(pool.prompt, pool.tokens, pool.length)):  # with and without ids
        used, local = rl_free._unique_sequences(p, items)
        assert used.size == 3 and local.shape == (3, 2)
        np.testing.assert_array_equal(world.sequence_ids(p.take(used))[local], world.sequence_ids(p)[items])


def test_preference_objective_refuses_data_that_are_not_preferences():
    ctx = _pref_ctx()
    d = ctx.feedback
    for data in (
        None,
        FeedbackData("ratings", d.pool, d.items[:, :1], d.labels, d.covered),
        d.subset(np.array([], int)),
    ):
        ctx.feedback = data
        with pytest.raises(ConfigError) as err:
            rl_free.PreferenceObjective(ctx, AgentConfig(name="ipo"), "ipo")
        assert (err.value.field, err.value.value) == ("agent.name", "ipo")
        assert err.value.allowed == "pipeline=rlhf with feedback.kind=preferences (ipo needs preferences)"


@pytest.mark.parametrize("loss", ["dpo", "ipo"])
def test_preference_optimisation_reports_its_loss_and_a_curve_ending_at_its_last_step(loss):
    ctx = _pref_ctx()
    res = run_agent(ctx, AgentConfig(name=loss, beta=0.7, steps=40, checkpoints=4))
    problem = rl_free.PreferenceObjective(ctx, AgentConfig(name=loss, beta=0.7), loss)
    assert set(res.extra) == {f"{loss}_loss"}
    assert res.extra[f"{loss}_loss"] == pytest.approx(_by_hand_loss(ctx, res.policy, loss, 0.7), rel=1e-9, abs=1e-12)
    assert res.extra[f"{loss}_loss"] < problem.objective(problem.start())[0] - 0.05
    # the same L-BFGS run by hand: its iterations, its settings (gtol 1e-9, ftol 1e-14, at most agent.steps)
    seen = []
    opt = optimize.minimize(problem.objective, problem.start(), jac=True, method="L-BFGS-B",
                            callback=lambda x: seen.append(x.copy()),
                            options={"maxiter": 40, "gtol": 1e-9, "ftol": 1e-14})  # fmt: skip
    np.testing.assert_array_equal(ctx.world.table(res.policy), ctx.world.table(problem.policy(opt.x)))
    assert res.extra[f"{loss}_loss"] == opt.fun and len(seen) > 3
    # the curve: the checkpoints round(geomspace(1, 40, 4)) = 1, 3, 12, 40 the run reached, and its last iteration
    points = [p for p in (1, 3, 12, 40) if p <= len(seen)]
    assert [row["step"] for row in res.curve] == points + ([len(seen)] if points[-1] != len(seen) else [])
    for row in res.curve[:-1]:
        want = ctx.evaluate(problem.policy(seen[row["step"] - 1]))["oracle_return"]
        assert row["oracle_return"] == pytest.approx(want, rel=1e-12)
    assert res.curve[-1]["oracle_return"] == pytest.approx(ctx.evaluate(res.policy)["oracle_return"], rel=1e-10)
    # one step: the curve still ends with the policy
    one = run_agent(ctx, AgentConfig(name=loss, beta=0.7, steps=1, checkpoints=4))
    assert [row["step"] for row in one.curve] == [1]
    # the path: one fit per beta
    path = run_agent(ctx, AgentConfig(name=loss, beta=0.7, steps=40, path=True, path_max_beta=7.0, checkpoints=3))
    np.testing.assert_allclose([row["beta"] for row in path.curve], [7.0, np.sqrt(4.9), 0.7], rtol=1e-12)
    first = run_agent(ctx, AgentConfig(name=loss, beta=7.0, steps=40, checkpoints=4)).policy
    for key in ("oracle_return", "kl_to_reference"):
        assert path.curve[0][key] == pytest.approx(ctx.evaluate(first)[key], rel=1e-9)
    assert abs(path.curve[0]["kl_to_reference"] - path.curve[-1]["kl_to_reference"]) > 1e-3, path.curve
    direct = run_agent(ctx, AgentConfig(name=loss, beta=0.7, steps=40, checkpoints=4))
    np.testing.assert_allclose(ctx.world.table(path.policy), ctx.world.table(direct.policy), rtol=1e-9, atol=1e-12)


def test_best_of_n_kl_bound_and_dpo_templates():
    assert rl_free.best_of_n_kl_bound(4) == pytest.approx(np.log(4) - 0.75, rel=1e-15)
    assert type(rl_free.best_of_n_kl_bound(1)) is float and rl_free.best_of_n_kl_bound(1) == 0.0
    assert rl_free._dpo_templates(AgentConfig(name="dpo", policy="tabular", templates=["bigram"])) == []
    out = rl_free._dpo_templates(AgentConfig(name="dpo", policy="loglinear", templates=("unigram", "prompt")))
    assert out == ["unigram", "prompt"] and type(out) is list


def test_best_of_n_distribution_by_hand_with_a_tie_and_unnormalised_weights():
    # prompt 0: returns 1, 3, 3 (a tie at the top) with weights 0.1, 0.2, 0.3 (conditional 1/6, 1/3, 1/2)
    # prompt 1: returns 2, -1 with weights 0.3, 0.1 (conditional 3/4, 1/4); the prompts' masses are 0.6 and 0.4
    prompt = np.array([0, 1, 0, 0, 1])
    R = np.array([1.0, 2.0, 3.0, 3.0, -1.0])
    ref = np.array([0.1, 0.3, 0.2, 0.3, 0.1])
    out = rl_free.best_of_n_distribution(prompt, R, ref, 2, 2)
    top = 1 - (1 / 6) ** 2  # the tie group wins unless both draws are the 1: shared 2 : 3 by pi_ref
    want = np.array(
        [(1 / 6) ** 2 * 0.6, (1 - (1 / 4) ** 2) * 0.4, top * 0.4 * 0.6, top * 0.6 * 0.6, (1 / 4) ** 2 * 0.4]
    )
    np.testing.assert_allclose(out, want, rtol=1e-13)
    # a zero-weight sequence gets nothing, even when it has the best return
    ref0 = np.array([0.1, 0.3, 0.0, 0.5, 0.1])
    with warnings.catch_warnings():  # its group's share is 0 / 0, quietly
        warnings.simplefilter("error")
        out0 = rl_free.best_of_n_distribution(prompt, np.array([1.0, 2.0, 5.0, 3.0, -1.0]), ref0, 3, 2)
    assert out0[2] == 0.0
    np.testing.assert_allclose(out0[[0, 3]], [(1 / 6) ** 3 * 0.6, (1 - (1 / 6) ** 3) * 0.6], rtol=1e-13)


# --- sim.agents.linear's helpers and checks --------------------------------------------------------------------------


def _linear_cfg(name: str, compressed: bool = False, **agent) -> Config:
    env = EnvConfig(n_prompts=2, vocab_size=5, horizon=4, compressed=compressed)
    return Config(
        env=env, oracle=OracleConfig(templates=["unigram", "position"]), agent=AgentConfig(name=name, **agent)
    )


def test_linear_dim_and_the_lspi_feature_bound(monkeypatch):
    cfg = _linear_cfg("lspi", templates=["position", "bigram", "prompt"])
    assert linear._dim(cfg) == 4 * 5 + 6 * 5 + 2 * 5  # 60
    assert linear._templates(cfg.agent) == ["position", "bigram", "prompt"]
    monkeypatch.setattr(linear, "MAX_DENSE_FEATURES", 60)
    linear._check_lspi(cfg)  # at the bound
    monkeypatch.setattr(linear, "MAX_DENSE_FEATURES", 59)
    with pytest.raises(ConfigError) as err:
        linear._check_lspi(cfg)
    assert (err.value.field, err.value.value) == ("agent.templates", ["position", "bigram", "prompt"])
    assert err.value.allowed == "templates with at most 59 features for lspi (its dense (D, D) system; these have 60)"


def test_the_exact_natural_log_linear_gradient_bounds_its_design(monkeypatch):
    # compressed, P = 2, V = 5 (4 non-EOS tokens), H = 4: 2 + 3 * 8 = 26 states when the last token is kept, 2 + 3 * 2
    # = 8 when nothing reads it; D = 20 + 10 = 30 (position, prompt) or 20 + 30 (position, bigram)
    plain = _linear_cfg("loglinear_pg", True, templates=["position", "prompt"])
    tracked = _linear_cfg("loglinear_pg", True, templates=["position", "bigram"])
    monkeypatch.setattr(linear, "MAX_EXACT_FISHER_ENTRIES", 40)
    linear._check_loglinear(plain)  # 8 * 5 = 40 entries: at the bound
    with pytest.raises(ConfigError) as err:
        linear._check_loglinear(tracked)  # 26 * 5 = 130 entries
    assert (err.value.field, err.value.value) == ("agent.natural", True)
    assert err.value.allowed == (
        "false, or agent.mode=sampled, on a world this large (the exact natural gradient builds an (S A, D) design "
        "and a (D, D) Fisher matrix: S A = 130 must be <= 4e+01 and D = 50 <= 20000)"
    )
    monkeypatch.setattr(linear, "MAX_EXACT_FISHER_ENTRIES", 39)
    with pytest.raises(ConfigError):
        linear._check_loglinear(plain)
    # neither the plain gradient nor the sampled one builds it
    linear._check_loglinear(_linear_cfg("loglinear_pg", True, templates=["position", "prompt"], natural=False))
    linear._check_loglinear(_linear_cfg("loglinear_pg", True, templates=["position", "prompt"], mode="sampled"))
    monkeypatch.setattr(linear, "MAX_EXACT_FISHER_ENTRIES", 10**9)
    monkeypatch.setattr(linear, "MAX_DENSE_FEATURES", 30)
    linear._check_loglinear(plain)  # D = 30 at the feature bound
    with pytest.raises(ConfigError, match=r"D = 50 <= 30\)"):
        linear._check_loglinear(tracked)


def test_greedy_and_log_linear_policies_of_a_parameter_snapshot():
    world = EnumeratedWorld(2, 3, 3)
    world.ref = make_reference(world, "softmax", np.random.default_rng(4))
    fm = FeatureMap(world, ["position", "bigram"])
    theta = np.random.default_rng(5).normal(size=fm.dim)
    values = fm.table_values(theta)
    log_ref = np.log(world.table(world.ref))
    np.testing.assert_allclose(linear._loglinear_table(world, fm, log_ref, theta), log_ref + values, rtol=1e-14)
    w = theta.copy()
    soft = linear.loglinear_policy(world, fm, w)
    assert soft.world is world and linear.greedy_linear(world, fm, theta).world is world
    w[:] = 0.0  # the log-linear policy is of a snapshot
    for t in range(3):
        lo, hi = world.level(t)
        onehot = np.eye(3)[values[lo:hi].argmax(axis=1)]
        local = np.array([hi - lo - 1, 0, 1])
        np.testing.assert_array_equal(linear.greedy_linear(world, fm, theta).level(t), onehot)
        np.testing.assert_array_equal(linear.greedy_linear(world, fm, theta).rows_at(t, local), onehot[local])
        z = log_ref[lo:hi] + values[lo:hi]
        want = np.exp(z - z.max(axis=1, keepdims=True))
        want /= want.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(soft.level(t), want, rtol=1e-12)
        np.testing.assert_allclose(soft.rows_at(t, local), want[local], rtol=1e-12)
        np.testing.assert_allclose(linear.loglinear_logits(world, fm, theta, t), z, rtol=1e-13)
        np.testing.assert_allclose(linear.loglinear_logits(world, fm, theta, t, local), z[local], rtol=1e-13)
        # a zero Q ties everywhere: the lowest token
        np.testing.assert_array_equal(linear.greedy_linear(world, fm, np.zeros(fm.dim)).level(t)[:, 0], 1.0)


@pytest.mark.parametrize("loss", ["dpo", "ipo"])
def test_preference_optimisation_that_starts_at_its_optimum_records_step_one(loss):
    """Labels of 1/2 everywhere: pi_ref is DPO's and IPO's optimum (h = 0), L-BFGS takes no step, and the curve still
    has the policy, at step 1."""
    ctx = _pref_ctx(labels=(0.5, 0.5, 0.5, 0.5))
    res = run_agent(ctx, AgentConfig(name=loss, beta=0.7, steps=40, checkpoints=4))
    assert [row["step"] for row in res.curve] == [1]
    np.testing.assert_allclose(ctx.world.table(res.policy), ctx.world.table(ctx.world.ref), rtol=1e-12)


def test_preference_objective_defaults_to_dpo_and_names_the_templates_it_refuses():
    ctx = _pref_ctx()
    default = rl_free.PreferenceObjective(ctx, AgentConfig(name="dpo", beta=0.7))
    dpo = rl_free.PreferenceObjective(ctx, AgentConfig(name="dpo", beta=0.7), "dpo")
    x = default.start() + 0.3
    assert default.loss == "dpo" and default.objective(x)[0] == dpo.objective(x)[0]
    # a tabular policy reads no templates: a world that cannot compute them is no obstacle
    markov = _pref_ctx(compressed=True)
    tab = rl_free.PreferenceObjective(markov, AgentConfig(name="dpo", policy="tabular", templates=["hashed"]), "dpo")
    assert tab.fm is None
    with pytest.raises(ConfigError) as err:
        rl_free.PreferenceObjective(markov, AgentConfig(name="dpo", policy="loglinear", templates=["hashed"]), "dpo")
    assert err.value.field == "agent.templates"


def test_a_reference_with_impossible_tokens_is_taken_quietly():
    """pi_ref = 0 on some tokens: its log is -inf there, without a divide warning (they stay impossible)."""
    ctx = _pref_ctx()
    world = ctx.world
    states, actions, mask = world.paths(ctx.feedback.pool)
    used = np.zeros((world.n_states, world.n_actions), dtype=bool)
    used[states[mask], actions[mask]] = True
    off = ~used[:, 2]  # token 2 where no labelled sequence writes it
    ref = world.table(world.ref).copy()
    ref[off, 2] = 0.0
    ref /= ref.sum(axis=1, keepdims=True)
    world.ref = Table(world, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        problem = rl_free.PreferenceObjective(ctx, AgentConfig(name="dpo", beta=0.7), "dpo")
    assert off.sum() >= 8 and np.isneginf(problem.log_ref[off, 2]).all() and np.isfinite(problem.log_ref[~off]).all()


def test_ppo_pieces_on_a_single_sample_and_after_token_zero():
    # one sample: the mean is over 1
    loss, grad = ppo.clipped_surrogate(np.array([0.1]), np.array([0.0]), np.array([2.0]), 0.2)
    assert loss == pytest.approx(-np.exp(0.1) * 2.0, rel=1e-14)
    np.testing.assert_allclose(grad, [-np.exp(0.1) * 2.0], rtol=1e-14)
    # without EOS, token 0 is a token like any other: a state after it has its own (token, depth) weight, not BOS's
    world = EnumeratedWorld(1, 3, 3, False)
    vf = ppo.ValueFunction(world)
    s = world.encode(0, (0,))
    assert world.last_token[s] == 0
    np.testing.assert_array_equal(vf.indices(np.array([s, 0])), [[1, 3 + 1, 6 + 0 * 3 + 1], [0, 3, 6 + 3 * 3]])


def test_ppo_value_gradient_of_one_sample_and_the_policy_templates():
    world = EnumeratedWorld(2, 3, 3)
    vf = ppo.ValueFunction(world)
    g = vf.gradient(np.array([1]), np.array([-0.75]))  # prompt 1 at depth 0: weights 0, 3 + 3, 9 + 9
    want = np.zeros(21)
    want[[0, 6, 18]] = -0.75
    np.testing.assert_array_equal(g, want)
    # a tabular policy reads no templates; a log-linear one names agent.templates when the world refuses them
    markov = MarkovWorld(1, 3, 3)
    assert ppo.PPOPolicy(markov, AgentConfig(name="ppo", policy="tabular", templates=["hashed"])).fm is None
    with pytest.raises(ConfigError) as err:
        ppo.PPOPolicy(markov, AgentConfig(name="ppo", policy="loglinear", templates=["hashed"]))
    assert err.value.field == "agent.templates"
    pol = ppo.PPOPolicy(world, AgentConfig(name="ppo", policy="tabular"))
    assert pol.snapshot().world is world
