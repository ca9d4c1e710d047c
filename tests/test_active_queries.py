"""Active query selection (``feedback.query``): each score against a hand computation, the selection, the refusals,
``random`` equal to the pipeline without the key, and both world kinds through the CLI's path and the env's."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from scipy.special import expit

import sim
import sim.feedback.active as active
from sim.build import build_setup, config_from, seed_streams
from sim.errors import ConfigError
from sim.feedback import FeedbackData, QueryModel, collect, collect_active, sample_items
from sim.proxy import fit, learned_setup, start_feedback
from sim.run import run

SMALL = {"pipeline": "rlhf", "env": {"n_prompts": 2, "vocab_size": 4, "horizon": 4}, "agent": {"name": "exact_planner"}}
COMPRESSED = {
    "pipeline": "rlhf",
    "env": {"n_prompts": 2, "vocab_size": 12, "horizon": 5, "reference": "bigram", "compressed": True},
    "agent": {"name": "soft_planner"},
}


def _conf(base: dict, **feedback) -> dict:
    return {**base, "feedback": {"n": 60, **feedback}}


@pytest.fixture(scope="module")
def fitted():
    """A small world's setup, 40 random labels, the model class and a candidate pool of 50 pairs (with duplicates)."""
    cfg = config_from(_conf(SMALL, n=40))
    setup = build_setup(cfg.env, cfg.oracle, cfg.corruption, 0)
    fb = start_feedback(cfg, setup, seed_streams(0)["feedback"])
    data = collect(fb.teacher, fb.source, fb.covered, "preferences", 40, fb.rng)
    model = QueryModel(setup.world, "linear", cfg.reward_model.templates, 1.0, 1e-8)
    seqs, cand = sample_items(fb.source, fb.covered, 50, 2, np.random.default_rng(3))
    cand[:3, 1] = cand[:3, 0]  # three pairs compare a sequence with itself
    X = model.design(seqs)
    Z = X[cand[:, 0]] - X[cand[:, 1]]
    return setup, fb, data, model, Z


def test_entropy_score_is_the_binary_entropy_of_the_map_preference(fitted):
    _, _, data, model, Z = fitted
    theta = model.fit(data)
    Zd = Z.toarray()
    got = active.entropy_scores(Z, theta)
    for c in range(Zd.shape[0]):  # by hand, one pair at a time
        p = 1.0 / (1.0 + np.exp(-sum(Zd[c, d] * theta[d] for d in range(theta.size))))
        assert got[c] == pytest.approx(-p * np.log(p) - (1 - p) * np.log(1 - p), rel=1e-12, abs=1e-15)
    assert got[:3] == pytest.approx(np.log(2))  # a pair with itself: p = 1/2, the maximum
    assert np.all(got <= np.log(2) + 1e-15)


def test_laplace_score_is_the_posterior_variance_of_the_return_difference(fitted):
    _, _, data, model, Z = fitted
    theta = model.fit(data)
    X = model.design(data.pool).toarray()
    Zdata = X[data.items[:, 0]] - X[data.items[:, 1]]
    H = np.eye(theta.size)  # prior 1 / s^2 with s = 1
    for z in Zdata:  # the Bradley-Terry Hessian, term by term
        p = expit(z @ theta)
        H += p * (1 - p) * np.outer(z, z)
    cov = np.linalg.inv(H)
    want = np.array([z @ cov @ z for z in Z.toarray()])
    got = model.scores("laplace", data, Z, ensemble=5, rng=np.random.default_rng(0))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # and it is the variance of theta . z under N(theta, cov): a Monte Carlo check of the meaning
    draws = np.random.default_rng(1).multivariate_normal(theta, cov, size=40_000)
    mc = (Z.toarray() @ draws.T).var(axis=1)
    np.testing.assert_allclose(got[3:], mc[3:], rtol=0.05)  # 40k draws: the variance's relative sd is 0.7%
    assert np.all(got[:3] == 0)


def test_disagreement_score_is_the_members_variance_of_the_difference(fitted):
    _, _, data, model, Z = fitted
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    got = model.scores("disagreement", data, Z, ensemble=4, rng=rng_a)
    members = [model.fit(data, rng_b) for _ in range(4)]  # the same bootstrap draws
    assert len({m.tobytes() for m in members}) == 4  # four different resamples
    Zd = Z.toarray()
    for c in range(Zd.shape[0]):
        d = [float(Zd[c] @ m) for m in members]
        assert got[c] == pytest.approx(np.var(d, ddof=1), rel=1e-9, abs=1e-14)


def test_select_takes_the_highest_scores_and_never_an_uninformative_pair_first():
    scores = np.array([0.5, 2.0, 9.0, 2.0, 0.1, 7.0])
    informative = np.array([True, True, False, True, True, True])
    np.testing.assert_array_equal(active.select(scores, informative, 3), [5, 1, 3])  # ties keep candidate order
    np.testing.assert_array_equal(active.select(scores, informative, 6), [5, 1, 3, 0, 4, 2])


