"""Pins of the feature templates (sim.features) by hand (mutation testing, issue #18).

Indices are written out for chosen (prompt, depth, last token, token) tuples; the sums (``values``, ``gather``,
``score_gradient``, ``design``, ``sequences``) are checked against loops over the index tables with weights and
parameters that are all different (nothing cancels), on a world where the ``length`` template is inactive on most
transitions and some sequences repeat a token (a feature counted twice).
"""

from __future__ import annotations

import numpy as np
import pytest

import sim.features as features
from sim.errors import ConfigError
from sim.features import FeatureMap, check_templates, template_dim, template_index
from sim.worlds import EnumeratedWorld, MarkovWorld


def test_check_templates_names_what_is_wrong():
    assert check_templates(["bigram", "unigram"]) == ("bigram", "unigram")
    assert check_templates(iter(["length"])) == ("length",)
    with pytest.raises(ConfigError) as err:
        check_templates(["unigram", "trigram"], "agent.templates")
    assert (err.value.field, err.value.value) == ("agent.templates", "trigram")
    assert err.value.allowed == f"template names in {list(features.TEMPLATES)}"
    with pytest.raises(ConfigError) as err:
        check_templates(["prompt", "unigram", "prompt"])
    assert (err.value.field, err.value.value, err.value.allowed) == (
        "templates",
        ["prompt", "unigram", "prompt"],
        "each template at most once",
    )
    with pytest.raises(ConfigError) as err:
        check_templates([], "reward_model.templates")
    assert (err.value.field, err.value.value) == ("reward_model.templates", [])
    assert err.value.allowed == f"at least one of {list(features.TEMPLATES)}"


def test_template_dims_by_hand():
    P, V, H = 2, 3, 5
    want = {"unigram": 3, "position": 15, "bigram": 12, "prompt": 6, "length": 6, "hashed": 256}
    assert {name: template_dim(name, P, V, H) for name in features.TEMPLATES} == want
    assert template_dim("hashed", P, V, H, n_hash=7) == 7
    assert template_dim("position", P, V, H, n_hash=7) == 15


def test_template_indices_by_hand():
    V = 3
    p, t, y, a = np.array([0, 1, 1]), np.array([0, 2, 4]), np.array([-1, 0, 2]), np.array([2, 1, 0])
    end = np.array([-1, 3, 5])
    idx = lambda name, **kw: template_index(name, p, t, y, a, end, vocab_size=V, **kw)  # noqa: E731
    np.testing.assert_array_equal(idx("unigram"), [2, 1, 0])
    np.testing.assert_array_equal(idx("position"), [2, 7, 12])  # t V + a
    np.testing.assert_array_equal(idx("bigram"), [11, 1, 6])  # y V + a, no last token -> BOS = V
    np.testing.assert_array_equal(idx("prompt"), [2, 4, 3])  # p V + a
    np.testing.assert_array_equal(idx("length"), [-1, 3, 5])
    # BOS given as V itself is V too
    assert template_index("bigram", 0, 0, V, 1, -1, vocab_size=V) == V * V + 1
    # a scalar token broadcast against arrays of prompts and depths: its own copy, of their shape
    a0 = np.array(2)
    out = template_index("unigram", np.array([0, 1]), np.array([[0], [1]]), -1, a0, -1, vocab_size=V)
    np.testing.assert_array_equal(out, [[2, 2], [2, 2]])
    out[0, 0] = 9
    assert a0 == 2 and out[1, 1] == 2  # writable, not a view of the token
    ln = template_index("length", np.array([0, 1, 0]), 0, -1, 0, np.array(4), vocab_size=V)
    np.testing.assert_array_equal(ln, [4, 4, 4])
    ln[0] = 0
    np.testing.assert_array_equal(ln, [0, 4, 4])


def test_hashed_index_is_the_fixed_multiplicative_hash():
    V = 3
    # h = ((prev + 1) 1000003 + (y + 1) 8191 + (a + 1) 131) 2654435761 mod 2^32 mod n_hash; a last token >= V is none
    assert template_index("hashed", 0, 2, 2, 0, -1, prev=1, vocab_size=V) == 38
    assert template_index("hashed", 0, 0, V, 2, -1, prev=-1, vocab_size=V) == 185  # y = BOS (V) -> -1
    got = template_index("hashed", 0, 1, np.array([-1, 0]), np.array([1, 2]), -1, prev=np.array([0, 2]), vocab_size=V,
                         n_hash=7)  # fmt: skip
    np.testing.assert_array_equal(got, [4, 6])
    with pytest.raises(ConfigError) as err:
        template_index("hashed", 0, 1, 0, 1, -1, vocab_size=V)
    assert (err.value.field, err.value.value) == ("templates", "hashed")
    assert err.value.allowed == (
        f"Markov templates {list(features.MARKOV_TEMPLATES)} on a world that keeps only the last token "
        "(hashed looks at the two before)"
    )
    with pytest.raises(ConfigError) as err:
        template_index("skipgram", 0, 1, 0, 1, -1, vocab_size=V)
    assert (err.value.field, err.value.value) == ("templates", "skipgram")
    assert err.value.allowed == f"template names in {list(features.TEMPLATES)}"


