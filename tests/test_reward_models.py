"""Reward-model fits: gradients, a hand-computed likelihood, scikit-learn equivalence, recovery, generalisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from scipy.optimize import approx_fprime, check_grad

from sim.build import build_setup, seed_streams
from sim.config import AgentConfig, Config, FeedbackConfig, RewardModelConfig
from sim.errors import ConfigError
from sim.features import FeatureMap
from sim.feedback import FeedbackData, collect, covered_prompts, make_teacher, preference_accuracy, sample_items
from sim.oracle import make_oracle
from sim.reference import make_reference
from sim.reward_models import fit_reward_model
from sim.reward_models.fit import (
    bt_hessian,
    bt_log_likelihood,
    bt_objective,
    fit_bt,
    fit_ratings,
    pl_objective,
)
from sim.reward_models.model import design, rankings_to_pairs
from sim.rlhf import run_rlhf
from sim.worlds import EnumeratedWorld, MarkovWorld


def _world(P: int, V: int, H: int, oracle_seed: int, **oracle_kw):
    """An enumerated world with a uniform pi_ref and a linear oracle."""
    m = EnumeratedWorld(P, V, H)
    m.ref = make_reference(m, "uniform")
    return m, make_oracle(m, "linear", seed=oracle_seed, **oracle_kw)


def test_bt_gradient_matches_finite_differences_dense_and_sparse():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(40, 6))
    y = rng.choice([0.0, 0.5, 1.0], size=40)
    for design_ in (Z, sparse.csr_matrix(Z * (rng.random(Z.shape) < 0.4))):
        for _ in range(3):
            t = rng.normal(size=6)
            err = check_grad(
                lambda th, d=design_: bt_objective(th, d, y, 0.7)[0],
                lambda th, d=design_: bt_objective(th, d, y, 0.7)[1],
                t,
            )
            assert err < 1e-6


def test_pl_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    X = sparse.csr_matrix(rng.normal(size=(15, 5)))
    R = np.array([rng.permutation(15)[:4] for _ in range(25)])
    for _ in range(3):
        t = rng.normal(size=5)
        err = check_grad(lambda th: pl_objective(th, X, R, 1.3)[0], lambda th: pl_objective(th, X, R, 1.3)[1], t)
        assert err < 1e-6


def test_plackett_luce_objective_is_the_negative_mean_log_likelihood():
    from sim.reward_models.fit import pl_log_likelihood

    rng = np.random.default_rng(4)
    X = sparse.csr_matrix(rng.normal(size=(12, 4)))
    rankings = np.array([rng.permutation(12)[:3] for _ in range(20)])
    theta = rng.normal(size=4)
    # with a flat prior the objective is -(1/m) log P(rankings)
    assert pl_objective(theta, X, rankings, 1e12)[0] * 20 == pytest.approx(-pl_log_likelihood(X @ theta, rankings))
    # a two-item ranking is a Bradley-Terry comparison
    R = X @ theta
    pairs = rankings[:, :2]
    assert pl_log_likelihood(R, pairs) == pytest.approx(bt_log_likelihood(R, pairs, np.ones(20)))


def test_three_pair_log_likelihood_by_hand():
    R = np.array([1.0, 0.0, 2.0])
    pairs = np.array([[0, 1], [2, 0], [1, 2]])
    y = np.array([1.0, 0.0, 0.5])
    # pair (0,1), y=1: log s(1 - 0); pair (2,0), y=0: log s(1 - 2); pair (1,2), y=1/2: [log s(-2) + log s(2)] / 2
    by_hand = -0.31326168751822286 - 1.3132616875182228 + 0.5 * (-2.1269280110429727) + 0.5 * (-0.1269280110429725)
    assert bt_log_likelihood(R, pairs, y) == pytest.approx(by_hand, abs=1e-12)
    # the fitted objective (tabular design, flat prior) at theta = R is minus the mean log-likelihood
    Z = sparse.identity(3, format="csr")
    Zd = Z[pairs[:, 0]] - Z[pairs[:, 1]]
    assert bt_objective(R, Zd, y, 1e12)[0] * 3 == pytest.approx(-by_hand, abs=1e-9)


def test_linear_bt_map_equals_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    m, o = _world(3, 4, 3, 0)
    rng = np.random.default_rng(0)
    source = m.sequence_source(m.ref)
    teacher = make_teacher(m, o.reward, source, rng, rationality=1.0)
    data = collect(teacher, source, np.arange(3), "preferences", 3000, rng)
    X = design(m, "linear", FeatureMap(m, ["unigram", "position", "prompt"]), data.pool)
    Z = (X[data.items[:, 0]] - X[data.items[:, 1]]).toarray()
    for s in (0.5, 2.0):
        ours = fit_bt(Z, data.labels, s, tol=1e-10)
        sk = LogisticRegression(C=s**2, fit_intercept=False, tol=1e-10, max_iter=100_000).fit(Z, data.labels)
        np.testing.assert_allclose(ours, sk.coef_.ravel(), atol=1e-5)
        np.testing.assert_allclose(fit_bt(sparse.csr_matrix(Z), data.labels, s, tol=1e-10), ours, atol=1e-6)


def _rlhf_data(m, o, n, seed=0, **teacher_kw):
    """``n`` preferences on pi_ref's sequences over every prompt of ``m``."""
    source = m.sequence_source(m.ref)
    rng = np.random.default_rng(seed)
    teacher = make_teacher(m, o.reward, source, rng, **teacher_kw)
    return collect(teacher, source, np.arange(m.n_prompts), "preferences", n, rng)


