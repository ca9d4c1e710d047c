"""Agents: convergence to known optima at fixed seeds, exact RL-free distributions, learning curves, the registry,
bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import check_grad
from scipy.special import expit

from sim.agents import AGENTS, AgentContext, AgentResult, register, run_agent
from sim.agents.rl_free import PreferenceObjective, best_of_n_distribution, best_of_n_kl_bound
from sim.build import build_setup
from sim.config import (
    AgentConfig,
    Config,
    CorruptionConfig,
    EnvConfig,
    FeedbackConfig,
    OracleConfig,
    SparsityConfig,
)
from sim.errors import ConfigError
from sim.feedback import FeedbackData
from sim.oracle import Oracle
from sim.run import check, run
from sim.worlds.base import row_kl

TINY = EnvConfig(n_prompts=2, vocab_size=4, horizon=3)
MARKOV_ORACLE = OracleConfig(templates=["unigram", "position", "bigram"])  # Q* is linear in [position, bigram]
PREFERENCE_AGENTS = [name for name, spec in AGENTS.items() if spec.learns_from == "preferences"]
#: agents whose optional extra is missing are skipped (make test-sb3 installs it and runs them)
OTHER_AGENTS = [
    pytest.param(name, marks=pytest.mark.skipif(not spec.available, reason=f"needs {', '.join(spec.requires)}"))
    for name, spec in AGENTS.items()
    if spec.learns_from != "preferences"
]


def _ctx(env=TINY, oracle=None, corruption=None, seed=0, feedback=None):
    setup = build_setup(env, oracle or OracleConfig(), corruption, seed)
    return AgentContext(
        setup.world,
        setup.channel.expected(),
        setup.channel,
        setup.oracle,
        np.random.default_rng(seed),
        feedback,
    )


def _kl(world, pi, q) -> float:
    """Sequence-level ``KL(pi || q)`` = sum_s d_pi(s) KL(pi(.|s) || q(.|s)), for any two policies of the world."""
    d = world.occupancy(pi)
    with np.errstate(divide="ignore"):
        return float(sum(d[t] @ row_kl(pi.level(t), np.log(q.level(t))) for t in range(world.horizon)))


def _return(world, pi, reward) -> float:
    return world.evaluate(pi, {"r": reward})["r"]


@pytest.mark.parametrize("compressed", [False, True], ids=["enumerated", "markov"])
@pytest.mark.parametrize("name", OTHER_AGENTS)
def test_every_agent_returns_a_policy_and_a_curve_when_learning(name, compressed):
    ctx = _ctx(EnvConfig(n_prompts=2, vocab_size=4, horizon=3, compressed=compressed))
    res = run_agent(ctx, AgentConfig(name=name, steps=300, batch=64, checkpoints=5))
    world = ctx.world
    if compressed and name == "best_of_n":  # a weighted sample of reference draws: no per-state rows
        total = np.bincount(res.policy.seqs.prompt, weights=res.policy.weights, minlength=world.n_prompts)
        np.testing.assert_allclose(total, 1.0 / world.n_prompts)
    else:
        pi = world.table(res.policy)
        assert pi.shape == (world.n_states, world.n_actions) and np.all(pi >= 0)
        np.testing.assert_allclose(pi.sum(axis=1), 1.0)
    assert np.all(np.isfinite(list(ctx.evaluate(res.policy).values())))
    if name not in ("exact_planner", "soft_planner", "best_of_n"):
        assert res.curve, name
        steps = [row["step"] for row in res.curve]
        extra = {"sqrt_kl"} if name == "ppo" else set()  # PPO adds Gao et al.'s x-axis
        assert (
            steps == sorted(steps)
            and set(res.curve[0])
            == {
                "step",
                "oracle_return",
                "proxy_return",
                "kl_to_reference",
            }
            | extra
        )


def test_q_learning_reaches_one_percent_of_the_span():
    m = run(Config(agent=AgentConfig(name="q_learning", steps=100_000, lr=1.0, lr_decay=0.5))).metrics
    assert m["normalized_gap"] <= 0.01


def test_exact_policy_gradient_converges_to_the_soft_optimum():
    ctx = _ctx(EnvConfig())
    world = ctx.world
    soft = world.soft_policy(ctx.proxy, 0.1)
    for natural, steps, lr in ((True, 400, 0.5), (False, 3000, 200.0)):
        res = run_agent(ctx, AgentConfig(name="policy_gradient", beta=0.1, steps=steps, lr=lr, natural=natural))
        kl = _kl(world, res.policy, soft)
        if natural:
            assert kl <= 1e-4
        else:  # the plain gradient is slow where d_pi(s) is small (KL 0.54 here); it still closes 90% of the way
            J_ref = _return(world, world.ref, ctx.proxy)
            J_soft = _return(world, soft, ctx.proxy)
            assert res.curve[-1]["proxy_return"] > J_ref + 0.9 * (J_soft - J_ref)


def test_log_ratio_is_finite_where_the_policy_underflows():
    from sim.agents.base import log_ratio

    logits = np.array([[0.0, -2000.0, 0.0], [0.0, -np.inf, 1.0]])  # exp(-2000) underflows to 0
    with np.errstate(divide="ignore"):
        log_ref = np.log(np.array([[0.5, 0.25, 0.25], [0.5, 0.0, 0.5]]))
    out = log_ratio(logits, log_ref)
    assert np.all(np.isfinite(out))
    assert out[0, 1] == pytest.approx(-2000.0 - np.log(2.0) - np.log(0.25))
    assert out[1, 1] == 0.0  # an action pi_ref never takes


def test_long_exact_policy_gradient_at_tiny_beta_stays_finite():
    """Regression: log(pi) of an underflowed action was -inf and made the last checkpoints NaN (seed 6 here)."""
    cfg = Config(
        pipeline="rlhf",
        seed=6,
        oracle=OracleConfig(kind="linear+repetition", templates=["unigram"], repetition_weight=2.0),
        feedback=FeedbackConfig(n=300),
        agent=AgentConfig(name="policy_gradient", beta=0.003, steps=300, lr=0.5, checkpoints=15),
    )
    result = run(cfg)
    assert all(np.isfinite(row["oracle_return"]) and np.isfinite(row["kl_to_reference"]) for row in result.curve)
    assert np.isfinite(result.metrics["oracle_return"])


def test_sampled_policy_gradient_approaches_the_soft_optimum():
    cfg = Config(agent=AgentConfig(name="policy_gradient", mode="sampled", beta=0.1, steps=50_000, lr=0.5))
    m = run(cfg).metrics
    soft = run(Config(agent=AgentConfig(name="soft_planner", beta=0.1))).metrics
    assert m["normalized_gap"] < soft["normalized_gap"] + 0.08


def test_dpo_with_exact_bradley_terry_probabilities_is_the_soft_optimum():
    ctx = _ctx()
    world = ctx.world
    seqs = world.all_sequences()
    R = world.sequence_returns(ctx.proxy, seqs)
    pairs = np.array([(i, j) for p in range(2) for i, j in itertools.permutations(np.flatnonzero(seqs.prompt == p), 2)])
    beta = 0.5
    ctx.feedback = FeedbackData("preferences", seqs, pairs, expit(R[pairs[:, 0]] - R[pairs[:, 1]]), np.arange(2))
    res = run_agent(ctx, AgentConfig(name="dpo", beta=beta, steps=2000))
    assert _kl(world, res.policy, world.soft_policy(ctx.proxy, beta)) < 1e-6


def test_dpo_with_deterministic_labels_leaves_the_reference_far_behind():
    """DPO's known failure: deterministic preferences push KL up whatever beta (Azar et al. 2023)."""
    cfg = Config(pipeline="rlhf", env=TINY, feedback=FeedbackConfig(n=500, rationality=float("inf")))
    kls = [
        run(Config(**{**cfg.__dict__, "agent": AgentConfig(name="dpo", beta=b, steps=500)})).metrics["kl_to_reference"]
        for b in (0.5, 5.0)
    ]
    soft = [
        run(Config(**{**cfg.__dict__, "agent": AgentConfig(name="soft_planner", beta=b)})).metrics["kl_to_reference"]
        for b in (0.5, 5.0)
    ]
    assert kls[1] > 0.5 * kls[0]  # a 10x larger beta does not pull dpo back to pi_ref
    assert soft[1] < 0.5 * soft[0]  # it does for the KL-regularised optimum of the reward model


