from __future__ import annotations

import numpy as np
import pytest

from sim.errors import ConfigError
from sim.features import TEMPLATES, FeatureMap, template_dim
from sim.oracle import make_oracle, parse_kind, token_presence
from sim.worlds import EnumeratedWorld, MarkovWorld, Table
from tests.brute import seq_return, sequences


def _features_of_sequence(fm: FeatureMap, path) -> np.ndarray:
    psi = np.zeros(fm.dim)
    for name, off in zip(fm.templates, fm.offsets, strict=False):
        for s, a in path:
            i = fm.table(name)[s, a]
            if i >= 0:
                psi[off + i] += 1
    return psi


def _sequence_form(m, r: np.ndarray) -> np.ndarray:
    return m.sequence_form(Table(m, r))


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_indices_in_range(name):
    m = EnumeratedWorld(2, 4, 3)
    fm = FeatureMap(m, [name])
    idx = fm.table(name)
    assert idx.shape == (m.n_states, m.n_actions)
    assert idx.max() < template_dim(name, m.n_prompts, m.vocab_size, m.horizon)
    assert idx.min() >= -1
    if name == "length":
        assert np.all((idx >= 0) == m.terminal_mask())
    else:
        assert idx.min() >= 0
    # the per-row index gives the same entries as the table
    s = np.arange(m.n_states)
    np.testing.assert_array_equal(fm.index(name, s), idx)
    for a in range(m.n_actions):
        np.testing.assert_array_equal(fm.index(name, s, np.full(m.n_states, a)), idx[:, a])


def test_position_and_bigram_indices_are_what_they_say():
    m = EnumeratedWorld(1, 4, 3)
    fm = FeatureMap(m, ["position", "bigram"])
    s = m.encode(0, (2, 3))
    assert fm.table("position")[s, 1] == 2 * 4 + 1
    assert fm.table("bigram")[s, 1] == 3 * 4 + 1
    assert fm.table("bigram")[0, 1] == 4 * 4 + 1  # BOS row


def test_linear_reward_matches_feature_dot_product():
    m = EnumeratedWorld(2, 3, 4)
    fm = FeatureMap(m, TEMPLATES)
    theta = np.random.default_rng(0).normal(size=fm.dim)
    r = m.table(fm.reward(theta))
    np.testing.assert_array_equal(r, fm.table_values(theta))
    for _p, path in sequences(m)[:40]:
        assert seq_return(path, r) == pytest.approx(_features_of_sequence(fm, path) @ theta, abs=1e-12)


def test_same_seed_same_oracle_and_streams_independent():
    m = EnumeratedWorld(2, 4, 3)

    def reward(kind: str, seed: int) -> np.ndarray:
        return m.table(make_oracle(m, kind, seed=seed).reward)

    a = reward("nonlinear", 7)
    np.testing.assert_array_equal(a, reward("nonlinear", 7))
    assert not np.array_equal(a, reward("nonlinear", 8))
    # adding a family leaves the others' draws unchanged
    lin = reward("linear", 7)
    both = reward("linear+length", 7)
    length = reward("length", 7)
    np.testing.assert_allclose(both, lin + length, atol=1e-12)


def test_length_oracle_peaks_at_target():
    m = EnumeratedWorld(1, 3, 6)
    o = make_oracle(m, "length", "sequence", target_length=4, length_weight=2.0)
    r = m.table(o.reward)
    by_len = {}
    L = m.end_length_table()
    for s, a in zip(*np.nonzero(m.terminal_mask()), strict=True):
        by_len[int(L[s, a])] = r[s, a]
    assert max(by_len, key=by_len.get) == 4
    assert by_len[4] == pytest.approx(2.0)
    assert by_len[0] == 0.0


def test_cooccurrence_bonus_paid_once_per_pair():
    m = EnumeratedWorld(1, 4, 4)
    o_lin = make_oracle(m, "linear", seed=3, seq_noise=0.0)
    o_non = make_oracle(m, "nonlinear", seed=3, seq_noise=0.0, n_pairs=3, pair_scale=1.0)
    extra = m.table(o_non.reward) - m.table(o_lin.reward)
    # recover the pair matrix from the transitions of length-2 prefixes, then check all sequences
    C = np.zeros((4, 4))
    for i in range(1, 4):
        for j in range(1, 4):
            if i != j:
                C[i, j] = extra[m.encode(0, (i,)), j]
    assert np.count_nonzero(C) == 6  # 3 symmetric pairs
    for _p, path in sequences(m):
        toks = {a for _s, a in path if a != 0}
        expected = sum(C[i, j] for i in toks for j in toks if i < j)
        assert seq_return(path, extra) == pytest.approx(expected, abs=1e-12)