def _centred(X, seqs, theta):
    """Predicted returns centred within each prompt: the part of theta preferences identify."""
    r = X @ theta
    mean = np.bincount(seqs.prompt, weights=r) / np.bincount(seqs.prompt)
    return r - mean[seqs.prompt]


def _seen(m, data) -> np.ndarray:
    """Bool (n_seq,): the complete sequences the data mention."""
    seen = np.zeros(m.terminal_transitions()[0].size, dtype=bool)
    seen[m.sequence_ids(data.pool)[data.items].ravel()] = True
    return seen


def test_perfect_teacher_recovers_theta_star():
    templates = ["position", "bigram"]
    m, o = _world(2, 5, 3, 3, templates=templates)
    data = _rlhf_data(m, o, 20_000, rationality=np.inf)
    rm = fit_reward_model(m, data, "linear", templates, prior_scale=10.0)
    seqs = m.all_sequences()
    X = design(m, "linear", FeatureMap(m, templates), seqs)
    a, b = _centred(X, seqs, rm.theta), _centred(X, seqs, o.theta)
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99
    assert np.all(np.isfinite(rm.theta))


def test_separable_data_gives_a_finite_map():
    m, o = _world(2, 4, 3, 1)
    data = _rlhf_data(m, o, 2000, rationality=np.inf)
    for name in ("tabular", "linear"):
        rm = fit_reward_model(m, data, name, prior_scale=1.0)
        assert np.all(np.isfinite(rm.theta)) and np.abs(rm.theta).max() < 50


def _coin_flip_accuracy(name: str, seed: int) -> float:
    m, o = _world(3, 5, 4, 2)
    source = m.uniform_source()  # pairs spread over all ~1000 sequences
    rng = np.random.default_rng(seed)
    teacher = make_teacher(m, o.reward, source, rng, rationality=np.inf, flip=0.5)
    data = collect(teacher, source, np.arange(3), "preferences", 5000, rng)
    rm = fit_reward_model(m, data, name)
    pool, pairs = sample_items(source, np.arange(3), 5000, 2, rng)
    return preference_accuracy(rm.predict(pool), m.sequence_returns(o.reward, pool), pairs)


def test_coin_flip_labels_give_chance_accuracy():
    # epsilon = 0.5 makes every label a fair coin. A tabular model's held-out accuracy then has an across-seed
    # sd of 0.012 (measured over 12 seeds), so 0.5 +/- 0.03 is a 2.5-sd band.
    assert abs(_coin_flip_accuracy("tabular", 0) - 0.5) < 0.03
    # A single linear fit is a random direction whose accuracy has sd 0.05 across seeds: test its mean over 12
    # seeds (sd of the mean 0.015).
    accs = [_coin_flip_accuracy("linear", seed) for seed in range(12)]
    assert abs(np.mean(accs) - 0.5) < 0.03


def test_shifted_accuracy_lower_than_in_distribution_when_coverage_is_poor():
    cfg = Config(
        pipeline="rlhf",
        feedback=FeedbackConfig(n=1000, prompt_coverage=0.25, rationality=2.0),
        reward_model=RewardModelConfig(name="linear"),
    )
    setup = build_setup(cfg.env, cfg.oracle, cfg.corruption, cfg.seed)
    res = run_rlhf(cfg, setup, seed_streams(0)["feedback"], np.random.default_rng(0))
    m = res.metrics
    assert m["n_covered_prompts"] == 1
    assert m["rm_accuracy_shifted"] < m["rm_accuracy_in_dist"] - 0.05
    assert m["gap_uncovered"] > m["gap_covered"]