def _one_pair_per_prompt(ctx):
    """Prompt 0: one pair, label 1. Prompt 1: one pair labelled 1 and 1/2 (mean label 3/4). The pool is every
    complete sequence, so items are sequence ids."""
    seqs = ctx.world.all_sequences()
    a, b = np.flatnonzero(seqs.prompt == 0)[[1, 5]]
    c, d = np.flatnonzero(seqs.prompt == 1)[[2, 7]]
    pairs = np.array([[a, b], [c, d], [c, d]])
    return seqs, FeedbackData("preferences", seqs, pairs, np.array([1.0, 1.0, 0.5]), np.arange(2))


@pytest.mark.parametrize("policy", ["tabular", "loglinear"])
@pytest.mark.parametrize("loss", PREFERENCE_AGENTS)
def test_preference_objective_gradients_match_finite_differences(loss, policy):
    ctx = _ctx()
    _, ctx.feedback = _one_pair_per_prompt(ctx)
    problem = PreferenceObjective(ctx, AgentConfig(name=loss, beta=0.3, policy=policy), loss)
    x = problem.start() + 0.3 * np.random.default_rng(0).normal(size=problem.dim)
    err = check_grad(lambda t: problem.objective(t)[0], lambda t: problem.objective(t)[1], x)
    assert err < 1e-6 * max(1.0, np.linalg.norm(problem.objective(x)[1]))


