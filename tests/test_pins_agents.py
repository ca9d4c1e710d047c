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

import sim.agents.base as agent_base
import sim.agents.linear as linear
import sim.agents.planners as planners
import sim.agents.ppo as ppo
import sim.agents.rl_free as rl_free
import sim.agents.tabular as tabular
from sim import goodhart
from sim.agents import AgentContext, AgentResult, run_agent
from sim.agents.tabular import greedy_policy
from sim.build import build_setup
from sim.config import AgentConfig, Config, CorruptionConfig, EnvConfig, MisspecConfig, NoiseConfig, OracleConfig
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


def test_soft_planner_policies_carry_the_evaluation_of_the_pass_that_solved_them(drifting):
    s, proxy, ctx = drifting
    for cfg in (AgentConfig(beta=0.37), AgentConfig(beta=0.01, path=True, checkpoints=3, path_max_beta=20.0)):
        res = run_agent(ctx, cfg)
        carried = res.policy.evaluated(s.world.ref, ctx.rewards)
        assert carried is not None, cfg
        fresh = s.world.evaluate(s.world.soft_policy(proxy, cfg.beta), ctx.rewards)
        assert carried.keys() == fresh.keys()
        for k in fresh:
            assert carried[k] == pytest.approx(fresh[k], rel=1e-10)


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


@pytest.mark.parametrize("loss", ["dpo", "ipo"])
def test_loglinear_preference_objective_with_a_template_inactive_on_some_actions(loss):
    """``length`` is active on EOS alone: its inactive index reads 0 in the objective too (a 1 there would shift the
    continuing tokens against EOS), so the loss is that of the policy the features give."""
    ctx = _pref_ctx()
    assert ctx.world.eos
    cfg = AgentConfig(name=loss, beta=0.7, policy="loglinear", templates=["position", "length"])
    problem = rl_free.PreferenceObjective(ctx, cfg, loss)
    x = 0.4 * np.random.default_rng(3).normal(size=problem.dim)
    assert problem.objective(x)[0] == pytest.approx(_by_hand_loss(ctx, problem.policy(x), loss, 0.7), rel=1e-10)


def test_log_softmax_rows_is_scipys_bit_for_bit():
    """Rows far from 0 (each shifted by its own max: no overflow or underflow), a -inf entry, a +inf entry, an all
    -inf row (0/0: NaN, as scipy), and no divide-by-zero warning from the log of an empty row."""
    z = np.array([[1000.0, 999.0, -np.inf], [-1000.0, -1001.0, -1002.5], [0.5, -0.25, 3.0], [np.inf, 0.0, 1.0],
                  [-np.inf, -np.inf, -np.inf]])  # fmt: skip
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        out = rl_free._log_softmax_rows(z.copy())
        np.testing.assert_array_equal(out, log_softmax(z, axis=1))
    assert np.isnan(out[4]).all() and np.isnan(out[3, 0]) and out[0, 1] == pytest.approx(-1.3132616875182228)


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


# --- the registered agents' bodies, one update at a time (mutation testing of their loops) ---------------------------
#
# Each agent runs a few updates on a tiny world; the same updates are recomputed here from their formulas, written
# entry by entry (dicts and Python loops where the agent vectorises), with the agent's own random stream replayed
# from its seed. The learned table or weights are caught where the agent hands them to its policy builder.


def _tiny_ctx(seed: int = 3, noisy: bool = True, compressed: bool = False):
    """A 2-prompt, 3-token, horizon-3 world with a softmax (compressed: bigram) pi_ref and, if ``noisy``, a noisy
    channel (sampled rewards differ from the expected proxy)."""
    env = EnvConfig(n_prompts=2, vocab_size=3, horizon=3, compressed=compressed,
                    reference="bigram" if compressed else "softmax")  # fmt: skip
    corruption = CorruptionConfig(noise=NoiseConfig(sigma=0.3)) if noisy else None
    s = build_setup(env, OracleConfig(), corruption, seed)
    return AgentContext(s.world, s.channel.expected(), s.channel, s.oracle, np.random.default_rng(seed))


def _averaged(table, visits, keys, deltas, lr, decay):
    """``averaged_update`` entry by entry: each key moves by lr / (1 + visits)^decay times its mean delta."""
    groups: dict[int, list[float]] = {}
    for k, d in zip(np.asarray(keys).tolist(), np.asarray(deltas).tolist(), strict=True):
        groups.setdefault(k, []).append(d)
    for k, ds in groups.items():
        step = lr / (1.0 + visits.flat[k]) ** decay if decay > 0 else lr
        table.flat[k] += step * sum(ds) / len(ds)
        visits.flat[k] += len(ds)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _returns_to_go(world, pi, log_ref, states, actions, rewards, alive, b, beta):
    """``(s, a, g)`` for each real step of episode ``b``: ``g`` the sum from that step on of the reward minus
    ``beta (log pi - log pi_ref)`` of each step taken (the sampled policy gradients' regularised return)."""
    steps = [t for t in range(world.horizon) if alive[b, t]]
    sa = [(states[b, t], actions[b, t]) for t in steps]
    reg = [rewards[b, t] - beta * (np.log(pi[x]) - log_ref[x]) for t, x in zip(steps, sa, strict=True)]
    return [(s, a, sum(reg[i:])) for i, (s, a) in enumerate(sa)]


@pytest.mark.parametrize("natural", [True, False])
def test_exact_policy_gradient_steps_by_hand(natural):
    ctx = _tiny_ctx(noisy=False)
    world = ctx.world
    cfg = AgentConfig(name="policy_gradient", beta=0.4, lr=0.8 if natural else 5.0, steps=4, checkpoints=2,
                      natural=natural)  # fmt: skip
    res = run_agent(ctx, cfg)
    log_ref = np.log(world.table(world.ref))
    proxy = world.table(ctx.proxy)
    theta = log_ref.copy()
    seen = []
    for _ in range(4):
        pi = _softmax(theta)
        reg = proxy - 0.4 * (np.log(pi) - log_ref)
        V, Q = world.policy_values(Table(world, pi), Table(world, reg))
        adv = np.concatenate(Q) - np.concatenate(V)[:, None]
        if natural:
            theta = theta + 0.8 * adv
        else:
            d = np.concatenate(world.occupancy(Table(world, pi)))
            theta = theta + 5.0 * d[:, None] * pi * adv
        seen.append(_softmax(theta))
    np.testing.assert_allclose(world.table(res.policy), seen[-1], rtol=1e-10)
    assert np.abs(seen[-1] - world.table(world.ref)).max() > 0.05  # the steps moved it
    assert res.policy.world is world
    assert [row["step"] for row in res.curve] == [1, 4]  # agent.checkpoints = 2 points: 1 and the budget
    for row, pi in zip(res.curve, [seen[0], seen[3]], strict=True):
        assert row["oracle_return"] == pytest.approx(ctx.evaluate(Table(world, pi))["oracle_return"], rel=1e-10)
    assert res.curve[0]["kl_to_reference"] > 1e-4


