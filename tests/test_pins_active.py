"""Pins of active query selection (sim.feedback.active) for mutation testing (issue #18).

Each test states a value the module's docstring fixes: the rows that count as informative, the Laplace score on a
dense design, a stable selection among ties, the split of ``n`` labels over rounds, the data each round is fitted
on, the documented defaults (5 rounds, a pool of 10 per label, 5 bootstrap members), the hashed model's design, and
the exact text of every refusal. Worlds are the small default ones; numbers are worked out by hand in the comments.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from scipy import sparse

import sim.feedback.active as active
from sim.build import build_setup, config_from, seed_streams
from sim.errors import ConfigError
from sim.features import FeatureMap
from sim.feedback import QueryModel, collect, collect_active, sample_items
from sim.proxy import start_feedback
from sim.reward_models.model import design, feature_hash, map_fit

SMALL = {"pipeline": "rlhf", "env": {"n_prompts": 2, "vocab_size": 4, "horizon": 4}, "agent": {"name": "exact_planner"}}
TEMPLATES = ["unigram", "position", "bigram", "prompt"]  # 4 + 16 + 20 + 8 = 48 features on SMALL
RULES = "one of ['random', 'disagreement', 'laplace', 'entropy']"


@pytest.fixture(scope="module")
def world_setup():
    cfg = config_from({**SMALL, "feedback": {"n": 40}})
    return cfg, build_setup(cfg.env, cfg.oracle, cfg.corruption, 0)


def _fb(world_setup, seed: int = 0, **feedback):
    cfg, setup = world_setup
    if feedback:
        cfg = config_from({**SMALL, "feedback": {"n": 40, **feedback}})
    return start_feedback(cfg, setup, seed_streams(seed)["feedback"])


def _model(world_setup, name: str = "linear", dim: int = 0, tol: float = 1e-8) -> QueryModel:
    return QueryModel(world_setup[1].world, name, TEMPLATES, 1.0, tol, dim)


def _spy(model: QueryModel):
    """Record, on this model only, what each scored round was fitted on and scored, and every bootstrap fit."""
    calls = {"scores": [], "boot": 0}
    scores, fit = model.scores, model.fit

    def spy_scores(query, data, Z, ensemble, rng):
        calls["scores"].append((data.n, Z.shape[0], ensemble))
        return scores(query, data, Z, ensemble, rng)

    def spy_fit(data, rng=None):
        calls["boot"] += rng is not None
        return fit(data, rng)

    model.scores, model.fit = spy_scores, spy_fit
    return calls


# --- informative rows, the dense Laplace score, the stable selection ---------------------------------------------


def test_rows_nonzero_on_dense_and_sparse_rows_with_small_entries():
    Z = np.array([[0.0, 0.0, 0.0], [0.25, -0.5, 0.0], [0.0, 0.0, 0.0], [-0.1, 0.0, 0.3], [2.0, -2.0, 1.0]])
    want = [False, True, False, True, True]  # |.| sums 0, 0.75, 0, 0.4, 5: below 1 yet nonzero
    np.testing.assert_array_equal(active._rows_nonzero(Z), want)
    np.testing.assert_array_equal(active._rows_nonzero(sparse.csr_matrix(Z)), want)
    assert active._rows_nonzero(Z).shape == (5,)


def test_laplace_score_on_a_dense_design_is_z_cov_z():
    Z = np.array([[1.0, -2.0], [0.5, 3.0], [0.0, 0.0]])
    cov = np.array([[2.0, 0.3], [0.3, 0.5]])
    # z^T cov z: 2 - 2(0.3)(2) + 0.5(4) = 2.8; 0.5 + 2(0.3)(1.5) + 0.5(9) = 5.9; 0
    np.testing.assert_allclose(active.laplace_scores(Z, cov), [2.8, 5.9, 0.0], rtol=1e-14, atol=0)
    np.testing.assert_allclose(active.laplace_scores(sparse.csr_matrix(Z), cov), [2.8, 5.9, 0.0], rtol=1e-14, atol=0)


def test_select_keeps_candidate_order_among_many_ties():
    scores = np.random.default_rng(0).integers(0, 3, size=40).astype(float)  # 40 scores in {0, 1, 2}
    informative = np.ones(40, dtype=bool)
    informative[[5, 17]] = False
    got = active.select(scores, informative, 40)
    want = [i for s in (2.0, 1.0, 0.0) for i in range(40) if scores[i] == s and informative[i]] + [5, 17]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(active.select(scores, informative, 7), want[:7])


# --- the query model ----------------------------------------------------------------------------------------------


def test_query_model_design_is_the_features_unless_hashed(world_setup):
    world = world_setup[1].world
    seqs = world.all_sequences()
    X = design(world, "linear", FeatureMap(world, TEMPLATES), seqs)
    assert X.shape[1] == 48
    full = QueryModel(world, "linear", TEMPLATES, 1.0, 1e-8)  # dim left out: the full model, no hashing
    assert full.hash is None
    assert (full.design(seqs) != X).nnz == 0
    assert (_model(world_setup, dim=48).design(seqs) != X).nnz == 0  # d = D: no hashing
    for d in (1, 3, 47):  # 1 <= d < D: the design is X P with the (D, d) signed hash of the model class
        got = _model(world_setup, dim=d).design(seqs)
        assert got.shape == (X.shape[0], d)
        np.testing.assert_array_equal(got.toarray(), (X @ feature_hash(48, d)).toarray())


def test_tabular_query_model_is_one_hot_whatever_dim(world_setup):
    world = world_setup[1].world
    seqs = world.all_sequences()
    want = design(world, "tabular", None, seqs).toarray()  # one column per complete sequence
    for d in (0, 3):
        m = _model(world_setup, "tabular", dim=d)
        assert m.features is None and m.hash is None
        np.testing.assert_array_equal(m.design(seqs).toarray(), want)


def test_query_model_names_the_reward_model_templates_key(world_setup):
    with pytest.raises(ConfigError) as e:
        QueryModel(world_setup[1].world, "linear", ["unigram", "trigram"], 1.0, 1e-6)
    assert (e.value.field, e.value.value) == ("reward_model.templates", "trigram")


def test_bootstrap_fit_resamples_every_row_and_uses_the_tolerance(world_setup):
    fb = _fb(world_setup)
    data = collect(fb.teacher, fb.source, fb.covered, "preferences", 12, fb.rng)
    model = _model(world_setup)  # tol 1e-8
    X = model.design(data.pool)
    rows = np.random.default_rng(4).integers(0, data.n, data.n)
    assert 0 in rows  # row 0 is in this resample (a bootstrap that skipped it would differ)
    want = map_fit(X, data.subset(rows), 1.0, tol=1e-8)
    np.testing.assert_array_equal(model.fit(data, np.random.default_rng(4)), want)
    assert not np.allclose(want, map_fit(X, data, 1.0, tol=1e-8), atol=1e-3)  # a resample moves the fit
    loose = map_fit(X, data, 1.0, tol=1e-2)
    np.testing.assert_array_equal(_model(world_setup, tol=1e-2).fit(data), loose)
    assert np.abs(loose).max() > 0.3  # the loose fit moved from 0, and stopped elsewhere than the default tolerance
    assert not np.allclose(loose, map_fit(X, data, 1.0), atol=1e-2)


def test_unknown_rule_is_refused_by_the_model_naming_the_key(world_setup):
    fb = _fb(world_setup)
    data = collect(fb.teacher, fb.source, fb.covered, "preferences", 8, fb.rng)
    model = _model(world_setup)
    Z = model.design(data.pool)[:3]
    with pytest.raises(ConfigError) as e:
        model.scores("bald", data, Z, 3, np.random.default_rng(0))
    assert (e.value.field, e.value.value, e.value.allowed) == ("feedback.query", "bald", RULES)


# --- collect_active -------------------------------------------------------------------------------------------------


def test_defaults_are_five_rounds_a_pool_of_ten_and_five_members(world_setup):
    fb = _fb(world_setup)
    model = _model(world_setup)
    calls = _spy(model)
    data = collect_active(fb.teacher, fb.source, fb.covered, 50, fb.rng, model, "disagreement")
    # 50 labels over 5 rounds: 10 each; round 0 random; rounds 1-4 fitted on 10, 20, 30, 40 labels, 100 candidates
    assert data.n == 50
    assert calls["scores"] == [(10, 100, 5), (20, 100, 5), (30, 100, 5), (40, 100, 5)]
    assert calls["boot"] == 20  # 5 bootstrap members per round
    np.testing.assert_array_equal(data.covered, fb.covered)


def test_uneven_split_skips_empty_rounds_and_keeps_going(world_setup):
    fb = _fb(world_setup)
    model = _model(world_setup)
    calls = _spy(model)
    data = collect_active(fb.teacher, fb.source, fb.covered, 3, fb.rng, model, "entropy", rounds=4, pool=2)
    # linspace(0, 3, 5) = 0, .75, 1.5, 2.25, 3 rounds to 0, 1, 2, 2, 3: batches 1, 1, 0, 1
    assert data.n == 3
    assert calls["scores"] == [(1, 2, 5), (2, 2, 5)]


def test_rounds_with_a_prior_fit_the_prior_and_the_new_labels(world_setup):
    fb = _fb(world_setup)
    prior = collect(fb.teacher, fb.source, fb.covered, "preferences", 7, fb.rng)
    model = _model(world_setup)
    calls = _spy(model)
    data = collect_active(
        fb.teacher, fb.source, fb.covered, 12, fb.rng, model, "entropy", rounds=3, pool=3, prior=prior
    )
    assert data.n == 12  # the new labels only
    assert calls["scores"] == [(7, 12, 5), (11, 12, 5), (15, 12, 5)]  # no random round: 7, 7 + 4, 7 + 8 labels


def test_two_rounds_replayed_step_by_step(world_setup):
    """Round 0: the source's own pairs (groups of 2); round 1: 4 x 3 candidate pairs, scored by 3 bootstrap members
    drawn from the same stream, the 4 with the largest variance labelled."""
    fb, again = _fb(world_setup, seed=2), _fb(world_setup, seed=2)
    model = _model(world_setup)
    got = collect_active(
        fb.teacher, fb.source, fb.covered, 8, fb.rng, model, "disagreement", rounds=2, pool=3, ensemble=3
    )

    rng, teacher = again.rng, again.teacher
    seqs0, pairs0 = sample_items(again.source, again.covered, 4, 2, rng)
    first = active._label(teacher, seqs0, pairs0, again.covered, rng)
    seqs1, cand = sample_items(again.source, again.covered, 12, 2, rng)
    X = model.design(seqs1)
    Z = X[cand[:, 0]] - X[cand[:, 1]]
    members = [model.fit(first, rng) for _ in range(3)]
    var = (Z @ np.stack(members, axis=1)).var(axis=1, ddof=1)
    order = sorted(range(12), key=lambda c: (not active._rows_nonzero(Z)[c], -var[c], c))
    second = active._label(teacher, seqs1, cand[order[:4]], again.covered, rng)
    want = first + second
    assert len(set(np.round(var, 12))) == 12  # no ties among the scores
    np.testing.assert_array_equal(got.pool.tokens, want.pool.tokens)
    np.testing.assert_array_equal(got.items, want.items)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.covered, again.covered)


def test_label_keeps_the_covered_prompts(world_setup):
    fb = _fb(world_setup)
    seqs, pairs = sample_items(fb.source, fb.covered, 5, 2, fb.rng)
    covered = np.array([1])
    data = active._label(fb.teacher, seqs, pairs, covered, fb.rng)
    assert data.covered is covered and data.n == 5 and data.pool.n == 10


def test_refusals_name_the_key_value_and_allowed_range(world_setup):
    fb = _fb(world_setup)
    model = _model(world_setup)
    with pytest.raises(ConfigError) as e:
        collect_active(fb.teacher, fb.source, fb.covered, 10, fb.rng, model, "bald")
    assert (e.value.field, e.value.value, e.value.allowed) == ("feedback.query", "bald", RULES)
    skipper = _fb(world_setup, skip=50.0)
    with pytest.raises(ConfigError) as e:
        collect_active(skipper.teacher, skipper.source, skipper.covered, 10, skipper.rng, model, "entropy")
    assert (e.value.field, e.value.value) == ("feedback.skip", 50.0)
    assert e.value.allowed == "a threshold that keeps some of the 10 items"


# --- check_query ----------------------------------------------------------------------------------------------------


def _cfg(query: str, name: str = "linear", dim: int = 0, templates=TEMPLATES):
    rmc = types.SimpleNamespace(name=name, templates=templates, dim=dim)
    return types.SimpleNamespace(feedback=types.SimpleNamespace(query=query), reward_model=rmc)


def test_check_query_refuses_laplace_on_a_tabular_model(world_setup):
    world = world_setup[1].world
    with pytest.raises(ConfigError) as e:
        active.check_query(_cfg("laplace", "tabular"), world)
    assert (e.value.field, e.value.value) == ("feedback.query", "laplace")
    assert e.value.allowed == (
        "random, disagreement or entropy with reward_model=tabular (laplace needs a linear model: a tabular "
        "model's posterior covariance spans every complete sequence)"
    )
    active.check_query(_cfg("entropy", "tabular"), world)  # the other rules carry it


def test_check_query_counts_the_hashed_parameters_against_the_limit(world_setup, monkeypatch):
    world = world_setup[1].world
    monkeypatch.setattr(active, "MAX_LAPLACE_DIM", 40)  # the 48 features of SMALL are then too many
    for dim in (1, 39, 40):  # a hashed model has dim <= 40 parameters: carried
        active.check_query(_cfg("laplace", dim=dim), world)
    for dim, n in ((0, 48), (41, 41), (100, 48)):  # unhashed, or more buckets than the limit, or than the features
        with pytest.raises(ConfigError) as e:
            active.check_query(_cfg("laplace", dim=dim), world)
        assert (e.value.field, e.value.value) == ("feedback.query", "laplace")
        assert e.value.allowed == (
            f"random, disagreement or entropy for a linear model of {n} parameters (laplace inverts a dense D x D "
            "Hessian, at most D = 40); or fewer reward_model.templates, or reward_model.dim <= 40"
        )
    with pytest.raises(ConfigError) as e:
        active.check_query(_cfg("laplace", templates=["unigram", "trigram"]), world)
    assert (e.value.field, e.value.value) == ("reward_model.templates", "trigram")