def test_laplace_covariance_is_inverse_hessian_of_the_posterior():
    m, o = _world(2, 4, 3, 1, templates=["unigram", "prompt"])
    data = _rlhf_data(m, o, 500)
    rm = fit_reward_model(m, data, "linear", ["unigram", "prompt"], prior_scale=1.0, pessimism=1.0)
    X = rm.design(data.pool)
    Z = X[data.items[:, 0]] - X[data.items[:, 1]]

    def total_grad(t):
        return bt_objective(t, Z, data.labels, 1.0)[1] * data.n

    H_fd = np.array([approx_fprime(rm.theta, lambda t, k=k: total_grad(t)[k], 1e-6) for k in range(rm.theta.size)])
    np.testing.assert_allclose(bt_hessian(rm.theta, Z, 1.0), H_fd, atol=1e-3)
    np.testing.assert_allclose(rm.covariance @ bt_hessian(rm.theta, Z, 1.0), np.eye(rm.theta.size), atol=1e-8)
    # the pessimistic reward pays mean - 1 * std of each sequence's return, std = sqrt(psi^T Cov psi)
    every = m.all_sequences()
    X_all = rm.design(every).toarray()
    std = np.sqrt(np.einsum("nd,de,ne->n", X_all, rm.covariance, X_all))
    np.testing.assert_allclose(m.sequence_returns(rm.reward, every), rm.predict(every) - std, atol=1e-12)


def test_ensemble_std_is_largest_where_data_is_absent():
    m, o = _world(4, 4, 3, 1)
    source = m.sequence_source(m.ref)
    rng = np.random.default_rng(0)
    teacher = make_teacher(m, o.reward, source, rng)
    covered = covered_prompts(4, 0.5, rng)
    data = collect(teacher, source, covered, "preferences", 1000, rng)
    rm = fit_reward_model(m, data, "tabular", ensemble=8, pessimism=1.0, rng=rng)
    every = m.all_sequences()
    X_all = rm.design(every)
    std = np.stack([X_all @ t for t in rm.members]).std(axis=0, ddof=1)
    mean = rm.predict(every)
    seen = _seen(m, data)
    assert std[seen].mean() > 0
    # a tabular model never moves an unseen sequence: every member predicts the prior mean 0 there
    assert np.all(std[~seen] == 0) and np.all(mean[~seen] == 0)
    np.testing.assert_allclose(m.sequence_returns(rm.reward, every), mean - std, atol=1e-12)


@pytest.mark.parametrize("kind", ["preferences", "ratings", "rankings"])
def test_tabular_laplace_std_is_the_full_laplace_posterior(kind):
    """Only the block of sequences in the data is inverted; it must equal the full (n_seq, n_seq) posterior."""
    from sim.reward_models.model import laplace_covariance, map_fit, tabular_laplace_std

    m, o = _world(2, 3, 3, 2)
    source = m.sequence_source(m.ref)
    rng = np.random.default_rng(0)
    teacher = make_teacher(m, o.reward, source, rng, rationality=2.0, sigma=0.5)
    data = collect(teacher, source, np.arange(1), kind, 15, rng, 3)  # prompt 0 only
    X = design(m, "tabular", None, data.pool)  # one-hot rows over every complete sequence
    assert X.shape == (data.pool.n, m.terminal_transitions()[0].size)
    theta = map_fit(X, data, 1.5, 0.7, 1e-10)
    full = np.sqrt(np.diag(laplace_covariance(X, data, theta, 1.5, 0.7)))
    std = tabular_laplace_std(m, data, theta, 1.5, 0.7)
    np.testing.assert_allclose(std, full, rtol=1e-6, atol=1e-9)
    seen = _seen(m, data)
    assert (~seen).any() and np.all(std[~seen] == 1.5)  # the prior, exactly
    assert np.all(std[seen] < 1.5)  # data only shrink the posterior