def _log_ratio(ctx, seqs, policy, i):
    one = seqs.take(np.array([i]))
    world = ctx.world
    return float(world.sequence_log_prob(policy, one)[0] - world.sequence_log_prob(world.ref, one)[0])


def test_ipo_fits_each_pair_to_its_finite_target_and_dpo_does_not():
    """IPO's optimum: h = (2 ybar - 1) / (2 beta) per pair; DPO pushes a deterministic pair's h without bound."""
    ctx = _ctx()
    seqs, ctx.feedback = _one_pair_per_prompt(ctx)
    (a, b), (c, d) = ctx.feedback.items[0], ctx.feedback.items[1]
    for beta in (0.25, 1.0):
        pi = run_agent(ctx, AgentConfig(name="ipo", beta=beta, steps=2000)).policy
        h0 = _log_ratio(ctx, seqs, pi, a) - _log_ratio(ctx, seqs, pi, b)
        h1 = _log_ratio(ctx, seqs, pi, c) - _log_ratio(ctx, seqs, pi, d)
        assert h0 == pytest.approx(1 / (2 * beta), abs=1e-5)
        assert h1 == pytest.approx(0.5 / (2 * beta), abs=1e-5)
        pi = run_agent(ctx, AgentConfig(name="dpo", beta=beta, steps=2000)).policy
        h0 = _log_ratio(ctx, seqs, pi, a) - _log_ratio(ctx, seqs, pi, b)
        assert h0 > 10 / beta  # the deterministic pair: far beyond any finite target
        # the mixed pair (mean label 3/4) has the finite DPO optimum h = logit(3/4) / beta
        h1 = _log_ratio(ctx, seqs, pi, c) - _log_ratio(ctx, seqs, pi, d)
        assert h1 == pytest.approx(np.log(3) / beta, abs=1e-3)


def test_ipo_with_deterministic_labels_stays_near_the_reference():
    """Where a 10x larger beta barely moves DPO (the test above), it pulls IPO back towards pi_ref."""
    cfg = Config(pipeline="rlhf", env=TINY, feedback=FeedbackConfig(n=500, rationality=float("inf")))
    kls = [
        run(Config(**{**cfg.__dict__, "agent": AgentConfig(name="ipo", beta=b, steps=500)})).metrics["kl_to_reference"]
        for b in (0.5, 5.0)
    ]
    assert kls[1] < 0.1 * kls[0]