def test_sampled_policy_gradient_batches_by_hand():
    ctx = _tiny_ctx()
    world = ctx.world
    res = run_agent(ctx, AgentConfig(name="policy_gradient", mode="sampled", beta=0.3, lr=0.7, steps=15, batch=5,
                                     checkpoints=2))  # fmt: skip
    rng = np.random.default_rng(3)
    log_ref = np.log(world.table(world.ref))
    theta = log_ref.copy()
    baseline, base_visits = np.zeros(world.n_states), np.zeros(world.n_states)
    for _ in range(3):  # 15 episodes in batches of 5: the third batch's advantages read a baseline updated twice
        pi = _softmax(theta)
        states, actions, rewards, alive = world.rollout(Table(world, pi), ctx.channel, rng, 5)
        grads: dict[int, list[np.ndarray]] = {}
        seen_s, seen_g = [], []
        for b in range(5):
            for s, a, g in _returns_to_go(world, pi, log_ref, states, actions, rewards, alive, b, 0.3):
                score = -pi[s] * (g - baseline[s])
                score[a] += g - baseline[s]
                grads.setdefault(s, []).append(score)
                seen_s.append(s)
                seen_g.append(g)
        for s, gs in grads.items():
            theta[s] += 0.7 * np.mean(gs, axis=0)
        seen_s = np.array(seen_s)
        _averaged(baseline, base_visits, seen_s, np.array(seen_g) - baseline[seen_s], 1.0, 1.0)
    np.testing.assert_allclose(world.table(res.policy), _softmax(theta), rtol=1e-10)
    assert [row["step"] for row in res.curve] == [5, 15]  # checkpoints 1 and 15: the first batch passes 1
    assert res.policy.world is world
    assert res.curve[-1]["oracle_return"] == pytest.approx(ctx.evaluate(res.policy)["oracle_return"], rel=1e-12)


def test_q_learning_batches_by_hand(monkeypatch):
    """Q-learning through the batched env, 6 episodes in slots of 2: a slot that ended last step learns nothing from
    its reset step; each (s, a) moves by lr / (1 + visits)^decay times its batch's mean TD error."""
    tables = []
    real = tabular.greedy_policy
    monkeypatch.setattr(tabular, "greedy_policy", lambda world, Q: (tables.append(Q.copy()), real(world, Q))[1])
    ctx = _tiny_ctx()
    world = ctx.world
    cfg = AgentConfig(name="q_learning", steps=6, batch=2, lr=0.6, lr_decay=0.5, epsilon=0.3, checkpoints=2)
    calls = []
    ctx.progress = lambda done, total: calls.append((done, total))
    res = run_agent(ctx, cfg)
    assert {t for _, t in calls} == {6} and calls[-1] == (6, 6)  # progress over the budget of episodes
    rng = np.random.default_rng(3)
    A = world.n_actions
    Q = 1e-12 * rng.random((world.n_states, A))
    visits = np.zeros((world.n_states, A))
    envs = tabular.vector_env(ctx, 2)
    obs, _ = envs.reset(seed=int(rng.integers(2**63)))
    ended = np.zeros(2, dtype=bool)
    episodes = updates = 0
    records = []
    points = [1, 6]  # agent.checkpoints = 2: the first episode and the budget
    while episodes < 6:
        s = obs
        eps = max(0.3, 1.0 - 0.7 * episodes / 3.0)  # annealed over the first half of 6 episodes
        greedy = Q[s].argmax(axis=1)
        a = np.where(rng.random(2) < eps, rng.integers(0, A, 2), greedy)
        obs, r, term, _, _ = envs.step(a)
        keys, deltas = [], []
        for b in range(2):
            if ended[b]:
                continue
            target = r[b] + (0.0 if term[b] else Q[obs[b]].max())
            keys.append(s[b] * A + a[b])
            deltas.append(target - Q[s[b], a[b]])
        _averaged(Q, visits, keys, deltas, 0.6, 0.5)
        updates += len(keys)
        episodes += int(sum(term[b] and not ended[b] for b in range(2)))
        ended = term.copy()
        if points and episodes >= points[0]:
            records.append((episodes, Q.copy()))
            points = [p for p in points if p > episodes]
    np.testing.assert_allclose(tables[-1], Q, rtol=1e-12)
    assert res.policy.world is world and len(records) == 2
    assert (visits > 0).sum() >= 6 and res.extra == {"updates": float(updates)}
    assert [row["step"] for row in res.curve] == [e for e, _ in records]
    assert len(tables) == len(records) + 1  # one greedy policy per curve point, and the result's
    for row, (_, q), caught in zip(res.curve, records, tables, strict=False):
        np.testing.assert_allclose(caught, q, rtol=1e-12)
        assert row["oracle_return"] == pytest.approx(ctx.evaluate(real(world, q))["oracle_return"], rel=1e-12)