def test_tabular_pessimism_without_an_ensemble_penalises_what_the_data_never_saw():
    cfg = Config(
        pipeline="rlhf",
        feedback=FeedbackConfig(n=300, rationality=2.0),
        reward_model=RewardModelConfig(name="tabular", pessimism=2.0),
        agent=AgentConfig(name="exact_planner"),
    )
    setup = build_setup(cfg.env, cfg.oracle, cfg.corruption, 0)
    res = run_rlhf(cfg, setup, seed_streams(0)["feedback"], np.random.default_rng(0))
    rm, data, m = res.reward_model, res.data, setup.world
    seqs = m.all_sequences()
    returns = m.sequence_returns(rm.reward, seqs)
    seen = _seen(m, data)
    np.testing.assert_allclose(returns[~seen], -2.0 * 1.0)  # mean 0 (the prior), std = prior scale 1
    best = np.zeros(m.n_prompts, dtype=bool)
    for p in range(m.n_prompts):  # the pessimistic greedy choice is a sequence the data contain
        mine = np.flatnonzero(seqs.prompt == p)
        best[p] = seen[mine[np.argmax(returns[mine])]]
    assert best.all()


def test_tabular_laplace_refuses_a_block_too_large(monkeypatch):
    from sim.reward_models import model

    m, o = _world(2, 4, 3, 0)
    data = _rlhf_data(m, o, 200)
    monkeypatch.setattr(model, "MAX_TABULAR_LAPLACE", 10)
    with pytest.raises(ConfigError, match="reward_model.pessimism"):
        fit_reward_model(m, data, "tabular", pessimism=1.0)


def test_ratings_fit_solves_the_normal_equations():
    rng = np.random.default_rng(0)
    X = sparse.csr_matrix(rng.normal(size=(200, 7)))
    r = rng.normal(size=200)
    theta = fit_ratings(X, r, prior_scale=0.8, sigma=0.6)
    grad = -(X.T @ (r - X @ theta)) / 0.6**2 + theta / 0.8**2
    np.testing.assert_allclose(grad, 0, atol=1e-9)


@pytest.mark.parametrize("kind", ["ratings", "rankings"])
def test_ratings_and_rankings_recover_the_oracle_ordering(kind):
    m, o = _world(2, 5, 3, 4)
    source = m.sequence_source(m.ref)
    rng = np.random.default_rng(0)
    teacher = make_teacher(m, o.reward, source, rng, rationality=2.0, sigma=0.3)
    data = collect(teacher, source, np.arange(2), kind, 4000, rng)
    rm = fit_reward_model(m, data, "linear")
    pool, pairs = sample_items(source, np.arange(2), 3000, 2, rng)
    assert preference_accuracy(rm.predict(pool), m.sequence_returns(o.reward, pool), pairs) > 0.9


def _rankings(k, n=600, seed=0):
    m, o = _world(2, 5, 3, 4)
    source = m.sequence_source(m.ref)
    rng = np.random.default_rng(seed)
    teacher = make_teacher(m, o.reward, source, rng, rationality=2.0)
    return m, collect(teacher, source, np.arange(2), "rankings", n, rng, k)


def test_split_rankings_are_every_ordered_pair_of_each_ranking():
    pool = EnumeratedWorld(2, 3, 3).all_sequences()
    items = np.array([[4, 2, 7], [1, 0, 3]])
    pairs = rankings_to_pairs(FeedbackData("rankings", pool, items, None, np.arange(1)))
    assert pairs.kind == "preferences" and np.all(pairs.labels == 1.0) and pairs.pool is pool
    assert {tuple(p) for p in pairs.items} == {(4, 2), (4, 7), (2, 7), (1, 0), (1, 3), (0, 3)}


def test_split_pairs_and_plackett_luce_coincide_for_pairs_and_differ_beyond():
    m, two = _rankings(2)
    pl = fit_reward_model(m, two, "linear", tol=1e-9)
    split = fit_reward_model(m, two, "linear", tol=1e-9, ranking_likelihood="pairs")
    np.testing.assert_allclose(split.theta, pl.theta, atol=1e-6)
    m, four = _rankings(4)
    pl = fit_reward_model(m, four, "linear", tol=1e-9)
    split = fit_reward_model(m, four, "linear", tol=1e-9, ranking_likelihood="pairs")
    assert np.abs(split.theta - pl.theta).max() > 1e-2
    with pytest.raises(Exception, match="ranking_likelihood"):
        fit_reward_model(m, four, "linear", ranking_likelihood="triples")


