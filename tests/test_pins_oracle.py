"""Pins of the reference policies (sim.reference) and the oracle families (sim.oracle) against their formulas
(mutation testing, issue #18).

Every number follows from the module docstrings: ``uniform`` rows ``1/V``; ``softmax`` rows
``softmax(N(0,1)^{S x V} / T)``; ``bigram`` rows ``softmax(W[last] / T)`` with ``W ~ N(0,1)^{(V+1) x V}`` and
``last = V`` at depth 0; ``eos_hazard`` EOS probability ``h0 + (h1 - h0) t / (H - 1)``, the other tokens sharing
the rest. Temperatures, hazards and worlds are chosen so that no two formulas give the same rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

import sim.oracle as oracle_module  # its private helper _total is pinned through the module
import sim.reference as reference
from sim.errors import ConfigError
from sim.features import FeatureMap
from sim.oracle import FAMILIES, length_step, make_oracle, parse_kind, stutter_reward, token_presence
from sim.reference import Reference, make_reference
from sim.worlds import EnumeratedWorld
from sim.worlds.base import Table
from sim.worlds.markov import MarkovWorld


def _levels(world, pol) -> np.ndarray:
    return np.concatenate([pol.level(t) for t in range(world.horizon)])


def _log_levels(world, pol) -> np.ndarray:
    return np.concatenate([pol.log_level(t) for t in range(world.horizon)])


def _lazy(monkeypatch):
    """Force the row-function form (no (S, A) table) on a small world."""
    monkeypatch.setattr(reference, "TABLE_ENTRIES", 0)


# ----------------------------------------------------------------------------------------------- reference policies
def test_uniform_rows_and_log_rows(monkeypatch):
    world = EnumeratedWorld(2, 4, 3)
    table = make_reference(world)  # the default kind
    assert isinstance(table, Table)
    np.testing.assert_array_equal(table.values, np.full((world.n_states, 4), 0.25))
    _lazy(monkeypatch)
    ref = make_reference(world, "uniform")
    assert isinstance(ref, Reference)
    for t in range(3):
        n = world.level(t)[1] - world.level(t)[0]
        np.testing.assert_array_equal(ref.level(t), np.full((n, 4), 0.25))
        np.testing.assert_allclose(ref.log_level(t), np.full((n, 4), -np.log(4)), rtol=1e-15)
    local = np.array([2, 0])
    np.testing.assert_array_equal(ref.rows_at(1, local), np.full((2, 4), 0.25))
    np.testing.assert_allclose(ref.log_rows_at(1, local), np.full((2, 4), -np.log(4)), rtol=1e-15)
    # eos_hazard's log rows depend on the depth: at t = 2 of H = 3, EOS 0.6 by default and 0.4 / 3 for the others
    haz = make_reference(world, "eos_hazard")
    np.testing.assert_allclose(haz.log_rows_at(2, local), np.log([[0.6] + [0.4 / 3] * 3] * 2), rtol=1e-14)


def test_softmax_rows_are_the_tempered_normal_draws():
    world = EnumeratedWorld(2, 3, 3)
    ref = make_reference(world, "softmax", np.random.default_rng(7), temperature=0.5)
    logits = np.random.default_rng(7).normal(size=(world.n_states, 3)) / 0.5
    np.testing.assert_allclose(ref.values, softmax(logits, axis=1), rtol=1e-13)
    assert ref.world is world
    np.testing.assert_allclose(ref.level(1), softmax(logits, axis=1)[2:6], rtol=1e-13)
    # without a generator: default_rng(0); the default temperature is 1
    ref = make_reference(world, "softmax")
    np.testing.assert_allclose(
        ref.values, softmax(np.random.default_rng(0).normal(size=(world.n_states, 3)), axis=1), rtol=1e-13
    )


def _bigram_expected(world, seed: int, temperature: float):
    V = world.vocab_size
    W = np.random.default_rng(seed).normal(size=(V + 1, V)) / temperature
    last = np.where(world.last_token < 0, V, world.last_token)
    return softmax(W, axis=1)[last], log_softmax(W, axis=1)[last]


@pytest.mark.parametrize("eos", [True, False])  # without EOS token 0 is a real last token (not "none")
def test_bigram_rows_follow_the_last_token(monkeypatch, eos):
    world = EnumeratedWorld(2, 3, 3, eos=eos)
    prob, logp = _bigram_expected(world, 11, 0.7)
    table = make_reference(world, "bigram", np.random.default_rng(11), temperature=0.7)
    assert isinstance(table, Table)
    np.testing.assert_allclose(table.values, prob, rtol=1e-13)
    _lazy(monkeypatch)
    ref = make_reference(world, "bigram", np.random.default_rng(11), temperature=0.7)
    assert isinstance(ref, Reference)
    np.testing.assert_allclose(_levels(world, ref), prob, rtol=1e-13)
    np.testing.assert_allclose(_log_levels(world, ref), logp, rtol=1e-13)
    lo = world.level(2)[0]
    local = np.array([5, 0, 3])  # out of order, a subset: rows of exactly these states
    np.testing.assert_allclose(ref.rows_at(2, local), prob[lo + local], rtol=1e-13)
    np.testing.assert_allclose(ref.log_rows_at(2, local), logp[lo + local], rtol=1e-13)
    lo1 = world.level(1)[0]
    np.testing.assert_allclose(ref.log_rows_at(1, np.array([3, 1])), logp[lo1 + np.array([3, 1])], rtol=1e-13)


def test_bigram_on_a_markov_world_is_the_same_function(monkeypatch):
    world = MarkovWorld(2, 4, 3)
    prob, logp = _bigram_expected(world, 3, 1.3)
    _lazy(monkeypatch)
    ref = make_reference(world, "bigram", np.random.default_rng(3), temperature=1.3)
    np.testing.assert_allclose(_levels(world, ref), prob, rtol=1e-13)
    np.testing.assert_allclose(_log_levels(world, ref), logp, rtol=1e-13)


def test_eos_hazard_rows_by_hand(monkeypatch):
    world = EnumeratedWorld(1, 3, 4)  # depths 0..3: EOS 0.2, 0.3, 0.4, 0.5; the 2 other tokens share the rest
    p = np.array([0.2, 0.3, 0.4, 0.5])
    expected = np.stack([p, (1 - p) / 2, (1 - p) / 2], axis=1)
    ref = make_reference(world, "eos_hazard", hazard=(0.2, 0.5))
    np.testing.assert_allclose(ref.values, expected[world.depth], rtol=1e-14)
    # the default hazard (0.1, 0.6) on H = 3: 0.1, 0.35, 0.6
    d = make_reference(EnumeratedWorld(1, 3, 3), "eos_hazard")
    np.testing.assert_allclose(d.values[[0, 1, 3], 0], [0.1, 0.35, 0.6], rtol=1e-14)
    # H = 2: the two hazards
    two = make_reference(EnumeratedWorld(1, 3, 2), "eos_hazard", hazard=(0.2, 0.7))
    np.testing.assert_allclose(two.values[:2], [[0.2, 0.4, 0.4], [0.7, 0.15, 0.15]], rtol=1e-14)
    # H = 1: the first hazard only
    one = make_reference(EnumeratedWorld(2, 4, 1), "eos_hazard", hazard=(0.3, 0.9))
    np.testing.assert_allclose(one.values, np.tile([0.3, 0.7 / 3, 0.7 / 3, 0.7 / 3], (2, 1)), rtol=1e-14)
    _lazy(monkeypatch)
    lazy = make_reference(world, "eos_hazard", hazard=(0.2, 0.5))
    for t in range(4):
        n = world.level(t)[1] - world.level(t)[0]
        np.testing.assert_allclose(lazy.level(t), np.tile(expected[t], (n, 1)), rtol=1e-14)
        np.testing.assert_allclose(lazy.log_level(t), np.log(np.tile(expected[t], (n, 1))), rtol=1e-14)
    np.testing.assert_allclose(lazy.rows_at(2, np.array([1, 3])), np.tile(expected[2], (2, 1)), rtol=1e-14)
    np.testing.assert_allclose(lazy.log_rows_at(3, np.array([4, 0])), np.log(np.tile(expected[3], (2, 1))), rtol=1e-14)


def test_table_up_to_the_entry_budget(monkeypatch):
    world = EnumeratedWorld(2, 3, 3)  # 14 states x 3 actions = 42 entries
    monkeypatch.setattr(reference, "TABLE_ENTRIES", 42)
    assert isinstance(make_reference(world, "uniform"), Table)
    monkeypatch.setattr(reference, "TABLE_ENTRIES", 41)
    assert not isinstance(make_reference(world, "uniform"), Table)


def _refused(field: str, value, allowed: str, *args, **kw):
    with pytest.raises(ConfigError) as err:
        make_reference(*args, **kw)
    assert (err.value.field, err.value.value, err.value.allowed) == (field, value, allowed)


def test_refusals_name_the_key():
    world = EnumeratedWorld(1, 3, 3)
    _refused("env.reference", "zipf", "one of ['uniform', 'softmax', 'eos_hazard', 'bigram']", world, "zipf")
    _refused("env.ref_temperature", 0.0, "> 0", world, "bigram", temperature=0.0)
    _refused(
        "env.reference", "eos_hazard", "eos_hazard only with env.eos = true", EnumeratedWorld(1, 3, 3, eos=False),
        "eos_hazard",
    )  # fmt: skip
    for bad in [(0.0, 0.5), (1.0, 0.5), (0.5, 0.0), (0.5, 1.0)]:
        _refused("env.ref_hazard", list(bad), "two probabilities in (0, 1)", world, "eos_hazard", hazard=bad)
    # just inside the bounds is accepted
    ref = make_reference(world, "eos_hazard", hazard=(1e-6, 1 - 1e-6))
    np.testing.assert_allclose(ref.values[[0, 1, 3], 0], [1e-6, 0.5, 1 - 1e-6], rtol=1e-12)
    make_reference(world, "bigram", temperature=1e-3)


# ----------------------------------------------------------------------------------------------------- oracle families
def _stream(seed, idx: int) -> np.random.Generator:
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, idx)))


def _returns(world, reward) -> np.ndarray:
    return world.sequence_returns(reward, world.all_sequences())


def _brute(world, fn) -> np.ndarray:
    """(n,): sum over the steps of every complete sequence of ``fn(t, token, prefix tokens)``."""
    seqs = world.all_sequences()
    out = np.zeros(seqs.n)
    for i in range(seqs.n):
        toks = [int(x) for x in seqs.tokens[i, : seqs.length[i]]]
        out[i] = sum(fn(t, a, toks[:t]) for t, a in enumerate(toks))
    return out


def test_parse_kind_and_refusals():
    assert parse_kind(" linear + length") == ("linear", "length")
    with pytest.raises(ConfigError) as err:
        parse_kind("linear+zipf", field="agent.kind")
    assert (err.value.field, err.value.value) == ("agent.kind", "linear+zipf")
    assert (
        err.value.allowed
        == "one of ['linear', 'nonlinear', 'length', 'repetition', 'stutter'] or a '+'-joined sum of them"
    )
    with pytest.raises(ConfigError) as err:
        parse_kind("length+linear+length")
    assert (err.value.field, err.value.value, err.value.allowed) == (
        "oracle.kind", "length+linear+length", "each family at most once"
    )  # fmt: skip


def _oracle_refused(field: str, value, allowed: str, world, **kw):
    with pytest.raises(ConfigError) as err:
        make_oracle(world, **kw)
    assert (err.value.field, err.value.value, err.value.allowed) == (field, value, allowed)


def test_make_oracle_refusals_name_the_key():
    w = EnumeratedWorld(1, 3, 4)
    _oracle_refused("oracle.form", "token", "one of ['dense', 'sequence']", w, form="token")
    for bad in [0.0, -1.0, np.inf]:
        _oracle_refused("oracle.scale", bad, "a finite number > 0", w, scale=bad)
    with pytest.raises(ConfigError, match="oracle.scale"):
        make_oracle(w, scale=np.nan)
    _oracle_refused("oracle.n_pairs", -1, ">= 0", w, kind="nonlinear", n_pairs=-1)
    _oracle_refused("oracle.seq_noise", -0.1, ">= 0", w, kind="nonlinear", seq_noise=-0.1)
    _oracle_refused("oracle.target_length", 0, "in [1, horizon=4]", w, kind="length", target_length=0)
    _oracle_refused("oracle.target_length", 5, "in [1, horizon=4]", w, kind="length", target_length=5)
    with pytest.raises(ConfigError) as err:
        make_oracle(w, templates=("unigram", "nope"))
    assert err.value.field == "oracle.templates"
    # the world's own refusals get the families, the form and the name as given
    m = MarkovWorld(2, 3, 3)
    with pytest.raises(ConfigError) as err:
        make_oracle(m, "linear+nonlinear")
    assert (err.value.field, err.value.value) == ("oracle.kind", "linear+nonlinear")
    with pytest.raises(ConfigError) as err:
        make_oracle(m, "linear", form="sequence")
    assert (err.value.field, err.value.value) == ("oracle.form", "sequence")
    with pytest.raises(ConfigError) as err:  # the stutter's bigram needs the last token: named as the oracle's kind
        make_oracle(MarkovWorld(2, 3, 3, track_last_token=False), "stutter")
    assert err.value.field == "oracle.kind"
    with pytest.raises(ConfigError) as err:  # the linear part's bigram template: named as the oracle's templates
        make_oracle(MarkovWorld(2, 3, 3, track_last_token=False), "linear")
    assert (err.value.field, err.value.value) == ("oracle.templates", "bigram")
    # the bounds themselves are accepted
    make_oracle(w, "nonlinear", n_pairs=0, seq_noise=0.0, scale=1e-6)
    make_oracle(w, "length", target_length=1)
    make_oracle(w, "length", target_length=4)


def test_length_step_by_hand():
    # g(L) = 3 L (4 - L) / 4 on L = 0..4: 0, 2.25, 3, 2.25, 0
    np.testing.assert_allclose(length_step(4, 2, 3.0), [2.25, 0.75, -0.75, -2.25], rtol=1e-15)
    # L* = 3, w = 2 on H = 3: g = 2 L (6 - L) / 9 = 0, 10/9, 16/9, 2
    np.testing.assert_allclose(length_step(3, 3, 2.0), [10 / 9, 6 / 9, 2 / 9], rtol=1e-14)


@pytest.mark.parametrize("eos", [True, False])
def test_length_family_pays_each_non_eos_token(eos):
    world = EnumeratedWorld(1, 3, 4, eos=eos)
    step = length_step(4, 3, 1.5)
    o = make_oracle(world, "length", target_length=3, length_weight=1.5)
    want = _brute(world, lambda t, a, pre: 0.0 if (eos and a == 0) else step[t])
    np.testing.assert_allclose(_returns(world, o.reward), want, rtol=1e-13, atol=1e-14)
    assert o.features is None and o.theta is None and o.kind == "length" and o.form == "dense"
    np.testing.assert_allclose(o.rest.values, o.reward.values, rtol=0, atol=0)
    # the default target is ceil(H / 2) = 2 and the default weight 1
    d = make_oracle(world, "length")
    np.testing.assert_allclose(d.reward.values, make_oracle(world, "length", target_length=2, length_weight=1.0)
                               .reward.values, rtol=0, atol=0)  # fmt: skip
    np.testing.assert_allclose(_returns(world, d.reward), _brute(world, lambda t, a, pre: 0.0 if (eos and a == 0)
                               else length_step(4, 2, 1.0)[t]), rtol=1e-13, atol=1e-14)  # fmt: skip
    # H = 3: ceil(3 / 2) = 2 as well
    w3 = EnumeratedWorld(1, 3, 3, eos=eos)
    np.testing.assert_allclose(make_oracle(w3, "length").reward.values,
                               make_oracle(w3, "length", target_length=2).reward.values, rtol=0, atol=0)  # fmt: skip


@pytest.mark.parametrize("eos", [True, False])
def test_repetition_and_stutter_by_hand(eos):
    world = EnumeratedWorld(1, 3, 4, eos=eos)
    ok = (lambda a: a != 0) if eos else (lambda a: True)
    rep = make_oracle(world, "repetition", repetition_weight=0.7)
    want = _brute(world, lambda t, a, pre: -0.7 if (ok(a) and a in pre) else 0.0)
    np.testing.assert_allclose(_returns(world, rep.reward), want, rtol=1e-14, atol=1e-15)
    stu = make_oracle(world, "stutter", repetition_weight=0.4)
    want = _brute(world, lambda t, a, pre: -0.4 if (ok(a) and pre and pre[-1] == a) else 0.0)
    np.testing.assert_allclose(_returns(world, stu.reward), want, rtol=1e-14, atol=1e-15)
    # default weight 1
    np.testing.assert_allclose(_returns(world, make_oracle(world, "stutter").reward), want / 0.4, rtol=1e-14)
    want_rep = _brute(world, lambda t, a, pre: -1.0 if (ok(a) and a in pre) else 0.0)
    np.testing.assert_allclose(_returns(world, make_oracle(world, "repetition").reward), want_rep, rtol=1e-14)
    np.testing.assert_allclose(stutter_reward(world, 0.4).values, stu.reward.values, rtol=0, atol=0)


def test_token_presence_by_hand():
    world = EnumeratedWorld(2, 3, 3, eos=False)
    tokens = world.token_table()  # [prompt, tokens padded with V, length]
    present = token_presence(world)
    for s in range(world.n_states):
        seen = set(int(x) for x in tokens[s, 1 : 1 + world.depth[s]])
        assert set(np.flatnonzero(present[s])) == seen


def test_linear_theta_is_the_family_stream():
    world = EnumeratedWorld(2, 3, 3)
    seed = np.random.SeedSequence(8).spawn(3)[2]  # a spawned seed: its spawn key is kept
    o = make_oracle(world, "linear", seed=seed, templates=("unigram", "position"), scale=2.0)
    fm = FeatureMap(world, ["unigram", "position"])
    theta = _stream(seed, 0).normal(0.0, 2.0 / np.sqrt(2), size=fm.dim)
    np.testing.assert_allclose(o.theta, theta, rtol=1e-15)
    np.testing.assert_allclose(o.reward.values, fm.reward(theta).values, rtol=1e-14)
    assert o.rest is None and o.kind == "linear"
    # the defaults: seed 0, the four templates, scale 1
    d = make_oracle(world)
    fm4 = FeatureMap(world, ["unigram", "position", "bigram", "prompt"])
    theta4 = _stream(0, 0).normal(0.0, 1.0 / 2.0, size=fm4.dim)
    np.testing.assert_allclose(d.theta, theta4, rtol=1e-15)
    np.testing.assert_allclose(d.reward.values, fm4.reward(theta4).values, rtol=1e-14)


def _cooc_returns(world, C: np.ndarray) -> np.ndarray:
    return _brute(world, lambda t, a, pre: 0.0 if a in pre else sum(C[i, a] for i in set(pre)))


def test_nonlinear_family_by_hand():
    world = EnumeratedWorld(1, 5, 3)  # tokens 1..4: 6 pairs, so n_pairs = 4 and 5 choose differently
    seqs = world.all_sequences()
    ss = np.random.SeedSequence(21)
    for n_pairs, pair_scale, seq_noise, kw in [
        (3, 0.8, 0.3, dict(n_pairs=3, pair_scale=0.8, seq_noise=0.3)),
        (4, 1.0, 0.5, {}),  # the defaults
        (1, 2.0, 0.1, dict(n_pairs=1, pair_scale=2.0, seq_noise=0.1)),
    ]:
        o = make_oracle(world, "nonlinear", seed=ss, templates=("unigram",), **kw)
        theta = _stream(ss, 0).normal(0.0, 1.0, size=5)
        rng = _stream(ss, 1)
        pairs = [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
        chosen = rng.choice(6, size=n_pairs, replace=False)
        bonus = rng.normal(0.0, pair_scale, size=n_pairs)
        C = np.zeros((5, 5))
        for c, k in zip(bonus, chosen, strict=True):
            i, j = pairs[k]
            C[i, j] = C[j, i] = c
        s, a = world.terminal_transitions()
        noise = np.zeros((world.n_states, 5))
        noise[s, a] = rng.normal(0.0, seq_noise, size=s.size)
        lin = _brute(world, lambda t, a, pre, theta=theta: theta[a])
        states, actions, mask = world.paths(seqs)
        last = seqs.length - 1
        per_seq = noise[states[np.arange(seqs.n), last], actions[np.arange(seqs.n), last]]
        want = lin + _cooc_returns(world, C) + per_seq
        np.testing.assert_allclose(o.theta, theta, rtol=1e-15)
        np.testing.assert_allclose(_returns(world, o.reward), want, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(_returns(world, o.rest), want - lin, rtol=1e-12, atol=1e-13)
        assert np.count_nonzero(C) == 2 * n_pairs and np.all(per_seq != 0)


def test_nonlinear_without_pairs_or_noise_is_linear():
    world = EnumeratedWorld(1, 4, 3)
    o = make_oracle(world, "nonlinear", seed=2, templates=("unigram",), n_pairs=0, seq_noise=0.0)
    lin = make_oracle(world, "linear", seed=2, templates=("unigram",))
    np.testing.assert_allclose(o.reward.values, lin.reward.values, rtol=0, atol=0)
    np.testing.assert_array_equal(o.rest.values, 0.0)
    # two tokens and EOS only: a single pair, drawn whatever n_pairs asks
    w = EnumeratedWorld(1, 3, 3)
    o = make_oracle(w, "nonlinear", seed=4, templates=("unigram",), n_pairs=5, seq_noise=0.0)
    rng = _stream(4, 1)
    rng.choice(1, size=1, replace=False)
    c = rng.normal(0.0, 1.0)
    C = np.zeros((3, 3))
    C[1, 2] = C[2, 1] = c
    np.testing.assert_allclose(_returns(w, o.rest), _cooc_returns(w, C), rtol=1e-13, atol=1e-14)
    # one non-EOS token: no pair at all
    w1 = EnumeratedWorld(1, 2, 3)
    np.testing.assert_array_equal(make_oracle(w1, "nonlinear", n_pairs=3, seq_noise=0.0).rest.values, 0.0)


def test_families_add_and_keep_their_own_streams():
    world = EnumeratedWorld(2, 3, 3)
    parts = {k: make_oracle(world, k, seed=6, repetition_weight=0.3, length_weight=2.0) for k in FAMILIES}
    both = make_oracle(world, "stutter+linear+length+repetition", seed=6, repetition_weight=0.3, length_weight=2.0)
    assert both.kind == "stutter+linear+length+repetition"
    total = parts["linear"].reward.values + parts["stutter"].reward.values + parts["length"].reward.values
    total = total + parts["repetition"].reward.values
    np.testing.assert_allclose(both.reward.values, total, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(both.theta, parts["linear"].theta, rtol=0)
    rest = parts["stutter"].reward.values + parts["length"].reward.values + parts["repetition"].reward.values
    np.testing.assert_allclose(both.rest.values, rest, rtol=1e-13, atol=1e-14)
    # nonlinear draws its own stream: its linear part is linear's
    nl = make_oracle(world, "nonlinear", seed=6)
    np.testing.assert_allclose(nl.theta, parts["linear"].theta, rtol=0)


def test_sequence_form_pays_the_whole_return_at_the_end():
    world = EnumeratedWorld(2, 3, 3)
    dense = make_oracle(world, "linear+length", seed=3)
    seq = make_oracle(world, "linear+length", form="sequence", seed=3)
    assert seq.form == "sequence" and dense.form == "dense"
    np.testing.assert_allclose(_returns(world, seq.reward), _returns(world, dense.reward), rtol=1e-13)
    s, a = world.terminal_transitions()
    mask = np.ones((world.n_states, 3), dtype=bool)
    mask[s, a] = False
    assert np.all(seq.reward.values[mask] == 0) and np.any(dense.reward.values[mask] != 0)
    np.testing.assert_allclose(seq.rest.values, dense.rest.values, rtol=0)  # rest stays dense


def test_total_of_nothing_is_zero_and_markov_matches_enumerated():
    world = EnumeratedWorld(2, 3, 3)
    zero = oracle_module._total([None], world)
    np.testing.assert_array_equal(world.table(zero), np.zeros((world.n_states, 3)))
    m = MarkovWorld(2, 3, 3)
    for kind in ["linear+length+stutter", "length", "stutter"]:
        e, mk = make_oracle(world, kind, seed=5), make_oracle(m, kind, seed=5)
        assert mk.kind == kind
        assert m.optimal_return(mk.reward) == pytest.approx(world.optimal_return(e.reward), rel=1e-12)