def test_best_of_n_matches_brute_force_and_its_bound():
    ctx = _ctx()
    world = ctx.world
    seqs = world.all_sequences()
    R = np.round(world.sequence_returns(ctx.proxy, seqs), 1)  # rounding creates ties, which the formula must share
    ref = world.sequence_probs(world.ref)
    for n in (1, 2, 3):
        joint = best_of_n_distribution(seqs.prompt, R, ref, n, world.n_prompts)
        for p in range(2):
            ids = np.flatnonzero(seqs.prompt == p)
            cond = ref[ids] / ref[ids].sum()
            brute = np.zeros(ids.size)
            for tup in itertools.product(range(ids.size), repeat=n):
                prob = np.prod(cond[list(tup)])
                best = max(R[ids[k]] for k in tup)
                winners = [k for k in tup if R[ids[k]] == best]
                for k in winners:  # a tie among the drawn is broken uniformly over the draws
                    brute[k] += prob / len(winners)
            np.testing.assert_allclose(joint[ids] / ref[ids].sum(), brute, atol=1e-12)


def test_best_of_n_kl_below_bound_and_return_rising():
    returns, prev = [], -np.inf
    for n in (1, 2, 4, 16, 64):
        m = run(Config(agent=AgentConfig(name="best_of_n", n=n))).metrics
        assert m["kl_to_reference"] <= best_of_n_kl_bound(n) + 1e-12
        assert m["kl_bound"] == pytest.approx(np.log(n) - (n - 1) / n)
        assert m["oracle_return"] > prev
        prev = m["oracle_return"]
        returns.append(m["oracle_return"])
    assert returns[0] == pytest.approx(run(Config()).metrics["reference_return"])


def test_best_of_n_policy_reproduces_its_sequence_distribution():
    ctx = _ctx()
    world = ctx.world
    seqs = world.all_sequences()
    ref = world.sequence_probs(world.ref)
    joint = best_of_n_distribution(seqs.prompt, world.sequence_returns(ctx.proxy, seqs), ref, 5, world.n_prompts)
    pi = world.weighted_policy(seqs, joint)
    np.testing.assert_allclose(world.sequence_probs(pi), joint, atol=1e-12)


@pytest.mark.parametrize("agent", ["lspi", "loglinear_pg", "linear_q"])
def test_linear_agents_reach_the_optimum_when_the_class_contains_it(agent):
    steps = {"lspi": 5000, "loglinear_pg": 500, "linear_q": 50_000}[agent]
    cfg = AgentConfig(name=agent, steps=steps, templates=["position", "bigram"])
    m = run(Config(oracle=MARKOV_ORACLE, agent=cfg)).metrics
    if agent == "loglinear_pg":  # its optimum is the soft optimum at beta
        soft = run(Config(oracle=MARKOV_ORACLE, agent=AgentConfig(name="soft_planner", beta=cfg.beta))).metrics
        assert m["oracle_return"] == pytest.approx(soft["oracle_return"], abs=1e-4)
        assert m["kl_to_reference"] == pytest.approx(soft["kl_to_reference"], abs=1e-3)
    else:
        assert m["gap"] < 1e-9


@pytest.mark.parametrize("agent", ["lspi", "loglinear_pg"])
def test_linear_agents_keep_a_gap_under_class_mismatch(agent):
    steps = {"lspi": 5000, "loglinear_pg": 500}[agent]
    cfg = AgentConfig(name=agent, steps=steps, templates=["position", "bigram"], beta=0.01)
    m = run(Config(oracle=OracleConfig(kind="nonlinear"), agent=cfg)).metrics
    exact = run(
        Config(oracle=OracleConfig(kind="nonlinear"), agent=AgentConfig(name="soft_planner", beta=0.01))
    ).metrics
    assert m["normalized_gap"] > exact["normalized_gap"] + 0.05