def _world():
    return EnumeratedWorld(2, 3, 3)


def test_feature_map_blocks_and_offsets():
    w = _world()
    fm = FeatureMap(w, ["prompt", "length", "hashed"], n_hash=5, field="agent.templates")
    assert fm.world is w and fm.field == "agent.templates" and fm.n_hash == 5
    assert fm.templates == ("prompt", "length", "hashed")
    assert fm.dims == [6, 4, 5]
    np.testing.assert_array_equal(fm.offsets, [0, 6, 10, 15])
    assert fm.offsets.dtype == np.int64 and fm.dim == 15 and type(fm.dim) is int
    theta = np.arange(15.0)
    np.testing.assert_array_equal(fm.block(theta, "length"), [6, 7, 8, 9])
    np.testing.assert_array_equal(fm.block(theta, "hashed"), [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(FeatureMap(w, ["unigram"]).dims, [3])
    assert FeatureMap(w, ["hashed"]).dim == 256  # the default number of buckets
    with pytest.raises(ConfigError) as err:
        FeatureMap(w, ["unigram", "unigram"], field="agent.templates")
    assert err.value.field == "agent.templates"
    assert FeatureMap(w, ["unigram"]).field == "templates"  # the default field of its refusals
    with pytest.raises(ConfigError) as err:
        FeatureMap(w, ["trigram"])
    assert err.value.field == "templates"
    with pytest.raises(ConfigError) as err:  # the world refuses what it cannot compute, under the same field
        FeatureMap(MarkovWorld(1, 3, 3), ["hashed"], field="reward_model.templates")
    assert err.value.field == "reward_model.templates"


def test_index_reads_the_world_per_state_and_token():
    w = _world()  # H = 3: EOS (token 0) at depth t ends a response of length t, any token at depth 2 one of length 3
    fm = FeatureMap(w, ["position", "bigram", "length", "hashed"], n_hash=7)
    s1, s2 = w.encode(1, (2,)), w.encode(1, (1, 2))  # prompt 1; depth 1 after token 2; depth 2 after tokens 1, 2
    hashed = lambda t, y, prev: [template_index("hashed", 1, t, y, a, -1, prev, 3, 7) for a in range(3)]  # noqa: E731
    want = {
        s1: {"position": [3, 4, 5], "bigram": [6, 7, 8], "length": [1, -1, -1], "hashed": hashed(1, 2, -1)},
        s2: {"position": [6, 7, 8], "bigram": [6, 7, 8], "length": [2, 3, 3], "hashed": hashed(2, 2, 1)},
    }
    assert hashed(1, 2, -1) != hashed(2, 2, 1)
    for s, rows in want.items():
        for name, row in rows.items():
            np.testing.assert_array_equal(fm.index(name, np.array([s]))[0], row)
            np.testing.assert_array_equal(fm.index(name, np.array([s, s]), np.array([2, 0])), [row[2], row[0]])


def test_tables_are_cached_up_to_cache_entries(monkeypatch):
    w = _world()
    entries = w.n_states * w.n_actions
    fm = FeatureMap(w, ["position", "bigram"])
    monkeypatch.setattr(features, "CACHE_ENTRIES", entries)
    tab = fm.table("position")
    assert tab.dtype == np.int32 and tab.flags.c_contiguous and tab.shape == (w.n_states, w.n_actions)
    assert fm.table("position") is tab  # cached at the bound
    np.testing.assert_array_equal(fm.index("position", np.array([4, 0])), tab[[4, 0]])
    np.testing.assert_array_equal(fm.index("position", np.array([4, 0]), np.array([1, 2])), tab[[4, 0], [1, 2]])
    monkeypatch.setattr(features, "CACHE_ENTRIES", entries - 1)
    other = fm.table("bigram")
    assert "bigram" not in fm._tables and fm.table("bigram") is not other  # beyond it: formed per call
    np.testing.assert_array_equal(fm.table("bigram"), other)


def _phi(fm: FeatureMap, s: int, a: int) -> np.ndarray:
    out = np.zeros(fm.dim)
    for name, off in zip(fm.templates, fm.offsets[:-1], strict=True):
        i = fm.table(name)[s, a]
        if i >= 0:
            out[off + i] += 1
    return out


@pytest.fixture(scope="module")
def mapped():
    w = _world()
    fm = FeatureMap(w, ["length", "bigram", "prompt"])  # length first: its inactive entries sit at offset 0
    rng = np.random.default_rng(11)
    theta = rng.normal(size=fm.dim)
    states = np.array([0, 7, 3, 12, 7])
    assert (fm.table("length")[states] < 0).any() and (fm.table("length")[states] >= 0).any()
    return w, fm, theta, states, rng


def test_values_and_table_values_are_theta_dot_phi(mapped):
    w, fm, theta, states, _ = mapped
    want = np.array([[theta @ _phi(fm, s, a) for a in range(w.n_actions)] for s in range(w.n_states)])
    np.testing.assert_allclose(fm.table_values(theta), want, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(fm.values(list(theta), states), want[states], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(fm.table_values(list(theta)), want, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match=rf"theta has shape \(3,\), expected \({fm.dim},\)"):
        fm.table_values(np.zeros(3))
    np.testing.assert_allclose(w.table(fm.reward(list(theta))), want, rtol=1e-13, atol=1e-15)


def test_gradient_sums_are_weighted_sums_of_phi(mapped):
    w, fm, theta, states, rng = mapped
    W = rng.random((states.size, w.n_actions)) + 0.1
    want = sum(W[i, a] * _phi(fm, s, a) for i, s in enumerate(states) for a in range(w.n_actions))
    np.testing.assert_allclose(fm.score_gradient(states, W), want, rtol=1e-13)
    np.testing.assert_allclose(fm.gather(W, states), want, rtol=1e-13)
    Wall = rng.random((w.n_states, w.n_actions)) + 0.1
    want_all = sum(Wall[s, a] * _phi(fm, s, a) for s in range(w.n_states) for a in range(w.n_actions))
    np.testing.assert_allclose(fm.gather(Wall), want_all, rtol=1e-13)


def test_global_rows_point_into_the_concatenated_vector(mapped):
    w, fm, _, states, _ = mapped
    rows = fm.global_rows(states)
    assert len(rows) == 3
    length = fm.table("length")[states]
    np.testing.assert_array_equal(rows[0], np.where(length >= 0, length, fm.dim))
    np.testing.assert_array_equal(rows[1], fm.table("bigram")[states] + fm.offsets[1])
    np.testing.assert_array_equal(rows[2], fm.table("prompt")[states] + fm.offsets[2])


def test_design_and_sequences_are_rows_of_phi_with_repeats_counted(mapped):
    w, fm, _, _, rng = mapped
    s, a = np.array([5, 0, 12, 5]), np.array([0, 2, 1, 1])
    X = fm.design(s, a)
    assert X.shape == (4, fm.dim)
    np.testing.assert_array_equal(X.toarray(), [_phi(fm, si, ai) for si, ai in zip(s, a, strict=True)])
    seqs = w.all_sequences()
    Psi = fm.sequences(seqs).toarray()
    states, actions, mask = w.paths(seqs)
    want = np.array([sum(_phi(fm, s_, a_) for s_, a_ in zip(st[m], ac[m], strict=True))
                     for st, ac, m in zip(states, actions, mask, strict=True)])  # fmt: skip
    assert Psi.shape == (seqs.n, fm.dim) and want.max() == 3  # a sequence of one token thrice counts it 3 times
    np.testing.assert_array_equal(Psi, want)


def test_sums_over_states_that_miss_the_top_of_a_block_and_over_uncached_tables(monkeypatch):
    """States of prompt 0 alone never reach the prompt block's last indices, nor the last bigrams: each block's sum
    still has the block's full length (zeros where nothing fires)."""
    w = _world()
    fm = FeatureMap(w, ["prompt", "bigram"])
    states = np.array([0, 2, 2])  # prompt 0 at depth 0, twice the same state at depth 1 (prompt 0)
    assert (w.prompt[states] == 0).all()
    W = np.array([[0.5, 1.0, 2.0], [3.0, -1.0, 0.25], [1.5, 0.5, -0.75]])
    want = sum(W[i, a] * _phi(fm, s, a) for i, s in enumerate(states) for a in range(3))
    assert not want[3:6].any()  # prompt 1's tokens: never fired
    np.testing.assert_allclose(fm.score_gradient(states, W), want, rtol=1e-14)
    np.testing.assert_allclose(fm.gather(W, states), want, rtol=1e-14)
    monkeypatch.setattr(features, "CACHE_ENTRIES", 0)  # no table is kept: gather over all states forms them
    fresh = FeatureMap(w, ["prompt", "bigram"])
    Wall = np.linspace(-1.0, 2.0, w.n_states * 3).reshape(w.n_states, 3) ** 2
    want_all = sum(Wall[s, a] * _phi(fm, s, a) for s in range(w.n_states) for a in range(3))
    np.testing.assert_allclose(fresh.gather(Wall), want_all, rtol=1e-13)
    assert fresh._tables == {}


def test_template_index_defaults_and_a_hashed_index_on_a_world_without_the_token_before():
    # vocab_size defaults to 0 (callers pass the world's): position and prompt then read the token alone
    assert template_index("position", 0, 2, -1, 1, -1) == 1
    assert template_index("prompt", 1, 0, -1, 2, -1) == 2
    # a Markov world keeps no token before the last: asked for hashed indices, the refusal names the Markov templates
    markov = MarkovWorld(1, 3, 3)
    assert markov.prev_token is None
    fm = FeatureMap(markov, ["unigram"])
    with pytest.raises(ConfigError, match="hashed looks at the two before"):
        fm.index("hashed", np.array([0, 1]))