def test_fitted_model_is_a_reward_channel_for_planners():
    m, o = _world(2, 4, 3, 0)
    data = _rlhf_data(m, o, 2000, rationality=3.0)
    every = m.all_sequences()
    for name in ("linear", "tabular"):
        rm = fit_reward_model(m, data, name)
        assert m.table(rm.reward).shape == (m.n_states, m.n_actions)
        np.testing.assert_allclose(m.sequence_returns(rm.reward, every), rm.predict(every), atol=1e-9)
        pi = m.table(m.soft_policy(rm.reward, 0.5))
        assert np.all(np.isfinite(pi))


def test_linear_model_on_a_compressed_world_pays_its_predictions_and_a_tabular_one_is_refused():
    """A linear reward model is a Markov reward on a compressed world: the returns it pays along any sequence are
    its predictions. A tabular model needs every complete sequence listed, which a compressed world cannot do: the
    run check refuses it before any work."""
    from sim.config import EnvConfig
    from sim.run import check

    w = MarkovWorld(2, 4, 4, True)
    w.ref = make_reference(w, "bigram", np.random.default_rng(0))
    o = make_oracle(w, "linear", seed=1)
    data = _rlhf_data(w, o, 1500, rationality=2.0)
    assert data.pool.ids is None
    rm = fit_reward_model(w, data, "linear")
    rng = np.random.default_rng(1)
    pool, pairs = sample_items(w.sequence_source(w.ref), np.arange(2), 1000, 2, rng)
    np.testing.assert_allclose(w.sequence_returns(rm.reward, pool), rm.predict(pool), atol=1e-9)
    assert preference_accuracy(rm.predict(pool), w.sequence_returns(o.reward, pool), pairs) > 0.8
    with pytest.raises(ConfigError, match="env.compressed"):  # a per-sequence lower confidence bound
        fit_reward_model(w, data, "linear", pessimism=1.0)
    cfg = Config(
        env=EnvConfig(n_prompts=2, vocab_size=4, horizon=4, compressed=True),
        pipeline="rlhf",
        reward_model=RewardModelConfig(name="tabular"),
        agent=AgentConfig(name="exact_planner"),
    )
    with pytest.raises(ConfigError) as e:
        check(cfg)
    assert e.value.field == "reward_model.name"


def test_a_direct_tabular_fit_on_a_compressed_world_names_env_compressed():
    w = MarkovWorld(2, 4, 3, True)
    w.ref = make_reference(w, "uniform")
    data = _rlhf_data(w, make_oracle(w, "linear", seed=0), 50)
    with pytest.raises(ConfigError, match="env.compressed"):
        fit_reward_model(w, data, "tabular")


def test_omitting_templates_is_a_misspecification():
    cfg = Config(pipeline="rlhf", feedback=FeedbackConfig(n=4000, rationality=3.0))
    setup = build_setup(cfg.env, cfg.oracle, cfg.corruption, 0)
    full = run_rlhf(cfg, setup, seed_streams(0)["feedback"], np.random.default_rng(0)).metrics
    cfg_small = Config(
        pipeline="rlhf",
        feedback=FeedbackConfig(n=4000, rationality=3.0),
        reward_model=RewardModelConfig(templates=["unigram"]),
    )
    small = run_rlhf(cfg_small, setup, seed_streams(0)["feedback"], np.random.default_rng(0)).metrics
    assert small["reward_distance"] > full["reward_distance"] + 0.1
    assert small["rm_accuracy_in_dist"] < full["rm_accuracy_in_dist"]


def test_fit_by_feedback_kind_validates():
    from sim.reward_models.model import map_fit

    pool = EnumeratedWorld(1, 2, 1).all_sequences()
    with pytest.raises(ConfigError, match="feedback.kind"):
        map_fit(
            sparse.identity(3, format="csr"),
            FeedbackData("essays", pool, np.zeros((1, 2), int), None, np.arange(1)),
            1.0,
        )
    with pytest.raises(ConfigError, match="reward_model.ranking_likelihood"):
        RewardModelConfig(ranking_likelihood="borda")


def test_feature_hash_gives_each_feature_one_signed_bucket_fixed_per_shape():
    from sim.reward_models.model import feature_hash

    P = feature_hash(500, 16)
    assert P.shape == (500, 16)
    assert np.array_equal(np.diff(P.indptr), np.ones(500))  # one entry per feature row
    assert set(np.unique(P.data)) == {-1.0, 1.0}
    assert (feature_hash(500, 16) != P).nnz == 0  # the same model class in every run
    assert (feature_hash(500, 17)[:, :16] != P).nnz > 0
    counts = np.bincount(P.indices, minlength=16)
    assert counts.min() > 10 and counts.max() < 60  # ~31 per bucket: every bucket used
    signs = P.data.mean()
    assert abs(signs) < 0.15  # balanced signs (500 fair draws: sd 0.045)