def test_terminal_reward_slows_q_learning():
    """Same returns, harder credit assignment: the curve's mean normalised gap is larger at every seed."""
    env = EnvConfig(n_prompts=2, vocab_size=4, horizon=6)
    for seed in range(3):
        means = []
        for mode in ("none", "terminal"):
            cfg = Config(
                seed=seed,
                env=env,
                corruption=CorruptionConfig(sparsity=SparsityConfig(mode=mode)),
                agent=AgentConfig(name="q_learning", steps=20_000, lr=1.0, lr_decay=0.5, checkpoints=30),
            )
            res = run(cfg)
            m = res.metrics
            span = m["optimal_return"] - m["reference_return"]
            means.append(np.mean([(m["optimal_return"] - c["oracle_return"]) / span for c in res.curve]))
        assert means[1] > means[0] + 0.1  # measured: 0.21 vs 0.48, 0.26 vs 0.44, 0.29 vs 0.49


def test_agents_learn_from_the_channel_not_the_oracle():
    """A misweighted proxy: the learner follows it (its gap matches the exact planner's on the same proxy)."""
    from sim.config import MisspecConfig

    corruption = CorruptionConfig(misspec=MisspecConfig(angle=1.2))
    ql = run(Config(corruption=corruption, agent=AgentConfig(name="q_learning", steps=100_000, lr=1.0, lr_decay=0.5)))
    plan = run(Config(corruption=corruption, agent=AgentConfig(name="exact_planner")))
    assert plan.metrics["gap"] > 0.5
    assert ql.metrics["proxy_return"] == pytest.approx(plan.metrics["proxy_return"], rel=0.02)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(beta=0.0), "agent.beta"),
        (dict(beta=-1.0), "agent.beta"),
        (dict(lr=0.0), "agent.lr"),
        (dict(lr=-0.1), "agent.lr"),
        (dict(n=0), "agent.n"),
        (dict(steps=0), "agent.steps"),
        (dict(epsilon=1.5), "agent.epsilon"),
        (dict(mode="guess"), "agent.mode"),
        # names are checked against the registries by sim.run.check (templates even where the agent uses none)
        (dict(templates=["nope"]), "agent.templates"),
        (dict(name="lspi", templates=["nope"]), "agent.templates"),
        (dict(name="trpo"), "agent.name"),
        # the agent's own check: the exact natural gradient diverges beyond lr * beta = 1
        (dict(name="policy_gradient", beta=0.1, lr=20.0), "agent.lr"),
    ],
)
def test_bad_agent_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError) as e:
        check(Config(agent=AgentConfig(**kwargs)))
    assert e.value.field == key


@pytest.mark.parametrize("name", PREFERENCE_AGENTS)
def test_preference_agents_need_preference_data(name):
    with pytest.raises(ConfigError, match="agent.name"):
        check(Config(agent=AgentConfig(name=name)))  # direct pipeline: no preferences
    with pytest.raises(ConfigError, match="agent.name"):
        check(Config(pipeline="rlhf", feedback=FeedbackConfig(kind="ratings"), agent=AgentConfig(name=name)))
    with pytest.raises(ConfigError, match=name):
        run_agent(_ctx(), AgentConfig(name=name))  # called directly without data