@pytest.mark.parametrize("target_kl", [None, 0.01, 0.5])
def test_ppo_iterations_by_hand(target_kl):
    """Three PPO iterations of 4 episodes (2 epochs of 3 minibatches): the rollout from a snapshot, the per-token KL
    penalty from pi_ref's own table, GAE on the value function's predictions, normalised advantages, one Adam step of
    the policy and of the value function per minibatch, and the controller's beta."""
    ctx = _tiny_ctx()
    world = ctx.world
    cfg = AgentConfig(name="ppo", policy="tabular", beta=0.2, lr=0.3, value_lr=0.2, steps=12, batch=4, epochs=2,
                      minibatch=3, clip=0.15, gae_lambda=0.9, target_kl=target_kl, checkpoints=2)  # fmt: skip
    calls = []
    ctx.progress = lambda done, total: calls.append((done, total))
    res = run_agent(ctx, cfg)
    assert calls == [(4, 12), (8, 12), (12, 12)]  # progress over the budget of episodes, once per batch
    rng = np.random.default_rng(3)
    log_ref_table = np.log(world.table(world.ref))
    policy, value = ppo.PPOPolicy(world, cfg), ppo.ValueFunction(world)
    opt_pi, opt_v = ppo.Adam(policy.theta.size, 0.3), ppo.Adam(value.w.size, 0.2)
    beta, rows = 0.2, []
    for episodes in (4, 8, 12):
        states, actions, rewards, alive = world.rollout(policy.snapshot(), ctx.channel, rng, 4)
        s, a = states[alive], actions[alive]
        logp_old_flat = log_softmax(policy.logits(s), axis=1)[np.arange(s.size), a]
        logp_old, logp_ref = np.zeros(states.shape), np.zeros(states.shape)
        logp_old[alive], logp_ref[alive] = logp_old_flat, log_ref_table[s, a]
        pen = np.where(alive, rewards - beta * (logp_old - logp_ref), 0.0)
        values = np.zeros(states.shape)
        values[alive] = value(s)
        adv2d = np.zeros(states.shape)  # GAE(0.9), gamma = 1, backwards along each episode
        for i in range(4):
            following = 0.0
            for t in reversed(np.flatnonzero(alive[i])):
                v_next = values[i, t + 1] if t + 1 < world.horizon and alive[i, t + 1] else 0.0
                following = pen[i, t] + v_next - values[i, t] + 0.9 * following
                adv2d[i, t] = following
        adv, ret = adv2d[alive], adv2d[alive] + values[alive]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        for _ in range(2):
            perm = rng.permutation(s.size)
            for mb in np.array_split(perm, 3):
                logp_all = log_softmax(policy.logits(s[mb]), axis=1)
                ratio = np.exp(logp_all[np.arange(mb.size), a[mb]] - logp_old_flat[mb])
                inside = np.where(adv[mb] > 0, ratio < 1.15, ratio > 0.85)  # where the clipped term has a gradient
                coef = np.where(inside, ratio * adv[mb], 0.0) / mb.size
                opt_pi.step(policy.theta, policy.gradient(s[mb], a[mb], -coef, np.exp(logp_all)))
                opt_v.step(value.w, value.gradient(s[mb], value(s[mb]) - ret[mb]))
        if target_kl is not None:
            kl = float((logp_old - logp_ref).sum(axis=1).mean())
            beta *= 1.0 + 0.1 * min(max((kl - target_kl) / target_kl, -0.2), 0.2)
        rows.append((episodes, world.table(policy.snapshot()).copy(), beta))
    np.testing.assert_allclose(world.table(res.policy), rows[-1][1], rtol=1e-10)
    assert np.abs(rows[-1][1] - world.table(world.ref)).max() > 0.05
    assert res.extra == {"final_beta": pytest.approx(beta, rel=1e-12)} and type(res.extra["final_beta"]) is float
    if target_kl == 0.01:  # the batches' KLs: 0 (pi_ref), then far above the target: clipped at -20%, +20%, +20%
        assert beta == pytest.approx(0.2 * 0.98 * 1.02 * 1.02, rel=1e-12)
    if target_kl == 0.5:  # the batches' KLs: 0 (pi_ref), 0.54, 0.23; the second is within the 20% clip
        assert beta == pytest.approx(0.2 * 0.98 * (1 + 0.1 * (0.5420524164623345 - 0.5) / 0.5) * 0.98, rel=1e-9)
    assert [row["step"] for row in res.curve] == [4, 12]  # checkpoints 1 and 12: the first batch passes 1
    for row, (_, pi, b) in zip(res.curve, [rows[0], rows[2]], strict=True):
        ev = ctx.evaluate(Table(world, pi))
        assert row["oracle_return"] == pytest.approx(ev["oracle_return"], rel=1e-10)
        assert row["sqrt_kl"] == pytest.approx(np.sqrt(ev["kl_to_reference"]), rel=1e-8)
        assert set(row) == {"step", "oracle_return", "proxy_return", "kl_to_reference", "sqrt_kl"} | (
            {"beta"} if target_kl is not None else set()
        )
        if target_kl is not None:
            assert row["beta"] == pytest.approx(b, rel=1e-12)


def _dense_features(world, fm) -> np.ndarray:
    """phi(s, a) for every transition, dense: (S, A, D)."""
    S, A = world.n_states, world.n_actions
    return fm.design(np.repeat(np.arange(S), A), np.tile(np.arange(A), S)).toarray().reshape(S, A, fm.dim)


def _catch_linear(monkeypatch) -> list[np.ndarray]:
    """The weights each greedy linear policy is built from."""
    caught: list[np.ndarray] = []
    real = linear.greedy_linear
    monkeypatch.setattr(linear, "greedy_linear", lambda world, fm, w: (caught.append(w.copy()), real(world, fm, w))[1])
    return caught


def test_linear_q_batches_by_hand(monkeypatch):
    """Semi-gradient Q-learning over [bigram, length, position] (length is inactive where a token continues), 6
    episodes in slots of 2: each active feature of (s, a) moves by (lr / K) / (1 + its visits)^decay times its batch's
    mean TD error; a slot's reset step teaches nothing."""
    caught = _catch_linear(monkeypatch)
    ctx = _tiny_ctx()
    world = ctx.world
    cfg = AgentConfig(name="linear_q", templates=["bigram", "length", "position"], steps=6, batch=2, lr=0.6,
                      lr_decay=0.5, epsilon=0.3, checkpoints=2)  # fmt: skip
    res = run_agent(ctx, cfg)
    fm = FeatureMap(world, ["bigram", "length", "position"])
    phi = _dense_features(world, fm)
    assert set(np.unique(phi)) == {0.0, 1.0}
    rng = np.random.default_rng(3)
    A, D = world.n_actions, fm.dim
    w = 1e-12 * rng.random(D)
    visits = np.zeros(D)
    envs = tabular.vector_env(ctx, 2)
    obs, _ = envs.reset(seed=int(rng.integers(2**63)))
    ended = np.zeros(2, dtype=bool)
    episodes, records, points = 0, [], [1, 6]
    while episodes < 6:
        s = obs
        q = phi[s] @ w
        eps = max(0.3, 1.0 - 0.7 * episodes / 3.0)
        a = np.where(rng.random(2) < eps, rng.integers(0, A, 2), q.argmax(axis=1))
        obs, r, term, _, _ = envs.step(a)
        keys, deltas = [], []
        for b in range(2):
            if ended[b]:
                continue
            target = r[b] + (0.0 if term[b] else (phi[obs[b]] @ w).max())
            for j in np.flatnonzero(phi[s[b], a[b]]):
                keys.append(j)
                deltas.append(target - q[b, a[b]])
        _averaged(w, visits, keys, deltas, 0.6 / 3, 0.5)
        episodes += int(sum(term[b] and not ended[b] for b in range(2)))
        ended = term.copy()
        if points and episodes >= points[0]:
            records.append((episodes, w.copy()))
            points = [p for p in points if p > episodes]
    assert len(caught) == len(records) + 1 == 3 and (visits > 0).sum() >= 6
    np.testing.assert_allclose(caught[-1], w, rtol=1e-12)
    assert res.policy.world is world and (phi.sum(axis=2) < 3).any()  # some transitions have an inactive template
    assert ctx.evaluate(res.policy) == ctx.evaluate(linear.greedy_linear(world, fm, w))
    assert [row["step"] for row in res.curve] == [e for e, _ in records]
    for (_, want), got in zip(records, caught, strict=False):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_lspi_iterations_by_hand(monkeypatch):
    """LSTD-Q on 7 uniform-policy episodes (chunks of 3, 3, 1): w = (Phi^T (Phi - Phi'_pi) + 1e-6 I)^-1 Phi^T r, then
    greedy, until the greedy choices at the next states repeat."""
    caught = _catch_linear(monkeypatch)
    ctx = _tiny_ctx()
    world = ctx.world
    calls = []
    ctx.progress = lambda done, total: calls.append((done, total))
    res = run_agent(ctx, AgentConfig(name="lspi", templates=["position", "bigram"], steps=7, batch=3, checkpoints=4))
    assert {total for _, total in calls} == {30}  # progress out of the 30 iterations it may take
    fm = FeatureMap(world, ["position", "bigram"])
    phi = _dense_features(world, fm)
    rng = np.random.default_rng(3)
    uniform = Table(world, np.full((world.n_states, world.n_actions), 1.0 / world.n_actions))
    chunks = [world.rollout(uniform, ctx.channel, rng, n) for n in (3, 3, 1)]
    S_, A_, R_, L_ = (np.concatenate([c[i] for c in chunks]) for i in range(4))
    s, a, r = S_[L_], A_[L_], R_[L_]
    assert s.size > 7  # several steps per episode
    nxt = world.next_state(s, a)
    Phi = phi[s, a]
    w, prev, ws, it = np.zeros(fm.dim), None, [], 0
    while it < 30:
        it += 1
        a_next = np.array([(phi[n] @ w).argmax() if n >= 0 else -1 for n in nxt])
        if prev is not None and np.array_equal(a_next, prev):
            break
        prev = a_next
        Phi_next = np.array([phi[n, an] if n >= 0 else np.zeros(fm.dim) for n, an in zip(nxt, a_next, strict=True)])
        w = np.linalg.lstsq(Phi.T @ (Phi - Phi_next) + 1e-6 * np.eye(fm.dim), Phi.T @ r, rcond=None)[0]
        ws.append(w)
    assert res.extra == {"lspi_iterations": float(it)} and it == 4  # 3 solves, the 4th repeats the choices
    np.testing.assert_allclose(caught[-1], w, rtol=1e-8, atol=1e-10)
    assert res.policy.world is world
    np.testing.assert_array_equal(world.table(res.policy), world.table(linear.greedy_linear(world, fm, w)))
    assert len(ws) == it - 1  # stopped when the greedy choices repeated
    assert [row["step"] for row in res.curve] == [p for p in (1, 3, 10, 30) if p <= len(ws)]  # geomspace(1, 30, 4)
    for row in res.curve:
        want = ws[row["step"] - 1]
        assert row["oracle_return"] == pytest.approx(
            ctx.evaluate(linear.greedy_linear(world, fm, want))["oracle_return"], rel=1e-10
        )