def test_nonlinear_oracle_is_not_in_the_linear_span():
    m = EnumeratedWorld(2, 4, 3)
    fm = make_oracle(m, "linear").features
    paths = [path for _p, path in sequences(m)]
    Psi = np.array([_features_of_sequence(fm, path) for path in paths])
    for kind, spanned in [("linear", True), ("nonlinear", False)]:
        r = m.table(make_oracle(m, kind, seed=1).reward)
        R = np.array([seq_return(path, r) for path in paths])
        resid = R - Psi @ np.linalg.lstsq(Psi, R, rcond=None)[0]
        assert (np.abs(resid).max() < 1e-9) == spanned


def test_sequence_form_of_sequence_form_is_itself():
    m = EnumeratedWorld(2, 3, 4)
    r = np.random.default_rng(0).normal(size=(m.n_states, 3))
    once = _sequence_form(m, r)
    np.testing.assert_allclose(_sequence_form(m, once), once)


def test_token_presence():
    m = EnumeratedWorld(1, 4, 4)
    P = token_presence(m)
    s = m.encode(0, (3, 1, 3))
    assert P[s].tolist() == [False, True, False, True]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(kind="quadratic"), "oracle.kind"),
        (dict(kind="linear+linear"), "oracle.kind"),
        (dict(form="token"), "oracle.form"),
        (dict(templates=["unigram", "trigram"]), "oracle.templates"),
        (dict(kind="length", target_length=9), "oracle.target_length"),
    ],
)
def test_bad_oracle_config(kwargs, field):
    with pytest.raises(ConfigError) as e:
        make_oracle(EnumeratedWorld(1, 3, 3), **kwargs)
    assert e.value.field == field


def test_parse_kind():
    assert parse_kind("linear + length") == ("linear", "length")


def test_sequence_features_match_path_walk():
    m = EnumeratedWorld(2, 3, 4)
    fm = FeatureMap(m, TEMPLATES)
    Psi = fm.sequences(m.all_sequences()).toarray()
    s_end, a_end = m.terminal_transitions()
    by_end = {(int(s), int(a)): i for i, (s, a) in enumerate(zip(s_end, a_end, strict=True))}
    paths = sequences(m)
    assert Psi.shape == (len(paths), fm.dim)
    for _p, path in paths:
        np.testing.assert_array_equal(Psi[by_end[path[-1]]], _features_of_sequence(fm, path))


def test_stutter_penalises_immediate_repeats_only():
    m = EnumeratedWorld(1, 4, 4)
    r = m.table(make_oracle(m, "stutter", repetition_weight=1.5).reward)
    for _p, path in sequences(m):
        toks = [a for _s, a in path if a != 0]
        repeats = sum(1 for x, y in zip(toks, toks[1:], strict=False) if x == y)
        assert seq_return(path, r) == pytest.approx(-1.5 * repeats)


# ------------------------------------------------ what the world interface adds
@pytest.mark.parametrize("kind", ["linear", "length", "stutter", "linear+length+stutter"])
@pytest.mark.parametrize("eos", [True, False])
def test_markov_oracle_draws_what_the_enumerated_one_does(kind, eos):
    # the same seed gives every complete sequence the same return on both world kinds
    dims = (2, 4, 3, eos)
    e, w = EnumeratedWorld(*dims), MarkovWorld(*dims, track_last_token=True)
    oe, ow = make_oracle(e, kind, seed=11), make_oracle(w, kind, seed=11)
    seqs = e.all_sequences()
    np.testing.assert_allclose(w.sequence_returns(ow.reward, seqs), e.sequence_returns(oe.reward, seqs), atol=1e-12)
    if oe.theta is not None:
        np.testing.assert_array_equal(ow.theta, oe.theta)
    assert w.optimal_return(ow.reward) == pytest.approx(e.optimal_return(oe.reward), abs=1e-9)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(kind="nonlinear"), "oracle.kind"),
        (dict(kind="linear+repetition"), "oracle.kind"),
        (dict(form="sequence"), "oracle.form"),
        (dict(templates=["unigram", "hashed"]), "oracle.templates"),
    ],
)
def test_markov_oracle_refuses_what_does_not_compress(kwargs, field):
    with pytest.raises(ConfigError) as e:
        make_oracle(MarkovWorld(1, 3, 3), **kwargs)
    assert e.value.field == field


@pytest.mark.parametrize("eos", [True, False])
def test_feature_design_and_gather_agree_with_the_table(eos):
    m = EnumeratedWorld(2, 3, 3, eos)
    fm = FeatureMap(m, TEMPLATES)
    rng = np.random.default_rng(1)
    theta = rng.normal(size=fm.dim)
    s, a = rng.integers(0, m.n_states, 50), rng.integers(0, m.n_actions, 50)
    np.testing.assert_allclose(fm.design(s, a) @ theta, fm.table_values(theta)[s, a], atol=1e-12)
    np.testing.assert_allclose(fm.values(theta, s), fm.table_values(theta)[s], atol=1e-12)
    w = rng.random((m.n_states, m.n_actions))
    # sum_{s,a} w(s,a) theta . phi(s,a) = theta . gather(w)
    assert fm.gather(w) @ theta == pytest.approx(float((w * fm.table_values(theta)).sum()), abs=1e-9)