def _spy(monkeypatch):
    """Record what every active round scored and chose."""
    rounds = []
    real = active.select

    def select(scores, informative, batch):
        chosen = real(scores, informative, batch)
        rounds.append((scores, informative, chosen))
        return chosen

    monkeypatch.setattr(active, "select", select)
    return rounds


@pytest.mark.parametrize("query", ["disagreement", "laplace", "entropy"])
def test_active_rounds_label_the_top_scored_candidates(monkeypatch, query):
    rounds = _spy(monkeypatch)
    cfg = config_from(_conf(SMALL, query=query, query_rounds=4, query_pool=5))
    _, _, data = learned_setup(cfg, build_setup(cfg.env, cfg.oracle, cfg.corruption, 1), 1)
    assert data.n == 60 and len(rounds) == 3  # round 0 random, three rounds selected
    for scores, informative, chosen in rounds:
        assert chosen.size == 15 and scores.size == 75
        rest = np.setdiff1d(np.flatnonzero(informative), chosen)
        assert informative[chosen].all()
        assert scores[chosen].min() >= scores[rest].max()  # the top of the pool, not a sample of it
        assert scores[chosen].mean() > np.median(scores[informative])


def test_entropy_selection_asks_about_pairs_the_model_cannot_order():
    """Behaviour, not mechanism: the model fitted on the data orders entropy-chosen pairs less surely than random
    ones (|theta . z| smaller), and no chosen pair compares a sequence with itself."""
    margins = {}
    for query in ("random", "entropy"):
        cfg = config_from(_conf(SMALL, n=200, query=query, rationality=float("inf")))
        _, model, data = learned_setup(cfg, build_setup(cfg.env, cfg.oracle, cfg.corruption, 2), 2)
        X = model.design(data.pool)
        z = X[data.items[:, 0]] - X[data.items[:, 1]]
        later = slice(40, None)  # the rounds after the random round 0
        margins[query] = np.abs(z @ model.theta)[later]
        if query == "entropy":
            assert np.all(abs(z[later]).sum(axis=1) > 0)
    assert np.median(margins["entropy"]) < 0.5 * np.median(margins["random"])


def test_random_is_the_pipeline_without_the_key_bit_for_bit():
    """query=random draws exactly what collect drew before the key existed (the golden set checks the runs)."""
    cfg = config_from(_conf(SMALL, query="random", flip=0.1))
    setup = build_setup(cfg.env, cfg.oracle, cfg.corruption, 4)
    _, model, data = learned_setup(cfg, setup, 4)
    fb = start_feedback(cfg, setup, seed_streams(4)["feedback"])
    old = collect(fb.teacher, fb.source, fb.covered, "preferences", 60, fb.rng, 4)
    np.testing.assert_array_equal(data.items, old.items)
    np.testing.assert_array_equal(data.labels, old.labels)
    np.testing.assert_array_equal(data.pool.tokens, old.pool.tokens)
    np.testing.assert_array_equal(model.theta, fit(cfg, setup.world, old, fb.rng).theta)


@pytest.mark.parametrize("query", ["disagreement", "laplace", "entropy"])
def test_same_seed_same_labels_and_the_rule_changes_them(query):
    def labels(q, seed=3):
        cfg = config_from(_conf(SMALL, query=q))
        return learned_setup(cfg, build_setup(cfg.env, cfg.oracle, cfg.corruption, seed), seed)[2]

    a, b, r = labels(query), labels(query), labels("random")
    np.testing.assert_array_equal(a.pool.tokens, b.pool.tokens)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.pool.tokens, r.pool.tokens)


@pytest.mark.parametrize("base", [SMALL, COMPRESSED], ids=["enumerated", "compressed"])
@pytest.mark.parametrize("query", ["disagreement", "laplace", "entropy"])
def test_both_world_kinds_run_every_rule_through_the_cli_path(base, query):
    res = run(config_from(_conf(base, query=query, query_rounds=3), {"seed": 1}))
    m = res.metrics
    assert m["n_feedback"] == 60 and np.isfinite(m["gap"]) and 0 <= m["reward_distance"] <= 1


def test_iterated_rlhf_selects_within_each_round(monkeypatch):
    rounds = _spy(monkeypatch)
    conf = _conf(SMALL, query="entropy", sampler="policy", rounds=2, query_rounds=3)
    res = run(config_from({**conf, "agent": {"name": "soft_planner"}}, {"seed": 0}))
    assert res.metrics["n_feedback"] == 60
    assert len(rounds) == 2 + 3  # round 0 of the first collection is random; the second has earlier data