@pytest.mark.parametrize("templates", [["position", "bigram"], ["length"]])
def test_exact_natural_loglinear_pg_steps_by_hand(templates):
    """theta += lr F^+ g with g = sum_s d(s) sum_a pi(a|s) A_reg(s, a) phi(s, a) and F = sum_s d(s) Cov_pi(phi(s, .))
    plus a ridge of 1e-10 max(trace F, 1e-12), dense. F is singular (trace 2.2 over position and bigram, 0.45 over
    length alone): the ridge moves the policy by about 1e-9, which the agent and this replica resolve (to 1e-15)."""
    ctx = _tiny_ctx(noisy=False)
    world = ctx.world
    cfg = AgentConfig(name="loglinear_pg", templates=templates, beta=0.4, lr=0.8, steps=3, checkpoints=2)
    res = run_agent(ctx, cfg)
    fm = FeatureMap(world, templates)
    phi = _dense_features(world, fm)
    log_ref, proxy = np.log(world.table(world.ref)), world.table(ctx.proxy)
    theta, seen = np.zeros(fm.dim), []
    for _ in range(3):
        logits = log_ref + phi @ theta
        pi = _softmax(logits)
        reg = proxy - 0.4 * (np.log(pi) - log_ref)
        V, Q = world.policy_values(Table(world, pi), Table(world, reg))
        V, Q = np.concatenate(V), np.concatenate(Q)
        d = np.concatenate(world.occupancy(Table(world, pi)))
        g = np.einsum("s,sa,sa,sad->d", d, pi, Q - V[:, None], phi)
        mean = np.einsum("sa,sad->sd", pi, phi)
        centred = phi - mean[:, None, :]
        F = np.einsum("s,sa,sad,sae->de", d, pi, centred, centred)
        F += 1e-10 * max(np.trace(F), 1e-12) * np.eye(fm.dim)
        theta = theta + 0.8 * np.linalg.lstsq(F, g, rcond=None)[0]
        seen.append(_softmax(log_ref + phi @ theta))
    np.testing.assert_allclose(world.table(res.policy), seen[-1], rtol=0, atol=1e-14)
    assert np.abs(seen[-1] - seen[0]).max() > 1e-4 and np.abs(seen[0] - world.table(world.ref)).max() > 0.05
    assert [row["step"] for row in res.curve] == [1, 3] and res.policy.world is world
    for row, pi in zip(res.curve, [seen[0], seen[2]], strict=True):
        assert row["oracle_return"] == pytest.approx(ctx.evaluate(Table(world, pi))["oracle_return"], rel=1e-8)


def test_sampled_loglinear_pg_batches_by_hand():
    """REINFORCE on [position, bigram]: sum over the batch's steps of (G - b(s)) (phi(s, a) - E_pi phi(s, .)), divided
    by the batch, times lr; the per-state baseline is the running mean of G."""
    ctx = _tiny_ctx()
    world = ctx.world
    cfg = AgentConfig(name="loglinear_pg", mode="sampled", templates=["position", "bigram"], beta=0.3, lr=0.7,
                      steps=15, batch=5, checkpoints=2)  # fmt: skip
    res = run_agent(ctx, cfg)
    fm = FeatureMap(world, ["position", "bigram"])
    phi = _dense_features(world, fm)
    log_ref = np.log(world.table(world.ref))
    rng = np.random.default_rng(3)
    theta = np.zeros(fm.dim)
    baseline, base_visits = np.zeros(world.n_states), np.zeros(world.n_states)
    for _ in range(3):  # the third batch reads a baseline updated twice
        pi = _softmax(log_ref + phi @ theta)
        states, actions, rewards, alive = world.rollout(Table(world, pi), ctx.channel, rng, 5)
        grad = np.zeros(fm.dim)
        seen_s, seen_g = [], []
        for b in range(5):
            for s, a, g in _returns_to_go(world, pi, log_ref, states, actions, rewards, alive, b, 0.3):
                grad += (g - baseline[s]) * (phi[s, a] - pi[s] @ phi[s])
                seen_s.append(s)
                seen_g.append(g)
        theta = theta + 0.7 * grad / 5
        seen_s = np.array(seen_s)
        _averaged(baseline, base_visits, seen_s, np.array(seen_g) - baseline[seen_s], 1.0, 1.0)
    np.testing.assert_allclose(world.table(res.policy), _softmax(log_ref + phi @ theta), rtol=1e-10)
    assert np.abs(theta).max() > 0.05
    assert [row["step"] for row in res.curve] == [5, 15] and res.policy.world is world
    assert res.curve[-1]["oracle_return"] == pytest.approx(ctx.evaluate(res.policy)["oracle_return"], rel=1e-12)


