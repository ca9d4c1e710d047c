from __future__ import annotations

import numpy as np
import pytest

from sim.errors import ConfigError
from sim.features import TEMPLATES, FeatureMap, template_dim
from sim.mdp import TextMDP
from sim.oracle import make_oracle, parse_kind, sequence_form, token_presence
from tests.brute import seq_return, sequences


def _features_of_sequence(fm: FeatureMap, path) -> np.ndarray:
    psi = np.zeros(fm.dim)
    for name, off in zip(fm.templates, fm.offsets, strict=False):
        for s, a in path:
            i = fm.index(name)[s, a]
            if i >= 0:
                psi[off + i] += 1
    return psi


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_indices_in_range(name):
    m = TextMDP(2, 4, 3)
    idx = FeatureMap(m, [name]).index(name)
    assert idx.shape == (m.n_states, m.n_actions)
    assert idx.max() < template_dim(m, name)
    assert idx.min() >= -1
    if name == "length":
        assert np.all((idx >= 0) == m.terminal_mask())
    else:
        assert idx.min() >= 0


def test_position_and_bigram_indices_are_what_they_say():
    m = TextMDP(1, 4, 3)
    fm = FeatureMap(m, ["position", "bigram"])
    s = m.encode(0, (2, 3))
    assert fm.index("position")[s, 1] == 2 * 4 + 1
    assert fm.index("bigram")[s, 1] == 3 * 4 + 1
    assert fm.index("bigram")[0, 1] == 4 * 4 + 1  # BOS row


def test_linear_reward_matches_feature_dot_product():
    m = TextMDP(2, 3, 4)
    fm = FeatureMap(m, TEMPLATES)
    theta = np.random.default_rng(0).normal(size=fm.dim)
    r = fm.reward(theta)
    for _p, path in sequences(m)[:40]:
        assert seq_return(path, r) == pytest.approx(_features_of_sequence(fm, path) @ theta, abs=1e-12)


def test_same_seed_same_oracle_and_streams_independent():
    m = TextMDP(2, 4, 3)
    a = make_oracle(m, "nonlinear", seed=7).reward
    np.testing.assert_array_equal(a, make_oracle(m, "nonlinear", seed=7).reward)
    assert not np.array_equal(a, make_oracle(m, "nonlinear", seed=8).reward)
    # adding a family leaves the others' draws unchanged
    lin = make_oracle(m, "linear", seed=7).reward
    both = make_oracle(m, "linear+length", seed=7).reward
    length = make_oracle(m, "length", seed=7).reward
    np.testing.assert_allclose(both, lin + length, atol=1e-12)


def test_length_oracle_peaks_at_target():
    m = TextMDP(1, 3, 6)
    o = make_oracle(m, "length", "sequence", target_length=4, length_weight=2.0)
    by_len = {}
    L = m.end_length()
    for s, a in zip(*np.nonzero(m.terminal_mask()), strict=True):
        by_len[int(L[s, a])] = o.reward[s, a]
    assert max(by_len, key=by_len.get) == 4
    assert by_len[4] == pytest.approx(2.0)
    assert by_len[0] == 0.0


def test_cooccurrence_bonus_paid_once_per_pair():
    m = TextMDP(1, 4, 4)
    o_lin = make_oracle(m, "linear", seed=3, seq_noise=0.0)
    o_non = make_oracle(m, "nonlinear", seed=3, seq_noise=0.0, n_pairs=3, pair_scale=1.0)
    extra = o_non.reward - o_lin.reward
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
    m = TextMDP(2, 4, 3)
    fm = make_oracle(m, "linear").features
    paths = [path for _p, path in sequences(m)]
    Psi = np.array([_features_of_sequence(fm, path) for path in paths])
    for kind, spanned in [("linear", True), ("nonlinear", False)]:
        R = np.array([seq_return(path, make_oracle(m, kind, seed=1).reward) for path in paths])
        resid = R - Psi @ np.linalg.lstsq(Psi, R, rcond=None)[0]
        assert (np.abs(resid).max() < 1e-9) == spanned


def test_sequence_form_of_sequence_form_is_itself():
    m = TextMDP(2, 3, 4)
    r = np.random.default_rng(0).normal(size=(m.n_states, 3))
    once = sequence_form(m, r)
    np.testing.assert_allclose(sequence_form(m, once), once)


def test_token_presence():
    m = TextMDP(1, 4, 4)
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
        make_oracle(TextMDP(1, 3, 3), **kwargs)
    assert e.value.field == field


def test_parse_kind():
    assert parse_kind("linear + length") == ("linear", "length")


def test_sequence_features_match_path_walk():
    from sim.features import sequence_features, terminal_transitions

    m = TextMDP(2, 3, 4)
    fm = FeatureMap(m, TEMPLATES)
    Psi = sequence_features(fm).toarray()
    s_end, a_end = terminal_transitions(m)
    by_end = {(int(s), int(a)): i for i, (s, a) in enumerate(zip(s_end, a_end, strict=True))}
    paths = sequences(m)
    assert Psi.shape == (len(paths), fm.dim)
    for _p, path in paths:
        np.testing.assert_array_equal(Psi[by_end[path[-1]]], _features_of_sequence(fm, path))


def test_stutter_penalises_immediate_repeats_only():
    m = TextMDP(1, 4, 4)
    o = make_oracle(m, "stutter", repetition_weight=1.5)
    for _p, path in sequences(m):
        toks = [a for _s, a in path if a != 0]
        repeats = sum(1 for x, y in zip(toks, toks[1:], strict=False) if x == y)
        assert seq_return(path, o.reward) == pytest.approx(-1.5 * repeats)