@pytest.mark.parametrize("kind", ["enumerated", "compressed"])
def test_env_pays_the_model_fitted_on_the_actively_chosen_labels(kind):
    base = SMALL if kind == "enumerated" else COMPRESSED
    env_id = sim.ENV_ID if kind == "enumerated" else sim.MARKOV_ENV_ID
    conf = _conf(base, query="entropy")
    res = run(config_from(conf, {"seed": 5}))
    env = gym.make(env_id, config=conf, world_seed=5)
    w = env.unwrapped.setup.world
    s = np.arange(min(w.n_states, 3000))[:, None]
    a = np.arange(w.n_actions)[None, :]
    np.testing.assert_array_equal(env.unwrapped.setup.channel.expected().at(s, a), res.proxy.at(s, a))


@pytest.mark.parametrize(
    ("feedback", "key"),
    [
        ({"query": "bald"}, "feedback.query"),
        ({"query": "entropy", "kind": "ratings"}, "feedback.query"),
        ({"query": "entropy", "kind": "rankings"}, "feedback.query"),
        ({"query_rounds": 1}, "feedback.query_rounds"),
        ({"query": "entropy", "n": 3, "query_rounds": 4}, "feedback.query_rounds"),
        ({"query_pool": 0}, "feedback.query_pool"),
        ({"query_pool": 1001}, "feedback.query_pool"),
        ({"query_ensemble": 1}, "feedback.query_ensemble"),
    ],
)
def test_config_refuses_naming_the_key(feedback, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from({"pipeline": "rlhf", "feedback": feedback})


def test_laplace_refuses_models_it_cannot_carry_before_any_label():
    with pytest.raises(ConfigError, match=r"feedback\.query.*reward_model=tabular"):
        run(config_from({**SMALL, "feedback": {"query": "laplace"}, "reward_model": {"name": "tabular"}}))
    big = {**COMPRESSED, "env": {**COMPRESSED["env"], "vocab_size": 100}}  # bigram: 101 x 100 parameters alone
    with pytest.raises(ConfigError, match=r"feedback\.query.*at most D = 4000"):
        run(config_from({**big, "feedback": {"query": "laplace"}}))
    res = run(config_from({**SMALL, "feedback": {"n": 40, "query": "entropy"}, "reward_model": {"name": "tabular"}}))
    assert res.metrics["n_feedback"] == 40  # entropy and disagreement carry a tabular model


def test_skipping_everything_is_refused_naming_the_skip():
    cfg = config_from(_conf(SMALL, n=20, skip=50.0))
    setup = build_setup(cfg.env, cfg.oracle, cfg.corruption, 0)
    fb = start_feedback(cfg, setup, seed_streams(0)["feedback"])
    model = QueryModel(setup.world, "linear", ["unigram"], 1.0, 1e-6)
    with pytest.raises(ConfigError, match=r"feedback\.skip"):
        collect_active(fb.teacher, fb.source, fb.covered, 20, fb.rng, model, "entropy")
    with pytest.raises(ConfigError, match=r"feedback\.query"):
        collect_active(fb.teacher, fb.source, fb.covered, 20, fb.rng, model, "random")


def test_feedback_data_of_active_rounds_is_self_consistent():
    cfg = config_from(_conf(SMALL, query="disagreement", query_ensemble=3))
    setup = build_setup(cfg.env, cfg.oracle, cfg.corruption, 6)
    _, _, data = learned_setup(cfg, setup, 6)
    assert isinstance(data, FeedbackData) and data.pool.n == 2 * data.n  # the pool holds the labelled pairs only
    R = setup.world.sequence_returns(setup.oracle.reward, data.pool)
    # the default teacher (rationality 1) agrees with the oracle on most pairs, not all
    agree = np.mean((R[data.items[:, 0]] > R[data.items[:, 1]]) == (data.labels == 1))
    assert 0.55 < agree < 1.0


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        (["feedback.query_pool=20"], "feedback.query_pool does not apply to feedback.query=random"),
        (["feedback.query=entropy", "feedback.query_ensemble=3"], "feedback.query_ensemble does not apply to "
         "feedback.query=entropy"),
        (["corruption.noise.df=5"], "corruption.noise.df does not apply to corruption.noise.dist=gaussian"),
        (["corruption.noise.mode=fixed", "corruption.noise.dist=student_t", "corruption.noise.alpha=2"],
         "corruption.noise.alpha does not apply to corruption.noise.dist=student_t"),
    ],
)  # fmt: skip
def test_settings_that_cannot_apply_are_flagged(overrides, warned):
    from experiments.config import compose_config, inapplicable

    base = ["pipeline=rlhf"] if overrides[0].startswith("feedback") else []
    assert inapplicable(compose_config([*base, *overrides]), overrides) == [warned + inapplicable_reason(warned)]


def inapplicable_reason(warned: str) -> str:
    return {
        "feedback.query_pool": " (the source's own pairs are labelled)",
        "feedback.query_ensemble": " (only disagreement fits an ensemble)",
        "corruption.noise.df": " (only student_t reads it)",
        "corruption.noise.alpha": " (only pareto reads it)",
    }[warned.split()[0]]