def test_hashed_capacity_fits_in_d_parameters_and_pays_their_predictions():
    """``reward_model.dim = d < D``: the MAP fit on the hashed design ``X P``; the model reports ``P theta_d`` over the
    features, and the dense reward it pays (in the world's own form) is the hashed model's prediction. ``d >= D`` is
    the unhashed model, bit for bit."""
    from sim.reward_models.model import feature_hash, map_fit

    m, o = _world(2, 4, 3, 0)
    data = _rlhf_data(m, o, 2000, rationality=3.0)
    every = m.all_sequences()
    full = fit_reward_model(m, data, "linear")
    D = full.features.dim
    assert D == 4 + 3 * 4 + 5 * 4 + 2 * 4
    for d in (D, 10 * D):
        assert np.array_equal(fit_reward_model(m, data, "linear", dim=d).theta, full.theta)
    d = 8
    rm = fit_reward_model(m, data, "linear", dim=d)
    P = feature_hash(D, d)
    X = design(m, "linear", full.features, data.pool) @ P
    theta_d = map_fit(X, data, 1.0)
    np.testing.assert_allclose(rm.theta, P @ theta_d, atol=1e-7)
    X_all = design(m, "linear", full.features, every) @ P
    np.testing.assert_allclose(m.sequence_returns(rm.reward, every), X_all @ theta_d, atol=1e-6)
    np.testing.assert_allclose(rm.predict(every), X_all @ theta_d, atol=1e-6)
    # a coarser class orders held-out pairs worse: 2 parameters cannot hold 44 features' worth of oracle
    rng = np.random.default_rng(5)
    pool, pairs = sample_items(m.sequence_source(m.ref), np.arange(2), 4000, 2, rng)
    true = m.sequence_returns(o.reward, pool)
    acc = {d: preference_accuracy(fit_reward_model(m, data, "linear", dim=d).predict(pool), true, pairs)
           for d in (2, 0)}  # fmt: skip
    assert acc[0] > acc[2] + 0.05, acc


def test_hashed_laplace_pessimism_uses_the_posterior_over_the_d_parameters():
    from sim.reward_models.fit import bt_hessian
    from sim.reward_models.model import feature_hash, map_fit

    m, o = _world(2, 4, 3, 1)
    data = _rlhf_data(m, o, 600, rationality=2.0)
    every = m.all_sequences()
    rm = fit_reward_model(m, data, "linear", dim=8, pessimism=1.5)
    F = FeatureMap(m, ("unigram", "position", "bigram", "prompt"))
    P = feature_hash(F.dim, 8)
    X = (design(m, "linear", F, data.pool) @ P).toarray()
    theta_d = map_fit(sparse.csr_matrix(X), data, 1.0)
    cov = np.linalg.inv(bt_hessian(theta_d, X[data.items[:, 0]] - X[data.items[:, 1]], 1.0))
    assert rm.covariance.shape == (8, 8)
    np.testing.assert_allclose(rm.covariance, cov, rtol=1e-5, atol=1e-8)
    X_all = (design(m, "linear", F, every) @ P).toarray()
    lcb = X_all @ theta_d - 1.5 * np.sqrt(np.einsum("ij,jk,ik->i", X_all, cov, X_all))
    np.testing.assert_allclose(m.sequence_returns(rm.reward, every), lcb, atol=1e-5)


def test_hashed_capacity_on_a_compressed_world_and_its_config_errors():
    w = MarkovWorld(2, 4, 4, True)
    w.ref = make_reference(w, "bigram", np.random.default_rng(0))
    o = make_oracle(w, "linear", seed=1)
    data = _rlhf_data(w, o, 1500, rationality=2.0)
    rm = fit_reward_model(w, data, "linear", dim=12)
    pool, _ = sample_items(w.sequence_source(w.ref), np.arange(2), 500, 2, np.random.default_rng(1))
    np.testing.assert_allclose(w.sequence_returns(rm.reward, pool), rm.predict(pool), atol=1e-9)
    for bad in ({"dim": -1}, {"name": "tabular", "dim": 4}):
        with pytest.raises(ConfigError) as e:
            RewardModelConfig(**bad)
        assert e.value.field == "reward_model.dim"