def test_plain_exact_loglinear_pg_is_lbfgs_on_the_regularised_objective():
    """natural=false: L-BFGS (gtol 1e-10, ftol 1e-15, at most agent.steps iterations) on -(J_proxy - beta KL) with the
    exact gradient -sum_s d(s) sum_a pi(a|s) A_reg(s, a) phi(s, a), from theta = 0; the curve at its checkpoints."""
    ctx = _tiny_ctx(noisy=False)
    world = ctx.world
    cfg = AgentConfig(name="loglinear_pg", templates=["position", "bigram"], beta=0.4, natural=False, steps=5,
                      checkpoints=5)  # fmt: skip
    res = run_agent(ctx, cfg)
    fm = FeatureMap(world, ["position", "bigram"])
    phi = _dense_features(world, fm)
    log_ref, proxy = np.log(world.table(world.ref)), world.table(ctx.proxy)

    def objective(theta):
        pi = _softmax(log_ref + phi @ theta)
        reg = proxy - 0.4 * (np.log(pi) - log_ref)
        V, Q = world.policy_values(Table(world, pi), Table(world, reg))
        d = np.concatenate(world.occupancy(Table(world, pi)))
        V0 = V[0].mean()  # the prompts are uniform
        return -V0, -np.einsum("s,sa,sa,sad->d", d, pi, np.concatenate(Q) - np.concatenate(V)[:, None], phi)

    seen = []
    opt = optimize.minimize(objective, np.zeros(fm.dim), jac=True, method="L-BFGS-B",
                            callback=lambda x: seen.append(x.copy()),
                            options={"maxiter": 5, "gtol": 1e-10, "ftol": 1e-15})  # fmt: skip
    assert len(seen) == 5
    np.testing.assert_allclose(world.table(res.policy), _softmax(log_ref + phi @ opt.x), rtol=1e-7)
    assert [row["step"] for row in res.curve] == [1, 2, 3, 5]  # round(geomspace(1, 5, 5)) = 1, 2, 2, 3, 5
    for row in res.curve:
        pi = Table(world, _softmax(log_ref + phi @ seen[row["step"] - 1]))
        assert row["oracle_return"] == pytest.approx(ctx.evaluate(pi)["oracle_return"], rel=1e-7)
    # converged before its budget, between checkpoints: the curve still ends at the last iteration
    seen.clear()
    conv = optimize.minimize(objective, np.zeros(fm.dim), jac=True, method="L-BFGS-B",
                             callback=lambda x: seen.append(x.copy()),
                             options={"maxiter": 300, "gtol": 1e-10, "ftol": 1e-15})  # fmt: skip
    long = run_agent(ctx, AgentConfig(name="loglinear_pg", templates=["position", "bigram"], beta=0.4, natural=False,
                                      steps=300, checkpoints=3))  # fmt: skip
    assert 17 < len(seen) < 300 and conv.nit == len(seen)
    assert [row["step"] for row in long.curve] == [1, 17, len(seen)]  # round(geomspace(1, 300, 3)) = 1, 17, 300
    np.testing.assert_allclose(world.table(long.policy), _softmax(log_ref + phi @ conv.x), rtol=1e-6)
    # a proxy of zero: pi_ref is the optimum, L-BFGS takes no step, and the curve has the policy at step 1
    zero = AgentContext(world, Table(world, np.zeros((world.n_states, world.n_actions))), ctx.channel, ctx.oracle,
                        np.random.default_rng(0))  # fmt: skip
    still = run_agent(zero, AgentConfig(name="loglinear_pg", templates=["position", "bigram"], beta=0.4,
                                        natural=False, steps=5, checkpoints=3))  # fmt: skip
    assert [row["step"] for row in still.curve] == [1]
    np.testing.assert_allclose(world.table(still.policy), world.table(world.ref), rtol=1e-12)
    # a budget that stops between checkpoints: the curve still ends at the last iteration
    four = run_agent(ctx, AgentConfig(name="loglinear_pg", templates=["position", "bigram"], beta=0.4, natural=False,
                                      steps=4, checkpoints=3))  # fmt: skip
    assert [row["step"] for row in four.curve] == [1, 2, 4]  # round(geomspace(1, 4, 3)) = 1, 2, 4
    three = run_agent(ctx, AgentConfig(name="loglinear_pg", templates=["position", "bigram"], beta=0.4, natural=False,
                                       steps=3, checkpoints=2))  # fmt: skip
    assert [row["step"] for row in three.curve] == [1, 3]
    np.testing.assert_allclose(world.table(three.policy), _softmax(log_ref + phi @ seen[2]), rtol=1e-7)


@pytest.mark.parametrize("compressed", [False, True], ids=["enumerated", "markov"])
def test_best_of_n_path_by_hand(compressed):
    """The path along n = round(geomspace(1, n, k)) and the policy at agent.n, from the world's reference source (all
    sequences, or agent.samples draws per prompt from the agent's generator)."""
    ctx = _tiny_ctx(compressed=compressed)
    world = ctx.world
    res = run_agent(ctx, AgentConfig(name="best_of_n", n=5, path=True, checkpoints=3, samples=7))
    seqs, ref = world.sequence_source(world.ref).coverage(np.repeat(np.arange(2), 7), np.random.default_rng(3))
    R = world.sequence_returns(ctx.proxy, seqs)

    def pi(n):
        return world.weighted_policy(seqs, rl_free.best_of_n_distribution(seqs.prompt, R, ref, n, 2))

    assert res.extra == {"kl_bound": pytest.approx(np.log(5) - 0.8, rel=1e-14)}
    assert [row["step"] for row in res.curve] == [1, 2, 5] and [row["n"] for row in res.curve] == [1.0, 2.0, 5.0]
    for row in res.curve:
        n = row["step"]
        assert type(row["n"]) is float and row["kl_bound"] == pytest.approx(np.log(n) - (n - 1) / n, abs=1e-15)
        for k, v in ctx.evaluate(pi(n)).items():
            assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-15)
    for k, v in ctx.evaluate(pi(5)).items():
        assert ctx.evaluate(res.policy)[k] == pytest.approx(v, rel=1e-12, abs=1e-15)
    assert res.curve[-1]["oracle_return"] != pytest.approx(res.curve[0]["oracle_return"], rel=1e-3)
    assert run_agent(ctx, AgentConfig(name="best_of_n", n=5, samples=7)).curve == []  # no path, no curve