def test_the_registry_decides_which_configs_are_valid():
    """Validity comes from the registered capabilities (agent x world x pipeline), not from a list in the config."""
    with pytest.raises(ConfigError) as e:
        check(Config(agent=AgentConfig(name="dpo")))  # pipeline=direct has no preference data
    assert e.value.field == "agent.name" and e.value.value == "dpo" and "pipeline=rlhf" in e.value.allowed
    with pytest.raises(ConfigError) as e:
        check(Config(agent=AgentConfig(name="trpo")))
    assert e.value.field == "agent.name" and e.value.value == "trpo"
    assert all(name in e.value.allowed for name in AGENTS)

    seen = []

    def toy(ctx: AgentContext, cfg) -> AgentResult:
        """The greedy policy of the proxy, with a two-point curve (a new agent is just a registered function)."""
        assert isinstance(ctx.oracle, Oracle) and ctx.feedback is None
        seen.append(ctx.world.kind)
        pi = ctx.world.greedy_policy(ctx.proxy)
        return AgentResult(pi, [{"step": 1, **ctx.evaluate(ctx.world.ref)}, {"step": cfg.steps, **ctx.evaluate(pi)}])

    assert "toy_greedy" not in AGENTS
    try:
        register("toy_greedy", keys=("steps",))(toy)
        register("toy_enumerated_only", worlds=("enumerated",))(toy)
        assert AGENTS["toy_greedy"].run is toy and AGENTS["toy_greedy"].learns_from == "expected"
        for compressed in (False, True):
            env = EnvConfig(n_prompts=2, vocab_size=4, horizon=3, compressed=compressed)
            res = run(Config(env=env, agent=AgentConfig(name="toy_greedy", steps=7)))
            planner = run(Config(env=env, agent=AgentConfig(name="exact_planner"))).metrics
            m = res.metrics
            assert m["agent"] == "toy_greedy" and m["compressed"] is compressed
            assert m["world"] == ("markov" if compressed else "enumerated")
            assert m["oracle_return"] == pytest.approx(planner["oracle_return"], abs=1e-12)
            assert m["gap"] == pytest.approx(0.0, abs=1e-9)
            assert [row["step"] for row in res.curve] == [1, 7]
            assert res.curve[0]["kl_to_reference"] == pytest.approx(0.0, abs=1e-12)
            assert res.curve[0]["oracle_return"] == pytest.approx(m["reference_return"])
        assert seen == ["enumerated", "markov"]
        # an agent registered for one world kind is refused on the other, before any work
        check(Config(env=TINY, agent=AgentConfig(name="toy_enumerated_only")))
        with pytest.raises(ConfigError) as e:
            check(Config(env=EnvConfig(compressed=True), agent=AgentConfig(name="toy_enumerated_only")))
        assert e.value.field == "agent.name" and "markov" in e.value.allowed
    finally:
        AGENTS.pop("toy_greedy", None)
        AGENTS.pop("toy_enumerated_only", None)
    assert "toy_greedy" not in AGENTS and "toy_enumerated_only" not in AGENTS
    with pytest.raises(ConfigError, match="agent.name"):
        check(Config(agent=AgentConfig(name="toy_greedy")))


def test_learning_curves_are_log_spaced_and_end_at_the_budget():
    ctx = _ctx(EnvConfig())
    world = ctx.world
    res = run_agent(ctx, AgentConfig(name="policy_gradient", steps=1000, checkpoints=10))
    steps = [row["step"] for row in res.curve]
    assert steps == np.unique(np.geomspace(1, 1000, 10).round()).astype(int).tolist()
    # the last checkpoint is the returned policy, measured over every complete sequence
    seqs = world.all_sequences()
    probs = world.sequence_probs(res.policy)
    ref = world.sequence_probs(world.ref)
    assert res.curve[-1]["proxy_return"] == pytest.approx(probs @ world.sequence_returns(ctx.proxy, seqs))
    assert res.curve[-1]["kl_to_reference"] == pytest.approx(float(probs @ np.log(probs / ref)))


def test_natural_loglinear_pg_is_the_soft_optimum_and_plain_lbfgs_stalls():
    ctx = _ctx(EnvConfig(), MARKOV_ORACLE)
    world = ctx.world
    soft = world.soft_policy(ctx.proxy, 0.1)
    npg = run_agent(ctx, AgentConfig(name="loglinear_pg", steps=300, templates=["position", "bigram"]))
    assert _kl(world, npg.policy, soft) < 1e-8
    plain = run_agent(ctx, AgentConfig(name="loglinear_pg", steps=300, natural=False, templates=["position", "bigram"]))
    assert _kl(world, plain.policy, soft) > 1e-5  # measured 6.8e-4: rarely visited states lag