# --- sim.agents.base -------------------------------------------------------------------------------------------------


def test_curve_points_progress_and_records_by_hand():
    ctx = _tiny_ctx(noisy=False)
    calls = []
    ctx.progress = lambda done, total: calls.append((done, total))
    curve = agent_base.Curve(ctx, 50, 4)  # round(geomspace(1, 50, 4)) = 1, 4, 14, 50
    assert curve.ctx is ctx and curve.total == 50 and curve.next == 0 and curve.rows == []
    np.testing.assert_array_equal(curve.points, [1, 4, 14, 50])
    assert curve.points.dtype == np.int64
    assert curve.due(1) and calls == [(1, 50)]
    curve.record(1, ctx.world.ref, beta=0.5)
    assert curve.next == 1 and not curve.due(3) and curve.due(4) and curve.due(13)
    curve.record(20, ctx.world.ref)  # passes 4 and 14 at once
    assert curve.next == 3 and not curve.due(49) and curve.due(60)
    assert calls[-1] == (50, 50)  # progress is capped at the total
    curve.record(60, ctx.world.ref)
    assert curve.next == 4 and not curve.due(10**6)  # past the last checkpoint: never due again
    ev = ctx.evaluate(ctx.world.ref)
    assert curve.rows[0] == {"step": 1, **ev, "beta": 0.5} and type(curve.rows[0]["step"]) is int
    assert [r["step"] for r in curve.rows] == [1, 20, 60]
    assert agent_base.Curve(ctx, 10**6).points.size == 20  # 20 checkpoints by default (all distinct here)
    ctx.progress = None
    assert agent_base.Curve(ctx, 5, 2).due(5)  # without a callback


def test_beta_path_default_top_and_pressure_path():
    cfg = AgentConfig(beta=0.05, checkpoints=3)
    np.testing.assert_allclose(agent_base.beta_path(cfg), [100.0, np.sqrt(5.0), 0.05], rtol=1e-14)  # max(100, 50)
    np.testing.assert_allclose(agent_base.beta_path(AgentConfig(beta=0.4, checkpoints=2)), [400.0, 0.4], rtol=1e-14)
    np.testing.assert_allclose(agent_base.beta_path(AgentConfig(beta=0.4, checkpoints=2, path_max_beta=3.0)),
                               [3.0, 0.4], rtol=1e-14)  # fmt: skip
    ctx = _tiny_ctx(noisy=False)
    asked = []
    res = agent_base.pressure_path(ctx, cfg, lambda b: (asked.append(b), ctx.world.soft_policy(ctx.proxy, b))[1])
    assert asked == pytest.approx([100.0, np.sqrt(5.0), 0.05], rel=1e-14) and all(type(b) is float for b in asked)
    assert [r["step"] for r in res.curve] == [1, 2, 3] and [r["beta"] for r in res.curve] == asked
    for r, b in zip(res.curve, asked, strict=True):
        assert r["kl_to_reference"] == pytest.approx(
            ctx.evaluate(ctx.world.soft_policy(ctx.proxy, b))["kl_to_reference"], rel=1e-12
        )
    assert res.extra == {}


def test_register_records_the_capabilities_and_agent_spec_names_the_agents():
    def fn(ctx, cfg):
        return AgentResult(ctx.world.ref)

    def tmpl(cfg):
        return ["bigram"]

    def chk(config):
        return None

    try:
        assert agent_base.register("pin_toy", worlds=["markov"], learns_from="samples", kl=True, keys=["beta"],
                                   templates=tmpl, check=chk, requires=["numpy"])(fn) is fn  # fmt: skip
        spec = agent_base.agent_spec("pin_toy")
        assert spec == agent_base.AgentSpec("pin_toy", fn, ("markov",), "samples", True, ("beta",), tmpl, chk,
                                            ("numpy",))  # fmt: skip
        assert spec.available
        agent_base.register("pin_plain")(fn)
        plain = agent_base.AGENTS["pin_plain"]
        assert (plain.worlds, plain.learns_from, plain.kl, plain.keys, plain.templates, plain.check) == (
            ("enumerated", "markov"), "expected", False, (), None, None)  # fmt: skip
        assert plain.requires == () and plain.available
        assert not agent_base.AgentSpec("x", fn, requires=("numpy", "no_such_module_rmsim")).available
    finally:
        agent_base.AGENTS.pop("pin_toy", None)
        agent_base.AGENTS.pop("pin_plain", None)
    with pytest.raises(ConfigError) as err:
        agent_base.agent_spec("pin_toy")
    assert (err.value.field, err.value.value) == ("agent.name", "pin_toy")
    assert err.value.allowed == f"one of {sorted(agent_base.AGENTS)}"


def test_agent_context_defaults_and_rewards():
    ctx = _tiny_ctx(noisy=False)
    plain = AgentContext(ctx.world, ctx.proxy, ctx.channel, ctx.oracle, ctx.rng)
    assert plain.feedback is None and plain.progress is None
    assert plain.rewards.keys() == {"oracle", "proxy"}
    assert plain.rewards["oracle"] is ctx.oracle.reward and plain.rewards["proxy"] is ctx.proxy
    ev = plain.evaluate(ctx.world.ref)
    want = ctx.world.evaluate(ctx.world.ref, {"oracle": ctx.oracle.reward, "proxy": ctx.proxy})
    assert ev == {"oracle_return": want["oracle"], "proxy_return": want["proxy"],
                  "kl_to_reference": want["kl_to_reference"]}  # fmt: skip
    res = AgentResult("p")
    assert res.curve == [] and res.extra == {}


def test_row_helpers_by_hand():
    z = np.array([[1.0, 3.0, 2.0], [0.5, -1.0, 0.5]])
    want = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(agent_base.softmax_rows(z.copy()), want, rtol=1e-14)
    np.testing.assert_allclose(agent_base.softmax_rows(np.array([[1000.0, 999.0]])), [[1 / (1 + np.exp(-1)),
                               1 / (1 + np.e)]], rtol=1e-14)  # fmt: skip
    best, top = agent_base.row_max(z)
    np.testing.assert_array_equal(best, [1, 0])
    np.testing.assert_array_equal(top, [3.0, 0.5])
    np.testing.assert_array_equal(agent_base.greedy_rows(z), [[0, 1, 0], [1, 0, 0]])  # a tie: the lowest token
    assert agent_base.greedy_rows(z.astype(np.float32)).dtype == np.float64


def test_sample_from_is_the_inverse_cdf_of_unnormalised_rows():
    probs = np.array([[0.2, 0.6, 0.2], [1.0, 1.0, 2.0], [0.0, 0.0, 3.0]])
    u = np.random.default_rng(7).random(3)
    want = [int(np.searchsorted(np.cumsum(p), x * p.sum(), side="right")) for p, x in zip(probs, u, strict=True)]
    np.testing.assert_array_equal(agent_base.sample_from(probs, np.random.default_rng(7)), np.minimum(want, 2))
    many = agent_base.sample_from(np.tile([[1.0, 1.0, 2.0]], (4000, 1)), np.random.default_rng(1))
    np.testing.assert_allclose(np.bincount(many, minlength=3) / 4000, [0.25, 0.25, 0.5], atol=0.03)

    # a u at the very top of the total cannot index beyond the last token
    class One:
        def random(self, n):
            return np.ones(n)

    np.testing.assert_array_equal(agent_base.sample_from(probs, One()), [2, 2, 2])


def test_averaged_update_and_epsilon_by_hand():
    table, visits = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 3.0, 0.0, 1.0])
    agent_base.averaged_update(table, visits, np.array([1, 3, 1, 1]), np.array([2.0, -1.0, 4.0, 0.0]), 0.5, 0.5)
    np.testing.assert_allclose(table, [0.0, 1.0 + 0.5 / 2.0 * 2.0, 2.0, 3.0 - 0.5 / np.sqrt(2.0)], rtol=1e-14)
    np.testing.assert_array_equal(visits, [0.0, 6.0, 0.0, 2.0])
    flat = np.zeros(3)
    agent_base.averaged_update(flat, np.array([5.0, 0.0, 0.0]), np.array([0, 0]), np.array([1.0, 3.0]), 0.5, 0.0)
    np.testing.assert_allclose(flat, [1.0, 0.0, 0.0])  # decay 0: the plain step lr
    assert agent_base.epsilon_at(0, 100, 0.1) == 1.0
    assert agent_base.epsilon_at(25, 100, 0.1) == pytest.approx(1.0 - 0.9 * 25 / 50, rel=1e-15)
    assert agent_base.epsilon_at(80, 100, 0.1) == 0.1
    assert agent_base.epsilon_at(1, 1, 0.2) == pytest.approx(0.2)  # max(1, 0.5 total) = 1
    assert agent_base.epsilon_at(1, 3, 0.4) == pytest.approx(1.0 - 0.6 / 1.5, rel=1e-15)


def test_explore_epsilon_greedy_and_boltzmann_by_hand():
    q = np.array([[0.1, 0.5, 0.2], [0.3, -0.2, 0.1], [0.0, 0.0, 0.9], [0.2, 0.1, 0.0]])
    cfg = AgentConfig(exploration="epsilon", epsilon=0.3, steps=8)
    rng = np.random.default_rng(4)
    u, rand = rng.random(4), rng.integers(0, 3, 4)
    eps = 1.0 - 0.7 * 2 / 4.0
    want = np.where(u < eps, rand, q.argmax(axis=1))
    np.testing.assert_array_equal(agent_base.explore(q, cfg, 2, np.random.default_rng(4)), want)
    assert (u < eps).any() and (u >= eps).any()
    late = agent_base.explore(np.tile(q, (500, 1)), cfg, 8, np.random.default_rng(5))
    assert np.mean(late != np.tile(q.argmax(axis=1), 500)) == pytest.approx(0.3 * 2 / 3, abs=0.04)
    cold = AgentConfig(exploration="boltzmann", temperature=0.25)
    want = agent_base.sample_from(agent_base.softmax_rows(q / 0.25), np.random.default_rng(6))
    np.testing.assert_array_equal(agent_base.explore(q, cold, 0, np.random.default_rng(6)), want)
    many = agent_base.explore(np.tile(q[:1], (4000, 1)), cold, 0, np.random.default_rng(6))
    np.testing.assert_allclose(np.bincount(many, minlength=3) / 4000, _softmax(q[:1] / 0.25)[0], atol=0.03)


def test_log_ratio_by_hand():
    logits = np.array([[0.0, 1.0, -1.0]])
    with np.errstate(divide="ignore"):
        log_ref = np.log(np.array([[0.5, 0.5, 0.0]]))
    z = np.exp(logits[0])
    want = np.log(z / z.sum()) - np.array([np.log(0.5), np.log(0.5), 0.0])
    want[2] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(agent_base.log_ratio(logits, log_ref), [want], rtol=1e-14)


class _FixedDraws:
    """A stand-in generator whose uniforms are given (to put a draw exactly on a boundary)."""

    def __init__(self, u: float, k: int = 2):
        self.u, self.k = u, k

    def random(self, n):
        return np.full(n, self.u)

    def integers(self, lo, hi, n):
        return np.full(n, self.k)


def test_boundary_draws_of_sample_from_and_explore():
    # u * total exactly on a cumulative mass: the inverse CDF of [0, 1), [1, 2), [2, 4) gives the next token
    np.testing.assert_array_equal(agent_base.sample_from(np.array([[1.0, 1.0, 2.0]]), _FixedDraws(0.25)), [1])
    np.testing.assert_array_equal(agent_base.sample_from(np.array([[1.0, 1.0, 2.0]]), _FixedDraws(0.5)), [2])
    # epsilon 0 never explores, even on a uniform draw of exactly 0
    q = np.array([[0.1, 0.5, 0.2]])
    cfg = AgentConfig(exploration="epsilon", epsilon=0.0, steps=4)
    np.testing.assert_array_equal(agent_base.explore(q, cfg, 4, _FixedDraws(0.0)), [1])
    np.testing.assert_array_equal(agent_base.explore(q, cfg, 0, _FixedDraws(0.0)), [2])  # epsilon 1 at the start


def test_softmax_rows_is_stable_per_row_and_log_ratio_quiet_where_both_are_impossible():
    z = np.array([[1000.0, 999.0], [0.0, -1.0]])  # rows of very different scales: each is shifted by its own max
    np.testing.assert_allclose(agent_base.softmax_rows(z), [[1 / (1 + np.exp(-1)), 1 / (1 + np.e)]] * 2, rtol=1e-14)
    logits = np.array([[0.0, -np.inf, 1.0]])
    with np.errstate(divide="ignore"):
        log_ref = np.log(np.array([[0.5, 0.0, 0.5]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="warn"):
            out = agent_base.log_ratio(logits, log_ref)
    z = np.exp([0.0, 1.0])
    np.testing.assert_allclose(out, [[np.log(z[0] / z.sum() / 0.5), 0.0, np.log(z[1] / z.sum() / 0.5)]], rtol=1e-14)


@pytest.mark.parametrize("name", ["policy_gradient", "loglinear_pg"])
@pytest.mark.parametrize("mode", ["exact", "plain", "sampled"])
def test_policy_gradients_take_a_reference_with_impossible_tokens_quietly(mode, name):
    """pi_ref = 0 on some tokens: log pi_ref is -inf there without a divide warning, and they stay impossible."""
    ctx = _tiny_ctx(noisy=False)
    world = ctx.world
    ref = world.table(world.ref).copy()
    ref[::2, 1] = 0.0
    ref /= ref.sum(axis=1, keepdims=True)
    world.ref = Table(world, ref)
    with warnings.catch_warnings(), np.errstate(all="warn"):
        warnings.simplefilter("error")
        cfg = AgentConfig(name=name, mode="sampled" if mode == "sampled" else "exact", natural=mode != "plain",
                          beta=0.4, lr=0.5, steps=4, batch=2, templates=["position", "bigram"])  # fmt: skip
        res = run_agent(ctx, cfg)
    pi = world.table(res.policy)
    assert np.all(pi[::2, 1] == 0.0) and np.all(pi[1::2, 1] > 0.0)


@pytest.mark.parametrize("name", ["linear_q", "lspi", "loglinear_pg"])
def test_linear_agents_name_agent_templates_when_the_world_refuses_them(name):
    ctx = _tiny_ctx(compressed=True)
    with pytest.raises(ConfigError) as err:
        run_agent(ctx, AgentConfig(name=name, templates=["hashed"], steps=2, batch=2))
    assert err.value.field == "agent.templates"


def test_ppo_pieces_by_hand_on_padded_steps():
    """Padded steps (after an episode's end) carry rewards and values that must not leak: GAE(0.5) and its returns,
    the KL-penalised rewards and the clipped surrogate's mean, by hand."""
    r = np.array([[1.0, -2.0, 7.0], [0.5, 9.0, 9.0]])
    v = np.array([[0.25, 1.5, 3.0], [-1.0, 4.0, 4.0]])
    alive = np.array([[True, True, False], [True, False, False]])
    adv, ret = ppo.gae(r, v, alive, 0.5)
    a1 = -2.0 + 0.0 - 1.5  # the last real step: nothing follows
    a0 = 1.0 + 1.5 - 0.25 + 0.5 * a1
    b0 = 0.5 - (-1.0)
    np.testing.assert_allclose(adv, [[a0, a1, 0.0], [b0, 0.0, 0.0]], rtol=1e-15)
    np.testing.assert_allclose(ret, [[a0 + 0.25, a1 + 1.5, 0.0], [b0 - 1.0, 0.0, 0.0]], rtol=1e-15)
    pen = ppo.kl_penalised(r, np.full((2, 3), -0.5), np.full((2, 3), -1.25), alive, 0.4)
    np.testing.assert_allclose(pen, [[1.0 - 0.3, -2.0 - 0.3, 0.0], [0.5 - 0.3, 0.0, 0.0]], rtol=1e-15)
    logp_new, logp_old, a = np.log([1.1, 0.7, 1.5]), np.zeros(3), np.array([2.0, -1.0, 0.5])
    loss, _ = ppo.clipped_surrogate(logp_new, logp_old, a, 0.2)
    # min(rho A, clip(rho) A): 1.1 * 2 | min(-0.7, -0.8) = -0.8 | min(0.75, 0.6) = 0.6
    assert loss == pytest.approx(-(2.2 - 0.8 + 0.6) / 3, rel=1e-14)


def test_sampled_loglinear_pg_with_a_batch_that_ends_before_the_horizon():
    """A batch of one episode that ends (EOS) before the last level: the per-level pass stops there, and the update
    still happens."""
    ctx = _tiny_ctx()
    world = ctx.world
    seed = next(k for k in range(50) if not world.rollout(world.ref, ctx.channel, np.random.default_rng(k), 1)[3].all())
    ctx.rng = np.random.default_rng(seed)
    cfg = AgentConfig(name="loglinear_pg", mode="sampled", templates=["position", "bigram"], beta=0.3, lr=0.7,
                      steps=1, batch=1)  # fmt: skip
    res = run_agent(ctx, cfg)
    states, actions, rewards, alive = world.rollout(world.ref, ctx.channel, np.random.default_rng(seed), 1)
    assert not alive[0].all() and res.policy.world is world
    assert np.abs(world.table(res.policy) - world.table(world.ref)).max() > 1e-3


def test_lspi_stops_after_30_solves_when_the_greedy_choices_never_settle(monkeypatch):
    """A feature map whose values are fresh noise at every call: the greedy choices at the next states never repeat,
    and LSPI stops at its cap of 30 iterations."""
    noise = np.random.default_rng(11)

    class Restless(FeatureMap):
        def values(self, theta, states):
            return noise.normal(size=(np.size(states), self.world.n_actions))

    monkeypatch.setattr(linear, "FeatureMap", Restless)
    ctx = _tiny_ctx()
    res = run_agent(ctx, AgentConfig(name="lspi", templates=["position", "bigram"], steps=20, batch=10, checkpoints=3))
    assert res.extra == {"lspi_iterations": 30.0}
    assert [row["step"] for row in res.curve] == [1, 5, 30]  # round(geomspace(1, 30, 3))


def test_best_of_n_distribution_shares_a_tie_in_a_later_prompt():
    # prompt 1 (not the first): returns 2, 2, -1 with weights 0.2, 0.1, 0.1 (conditional 1/2, 1/4, 1/4); prompt 0: one
    # sequence. The tie group wins unless both draws are the -1, shared 2 : 1 by pi_ref; the prompts' masses 0.6, 0.4
    prompt = np.array([0, 1, 1, 1])
    out = rl_free.best_of_n_distribution(prompt, np.array([1.0, 2.0, 2.0, -1.0]), np.array([0.6, 0.2, 0.1, 0.1]), 2, 2)
    top = 1 - (1 / 4) ** 2
    np.testing.assert_allclose(out, [0.6, top * 2 / 3 * 0.4, top / 3 * 0.4, (1 / 4) ** 2 * 0.4], rtol=1e-13)


@pytest.mark.parametrize("flip", [False, True])
def test_preference_objective_with_a_sequence_that_only_wins_or_only_loses(flip):
    """Sequence 1 is the loser of every pair (or, flipped, the winner): the other sequences appear on one side only,
    so the per-sequence sums of either side cover fewer sequences than the data hold."""
    ctx = _pref_ctx()
    d = ctx.feedback
    items = np.array([[0, 1], [2, 1], [3, 1], [4, 1], [5, 1]])
    labels = np.array([1.0, 0.25, 0.6, 0.8, 0.3])
    if flip:
        items, labels = items[:, ::-1].copy(), 1 - labels
    ctx.feedback = FeedbackData("preferences", d.pool, items, labels, d.covered)
    for loss in ("dpo", "ipo"):
        problem = rl_free.PreferenceObjective(ctx, AgentConfig(name=loss, beta=0.7), loss)
        x = problem.start() + 0.4 * np.random.default_rng(1).normal(size=problem.dim)
        f, g = problem.objective(x)
        assert f == pytest.approx(_by_hand_loss(ctx, problem.policy(x), loss, 0.7), rel=1e-10)
        assert g.shape == x.shape and np.isfinite(g).all()
