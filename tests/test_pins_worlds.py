"""Pins of the worlds (sim.worlds.enumerated, sim.worlds.markov, sim.worlds.base) against their formulas and against
brute-force enumeration (mutation testing, issue #18).

Every expected number comes from a closed form in the module docstrings (``S = P sum_{t<H} b^t``; the tree's child
``s b + P + a - f``; sequence ids in row-major order of the ending transition), from a dense linear solve
(``(C C^T) lam = C R`` with the flow matrix ``C`` built entry by entry), or from ``tests.brute``'s walk over every
complete sequence. Rewards and policies are random with fixed seeds, with no symmetry that could hide a sign.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import sim.worlds.base as base  # private helpers and module constants are reached through the module
import sim.worlds.enumerated as enumerated
import sim.worlds.markov as markov
from sim.errors import ConfigError
from sim.features import FeatureMap
from sim.worlds import EnumeratedWorld
from sim.worlds.base import Sequences, Table, World
from sim.worlds.enumerated import ExactSource, enumerated_size, sequence_count, standardisation, validate_world
from sim.worlds.markov import FactoredReward, MarkovWorld, MaxPlus
from tests.brute import brute_moments, seq_prob, seq_return, sequences


def _policy(rng: np.random.Generator, S: int, A: int) -> np.ndarray:
    w = rng.gamma(1.0, size=(S, A)) + 0.05
    return w / w.sum(axis=1, keepdims=True)


def _world(P: int, V: int, H: int, eos: bool = True, seed: int = 0) -> EnumeratedWorld:
    w = EnumeratedWorld(P, V, H, eos)
    w.ref = Table(w, _policy(np.random.default_rng(seed), w.n_states, V))
    return w


class _U:
    """A stand-in generator whose ``random(n)`` returns given uniforms (to pin inverse-CDF draws exactly)."""

    def __init__(self, u):
        self.u = np.asarray(u, dtype=float)

    def random(self, n):
        assert n == self.u.size
        return self.u.copy()


# ------------------------------------------------------------------------------------------------- enumerated: sizes
def test_enumerated_size_and_sequence_count_closed_forms():
    for P, V, H, eos in [(2, 4, 3, True), (3, 3, 2, False), (1, 2, 4, True), (2, 5, 1, True), (1, 2, 3, False)]:
        b = V - 1 if eos else V
        assert enumerated_size(P, V, H, eos) == P * sum(b**t for t in range(H))
        assert sequence_count(P, V, H, eos) == len(sequences(EnumeratedWorld(P, V, H, eos)))
    # b = 1 (V = 2 with EOS): a chain of H states per prompt, H EOS endings + the V last tokens
    assert enumerated_size(3, 2, 5) == 15.0
    assert sequence_count(3, 2, 5) == 3 * 4 + 3 * 2
    assert sequence_count(3, 2, 1) == 3 * 2  # no level above the last
    # b = 1 and a long horizon: log10(max(b, 1)) = 0 keeps the count finite
    assert sequence_count(1, 2, 1000) == 999 + 2
    # the overflow switches: H log10(b) > 300 is infinite, = 300 is not
    assert enumerated_size(1, 11, 300) == pytest.approx((10.0**300 - 1) / 9, rel=1e-12)
    assert enumerated_size(1, 11, 301) == math.inf
    assert enumerated_size(1, 10, 301, eos=False) == math.inf
    assert sequence_count(1, 11, 301) == math.inf  # (H - 1) log10 b = 300 is not < 300
    assert sequence_count(1, 11, 300) == pytest.approx((10.0**299 - 1) / 9 + 11 * 10.0**299, rel=1e-12)
    assert sequence_count(2, 10, 300, eos=False) == pytest.approx(2 * 10.0**300, rel=1e-12)


def test_validate_world_blames_the_right_key():
    validate_world(2, 4, 3)  # fine
    limit = enumerated.MAX_ENUMERATED_ENTRIES
    with pytest.raises(ConfigError) as e:
        validate_world(1, 10**5, 2, prefix="env.")  # two levels of the vocabulary alone are too many
    assert e.value.field == "env.vocab_size"
    with pytest.raises(ConfigError) as e:
        validate_world(1, 4, 40, prefix="x.")
    assert e.value.field == "x.horizon"
    # one prompt's tree fits, P of them do not: S * A = P * (3^11 - 1) / 2 * 4 = P * 354292
    n = limit // 354292 + 1
    with pytest.raises(ConfigError) as e:
        validate_world(n, 4, 11, prefix="")
    assert e.value.field == "n_prompts"
    validate_world(limit // 354292, 4, 11)  # just inside
    for bad in [(0, 4, 3), (2, 1, 3), (2, 4, 0), (2.0, 4, 3), (2, 4, 3.0), (2, "4", 3)]:
        with pytest.raises(ConfigError):
            validate_world(*bad)


def test_check_config_reads_env():
    cfg = SimpleNamespace(env=SimpleNamespace(n_prompts=1, vocab_size=4, horizon=40, eos=True))
    with pytest.raises(ConfigError) as e:
        EnumeratedWorld.check_config(cfg)
    assert e.value.field == "env.horizon"
    # eos matters: V = 3, H = 24 with EOS has 2^24 - 1 states (5e7 entries fit), without it (3^24 - 1) / 2 do not
    EnumeratedWorld.check_config(SimpleNamespace(env=SimpleNamespace(n_prompts=1, vocab_size=3, horizon=23, eos=True)))
    with pytest.raises(ConfigError):
        EnumeratedWorld.check_config(
            SimpleNamespace(env=SimpleNamespace(n_prompts=1, vocab_size=3, horizon=23, eos=False))
        )


# --------------------------------------------------------------------------------------------- enumerated: structure
@pytest.mark.parametrize("eos", [True, False])
def test_tree_arrays_token_table_and_closed_form_steps(eos):
    P, V, H = 2, 4, 3
    w = EnumeratedWorld(P, V, H, eos)
    f, b = (1, 3) if eos else (0, 4)
    assert (w.first_token, w.branching, w.n_states) == (f, b, P * (1 + b + b * b))
    np.testing.assert_array_equal(w.sizes, [P, P * b, P * b * b])
    np.testing.assert_array_equal(w.initial_dist, [0.5, 0.5] + [0.0] * (w.n_states - 2))
    table = w.token_table()
    assert table.shape == (w.n_states, H + 2)
    nxt = w.next_table
    offsets = w.step_offsets()
    assert offsets is not None and offsets[0] == b and offsets[2] == w.n_states
    for s in range(w.n_states):
        p, toks = w.decode(s)
        np.testing.assert_array_equal(table[s], [p, *toks, *[V] * (H - len(toks)), len(toks)])
        assert (w.prompt[s], w.depth[s]) == (p, len(toks))
        assert w.last_token[s] == (toks[-1] if toks else -1)
        assert w.prev_token[s] == (toks[-2] if len(toks) > 1 else -1)
        assert w.parent[s] == (w.encode(p, toks[:-1]) if toks else -1)
        for a in range(V):
            ends = len(toks) == H - 1 or (eos and a == 0)
            want = -1 if ends else w.encode(p, (*toks, a))
            assert nxt[s, a] == want
            assert w.next_state(np.array([s]), np.array([a]))[0] == want
            assert w.terminal_mask()[s, a] == ends
            closed = s * offsets[0] + offsets[1][a]
            assert (closed if 0 <= closed < offsets[2] else -1) == want
    # push and continuation are the reshapes of the contiguous children
    mass = np.arange(P * b, dtype=float).reshape(P, b) + 0.5
    np.testing.assert_array_equal(w.push(0, mass), mass.reshape(-1))
    out = np.full(P * b * b, 0.25)
    w.push_into(1, 1, 3, np.arange(2 * b, dtype=float).reshape(2, b), out)
    want = np.full(P * b * b, 0.25)
    want[b : 3 * b] += np.arange(2 * b)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(w.continuation(0, np.arange(P * b, dtype=float)), np.arange(P * b).reshape(P, b))
    assert w.child(1, 2, f + 1) == 2 * b + 1


def test_describe_and_format():
    w = EnumeratedWorld(2, 4, 3)
    assert w.describe() == "TextMDP(P=2, V=4, H=3, eos=True): S=26 states, S*A=104, 80 complete sequences"
    s = w.encode(1, (3, 2))
    assert w.format(s) == "x1: t3 t2"
    assert w.format(s, 0) == "x1: t3 t2 <eos>"
    assert w.format(s, 1) == "x1: t3 t2 t1"
    assert w.format(1) == "x1: (empty)"
    w2 = EnumeratedWorld(1, 3, 2, eos=False)
    assert w2.format(0, 0) == "x0: t0"
    assert w2.describe() == "TextMDP(P=1, V=3, H=2, eos=False): S=4 states, S*A=12, 9 complete sequences"
    big = EnumeratedWorld(1, 11, 4)
    assert big.describe() == "TextMDP(P=1, V=11, H=4, eos=True): S=1,111 states, S*A=12,221, 11,111 complete sequences"


# ---------------------------------------------------------------------------------------- enumerated: occupancy space
def _dense_potentials(w, r: np.ndarray) -> np.ndarray:
    """``lam`` solving ``(C C^T) lam = C R``, with ``C[s, (s, a)] = 1`` and ``C[s', (s, a)] = -1`` for ``s' = next``."""
    S, A = w.n_states, w.n_actions
    C = np.zeros((S, S * A))
    nxt = w.next_state(np.repeat(np.arange(S), A), np.tile(np.arange(A), S))
    for j, s2 in enumerate(nxt):
        C[j // A, j] += 1.0
        if s2 >= 0:
            C[s2, j] -= 1.0
    return np.linalg.solve(C @ C.T, C @ r.reshape(-1))


@pytest.mark.parametrize(("P", "V", "H", "eos"), [(2, 3, 3, True), (1, 3, 3, False), (2, 4, 2, True)])
def test_occupancy_potentials_solve_the_flow_system(P, V, H, eos, monkeypatch):
    w = EnumeratedWorld(P, V, H, eos)
    r = np.random.default_rng(3).normal(size=(w.n_states, V)) + 0.3
    want = _dense_potentials(w, r)
    got = np.concatenate(w.occupancy_potentials(Table(w, r)))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # the same in blocks of one state (rows formed a block at a time)
    monkeypatch.setattr(base, "BLOCK_ENTRIES", V)
    got = np.concatenate(w.occupancy_potentials(Table(w, r)))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # and the generic conjugate-gradient version of World agrees
    np.testing.assert_allclose(np.concatenate(World.occupancy_potentials(w, Table(w, r))), want, rtol=1e-8, atol=1e-10)


def test_validate_world_boundaries_and_messages():
    limit = enumerated.MAX_ENUMERATED_ENTRIES
    assert limit == 50_000_000
    # exactly at the limit with EOS (5000 * (1 + 99) * 100 = 5e7 entries), over it without (5000 * 101 * 100)
    validate_world(5000, 100, 2)
    with pytest.raises(ConfigError) as e:
        validate_world(5000, 100, 2, eos=False)
    assert (e.value.field, e.value.value) == ("env.n_prompts", 5000)
    assert e.value.allowed == (
        "a world with S*A <= 5e+07 state-action entries (n_prompts=5000, vocab_size=100, horizon=2 gives 5.05e+07); "
        "shrink n_prompts, vocab_size or horizon, or set env.compressed=true for a Markov world that is never "
        "enumerated"
    )
    # one prompt's two levels fit only with EOS (7071^2 <= 5e7 < 7071 * 7072): the prompts are to blame;
    # one prompt's tree fits only with EOS (84 * (1 + 83 + 83^2 + 83^3) <= 5e7 < 84 * (1 + 84 + 84^2 + 84^3))
    for args, eos, blamed in [
        ((2, 7071, 2), True, ("env.n_prompts", 2)),
        ((2, 7071, 2), False, ("env.vocab_size", 7071)),
        ((2, 84, 4), True, ("env.n_prompts", 2)),
        ((2, 84, 4), False, ("env.horizon", 4)),
    ]:
        with pytest.raises(ConfigError) as e:
            validate_world(*args, eos=eos)
        assert (e.value.field, e.value.value) == blamed
    # H = 1: one prompt's level is exactly the limit (V = 5e7 entries), so neither the vocabulary nor the horizon
    with pytest.raises(ConfigError) as e:
        validate_world(2, limit, 1)
    assert (e.value.field, e.value.value) == ("env.n_prompts", 2)
    for bad, key in [((0, 4, 3), "n_prompts"), ((2, 1, 3), "vocab_size"), ((2, 4, 0), "horizon")]:
        with pytest.raises(ConfigError) as e:
            validate_world(*bad, prefix="p.")
        assert e.value.field == "p." + key
        assert e.value.value == bad[["n_prompts", "vocab_size", "horizon"].index(key)]
        assert e.value.allowed == ("an integer >= 2" if key == "vocab_size" else "an integer >= 1")
    validate_world(np.int64(1), np.int32(2), np.int64(1))  # numpy integers are integers


def test_world_arrays_are_int64():
    w = EnumeratedWorld(2, 3, 3)
    for name in ["prompt", "depth", "last_token", "prev_token", "parent", "sizes", "level_start"]:
        assert getattr(w, name).dtype == np.int64, name
    assert w.initial_dist.dtype == np.float64


# ---------------------------------------------------------------------------------------- enumerated: sequence ids
@pytest.mark.parametrize("eos", [True, False])
def test_sequence_ids_round_trip_against_brute_force(eos, monkeypatch):
    w = EnumeratedWorld(2, 3, 3, eos)
    brute = sequences(w)
    s_all, a_all = w.terminal_transitions()
    assert w.n_sequences == len(brute) == s_all.size
    # row-major order of the ending transition
    ends = sorted(path[-1] for _, path in brute)
    np.testing.assert_array_equal(s_all, [s for s, _ in ends])
    np.testing.assert_array_equal(a_all, [a for _, a in ends])
    ids = np.arange(w.n_sequences, dtype=np.int32)
    s, a = w.transitions_of(ids)
    assert s.dtype == a.dtype == np.int64
    np.testing.assert_array_equal(s, s_all)
    back = w.ids_of(s.astype(np.int32), a.astype(np.int32))
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, np.arange(w.n_sequences))
    seqs = w.sequences_of(ids)
    assert seqs.ids.dtype == np.int64 and seqs.tokens.dtype == np.int64
    by_end = {path[-1]: (p, path) for p, path in brute}
    for i in range(w.n_sequences):
        p, path = by_end[(int(s_all[i]), int(a_all[i]))]
        toks = [w.decode(st)[1][-1] for st, _ in path[1:]] + [path[-1][1]]
        assert seqs.prompt[i] == p and seqs.length[i] == len(path)
        np.testing.assert_array_equal(seqs.tokens[i], toks + [-1] * (w.horizon - len(path)))
    # without their ids, sequences are found from their last transition
    bare = Sequences(seqs.prompt, seqs.tokens, seqs.length)
    np.testing.assert_array_equal(w.sequence_ids(bare), np.arange(w.n_sequences))
    allseq = w.all_sequences()
    np.testing.assert_array_equal(allseq.tokens, seqs.tokens)


def test_terminal_transitions_cache_limit(monkeypatch):
    w = EnumeratedWorld(2, 3, 3)
    n = w.n_sequences
    assert enumerated.TERMINAL_CACHE == 2_000_000
    monkeypatch.setattr(enumerated, "TERMINAL_CACHE", n)
    first = w.terminal_transitions()
    assert w.terminal_transitions() is first  # kept at exactly the limit
    w2 = EnumeratedWorld(2, 3, 3)
    monkeypatch.setattr(enumerated, "TERMINAL_CACHE", n - 1)
    first = w2.terminal_transitions()
    assert w2.terminal_transitions() is not first
    np.testing.assert_array_equal(w2.terminal_transitions()[0], first[0])


def test_decode_encode_refuse_what_is_not_a_state():
    w = EnumeratedWorld(2, 4, 3)
    assert w.decode(w.n_states - 1) == (1, (3, 3))
    with pytest.raises(IndexError, match=r"state 26 outside \[0, 26\)"):
        w.decode(26)
    with pytest.raises(IndexError, match=r"state -1 outside"):
        w.decode(-1)
    assert w.encode(1, (3, 3)) == 25
    with pytest.raises(IndexError, match=r"prompt 2 outside \[0, 2\)"):
        w.encode(2, ())
    with pytest.raises(IndexError, match="fewer than horizon=3 tokens"):
        w.encode(0, (1, 1, 1))
    with pytest.raises(IndexError, match="token 4 is not a non-EOS token"):
        w.encode(0, (4,))
    with pytest.raises(IndexError, match="token 0 is not a non-EOS token"):
        w.encode(0, (0,))


# ------------------------------------------------------------------------------------- enumerated: sequence tables
@pytest.mark.parametrize(("eos", "every"), [(True, 2), (False, 2), (True, 1), (True, 3)])
def test_chunk_table_and_sequence_form_against_paths(eos, every):
    w = EnumeratedWorld(2, 3, 4, eos)
    r = np.random.default_rng(5).normal(size=(w.n_states, 3)) + 0.4
    chunk = w.chunk_table(Table(w, r), every).values
    mask = w.delivery_mask(every)
    form = w.sequence_form(Table(w, r), gamma=0.7)
    form1 = w.sequence_form(Table(w, r))
    seen = np.zeros_like(mask)
    for _, path in sequences(w):
        pending = 0.0
        for t, (s, a) in enumerate(path):
            pending += r[s, a]
            deliver = t == len(path) - 1 or (t + 1) % every == 0
            assert mask[s, a] == deliver
            assert chunk[s, a] == pytest.approx(pending if deliver else 0.0, abs=1e-12)
            seen[s, a] = True
            if deliver:
                pending = 0.0
        s, a = path[-1]
        T = len(path)
        assert form[s, a] == pytest.approx(sum(0.7 ** (T - 1 - t) * r[x] for t, x in enumerate(path)), abs=1e-12)
        assert form1[s, a] == pytest.approx(seq_return(path, r), abs=1e-12)
    assert seen.all()
    np.testing.assert_array_equal(form[~w.terminal_mask()], 0.0)


def test_sequence_reward_pays_on_the_last_transition():
    w = EnumeratedWorld(2, 3, 3)
    ids = np.array([7, 2, 15, 0])
    seqs = w.sequences_of(ids)
    bare = Sequences(seqs.prompt, seqs.tokens, seqs.length)  # found through their paths
    vals = np.array([1.5, -0.25, 3.0, 0.75])
    r = w.sequence_reward(bare, vals)
    assert isinstance(r, Table) and r.world is w
    s_all, a_all = w.terminal_transitions()
    want = np.zeros((w.n_states, 3))
    want[s_all[ids], a_all[ids]] = vals
    np.testing.assert_array_equal(r.values, want)
    np.testing.assert_allclose(w.sequence_returns(r, bare), vals)


def test_weighted_policy_reproduces_the_weights():
    w = _world(2, 3, 3)
    n = w.n_sequences
    # prompt 1's sequences carry no weight but one; a repeated sequence adds up; prompt-0 weights sum to 2.5
    ids = np.array([0, 3, 3, 6, 17, w.n_sequences - 1])
    prompt_of = w.prompt[w.terminal_transitions()[0]]
    assert list(prompt_of[ids]) == [0, 0, 0, 0, 0, 1]
    weights = np.array([0.5, 0.25, 0.75, 1.0, 0.0, 2.0])
    seqs = w.sequences_of(ids)
    pi = w.weighted_policy(Sequences(seqs.prompt, seqs.tokens, seqs.length), weights)
    assert isinstance(pi, Table)
    probs = w.sequence_probs(pi)
    want = np.zeros(n)
    np.add.at(want, ids, weights / np.array([2.5, 2.5, 2.5, 2.5, 2.5, 2.0]) / 2)
    np.testing.assert_allclose(probs, want, atol=1e-15)
    # states no sequence passes through keep pi_ref's rows; the others are conditional masses
    d = np.concatenate(w.occupancy(pi))
    ref = w.ref.values
    unreached = np.flatnonzero(d == 0)
    assert unreached.size > 0
    np.testing.assert_array_equal(pi.values[unreached], ref[unreached])
    np.testing.assert_allclose(pi.values.sum(axis=1), 1.0)


def test_sequence_probs_and_exact_sources():
    w = _world(2, 3, 3, seed=1)
    rng = np.random.default_rng(2)
    pi = Table(w, _policy(rng, w.n_states, 3))
    other = Table(w, _policy(rng, w.n_states, 3))
    brute = sequences(w)
    s_all, a_all = w.terminal_transitions()
    pos = {(int(s), int(a)): i for i, (s, a) in enumerate(zip(s_all, a_all, strict=True))}
    want = np.zeros(w.n_sequences)
    for _p, path in brute:
        want[pos[path[-1]]] = seq_prob(path, pi.values) / 2
    np.testing.assert_allclose(w.sequence_probs(pi), want, rtol=1e-13)
    src = w.sequence_source(pi)
    assert isinstance(src, ExactSource)
    np.testing.assert_allclose(src.probs, want, rtol=1e-13)
    mixed = w.sequence_source(pi, mix=(0.3, other))
    np.testing.assert_allclose(mixed.probs, 0.7 * want + 0.3 * w.sequence_probs(other), rtol=1e-13)
    # moments: the mean and sd of the return under the source's distribution (brute force)
    r = np.random.default_rng(4).normal(size=(w.n_states, 3)) + 0.2
    m1, m2 = brute_moments(w, pi.values, r)
    mean, sd = src.moments(Table(w, r))
    assert mean == pytest.approx(m1, rel=1e-12)
    assert sd == pytest.approx(np.sqrt(m2 - m1 * m1), rel=1e-10)
    # the uniform source: every sequence of a prompt equally likely, prompts uniform
    uni = w.uniform_source()
    per_prompt = np.bincount(w.prompt[s_all], minlength=2)
    np.testing.assert_allclose(uni.probs, 0.5 / per_prompt[w.prompt[s_all]], rtol=1e-13)
    assert per_prompt.tolist() == [15, 15]
    seqs, probs = uni.coverage(np.array([0, 1]), rng)
    assert seqs.n == w.n_sequences and probs is uni.probs


def test_exact_source_draws_by_inverse_cdf():
    w = EnumeratedWorld(2, 3, 2)  # 2 + 2 * 2 = ... per prompt: EOS at the root + 2 * 3 at depth 1 = 7 sequences
    n = w.n_sequences
    assert n == 14
    probs = np.linspace(1.0, 2.0, n) ** 2
    probs[3] = 0.0
    src = ExactSource(w, probs)
    prompt_of = w.prompt[w.terminal_transitions()[0]]
    prompts = np.array([1, 0, 1, 0, 0, 1, 1])
    u = np.array([0.05, 0.5, 0.97, 0.999, 0.0, 0.6, 0.3])
    got = src.draw_ids(prompts, _U(u))
    for p, x, g in zip(prompts, u, got, strict=True):
        mine = np.flatnonzero(prompt_of == p)
        cum = np.cumsum(probs[mine]) / probs[mine].sum()
        assert g == mine[min(np.searchsorted(cum, x, side="right"), mine.size - 1)]
    seqs = src.draw(prompts, _U(u))
    np.testing.assert_array_equal(seqs.ids, got)
    np.testing.assert_array_equal(seqs.prompt, prompts)
    with pytest.raises(ValueError, match="every prompt needs positive probability mass"):
        ExactSource(w, np.where(prompt_of == 1, 0.0, 1.0))


def test_exact_source_myopic_range_and_standardisation():
    w = EnumeratedWorld(1, 3, 2)
    src = w.uniform_source()
    seen = {}

    def perceive(pool):
        seen["n"] = pool.n
        return None, np.array([[0.5, -1.25, 3.0, 2.0, 0.0, 1.0, -0.5]])

    lo, hi = src.myopic_range(SimpleNamespace(perceive=perceive))
    assert (lo, hi) == (-1.25, 3.0) and seen["n"] == w.n_sequences == 7
    returns = np.array([1.0, 4.0, -2.0])
    probs = np.array([1.0, 2.0, 5.0])  # not normalised
    mean = (1.0 + 8.0 - 10.0) / 8
    var = (1 * (1 - mean) ** 2 + 2 * (4 - mean) ** 2 + 5 * (-2 - mean) ** 2) / 8
    assert standardisation(returns, probs) == pytest.approx((mean, np.sqrt(var)), rel=1e-14)
    assert standardisation(np.full(3, 2.5), probs) == (2.5, 1.0)  # no spread: sd 1
    assert standardisation(np.array([0.0, 1e-9]), np.array([1.0, 1.0]))[1] == pytest.approx(5e-10)


def _brute_top(w, pi: np.ndarray, prompt: int, k: int) -> list[tuple[float, int, int]]:
    """The k most likely (prob given the prompt, s, a) of a prompt, ties broken towards the later sequence."""
    rows = [(seq_prob(path, pi), *path[-1]) for p, path in sequences(w) if p == prompt]
    rows.sort(reverse=True)
    return [x for x in rows[:k] if x[0] > 0]


@pytest.mark.parametrize("eos", [True, False])
@pytest.mark.parametrize("block", [None, 3])
def test_likely_sequences_against_brute_force(eos, block, monkeypatch):
    if block is not None:
        monkeypatch.setattr(enumerated, "BLOCK_ENTRIES", block)  # one state per block
    w = EnumeratedWorld(2, 3, 3, eos)
    pi = _policy(np.random.default_rng(8 + eos), w.n_states, 3)
    pi[w.encode(1, (w.first_token,)), :] = [0.0, 0.6, 0.4]  # some impossible sequences
    policies = [Table(w, pi), base.LevelPolicy(w, lambda t: pi[slice(*w.level(t))])]  # the second forms levels only
    for policy in policies:
        for prompt in (0, 1):
            for k in (1, 3, 7, 40):
                seqs, probs = w.likely_sequences(policy, prompt, k) if k != 3 else w.likely_sequences(policy, prompt)
                want = _brute_top(w, pi, prompt, k)
                # prompt 1 loses one sequence with EOS (its 0-probability EOS), three without (a 0-probability subtree)
                full = (15 if eos else 27) - (0 if prompt == 0 else (1 if eos else 3))
                assert len(want) == min(k, full)
                np.testing.assert_allclose(probs, [x[0] for x in want], rtol=1e-13)
                s, a = w.transitions_of(seqs.ids)
                assert list(zip(s.tolist(), a.tolist(), strict=True)) == [(x[1], x[2]) for x in want]
                assert np.all(seqs.prompt == prompt)


def test_likely_sequences_ties_and_own_top():
    w = EnumeratedWorld(2, 3, 2)
    uniform = Table(w, np.full((w.n_states, 3), 1 / 3))
    seqs, probs = w.likely_sequences(uniform, 1)
    # EOS at the root (1/3), then the later of the six 1/9 sequences first: x1 t2 t2, x1 t2 t1
    np.testing.assert_array_equal(probs, [1 / 3, 1 / 9, 1 / 9])
    assert [w.text(seqs, i) for i in range(3)] == ["x1: <eos>", "x1: t2 t2", "x1: t2 t1"]
    calls = []
    own = SimpleNamespace(top=lambda prompt, k: calls.append((prompt, k)) or "top")
    assert w.likely_sequences(own, 1) == "top" and w.likely_sequences(own, 0, 5) == "top"
    assert calls == [(1, 3), (0, 5)]


# ============================================================================================ the compressed world
MARKOV_SHAPES = [
    (2, 4, 3, True, True),
    (2, 3, 3, False, True),
    (2, 4, 3, True, False),
    (3, 3, 1, True, True),
    (3, 2, 3, True, True),  # b = 1
]


def _markov_index(mw, ew) -> np.ndarray:
    """The Markov state of every enumerated prefix: ``p`` at depth 0, ``(p, last token)`` deeper (``p`` untracked)."""
    t, p, y = ew.depth, ew.prompt, ew.last_token
    local = np.where((t == 0) | (not mw.track), p, p * mw.branching + y - mw.first_token)
    return mw.level_start[t] + local


@pytest.mark.parametrize(("P", "V", "H", "eos", "track"), MARKOV_SHAPES)
def test_markov_states_and_steps_agree_with_the_tree(P, V, H, eos, track):
    mw, ew = MarkovWorld(P, V, H, eos, track), EnumeratedWorld(P, V, H, eos)
    b = ew.branching
    assert mw.track == (track and H > 1)
    want_sizes = [P] + [P * b if mw.track else P] * (H - 1)
    np.testing.assert_array_equal(mw.sizes, want_sizes)
    assert mw.sizes.dtype == mw.depth.dtype == np.int64
    m = _markov_index(mw, ew)
    np.testing.assert_array_equal(mw.depth[m], ew.depth)
    np.testing.assert_array_equal(mw.prompt[m], ew.prompt)
    np.testing.assert_array_equal(mw.last_token[m], ew.last_token if mw.track else -1)
    assert set(m.tolist()) == set(range(mw.n_states))  # every Markov state is some prefix
    for t in range(H):
        np.testing.assert_array_equal(mw.level_prompts(t), mw.prompt[slice(*mw.level(t))])
    S = ew.n_states
    s, a = np.repeat(np.arange(S), V), np.tile(np.arange(V), S)
    e_next = ew.next_state(s, a)
    np.testing.assert_array_equal(mw.next_state(m[s], a), np.where(e_next < 0, -1, m[np.maximum(e_next, 0)]))


@pytest.mark.parametrize(
    ("P", "V", "H", "eos", "track"), [*MARKOV_SHAPES[:3], (3, 4, 3, True, False), (3, 4, 3, True, True)]
)
def test_markov_continuation_push_and_blocks_follow_child(P, V, H, eos, track):
    mw = MarkovWorld(P, V, H, eos, track)
    b, f = mw.branching, mw.first_token
    rng = np.random.default_rng(21)
    for t in range(H - 1):
        n, n_next = int(mw.sizes[t]), int(mw.sizes[t + 1])
        kids = np.stack([mw.child(t, np.arange(n), np.full(n, f + j)) for j in range(b)], axis=1)  # (n, b) local
        nxt = mw.next_state(mw.level_start[t] + np.repeat(np.arange(n), b), np.tile(np.arange(f, V), n))
        np.testing.assert_array_equal(kids.reshape(-1), nxt - mw.level_start[t + 1])
        v = rng.normal(size=n_next)
        np.testing.assert_array_equal(mw.continuation(t, v), v[kids])
        mass = rng.random((n, b))
        want = np.bincount(kids.reshape(-1), weights=mass.reshape(-1), minlength=n_next)
        np.testing.assert_allclose(mw.push(t, mass), want, rtol=1e-14)
        for lo, hi in [(0, n), (0, 1), (1, n), (n - 1, n), (1, max(2, n - 1)), (0, n - 1), (0, 2), (b + 1, n)]:
            out = np.full(n_next, 0.5)
            mw.push_into(t, lo, hi, mass[lo:hi], out)
            part = np.bincount(kids[lo:hi].reshape(-1), weights=mass[lo:hi].reshape(-1), minlength=n_next)
            np.testing.assert_allclose(out, 0.5 + part, rtol=1e-14, err_msg=f"t={t} block {lo}:{hi}")


MARKOV_TEMPLATES_ALL = ["unigram", "position", "bigram", "prompt", "length"]


@pytest.mark.parametrize(("eos", "track"), [(True, True), (False, True), (True, False)])
def test_markov_linear_reward_is_the_feature_table(eos, track):
    P, V, H = 2, 4, 3
    mw, ew = MarkovWorld(P, V, H, eos, track), EnumeratedWorld(P, V, H, eos)
    names = MARKOV_TEMPLATES_ALL if track else ["unigram", "position", "prompt", "length"]
    fe, fm = FeatureMap(ew, names), FeatureMap(mw, names)
    theta = np.random.default_rng(31).normal(size=fe.dim) + 0.1
    want = fe.table_values(theta)
    r = mw.linear_reward(fm, theta)
    assert isinstance(r, FactoredReward) and (r.bigram is None) == (not track)
    m = _markov_index(mw, ew)
    table = mw.table(r)
    np.testing.assert_allclose(table[m], want, rtol=1e-13, atol=1e-14)
    for t in range(H):
        np.testing.assert_allclose(r.rows_at(t, np.arange(int(mw.sizes[t]))), r.level(t), rtol=1e-13)
    S = ew.n_states
    s, a = np.repeat(np.arange(S), V), np.tile(np.arange(V), S)
    np.testing.assert_allclose(r.at(m[s], a), want[s, a], rtol=1e-13, atol=1e-14)
    if not track:
        with pytest.raises(ConfigError) as e:
            mw.linear_reward(FeatureMap(MarkovWorld(P, V, H, eos), ["bigram"], field="x.t"), np.zeros(20))
        assert (e.value.field, e.value.value) == ("x.t", "bigram")
        assert e.value.allowed == "a world that tracks the last token (built without it)"


def test_factored_reward_algebra():
    mw = MarkovWorld(2, 4, 3)
    rng = np.random.default_rng(41)
    bg, row = rng.normal(size=(5, 4)), rng.normal(size=(3, 2, 4))
    bg2, row2 = rng.normal(size=(5, 4)), rng.normal(size=(3, 2, 4))
    with_b, without = FactoredReward(mw, bg, row), FactoredReward(mw, None, row2)
    other = FactoredReward(mw, bg2, row2)
    T = mw.table
    for x, y in [(with_b, without), (without, with_b), (with_b, other), (without, without)]:
        z = x + y
        np.testing.assert_allclose(T(z), T(x) + T(y), rtol=1e-14)
        assert (z.bigram is None) == (x.bigram is None and y.bigram is None)
    np.testing.assert_allclose(T(with_b * -1.5), -1.5 * T(with_b), rtol=1e-13)
    np.testing.assert_allclose(T(0.25 * with_b), 0.25 * T(with_b), rtol=1e-13)
    assert (without * 2.0).bigram is None
    np.testing.assert_allclose(T(without * 2.0), 2.0 * T(without), rtol=1e-13)
    # the depth-0 rows read the BOS row (V) of the bigram table; deeper rows the last token's
    np.testing.assert_allclose(with_b.level(0), bg[4] + row[0], rtol=1e-13)
    np.testing.assert_allclose(with_b.rows_at(2, np.array([4])), (bg[2] + row[2, 1])[None], rtol=1e-13)
    np.testing.assert_allclose(with_b.at(np.array([0, 2 + 4]), np.array([3, 1])), [bg[4, 3] + row[0, 0, 3],
                               bg[2, 1] + row[1, 1, 1]], rtol=1e-15)  # fmt: skip
    np.testing.assert_allclose(without.rows_at(1, np.array([5, 0])), row2[1][[1, 0]], rtol=1e-13)


def test_max_plus_screen_is_kept_on_the_reward_and_not_pickled():
    import pickle

    mw = MarkovWorld(1, 6, 3)
    rng = np.random.default_rng(43)
    r = FactoredReward(mw, rng.normal(size=(7, 6)), rng.normal(size=(3, 1, 6)))
    first = r.max_plus()
    assert r.max_plus() is first
    assert not r.bigram.flags.writeable
    np.testing.assert_array_equal(first.B, r.bigram[1:6])
    r.bigram = r.bigram * 2.0  # a new array: a new screen
    second = r.max_plus()
    assert second is not first and r.max_plus() is second
    np.testing.assert_array_equal(second.B, r.bigram[1:6])
    copy = pickle.loads(pickle.dumps(r))
    assert copy._screen is None and r._screen is not None
    np.testing.assert_array_equal(copy.bigram, r.bigram)


@pytest.mark.parametrize(("P", "V", "H", "eos"), [(2, 5, 3, True), (1, 4, 4, False), (2, 6, 2, True)])
def test_markov_optimal_values_against_the_tree(P, V, H, eos):
    mw, ew = MarkovWorld(P, V, H, eos), EnumeratedWorld(P, V, H, eos)
    fm, fe = FeatureMap(mw, MARKOV_TEMPLATES_ALL), FeatureMap(ew, MARKOV_TEMPLATES_ALL)
    theta = np.random.default_rng(50 + V).normal(size=fm.dim)
    r = mw.linear_reward(fm, theta)
    got = mw.optimal_values(r)
    want = ew.optimal_values(Table(ew, fe.table_values(theta)))
    m = _markov_index(mw, ew)
    np.testing.assert_allclose(np.concatenate(got)[m], np.concatenate(want), rtol=1e-13, atol=1e-13)
    assert [g.shape for g in got] == [(int(n),) for n in mw.sizes]
    # the generic pass over rows agrees (to rounding: it adds in another order)
    plain = World.optimal_values(mw, r)
    for t, (g, p) in enumerate(zip(got, plain, strict=True)):
        np.testing.assert_allclose(g, p, rtol=1e-14, err_msg=str(t))
    brute = {}
    for p, path in sequences(ew):
        brute[p] = max(brute.get(p, -np.inf), seq_return(path, ew.table(Table(ew, fe.table_values(theta)))))
    np.testing.assert_allclose(got[0], [brute[p] for p in range(P)], rtol=1e-12)


def test_markov_optimal_values_of_one_token_with_a_bigram():
    mw = MarkovWorld(2, 3, 1)
    assert not mw.track
    bg = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -3.0], [2.0, 1.0, 0.0], [0.25, 1.5, -0.5]])
    row = np.array([[[1.0, 0.0, -2.0], [-1.0, 0.5, 0.25]]])
    (v,) = mw.optimal_values(FactoredReward(mw, bg, row))
    np.testing.assert_array_equal(v, [max(1.25, 1.5, -2.5), max(-0.75, 2.0, -0.25)])


# ------------------------------------------------------------------------------------ markov: what it can carry
WHY = "on a compressed world (env.compressed=true)"


def _refused(cfg, agent_templates=()):
    with pytest.raises(ConfigError) as e:
        MarkovWorld.check_config(cfg, tuple(agent_templates))
    return e.value.field, e.value.value, e.value.allowed


def test_markov_check_config_names_each_refusal():
    from dataclasses import replace

    from sim.config import Config, CorruptionConfig, EnvConfig, MisspecConfig, NoiseConfig, OracleConfig
    from sim.config import RewardModelConfig as RM

    env = EnvConfig(n_prompts=2, vocab_size=5, horizon=3, compressed=True)
    ok = Config(env=env)
    MarkovWorld.check_config(ok)
    MarkovWorld.check_config(Config(env=env, oracle=OracleConfig(kind=" linear + length ")))  # names are stripped
    fams = "['linear', 'length', 'stutter']"
    assert _refused(Config(env=env, oracle=OracleConfig(kind="linear+repetition"))) == (
        "oracle.kind",
        "linear+repetition",
        f"families {fams} {WHY}: repetition depends on the whole prefix (co-occurrences, repetitions or a "
        "per-sequence term do not compress to (prompt, position, last token))",
    )
    assert _refused(Config(env=env, oracle=OracleConfig(form="sequence"))) == (
        "oracle.form",
        "sequence",
        f"dense {WHY} (a sequence-form reward is paid on the last token, which depends on the whole path)",
    )
    assert _refused(Config(env=replace(env, reference="softmax"))) == (
        "env.reference",
        "softmax",
        f"one of ['uniform', 'eos_hazard', 'bigram'] {WHY} (softmax draws independent logits per prefix, which does "
        "not compress)",
    )
    tmpl = f"Markov templates {MARKOV_TEMPLATES_ALL} {WHY}: hashed looks beyond the last token"
    assert _refused(Config(env=env, oracle=OracleConfig(templates=["unigram", "hashed"]))) == (
        "oracle.templates",
        "hashed",
        tmpl,
    )
    assert _refused(ok, ["position", "hashed"]) == ("agent.templates", "hashed", tmpl)
    # bigram tables: the setting that asks for one is named
    big = replace(env, vocab_size=50_000)
    field, value, allowed = _refused(Config(env=big), ["bigram"])
    assert (field, value) == ("oracle.templates", "bigram")
    assert allowed == (
        "no bigram term at vocab_size = 50000: its (V + 1) x V table would take 20.0 GB (bigram terms up to "
        "vocab_size = 12246; position-only worlds have no limit)"
    )
    MarkovWorld.check_config(Config(env=big, oracle=OracleConfig(templates=["unigram", "position"])))

    # noise: fixed draws per sequence, fixed drop masks and Likert levels need the sequences listed
    def noisy(**kw):
        return Config(env=env, corruption=CorruptionConfig(noise=NoiseConfig(**kw)))

    MarkovWorld.check_config(noisy(sigma=0.5, mode="fixed", unit="token"))
    MarkovWorld.check_config(noisy(sigma=0.0, mode="fixed"))  # inactive noise: any mode
    MarkovWorld.check_config(noisy(sigma=0.5, drop=0.25))  # delivery drops are fine
    assert _refused(noisy(sigma=0.5, mode="fixed")) == (
        "corruption.noise.mode",
        "fixed",
        f"delivery {WHY}, or fixed with corruption.noise.unit=token (a fixed draw per complete sequence needs the "
        "sequences listed)",
    )
    assert _refused(noisy(sigma=0.5, mode="fixed", unit="token", drop=0.25)) == (
        "corruption.noise.drop",
        0.25,
        f"0 with corruption.noise.mode=fixed {WHY} (a fixed mask of dropped payments is not built)",
    )
    assert _refused(noisy(sigma=0.5, levels=5)) == (
        "corruption.noise.levels",
        5,
        f"0 {WHY} (the Likert scale spans the range of every payment, which needs the sequences listed)",
    )

    def mis(**kw):
        return Config(env=env, corruption=CorruptionConfig(misspec=MisspecConfig(**kw)))

    assert _refused(mis(project_to=["unigram"])) == (
        "corruption.misspec.project_to",
        ["unigram"],
        f"[] {WHY} (the projection is a least-squares fit over every complete sequence)",
    )
    assert _refused(mis(exploit=0.5)) == (
        "corruption.misspec.exploit",
        0.5,
        f"0 {WHY} (the exploit is one whole output, which does not compress)",
    )
    scoped = f"off {WHY} (a scoped bigram term would depend on the position or prompt: not built)"
    assert _refused(mis(angle=0.3, scope_tokens=2)) == ("corruption.misspec.scope_tokens", 2, scoped)
    assert _refused(mis(angle=0.3, scope_prompts=0.5)) == ("corruption.misspec.scope_prompts", 0.5, scoped)

    def rlhf(**kw):
        return Config(env=env, pipeline="rlhf", reward_model=RM(**kw))

    MarkovWorld.check_config(rlhf())
    assert _refused(rlhf(name="tabular")) == (
        "reward_model.name",
        "tabular",
        f"linear {WHY} (a table over ~V^H sequences)",
    )
    assert _refused(rlhf(templates=["unigram", "hashed"]))[:2] == ("reward_model.templates", "hashed")
    assert _refused(rlhf(pessimism=1.0)) == (
        "reward_model.pessimism",
        1.0,
        f"0 {WHY} (a lower confidence bound per sequence is not a Markov reward)",
    )
    assert _refused(rlhf(objective="wco")) == (
        "reward_model.objective",
        "wco",
        f"mean {WHY} (the worst member or a variance penalty per sequence is not a Markov reward)",
    )
    # the rlhf checks only concern the rlhf pipeline
    MarkovWorld.check_config(Config(env=env, reward_model=RM(name="tabular", pessimism=1.0)))


def test_markov_instance_checks_and_bigram_size_limit():
    mw = MarkovWorld(2, 5, 3)
    mw.check_templates(["unigram", "bigram"], "f")
    with pytest.raises(ConfigError) as e:
        mw.check_templates(["unigram", "hashed"], "f")
    assert (e.value.field, e.value.value) == ("f", "hashed")
    mw.check_oracle(("linear", "stutter"), "dense", "k")
    with pytest.raises(ConfigError) as e:
        mw.check_oracle(("linear", "nonlinear"), "dense", "linear+nonlinear")
    assert (e.value.field, e.value.value) == ("oracle.kind", "linear+nonlinear")
    with pytest.raises(ConfigError) as e:
        mw.check_oracle(("linear",), "sequence", "linear")
    assert e.value.field == "oracle.form"
    mw.check_reference("eos_hazard")
    with pytest.raises(ConfigError) as e:
        mw.check_reference("softmax")
    assert (e.value.field, e.value.value) == ("env.reference", "softmax")
    assert markov.MAX_BIGRAM_ENTRIES == 150_000_000
    markov.check_bigram_size(12246, "k", 1)  # 12247 * 12246 = 149,976,762 entries fit
    with pytest.raises(ConfigError) as e:
        markov.check_bigram_size(12247, "k", 2)  # 12248 * 12247 = 150,001,256 do not
    assert (e.value.field, e.value.value) == ("k", 2)
    assert e.value.allowed == (
        "no bigram term at vocab_size = 12247: its (V + 1) x V table would take 1.2 GB (bigram terms up to "
        "vocab_size = 12246; position-only worlds have no limit)"
    )


# ------------------------------------------------------------------------------------------ markov: max-plus screen
def _plain(B, v):
    return (B + v).max(axis=1)


def _check_max_plus(mp, B, vs):
    n = B.shape[0]
    for v in vs:
        out = np.full(n, np.nan)
        left = mp(v, out)
        np.testing.assert_array_equal(out, _plain(B, v))
        assert 0 <= left <= n
        if not mp.screen:
            assert left == n
        ref = np.full(n, np.nan)
        mp.plain(v, ref)
        np.testing.assert_array_equal(ref, _plain(B, v))
        rows = np.array([n - 1, 0, n // 2])
        part = np.full(n, 7.0)
        mp.plain(v, part, rows)
        want = np.full(n, 7.0)
        want[rows] = _plain(B, v)[rows]
        np.testing.assert_array_equal(part, want)


def test_max_plus_is_the_plain_product():
    rng = np.random.default_rng(61)
    n, V = 60, 160
    B = rng.normal(size=(n, V)) * rng.uniform(0.5, 3.0, size=(n, 1))
    B[7] += 1e6  # a row offset far from the others
    B[9] = 1e20 + rng.normal(size=V)  # its max rounds onto its thresholds: no first-tier candidates
    vs = [rng.normal(size=V) * s for s in (0.1, 1.0, 5.0, 50.0)] + [np.zeros(V), np.linspace(-3, 3, V)]
    mp = MaxPlus(B)
    assert mp.screen and mp.n_tiers >= 1 and mp.m == 32 and mp.has0.size < n  # m = max(32, V / 16)
    assert MaxPlus(np.zeros((1, 80)) + np.arange(80.0)).m == 20  # at most V / 4
    assert MaxPlus(np.zeros((1, 2560)) + np.arange(2560.0)).m == 128  # V / 16 = 160, at most 128
    assert MaxPlus(np.zeros((1, 1600)) + np.arange(1600.0)).m == 100
    assert mp.cached_bytes > 8 * n * V  # the whole transpose is kept
    _check_max_plus(mp, B, vs)
    _check_max_plus(MaxPlus(B, k=2, m=3, tiers=1, growth=2), B, vs)
    _check_max_plus(MaxPlus(B, k=4, m=50, tiers=4, growth=3), B, vs)
    # non-finite v: the plain product
    bad = vs[1].copy()
    bad[3] = np.inf
    out = np.empty(n)
    assert mp(bad, out) == n
    np.testing.assert_array_equal(out, _plain(B, bad))


def test_max_plus_without_a_screen():
    rng = np.random.default_rng(62)
    vs = [rng.normal(size=3), rng.normal(size=3) * 4]
    small = MaxPlus(rng.normal(size=(5, 3)))  # V < 4
    assert small.screen is False and small.cached_bytes == 0 and small.n_tiers == 0
    _check_max_plus(small, small.B, vs)
    const = MaxPlus(np.tile(np.arange(6.0), (8, 1)) * 0 + np.arange(8.0)[:, None])  # constant rows: no threshold
    assert const.screen is False
    _check_max_plus(const, const.B, [rng.normal(size=6) for _ in range(2)])
    B = rng.normal(size=(8, 6))
    B[2] = -np.inf  # a row with no finite entry
    with np.errstate(invalid="ignore"):  # -inf - -inf while measuring the row's spread
        inf = MaxPlus(B)
    assert inf.screen is False
    _check_max_plus(inf, B, [rng.normal(size=6)])


def test_max_plus_column_cache_and_blocks(monkeypatch):
    rng = np.random.default_rng(63)
    n, V = 40, 64
    B = rng.normal(size=(n, V))
    # a cache of 20 columns (8 * n * 20 bytes) for m = 16 picked columns: least recently used ones are evicted
    monkeypatch.setattr(markov, "COLUMN_CACHE_BYTES", 8 * n * 20)
    monkeypatch.setattr(markov, "BLOCK_BYTES", 8 * V * 3)  # blocks of 3 rows; columns added one at a time
    mp = MaxPlus(B, m=16)
    assert mp.block == 3 and mp._cols.shape == (20, n) and mp._owner is not None
    vs = [rng.normal(size=V) * s for s in (0.5, 1.0, 2.0, 4.0, 8.0, 0.25)]
    _check_max_plus(mp, B, vs)
    # every cached column is a true copy of its column of B
    for slot, col in enumerate(mp._owner):
        if col >= 0:
            np.testing.assert_array_equal(mp._cols[slot], B[:, col])
            assert mp._slot[col] == slot
    assert np.count_nonzero(mp._slot >= 0) == np.count_nonzero(mp._owner >= 0) == 20


# ============================================================================================ the world interface
def test_table_rows_and_algebra():
    w = EnumeratedWorld(2, 3, 2)
    v = np.arange(w.n_states * 3, dtype=float).reshape(-1, 3) * 0.5 - 2.0
    x, y = Table(w, v), Table(w, v[::-1].copy())
    np.testing.assert_array_equal(x.level(1), v[2:6])
    np.testing.assert_array_equal(x.at(np.array([3, 0]), np.array([2, 1])), [v[3, 2], v[0, 1]])
    np.testing.assert_array_equal(x.rows(np.array([5, 1])), v[[5, 1]])
    np.testing.assert_array_equal(x.rows_at(1, np.array([3, 0])), v[[5, 2]])
    np.testing.assert_array_equal((x + y).values, v + v[::-1])
    np.testing.assert_array_equal((x * 3.0).values, 3.0 * v)
    np.testing.assert_array_equal((-0.5 * x).values, -0.5 * v)
    assert (x + y).world is w and (x * 2.0).world is w


def test_level_policy_rows_and_helpers():
    w = EnumeratedWorld(2, 3, 2)
    v = _policy(np.random.default_rng(70), w.n_states, 3)
    calls = []

    def level(t):
        calls.append(t)
        return v[slice(*w.level(t))]

    lazy = base.LevelPolicy(w, level)
    np.testing.assert_array_equal(lazy.rows_at(1, np.array([3, 1])), v[[5, 3]])
    assert calls == [1]
    assert not base.blockable(lazy) and base.blockable(Table(w, v))
    assert base.blockable(base.LevelPolicy(w, level, lambda t, local: v[w.level_start[t] + local]))
    assert base.blockable(SimpleNamespace(level=level, rows_at=lambda t, local: 0))
    assert not base.blockable(SimpleNamespace(level=level))
    np.testing.assert_array_equal(base.rows_of(SimpleNamespace(level=level), 1, np.array([2])), v[[4]])
    np.testing.assert_array_equal(base.rows_of(Table(w, v), 1, np.array([2])), v[[4]])
    np.testing.assert_array_equal(base.block_rows(Table(w, v), 1, 1, 4, False), v[3:6])
    np.testing.assert_array_equal(base.block_rows(lazy, 1, 1, 4, True), v[2:6])
    both = base.LevelPolicy(w, level, lambda t, local: v[w.level_start[t] + local] * 2)
    np.testing.assert_array_equal(base.block_rows(both, 1, 1, 4, False), 2 * v[3:6])
    ref = object()
    kl = [np.zeros(2), np.ones(6)]
    carrying = base.LevelPolicy(w, level, state_kl=(ref, kl))
    assert carrying.kl_to(ref) is kl and carrying.kl_to(object()) is None and lazy.kl_to(ref) is None


def test_sequences_take_and_concat():
    a = Sequences(np.array([0, 1]), np.array([[1, 2], [0, -1]]), np.array([2, 1]), np.array([5, 1]))
    b = Sequences(np.array([1]), np.array([[2, 0]]), np.array([2]))
    assert a.n == 2 and b.n == 1 and isinstance(a.n, int)
    t = a.take(np.array([1]))
    np.testing.assert_array_equal(t.tokens, [[0, -1]])
    np.testing.assert_array_equal(t.ids, [1])
    assert b.take(np.array([0])).ids is None
    both = Sequences.concat([a, b])
    assert both.ids is None
    np.testing.assert_array_equal(both.prompt, [0, 1, 1])
    np.testing.assert_array_equal(both.tokens, [[1, 2], [0, -1], [2, 0]])
    np.testing.assert_array_equal(both.length, [2, 1, 2])
    np.testing.assert_array_equal(Sequences.concat([a, a]).ids, [5, 1, 5, 1])


@pytest.mark.parametrize("n", [3, 40])  # few entries: an (n, A) block; many over few states: a search per state
def test_draw_actions_inverts_the_cumulative_row(n):
    w = EnumeratedWorld(2, 4, 2)
    v = np.array([[0.2, 0.0, 0.5, 0.3], [1.0, 2.0, 0.0, 1.0]])  # the second row is not normalised
    x = Table(w, np.tile(v, (w.n_states // 2 + 1, 1))[: w.n_states])
    rng = np.random.default_rng(71)
    local = rng.integers(0, 2, size=n)
    local[:2] = [0, 1]
    u = rng.random(n)
    u[:2] = [0.2, 0.75]  # exactly on a boundary of row 0 (goes right), and the last quarter of row 1
    got = base.draw_actions(x, 0, local, u)
    cum = np.cumsum(v, axis=1)
    want = [min(int(np.searchsorted(cum[s], uu * cum[s, -1], side="right")), 3) for s, uu in zip(local, u, strict=True)]
    np.testing.assert_array_equal(got, want)
    assert got[0] == 2 and got[1] == 3
    assert got.dtype == np.int64
    # u = 1 (or rounding past the total) still gives a valid action
    np.testing.assert_array_equal(base.draw_actions(x, 0, np.array([0, 1] * (n // 2)), np.ones(2 * (n // 2))), 3)


def test_row_kl_and_logsumexp_rows():
    pi = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    ref = np.array([[0.25, 0.25, 0.5], [0.5, 0.0, 0.5]])
    with np.errstate(divide="ignore"):
        kl = base.row_kl(pi, np.log(ref))
    assert kl[0] == pytest.approx(np.log(2.0), rel=1e-15)
    assert kl[1] == np.inf
    z = np.array([[1.0, 3.0, -2.0], [0.5, 0.5, 0.0]])
    m, w, total = base._logsumexp_rows(z)
    np.testing.assert_array_equal(m, [[3.0], [0.5]])
    np.testing.assert_allclose(w, np.exp(z - m), rtol=1e-15)
    np.testing.assert_allclose(total, np.exp(z - m).sum(axis=1, keepdims=True), rtol=1e-15)


@pytest.mark.parametrize("eos", [True, False])
def test_world_structure_helpers(eos):
    w = MarkovWorld(2, 4, 3, eos)  # the generic World methods (the tree overrides some)
    assert (w.first_token, w.branching, w.bos, w.n_actions) == ((1, 3, 4, 4) if eos else (0, 4, 4, 4))
    assert w.n_prefix_states is None and w.kind == "markov" and not w.enumerable
    assert list(w.levels()) == [(t, *w.level(t)) for t in range(3)]
    assert [w.level(t) for t in range(3)] == [(0, 2), (2, 2 + 2 * w.branching), (2 + 2 * w.branching, w.n_states)]
    np.testing.assert_array_equal(w.continuing(), [not eos, True, True, True])
    t, a = np.arange(3)[:, None], np.arange(4)[None, :]
    L = w.end_length(t, a)
    assert L.shape == (3, 4)
    want = np.full((3, 4), -1)
    want[2] = 3
    if eos:
        want[:, 0] = [0, 1, 2]
    np.testing.assert_array_equal(L, want)
    np.testing.assert_array_equal(w.ends(t, a), want >= 0)
    assert w.end_length(2, 1) == 3 and w.end_length(1, 2) == -1
    assert w.describe() == f"markov world (P=2, V=4, H=3, eos={eos})"
    assert w.table_reward(np.ones((w.n_states, 4))).world is w
    for call, key in [
        (lambda: w.terminal_transitions(), "a table over complete sequences"),
        (lambda: w.sequence_ids(None), "sequence indices (a tabular reward model, per-sequence tables)"),
        (lambda: w.all_sequences(), "this setting"),
        (lambda: w.sequence_reward(None, None), "a per-sequence reward"),
    ]:
        with pytest.raises(ConfigError) as e:
            call()
        assert (e.value.field, e.value.value) == ("env.compressed", True)
        assert (
            e.value.allowed == f"an enumerated world for {key} (a markov world cannot list its ~V^H complete sequences)"
        )
    with pytest.raises(ConfigError) as e:
        w.chunk_table(None, 3)
    assert (e.value.field, e.value.value) == ("corruption.sparsity.mode", 3)
    assert e.value.allowed == (
        "an enumerated world for this corruption (a markov world delivers chunks at run time but cannot tabulate them)"
    )
    with pytest.raises(ConfigError) as e:
        w.token_table()
    assert (e.value.field, e.value.value) == ("obs_mode", "tokens")
    assert e.value.allowed == "state or markov on a markov world (a state is not a prefix)"
    assert World.check_templates(w, ["hashed"], "f") is None  # the base world refuses nothing
    assert World.check_oracle(w, ("nonlinear",), "sequence", "nonlinear") is None
    assert World.check_reference(w, "softmax") is None
    assert World.check_config(None) is None


def test_blocks_split_levels_of_blockable_rows(monkeypatch):
    w = EnumeratedWorld(2, 4, 3)  # levels of 2, 6 and 18 states
    tab = Table(w, np.zeros((w.n_states, 4)))
    lazy = base.LevelPolicy(w, lambda t: np.zeros((int(w.sizes[t]), 4)))
    assert w.blocks(2, tab) == [(0, 18, True)]
    monkeypatch.setattr(base, "BLOCK_ENTRIES", 20)  # 5 states of 4 actions a block
    assert w.blocks(2, tab) == [(0, 5, False), (5, 10, False), (10, 15, False), (15, 18, False)]
    assert w.blocks(2, tab, lazy) == [(0, 18, True)]
    assert w.blocks(0, tab) == [(0, 2, True)]
    assert w.blocks(1, tab) == [(0, 5, False), (5, 6, False)]
    assert w.blocks(1) == [(0, 5, False), (5, 6, False)]
    monkeypatch.setattr(base, "BLOCK_ENTRIES", 24)  # exactly one level of 6 states
    assert w.blocks(1, tab) == [(0, 6, True)]
    monkeypatch.setattr(base, "BLOCK_ENTRIES", 3)  # fewer entries than one row: a state a block
    assert w.blocks(0, tab) == [(0, 1, False), (1, 2, False)]


def _solved_world(P=2, V=3, H=3, eos=True, seed=80):
    w = _world(P, V, H, eos, seed)
    rng = np.random.default_rng(seed + 1)
    r = rng.normal(size=(w.n_states, V)) + 0.3
    pi = _policy(rng, w.n_states, V)
    return w, r, pi


@pytest.mark.parametrize(("eos", "block"), [(True, None), (False, None), (True, 6), (False, 3)])
def test_exact_solve_and_evaluation_against_brute_force(eos, block, monkeypatch):
    from tests.brute import brute_kl, brute_optimal, brute_return, brute_soft

    if block is not None:
        monkeypatch.setattr(base, "BLOCK_ENTRIES", block)  # blocks of one or two states
    w, r, pi = _solved_world(eos=eos)
    R, Pi = Table(w, r), Table(w, pi)
    assert w.optimal_return(R) == pytest.approx(brute_optimal(w, r), rel=1e-13)
    values = w.optimal_values(R)
    np.testing.assert_allclose(w.prompt_values(None, R), values[0], rtol=0)
    assert w.initial_value(values) == pytest.approx(values[0].mean(), rel=1e-15)
    greedy = w.greedy_policy(R)
    g = w.table(greedy)
    assert w.evaluate(greedy, {"r": R})["r"] == pytest.approx(brute_optimal(w, r), rel=1e-13)
    np.testing.assert_array_equal(g.sum(axis=1), 1.0)
    np.testing.assert_array_equal(greedy.rows_at(1, np.array([2, 0])), g[w.level_start[1] + np.array([2, 0])])
    # policy values: V_t = sum_a pi Q_t, Q_t = r + V_{t+1}(child)
    V, Q = w.policy_values(Pi, R)
    J = brute_return(w, pi, r)
    assert float(np.mean(V[0])) == pytest.approx(J, rel=1e-13)
    np.testing.assert_allclose(w.prompt_values(Pi, R), V[0], rtol=0)
    np.testing.assert_allclose(Q[w.horizon - 1], R.level(w.horizon - 1), rtol=0)
    np.testing.assert_allclose(w.q_level(R, 0, V[1]), Q[0], rtol=1e-15)
    np.testing.assert_allclose(w.q_level(R, 1, V[2], np.array([3, 0])), Q[1][[3, 0]], rtol=1e-15)
    np.testing.assert_array_equal(w.q_level(R, 2, None), r[w.level_start[2] :])
    np.testing.assert_array_equal(w.q_level(R, 0, None), r[:2])  # no continuation given: the rewards alone
    ev = w.evaluate(Pi, {"r": R, "twice": R * 2.0})
    assert ev["r"] == pytest.approx(J, rel=1e-13) and ev["twice"] == pytest.approx(2 * J, rel=1e-13)
    assert ev["kl_to_reference"] == pytest.approx(brute_kl(w, pi, w.ref.values), rel=1e-12)
    assert w.evaluate(w.ref, {})["kl_to_reference"] == 0.0
    # the soft optimum: pi* ∝ pi_ref exp(R / beta) over whole sequences
    beta = 0.7
    soft = w.soft_policy(R, beta)
    want = brute_soft(w, r, w.ref.values, beta)
    st = w.table(soft)
    for _, path in sequences(w):
        assert seq_prob(path, st) == pytest.approx(want[tuple(path)], rel=1e-12)
    sv = w.soft_values(R, beta)
    logz = [
        np.log(
            sum(seq_prob(path, w.ref.values) * np.exp(seq_return(path, r) / beta) for q, path in sequences(w) if q == p)
        )
        for p in range(2)
    ]
    np.testing.assert_allclose(sv[0], beta * np.array(logz), rtol=1e-12)
    es = w.evaluate(soft, {"r": R})
    assert es["r"] == pytest.approx(brute_return(w, st, r), rel=1e-12)
    assert es["kl_to_reference"] == pytest.approx(brute_kl(w, st, w.ref.values), rel=1e-10)
    # a policy with mass off pi_ref's support has infinite KL
    ref = w.ref.values.copy()
    ref[0] = [0.0, 0.5, 0.5]
    w.ref = Table(w, ref)
    assert w.evaluate(Pi, {})["kl_to_reference"] == np.inf
    # unvisited states do not count: a row that leaves the support where pi never goes
    pi2 = pi.copy()
    pi2[0] = [0.0, 0.5, 0.5] if eos else [0.0, 0.5, 0.5]
    child = int(w.next_state(np.array([0]), np.array([0]))[0]) if not eos else None
    if child is not None:  # without EOS token 0 continues: its child is never visited
        ref2 = ref.copy()
        ref2[child] = [1.0, 0.0, 0.0]
        w.ref = Table(w, ref2)
        assert np.isfinite(w.evaluate(Table(w, pi2), {})["kl_to_reference"])


def test_evaluate_defers_to_a_policy_that_evaluates_itself():
    w = EnumeratedWorld(1, 3, 2)
    own = SimpleNamespace(evaluate=lambda rewards: {"seen": sorted(rewards)})
    assert w.evaluate(own, {"b": 1, "a": 2}) == {"seen": ["a", "b"]}
    prompt = SimpleNamespace(prompt_returns=lambda reward: ("pr", reward))
    assert w.prompt_values(prompt, "R") == ("pr", "R")


# ------------------------------------------------------------------------------------------ sampling and sequences
class _Stream:
    """A stand-in generator whose successive ``random(n)`` calls return given arrays (``choice`` from a list too)."""

    def __init__(self, draws, choices=None):
        self.draws = [np.asarray(d, dtype=float) for d in draws]
        self.choices = choices

    def random(self, n):
        u = self.draws.pop(0)
        assert u.size == n
        return u

    def choice(self, P, size, p):
        np.testing.assert_allclose(p, np.full(P, 1.0 / P))
        return np.asarray(self.choices[:size]) if size is not None else int(self.choices[0])


def _walk(w, pi, prompt, us):
    """The sequence an inverse-CDF sampler draws from ``prompt`` with uniforms ``us`` (one per step)."""
    s, toks, path = prompt, [], []
    for u in us:
        cum = np.cumsum(pi[s])
        a = min(int(np.searchsorted(cum, u * cum[-1], side="right")), w.n_actions - 1)
        toks.append(a)
        path.append((s, a))
        s = int(w.next_state(np.array([s]), np.array([a]))[0])
        if s < 0:
            break
    return toks, path


@pytest.mark.parametrize("eos", [True, False])
def test_sample_and_rollout_follow_the_policy(eos):
    w, r, pi = _solved_world(P=2, V=3, H=3, eos=eos, seed=90)
    n = 6
    draws = np.random.default_rng(91).random((3, n))
    prompts = np.array([0, 1, 1, 0, 1, 0])
    seqs = w.sample(Table(w, pi), prompts, _Stream(list(draws)))
    assert seqs.tokens.dtype == np.int64 and seqs.length.dtype == np.int64
    for i in range(n):
        toks, _ = _walk(w, pi, prompts[i], draws[:, i])
        assert seqs.length[i] == len(toks)
        np.testing.assert_array_equal(seqs.tokens[i], toks + [-1] * (3 - len(toks)))
    np.testing.assert_array_equal(seqs.prompt, prompts)
    # all episodes end at the first step: no further draws are taken
    stop = pi.copy()
    stop[:2] = [1.0, 0.0, 0.0]
    if eos:
        early = w.sample(Table(w, stop), np.array([0, 1]), _Stream([np.array([0.5, 0.5])]))
        np.testing.assert_array_equal(early.tokens, [[0, -1, -1], [0, -1, -1]])
    # rollout: the same walk, paid through the channel on every real step
    paid = []

    stream = _Stream(list(draws), prompts)

    class Channel:
        def episode_flags(self, batch, rng):
            assert batch == n and rng is stream
            return "carries"

        def pay(self, pending, s, a, depth, end, rng, carries):
            assert carries == "carries" and np.all(pending == 0) and rng is stream
            paid.append((s.copy(), a.copy(), depth.copy(), end.copy()))
            return r[s, a] + 100.0 * depth

    states, actions, rewards, alive = w.rollout(Table(w, pi), Channel(), stream, n)
    assert states.dtype == actions.dtype == np.int64 and alive.dtype == bool
    for i in range(n):
        toks, path = _walk(w, pi, prompts[i], draws[:, i])
        T = len(path)
        np.testing.assert_array_equal(alive[i], [t < T for t in range(3)])
        np.testing.assert_array_equal(states[i, :T], [s for s, _ in path])
        np.testing.assert_array_equal(actions[i, :T], toks)
        np.testing.assert_allclose(rewards[i], [r[s, a] + 100.0 * t for t, (s, a) in enumerate(path)] + [0.0] * (3 - T))
    for t, (s, a, depth, end) in enumerate(paid):
        np.testing.assert_array_equal(depth, t)
        np.testing.assert_array_equal(end, w.ends(t, a))
        np.testing.assert_array_equal(w.depth[s], t)


def test_paths_returns_and_log_probs():
    w, r, pi = _solved_world(P=2, V=3, H=3, seed=95)
    seqs = w.all_sequences()
    states, actions, mask = w.paths(seqs)
    R, Pi = Table(w, r), Table(w, pi)
    rets, rets_g = w.sequence_returns(R, seqs), w.sequence_returns(R, seqs, gamma=0.5)
    logp = w.sequence_log_prob(Pi, seqs)
    by_end = {path[-1]: path for _, path in sequences(w)}
    s_all, a_all = w.terminal_transitions()
    for i in range(seqs.n):
        path = by_end[(int(s_all[i]), int(a_all[i]))]
        T = len(path)
        np.testing.assert_array_equal(mask[i], [t < T for t in range(3)])
        np.testing.assert_array_equal(states[i], [s for s, _ in path] + [0] * (3 - T))
        np.testing.assert_array_equal(actions[i], [a for _, a in path] + [0] * (3 - T))
        assert rets[i] == pytest.approx(seq_return(path, r), rel=1e-13)
        assert rets_g[i] == pytest.approx(sum(0.5 ** (T - 1 - t) * r[x] for t, x in enumerate(path)), rel=1e-13)
        assert logp[i] == pytest.approx(np.log(seq_prob(path, pi)), rel=1e-13)
    pi0 = pi.copy()
    pi0[0] = [0.0, 0.4, 0.6]
    assert w.sequence_log_prob(Table(w, pi0), seqs)[0] == -np.inf  # x0 <eos> is impossible
    # the Markov world walks the same paths through merged states
    mw = MarkovWorld(2, 3, 3)
    fm, fe = FeatureMap(mw, MARKOV_TEMPLATES_ALL), FeatureMap(w, MARKOV_TEMPLATES_ALL)
    theta = np.random.default_rng(96).normal(size=fm.dim)
    np.testing.assert_allclose(
        mw.sequence_returns(mw.linear_reward(fm, theta), seqs, gamma=0.8),
        w.sequence_returns(Table(w, fe.table_values(theta)), seqs, gamma=0.8),
        rtol=1e-13,
    )


@pytest.mark.parametrize("block", [None, 9])
def test_return_moments_against_brute_force(block, monkeypatch):
    if block is not None:
        monkeypatch.setattr(base, "BLOCK_ENTRIES", block)  # blocks of 3 states
    for eos in (True, False):
        w, r, pi = _solved_world(P=2, V=3, H=3, eos=eos, seed=97)
        m1, m2 = brute_moments(w, pi, r)
        got = w.return_moments(Table(w, pi), Table(w, r))
        assert got == pytest.approx((m1, m2), rel=1e-13)


# ------------------------------------------------------------------------------- enumerated: edges of the formulas
def test_enumerated_edges():
    # b = 0 (V = 1 with EOS): the prompts alone, one sequence (EOS) each
    assert enumerated_size(3, 1, 4) == 3.0
    assert sequence_count(2, 1, 1) == 2.0
    assert sequence_count(2, 4, 2) == 2 + 2 * 3 * 4  # an EOS at each root, then every token at depth 1
    assert enumerated_size(1, 101, 151) == math.inf  # 151 log10(100) = 302 > 300 (b = 100: not 151 / 2)
    # the exact sd 1e-12 is no spread: replaced by 1
    assert standardisation(np.array([0.0, 2e-12]), np.array([1.0, 1.0])) == (1e-12, 1.0)
    # the world checks its own size with its own eos
    EnumeratedWorld(5000, 100, 2)  # 5e7 entries exactly
    with pytest.raises(ConfigError) as e:
        EnumeratedWorld(5000, 100, 2, eos=False)
    assert e.value.field == "n_prompts"
    # ids of float indices are int64 indices
    w = EnumeratedWorld(2, 3, 3)
    ids = w.ids_of(np.array([7.0, 1.0]), np.array([2, 0]))
    assert ids.dtype == np.int64 and ids.tolist() == [6 + 1 * 3 + 2, 1]
    ids = w.ids_of(np.array([7, 1]), np.array([2.0, 0.0]))
    assert ids.dtype == np.int64 and ids.tolist() == [11, 1]
    # the closed-form step far from the root: s * b + offset stays outside [0, S) exactly at the episode ends
    deep = EnumeratedWorld(1, 4, 6)
    b, offset, S = deep.step_offsets()
    s, a = np.repeat(np.arange(S), 4), np.tile(np.arange(4), S)
    closed = s * b + offset[a]
    np.testing.assert_array_equal(np.where((closed >= 0) & (closed < S), closed, -1), deep.next_state(s, a))


def test_enumerated_potentials_of_integer_and_level_only_rewards(monkeypatch):
    w = EnumeratedWorld(2, 3, 3)
    r = np.random.default_rng(98).integers(-3, 4, size=(w.n_states, 3))
    want = _dense_potentials(w, r.astype(float))
    np.testing.assert_allclose(np.concatenate(w.occupancy_potentials(Table(w, r))), want, rtol=1e-10, atol=1e-12)
    level_only = SimpleNamespace(level=lambda t: r[slice(*w.level(t))].astype(float))
    monkeypatch.setattr(base, "BLOCK_ENTRIES", 3)  # a state a block for blockable rows: these form whole levels
    np.testing.assert_allclose(np.concatenate(w.occupancy_potentials(level_only)), want, rtol=1e-10, atol=1e-12)


def test_enumerated_tables_keep_their_world_and_warn_nothing():
    import warnings

    w = _world(2, 3, 3)
    seqs = w.sequences_of(np.array([0, 6]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # states no sequence reaches divide 0 by 0 quietly
        pi = w.weighted_policy(seqs, np.array([1.0, 2.0]))
    assert pi.world is w
    assert w.chunk_table(Table(w, np.ones((w.n_states, 3))), 2).world is w


def test_exact_source_edges():
    w = EnumeratedWorld(2, 3, 2)
    prompt_of = w.prompt[w.terminal_transitions()[0]]
    probs = np.linspace(1.0, 2.0, w.n_sequences)
    probs[1] = 0.0  # the first sequence of prompt 1 (its EOS) is impossible
    src = ExactSource(w, probs)
    np.testing.assert_array_equal(src.prompt, prompt_of)
    last = np.nextafter(1.0, 0.0)  # 1 + last rounds to 2: the top of prompt 1's block
    got = src.draw_ids(np.array([1.0, 1.0, 0.0]), _U([0.0, last, last]))
    mine1, mine0 = np.flatnonzero(prompt_of == 1), np.flatnonzero(prompt_of == 0)
    assert got.tolist() == [mine1[1], mine1[-1], mine0[-1]]
    with pytest.raises(ValueError, match="^every prompt needs positive probability mass$"):
        ExactSource(w, np.where(prompt_of == 0, 0.0, 1.0))


# ----------------------------------------------------------------------------------- occupancy space (any world)
@pytest.mark.parametrize(("eos", "track"), [(True, True), (False, True), (True, False)])
def test_flow_reward_occupancy_and_cg_potentials_on_a_markov_world(eos, track, monkeypatch):
    from sim.errors import RunError

    mw = MarkovWorld(2, 4, 3, eos, track)
    S, A = mw.n_states, 4
    rng = np.random.default_rng(100)
    r = rng.normal(size=(S, A)) + 0.2
    nxt = mw.next_state(np.repeat(np.arange(S), A), np.tile(np.arange(A), S))
    C = np.zeros((S, S * A))
    C[np.repeat(np.arange(S), A), np.arange(S * A)] = 1.0
    C[nxt[nxt >= 0], np.flatnonzero(nxt >= 0)] -= 1.0
    np.testing.assert_allclose(np.concatenate(mw.flow_reward(Table(mw, r))), C @ r.reshape(-1), rtol=1e-13, atol=1e-13)
    want = np.linalg.solve(C @ C.T, C @ r.reshape(-1))
    np.testing.assert_allclose(np.concatenate(mw.occupancy_potentials(Table(mw, r))), want, rtol=1e-9, atol=1e-11)
    monkeypatch.setattr(base, "BLOCK_ENTRIES", 8)  # two states a block
    np.testing.assert_allclose(np.concatenate(mw.flow_reward(Table(mw, r))), C @ r.reshape(-1), rtol=1e-13, atol=1e-13)
    assert all(
        np.array_equal(x, np.zeros(int(n)))
        for x, n in zip(mw.occupancy_potentials(Table(mw, 0 * r)), mw.sizes, strict=True)
    )
    with pytest.raises(RunError, match="the occupancy projection did not converge"):
        mw.occupancy_potentials(Table(mw, r), rtol=1e-300)
    # occupancy: d_{t+1} = push(d_t pi_t), level 0 uniform over prompts
    pi = _policy(rng, S, A)
    d = mw.occupancy(Table(mw, pi))
    flow = np.zeros(S)
    flow[:2] = 0.5
    for s in range(S):  # states in level order: every parent before its children
        for a in range(A):
            if nxt[s * A + a] >= 0:
                flow[nxt[s * A + a]] += flow[s] * pi[s, a]
    np.testing.assert_allclose(np.concatenate(d), flow, rtol=1e-13)


# ---------------------------------------------------------------------------------------------- sequence sources
def test_token_source_draws_mixes_and_moments():
    w, r, pi = _solved_world(P=2, V=3, H=3, seed=110)
    other = _policy(np.random.default_rng(111), w.n_states, 3)
    src = World.sequence_source(w, Table(w, pi))
    assert isinstance(src, base.TokenSource) and src.mix is None
    n = 5
    prompts = np.array([0, 1, 0, 1, 1])
    draws = np.random.default_rng(112).random((3, n))
    got = src.draw(prompts, _Stream(list(draws)))
    for i in range(n):
        toks, _ = _walk(w, pi, prompts[i], draws[:, i])
        assert got.tokens[i, : len(toks)].tolist() == toks
    # a mixture: a coin per sequence (u < w picks the other policy), the first policy drawn for all, then the other
    mixed = World.sequence_source(w, Table(w, pi), mix=(0.4, Table(w, other)))
    coin = np.array([0.1, 0.9, 0.39, 0.4, 0.7])
    picked = coin < 0.4
    alt = np.random.default_rng(113).random((3, int(picked.sum())))
    seqs = mixed.draw(prompts, _Stream([coin, *draws, *alt]))
    j = 0
    for i in range(n):
        if picked[i]:
            toks, _ = _walk(w, other, prompts[i], alt[:, j])
            j += 1
        else:
            toks, _ = _walk(w, pi, prompts[i], draws[:, i])
        assert seqs.length[i] == len(toks) and seqs.tokens[i, : len(toks)].tolist() == toks
    # w = 0: the policy alone, no coin drawn
    zero = World.sequence_source(w, Table(w, pi), mix=(0.0, Table(w, other)))
    np.testing.assert_array_equal(zero.draw(prompts, _Stream(list(draws))).tokens, got.tokens)
    none = World.sequence_source(w, Table(w, pi), mix=(0.4, Table(w, other)))
    out = none.draw(prompts, _Stream([np.ones(n), *draws]))  # no coin under w: the other policy is never drawn
    np.testing.assert_array_equal(out.tokens, got.tokens)
    # moments of the mixture: the mixed raw moments, then the sd
    m1, m2 = brute_moments(w, pi, r)
    o1, o2 = brute_moments(w, other, r)
    assert src.moments(Table(w, r)) == pytest.approx((m1, np.sqrt(m2 - m1 * m1)), rel=1e-12)
    x1, x2 = 0.6 * m1 + 0.4 * o1, 0.6 * m2 + 0.4 * o2
    assert mixed.moments(Table(w, r)) == pytest.approx((x1, np.sqrt(x2 - x1 * x1)), rel=1e-12)
    assert zero.moments(Table(w, r)) == pytest.approx((m1, np.sqrt(m2 - m1 * m1)), rel=1e-12)
    # a source that is its own distribution is returned as it is; a mixture wraps it
    own = SimpleNamespace(draw=lambda prompts, rng: None, level=lambda t: None)
    assert World.sequence_source(w, own) is own
    assert isinstance(World.sequence_source(w, own, mix=(0.5, Table(w, pi))), base.TokenSource)
    # the default coverage: one draw per prompt entry, weight 1 each
    cov, wts = base.SequenceSource.coverage(src, prompts, _Stream(list(draws)))
    np.testing.assert_array_equal(cov.tokens, got.tokens)
    np.testing.assert_array_equal(wts, np.ones(n))


def test_mean_sd_and_token_source_myopic_range():
    assert base._mean_sd(2.0, 5.0) == (2.0, 1.0)  # variance 1
    assert base._mean_sd(3.0, 9.0 + 0.25) == pytest.approx((3.0, 0.5), rel=1e-12)
    assert base._mean_sd(1e6, 1e12) == (1e6, 1.0)  # no spread relative to the mean
    assert base._mean_sd(1e6, 1e12 + 1e4)[1] == pytest.approx(100.0, rel=1e-6)  # sd 100 >> 1e-12 * 1e6
    assert base._mean_sd(0.0, 1e-26)[1] == 1.0  # sd 1e-13: below 1e-12 * max(1, 0)
    assert base._mean_sd(0.0, 4e-24)[1] == pytest.approx(2e-12, rel=1e-12)
    assert base._mean_sd(1.0, 0.5) == (1.0, 1.0)  # a negative variance from rounding: no spread
    w, r, pi = _solved_world(P=2, V=3, H=3, seed=115)
    src = World.sequence_source(w, Table(w, pi))
    rets = [seq_return(path, r) for _, path in sequences(w)]
    teacher = SimpleNamespace(deltas=[], myopia=1.0, perceived=Table(w, r), levels=5)
    lo, hi = src.myopic_range(teacher)
    per = {p: [seq_return(path, r) for q, path in sequences(w) if q == p] for p in range(2)}
    assert hi == pytest.approx(max(max(v) for v in per.values()), rel=1e-13)
    assert lo == pytest.approx(min(rets), rel=1e-13)
    for bad in (
        SimpleNamespace(deltas=[np.zeros(2)], myopia=1.0, levels=5),
        SimpleNamespace(deltas=[], myopia=0.5, levels=3),
    ):
        with pytest.raises(ConfigError) as e:
            src.myopic_range(bad)
        assert (e.value.field, e.value.value) == ("feedback.levels", bad.levels)
        assert e.value.allowed == (
            "0 with annotator mixtures or myopia on a world that cannot list its sequences (the Likert range is "
            "their min and max)"
        )


@pytest.mark.parametrize("eos", [True, False])
def test_uniform_source_makes_every_sequence_of_a_prompt_equally_likely(eos):
    w = EnumeratedWorld(2, 3, 4, eos)
    src = World.uniform_source(w)
    assert isinstance(src, base.TokenSource)
    probs = w.sequence_probs(src.policy)
    per_prompt = w.n_sequences // 2
    np.testing.assert_allclose(probs, 0.5 / per_prompt, rtol=1e-12)
    mw = MarkovWorld(2, 3, 4, eos)
    msrc = mw.uniform_source()
    np.testing.assert_allclose(np.concatenate([msrc.policy.level(t)[:1] for t in range(4)]),
                               np.concatenate([src.policy.level(t)[:1] for t in range(4)]), rtol=1e-15)  # fmt: skip
    assert msrc.policy.level(2).shape == (int(mw.sizes[2]), 3)


def test_weighted_sequences_policy():
    w, r, _ = _solved_world(P=2, V=3, H=3, seed=120)
    seqs = w.sequences_of(np.array([3, 0, 20, 7, 2, 25, 3]))
    assert seqs.prompt.tolist() == [0, 0, 1, 0, 0, 1, 0]
    weights = np.array([1.0, 3.0, 2.0, 0.0, 4.0, 6.0, 2.0])
    ws = World.weighted_policy(w, seqs, weights)
    assert isinstance(ws, base.WeightedSequences)
    want = weights / np.array([10, 10, 8, 10, 10, 8, 10]) / 2  # per prompt, prompts uniform
    np.testing.assert_allclose(ws.weights, want, rtol=1e-15)
    np.testing.assert_array_equal(ws.counts, [5, 2])
    R = Table(w, r)
    rets = w.sequence_returns(R, seqs)
    ev = ws.evaluate({"r": R, "neg": R * -1.0})
    assert ev["r"] == pytest.approx(want @ rets, rel=1e-13) and ev["neg"] == pytest.approx(-(want @ rets), rel=1e-13)
    q = 1.0 / (np.array([5, 5, 2, 5, 5, 2, 5]) * 2)
    kl = sum(x * np.log(x / y) for x, y in zip(want, q, strict=True) if x > 0)
    assert ev["kl_to_reference"] == pytest.approx(kl, rel=1e-13)
    assert w.evaluate(ws, {"r": R}) == {"r": ev["r"], "kl_to_reference": ev["kl_to_reference"]}
    mine0, mine1 = [0, 1, 3, 4, 6], [2, 5]
    np.testing.assert_allclose(
        ws.prompt_returns(R), [2 * want[mine0] @ rets[mine0], 2 * want[mine1] @ rets[mine1]], rtol=1e-13
    )
    np.testing.assert_allclose(w.prompt_values(ws, R), ws.prompt_returns(R), rtol=0)
    top, probs = ws.top(0, 3)
    np.testing.assert_array_equal(top.ids, [2, 0, 3])  # weights 4, 3, 2 of prompt 0
    np.testing.assert_allclose(probs, [0.4, 0.3, 0.2], rtol=1e-15)
    top1, probs1 = w.likely_sequences(ws, 1, 1)
    np.testing.assert_array_equal(top1.ids, [25])
    np.testing.assert_allclose(probs1, [0.75], rtol=1e-15)
    with pytest.raises(ConfigError) as e:
        ws.level(0)
    assert (e.value.field, e.value.value) == ("agent.name", "best_of_n")
    assert e.value.allowed == "an enumerated world for per-state rows of this policy"
    assert World.sequence_source(w, ws) is ws
    # draws: the first sequence of the prompt whose cumulative weight exceeds u times the prompt's total
    prompts = np.array([0, 1, 0, 0, 1, 0, 0])
    u = np.array([0.05, 0.2, 0.35, 0.999, 0.3, 0.4, 1.0])  # 0.4 sits on a boundary (goes right); 1.0 past the end
    got = ws.draw(prompts, _U(u))
    # prompt 0 rows 0, 1, 3, 4, 6 with cumulative 0.1, 0.4, 0.4, 0.8, 1.0; prompt 1 rows 2, 5 with 0.25, 1.0
    np.testing.assert_array_equal(got.ids, [3, 20, 0, 3, 25, 2, 3])


def test_generic_format_text_and_likely_sequences():
    mw = MarkovWorld(2, 4, 3)
    s = int(mw.level_start[2]) + 1 * 3 + (2 - 1)  # prompt 1, depth 2, last token 2
    assert mw.format(s) == "x1 @2 after t2"
    assert mw.format(s, 0) == "x1 @2 after t2 <eos>"
    assert mw.format(1, 3) == "x1 @0 t3"
    assert MarkovWorld(1, 3, 2, eos=False).format(0, 0) == "x0 @0 t0"
    seqs = Sequences(np.array([1, 0, 0]), np.array([[3, 1, 0], [0, -1, -1], [2, 2, 1]]), np.array([3, 1, 0]))
    assert [mw.text(seqs, i) for i in range(3)] == ["x1: t3 t1 <eos>", "x0: <eos>", "x0: (empty)"]
    assert (
        MarkovWorld(1, 3, 2, eos=False).text(Sequences(np.array([0]), np.array([[0, 2]]), np.array([2])), 0)
        == "x0: t0 t2"
    )
    # the generic likely output: the most likely token at each step, until the episode ends
    rows = np.zeros((mw.n_states, 4))
    rows[:, :] = [0.1, 0.2, 0.3, 0.4]  # t3 everywhere ...
    lo1 = int(mw.level_start[1])
    rows[lo1 + 1 * 3 + 2] = [0.7, 0.1, 0.1, 0.1]  # ... but EOS after (x1, t3)
    seqs, probs = mw.likely_sequences(Table(mw, rows), 1)
    np.testing.assert_array_equal(seqs.tokens, [[3, 0, -1]])
    np.testing.assert_array_equal(seqs.length, [2])
    np.testing.assert_array_equal(seqs.prompt, [1])
    np.testing.assert_allclose(probs, [0.4 * 0.7], rtol=1e-15)
    seqs, probs = mw.likely_sequences(Table(mw, rows), 0, k=5)
    np.testing.assert_array_equal(seqs.tokens, [[3, 3, 3]])
    np.testing.assert_allclose(probs, [0.4**3], rtol=1e-15)
    own = SimpleNamespace(top=lambda prompt, k: (prompt, k))
    assert World.likely_sequences(mw, own, 1) == (1, 3)
    assert mw.initial_value([np.array([1.0, 4.0]), np.zeros(6), np.zeros(6)]) == 2.5


@pytest.mark.parametrize(
    ("V", "column_rows", "block"), [(3, 1 << 14, None), (3, 2, 6), (4, 3, None), (34, 1 << 14, 68)]
)
def test_optimal_values_by_columns_and_blocks(V, column_rows, block, monkeypatch):
    """Row maxima a column at a time (V <= 32), in runs of ``COLUMN_ROWS`` rows, or by ``max`` (V > 32)."""
    monkeypatch.setattr(base, "COLUMN_ROWS", column_rows)
    if block is not None:
        monkeypatch.setattr(base, "BLOCK_ENTRIES", block)
    for eos in (True, False):
        w = EnumeratedWorld(2, V, 2 if V > 4 else 3, eos)
        r = np.random.default_rng(V + eos).normal(size=(w.n_states, V))
        r[0, -1] = 5.0  # the largest entry in the last column
        r[1, 0] = 5.0  # and in the first
        R = Table(w, r)
        got = w.optimal_values(R)
        nxt = None
        for t in reversed(range(w.horizon)):  # V_t = max_a (r + V_{t+1}(child)), formed whole
            q = w.q_level(R, t, nxt)
            np.testing.assert_array_equal(got[t], q.max(axis=1))
            nxt = got[t]
        assert got[0][0] >= 5.0 and got[0][1] >= 5.0
    assert base.COLUMN_MAX_ACTIONS == 32


# ------------------------------------------------------------------------ the soft optimum evaluated in its pass
@pytest.mark.parametrize(("eos", "block"), [(True, None), (False, None), (True, 6)])
def test_soft_policy_evaluated_in_its_own_pass(eos, block, monkeypatch):
    from tests.brute import brute_kl, brute_return

    if block is not None:
        monkeypatch.setattr(base, "BLOCK_ENTRIES", block)  # two states a block
    w, r, _ = _solved_world(P=2, V=3, H=3, eos=eos, seed=130)
    r2 = np.random.default_rng(131).normal(size=r.shape) - 0.4
    R, R2 = Table(w, r), Table(w, r2)
    beta = 0.45
    soft = w.soft_policy(R, beta, evaluate={"r": R, "other": R2})
    assert soft.world is w and w.soft_policy(R, beta).world is w  # with and without its own evaluation
    st = w.table(soft)
    np.testing.assert_allclose(soft.rows_at(1, np.array([3, 0])), soft.level(1)[[3, 0]], rtol=1e-14)
    np.testing.assert_allclose(soft.rows_at(2, np.array([5])), soft.level(2)[[5]], rtol=1e-14)
    want = {
        "r": brute_return(w, st, r),
        "other": brute_return(w, st, r2),
        "kl_to_reference": brute_kl(w, st, w.ref.values),
    }
    got = w.evaluate(soft, {"r": R, "other": R2})
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-11, abs=1e-14), k
    # a weak pull (beta = 3): a KL well below 1, from the same pass
    weak = w.soft_policy(R, 3.0, evaluate={"r": R})
    wt = w.table(weak)
    kl_weak = brute_kl(w, wt, w.ref.values)
    assert 0 < kl_weak < 0.2
    assert w.evaluate(weak, {"r": R})["kl_to_reference"] == pytest.approx(kl_weak, rel=1e-10)
    assert w.evaluate(weak, {"r": R})["r"] == pytest.approx(brute_return(w, wt, r), rel=1e-11)
    # the states' KL it carries is the per-row KL of its rows
    kls = soft.kl_to(w.ref)
    assert kls is not None and soft.kl_to(Table(w, w.ref.values)) is None
    for t in range(3):
        with np.errstate(divide="ignore"):
            np.testing.assert_allclose(
                kls[t], base.row_kl(soft.level(t), np.log(w.ref.level(t))), rtol=1e-10, atol=1e-15
            )
    # other reward objects, or another reference: evaluated again (the forward pass), with the same numbers
    again = w.evaluate(soft, {"r": Table(w, r)})
    assert again["r"] == pytest.approx(want["r"], rel=1e-11) and again["kl_to_reference"] == pytest.approx(
        want["kl_to_reference"], rel=1e-10
    )
    assert soft.evaluated(w.ref, {"r": R}) is None  # fewer rewards
    assert soft.evaluated(w.ref, {"r": R, "other": R}) is None  # another object under a known name
    assert soft.evaluated(Table(w, w.ref.values), {"r": R, "other": R2}) is None
    res = soft.evaluated(w.ref, {"other": R2, "r": R})
    assert res == got and res is not soft.evaluated(w.ref, {"other": R2, "r": R})  # a copy each time
    res["r"] = 0.0
    assert w.evaluate(soft, {"r": R, "other": R2})["r"] == got["r"]
    # a new reference: evaluated again (the policy's rows are formed from the world's reference when asked)
    w.ref = Table(w, _policy(np.random.default_rng(132), w.n_states, 3))
    moved, st2 = w.evaluate(soft, {"r": R, "other": R2}), w.table(soft)
    assert moved["r"] == pytest.approx(brute_return(w, st2, r), rel=1e-11)
    assert moved["kl_to_reference"] == pytest.approx(brute_kl(w, st2, w.ref.values), rel=1e-10)
    # without evaluate: no evaluation, no states' KL
    plain = w.soft_policy(R, beta)
    assert plain.kl_to(w.ref) is None and plain.evaluated(w.ref, {}) is None
    assert base.LevelPolicy(w, plain.level).evaluated(w.ref, {}) is None
    # beta must be a finite positive number
    for bad in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ConfigError) as e:
            w.soft_values(R, bad)
        assert e.value.field == "agent.beta" and e.value.allowed == "a finite number > 0"
        assert e.value.value == bad or (np.isnan(bad) and np.isnan(e.value.value))


def test_log_ref_is_kept_when_it_fits(monkeypatch):
    w = _world(2, 3, 3, seed=140)
    ref = w.ref.values
    assert base.LOG_REF_CACHE_BYTES == 256 * 2**20
    first = w.log_ref(1)
    np.testing.assert_allclose(first, np.log(ref[2:6]), rtol=1e-15)
    assert w.log_ref(1) is first and w.log_ref_cached()
    np.testing.assert_array_equal(w.log_ref_rows(1, np.array([3, 0])), first[[3, 0]])
    np.testing.assert_array_equal(w.log_ref_block(1, 1, 3, False), first[1:3])
    assert w.log_ref_block(1, 0, 4, True) is first
    w.ref = Table(w, ref[::-1].copy())  # a new reference clears the kept levels
    np.testing.assert_allclose(w.log_ref(1), np.log(ref[::-1][2:6]), rtol=1e-15)
    # exactly at the limit (S * A * 8 bytes) the levels are kept; one byte less and they are not
    size = 8 * w.n_states * 3
    monkeypatch.setattr(base, "LOG_REF_CACHE_BYTES", size)
    w2 = _world(2, 3, 3, seed=141)
    assert w2.log_ref_cached() and w2.log_ref(2) is w2.log_ref(2)
    monkeypatch.setattr(base, "LOG_REF_CACHE_BYTES", size - 1)
    w3 = _world(2, 3, 3, seed=142)
    assert not w3.log_ref_cached()
    a = w3.log_ref(2)
    assert w3.log_ref(2) is not a
    np.testing.assert_array_equal(w3.log_ref(2), a)
    np.testing.assert_allclose(w3.log_ref_rows(2, np.array([5, 1])), np.log(w3.ref.values[[6 + 5, 6 + 1]]), rtol=1e-15)
    # references that give their own log-rows are asked for them; zeros give -inf quietly
    calls = []
    own = SimpleNamespace(
        level=lambda t: np.full((int(w3.sizes[t]), 3), 1 / 3),
        log_level=lambda t: calls.append(("level", t)) or np.full((int(w3.sizes[t]), 3), -7.0),
        log_rows_at=lambda t, local: calls.append(("rows", t)) or np.full((len(local), 3), -9.0),
    )
    w3.ref = own
    assert w3.log_ref(1)[0, 0] == -7.0 and w3.log_ref_rows(1, np.array([0]))[0, 0] == -9.0
    assert calls == [("level", 1), ("rows", 1)]
    zero = ref.copy()
    zero[:, 0] = 0.0
    w3.ref = Table(w3, zero)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert w3.log_ref(0)[0, 0] == -np.inf and w3.log_ref_rows(0, np.array([1]))[0, 0] == -np.inf


def test_table_of_rows_and_linear_reward():
    w = EnumeratedWorld(2, 3, 2)
    v = np.arange(w.n_states * 3, dtype=float).reshape(-1, 3)
    lazy = base.LevelPolicy(w, lambda t: v[slice(*w.level(t))] * 2)
    np.testing.assert_array_equal(w.table(lazy), 2 * v)
    tab = Table(w, v)
    assert w.table(tab) is v
    fm = FeatureMap(w, ["unigram", "position"])
    theta = np.arange(fm.dim, dtype=float) - 2.5
    lin = w.linear_reward(fm, theta)
    assert isinstance(lin, Table) and lin.world is w
    np.testing.assert_array_equal(lin.values, fm.table_values(theta))


# ------------------------------------------------------------------- the screen of MaxPlus against its definition
def _screen_thresholds(B, k=16, tiers=3, growth=4):
    """The tiers' thresholds ``thr_j = rmax - delta_j`` as MaxPlus's docstring defines them, or None (no screen):
    ``delta_j`` the median, over (at most 16 evenly spaced) sample rows, of the gap between the row max and its
    ``k_j``-th largest entry, ``k_j = min(k growth^j, cap)``; kept while strictly increasing; the widest tier dropped
    while more than ``4 k_j`` entries per row pass it."""
    n, V = B.shape
    if V < 4:
        return None
    cap = max(min(V // 4, 64), V // 16, 1)
    ks = sorted({min(k * growth**j, cap) for j in range(max(1, tiers))})
    rmax = B.max(axis=1)
    sample = np.linspace(0, n - 1, min(n, 16)).astype(int)
    srt = np.sort(B[sample], axis=1)
    deltas = []
    for kk in ks:
        d = float(np.median(rmax[sample] - srt[:, V - kk]))
        if np.isfinite(d) and d > (deltas[-1][1] if deltas else 0.0):
            deltas.append((kk, d))
    if not deltas or not np.isfinite(rmax).all():
        return None
    while np.count_nonzero(B > (rmax - deltas[-1][1])[:, None]) > 4 * deltas[-1][0] * n:
        deltas.pop()
        if not deltas:
            return None
    return rmax[None, :] - np.array([d for _, d in deltas])[:, None]


def _rows_left(B, thr, m, v):
    """The rows the screen cannot settle (docstring): the max over the top-``m`` columns of ``v`` and the entries
    above ``thr_j`` must reach ``thr_j + v_rest`` (``v_rest``: the largest ``v`` outside them) at some tier ``j``."""
    V = v.size
    order = np.argsort(v)
    S, v_rest = order[V - m :], v[order[V - m - 1]]
    total = B + v
    best = total[:, S].max(axis=1)
    left = np.ones(B.shape[0], dtype=bool)
    for j in range(thr.shape[0]):
        cand = np.where(B > thr[j][:, None], total, -np.inf).max(axis=1)
        best = np.maximum(best, cand)
        left &= ~(best >= thr[j] + v_rest)
    return int(left.sum())


def _check_screen(mp, B, vs, **kw):
    thr = _screen_thresholds(B, **kw)
    assert mp.screen is (thr is not None)
    if thr is None:
        assert mp.n_tiers == 0
        return
    np.testing.assert_array_equal(mp.thr, thr)
    n, J = B.shape[0], thr.shape[0]
    assert mp.n_tiers == J and mp.tcol.dtype == np.int32
    # tier j of row y holds exactly its entries above thr_j and not above thr_{j-1}
    for j in range(J):
        for y in range(n):
            seg = slice(mp.bounds[j * n + y], mp.bounds[j * n + y + 1])
            above = B[y] > thr[j, y]
            if j:
                above &= ~(B[y] > thr[j - 1, y])
            cols = np.flatnonzero(above)
            got = np.sort(mp.tcol[seg].astype(np.int64))
            np.testing.assert_array_equal(got, cols, err_msg=f"tier {j} row {y}")
            np.testing.assert_array_equal(np.sort(mp.tval[seg]), np.sort(B[y, cols]))
    assert mp.bounds[-1] == mp.tval.size
    for v in vs:
        out = np.empty(n)
        assert mp(v, out) == _rows_left(B, thr, mp.m, v)
        np.testing.assert_array_equal(out, (B + v).max(axis=1))


def test_max_plus_screen_follows_its_definition(monkeypatch):
    rng = np.random.default_rng(150)
    vs = lambda V: [rng.normal(size=V) * s for s in (0.3, 1.0, 3.0)] + [rng.permutation(V).astype(float) * 0.05]  # noqa: E731
    # integer entries: many ties at the thresholds; a narrow spread: deltas below 1
    for B, kw in [
        (rng.integers(0, 12, size=(40, 160)).astype(float), {}),
        (rng.normal(size=(24, 160)) * 0.05, {}),
        (rng.normal(size=(30, 400)), {}),
        (rng.normal(size=(20, 1600)), {}),
        (rng.normal(size=(12, 5)), {}),
        (rng.normal(size=(12, 4)), {}),
        (rng.normal(size=(30, 160)), {"k": 2, "tiers": 1, "growth": 2}),
        (rng.normal(size=(30, 160)), {"k": 4, "tiers": 4, "growth": 3}),
    ]:
        mp = MaxPlus(B, **kw)
        _check_screen(mp, B, vs(B.shape[1]), **kw)
    assert type(MaxPlus(np.zeros((1, 1600)) + np.arange(1600.0)).m) is int
    # columns that are low in some rows and carry large v: those rows go down the tiers, some to the plain product
    for n, V, kw, small in [
        (40, 160, {}, False),
        (20, 1600, {}, False),
        (30, 160, {"k": 4, "tiers": 4, "growth": 3}, False),
        (40, 160, {}, True),
    ]:
        if small:  # columns added one at a time, plain rows in blocks of 3
            monkeypatch.setattr(markov, "BLOCK_BYTES", 8 * V * 3)
        B = rng.normal(size=(n, V))
        cols = rng.choice(V, size=MaxPlus(B, **kw).m + 8, replace=False)
        B[: n // 2, cols] -= 10.0
        B[n // 2 : 3 * n // 4, cols] -= 1.0
        spiked = []
        for h in (0.3, 1.5, 1.8, 2.1, 2.5, 5.0):
            v = rng.normal(size=V) * 0.01
            v[cols] += h
            spiked.append(v)
        mp = MaxPlus(B, **kw)
        _check_screen(mp, B, spiked, **kw)
        assert max(mp(v, np.empty(n)) for v in spiked) > 0  # some rows reach the plain product
    # rows far more crowded near their max than the sample rows: every tier is dropped, no screen
    B = rng.normal(size=(40, 1024))
    sample = np.linspace(0, 39, 16).astype(int)
    crowded = np.setdiff1d(np.arange(40), sample)
    B[crowded] = 3.0 + rng.normal(size=(crowded.size, 1024)) * 1e-9
    mp = MaxPlus(B)
    assert _screen_thresholds(B) is None and mp.screen is False
    _check_max_plus(mp, B, vs(1024))
    # a few crowded rows: the widest tier goes, the first stays (if the rule allows), by the same definition
    B2 = rng.normal(size=(40, 1024))
    B2[crowded[:9]] = 3.0 + rng.normal(size=(9, 1024)) * 1e-9
    _check_screen(MaxPlus(B2), B2, vs(1024))


def test_max_plus_column_cache_is_least_recently_used(monkeypatch):
    rng = np.random.default_rng(160)
    n, V = 30, 64
    B = rng.normal(size=(n, V))
    assert MaxPlus(B)._owner is None  # the whole transpose fits: no eviction
    monkeypatch.setattr(markov, "COLUMN_CACHE_BYTES", 8 * n * 24)  # 24 columns for m = 16 picked per call
    mp = MaxPlus(B, m=16)
    C = mp._cols.shape[0]
    assert C == 24 and mp._owner is not None and mp.screen
    last_use: dict[int, int] = {}
    for call in range(12):
        v = rng.normal(size=V)
        if call % 3 == 2:
            v[np.argsort(v)[-16:][:5]] = -5.0  # some of the last picks move out
        out = np.empty(n)
        mp(v, out)
        np.testing.assert_array_equal(out, (B + v).max(axis=1))
        S = np.argsort(v)[V - 16 :]
        for c in S:
            last_use[int(c)] = call
        owner = mp._owner
        cached = {int(c) for c in owner if c >= 0}
        assert set(S.tolist()) <= cached
        for slot, c in enumerate(owner):
            if c >= 0:
                assert mp._slot[c] == slot
                np.testing.assert_array_equal(mp._cols[slot], B[:, c])
        assert np.count_nonzero(mp._slot >= 0) == len(cached) == np.count_nonzero(owner >= 0)
        used = set(last_use)
        if len(cached) < C:
            assert cached == used  # free slots are filled before anything is evicted
        else:
            assert min(last_use[c] for c in cached) >= max((last_use[c] for c in used - cached), default=-1)


def test_markov_optimal_values_of_a_table_reward():
    mw = MarkovWorld(2, 4, 3)
    r = np.random.default_rng(170).normal(size=(mw.n_states, 4))
    got = mw.optimal_values(Table(mw, r))
    want = World.optimal_values(mw, Table(mw, r))
    for g, x in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, x)
    no_bigram = FactoredReward(mw, None, np.random.default_rng(171).normal(size=(3, 2, 4)))
    np.testing.assert_allclose(
        np.concatenate(mw.optimal_values(no_bigram)), np.concatenate(World.optimal_values(mw, no_bigram)), rtol=0
    )


def test_bigram_size_message_and_the_linear_reward_check():
    for V, gb in [(13462, "1.4"), (247550, "490.3")]:  # 8 (V + 1) V / 1e9 rounded (not (V + 2) V, nor / (1e9 + 1))
        with pytest.raises(ConfigError) as e:
            markov.check_bigram_size(V, "k", V)
        assert e.value.allowed.startswith(
            f"no bigram term at vocab_size = {V}: its (V + 1) x V table would take {gb} GB"
        )
    mw = MarkovWorld(1, 12247, 2)
    fm = FeatureMap(mw, ["bigram", "unigram"], field="x.f")
    with pytest.raises(ConfigError) as e:
        mw.linear_reward(fm, np.zeros(3))  # refused before any (V + 1) x V table is formed
    assert (e.value.field, e.value.value) == ("x.f", "bigram")


def test_greedy_policy_breaks_ties_to_the_lowest_token():
    w = EnumeratedWorld(1, 3, 2)
    r = np.zeros((w.n_states, 3))
    r[0] = [1.0, 1.0, 0.5]  # EOS (1) ties with t1 (1 + 0); t2 leads to 0.5 + 1
    r[1:] = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    r[2] = [0.0, 0.5, 0.5]
    g = w.table(w.greedy_policy(Table(w, r)))
    np.testing.assert_array_equal(g[0], [1.0, 0.0, 0.0])  # Q = [1, 1, 1]: EOS
    np.testing.assert_array_equal(g[1], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(g[2], [0.0, 1.0, 0.0])
    assert w.optimal_return(Table(w, r)) == 1.0


def test_max_plus_screen_edge_cases(monkeypatch):
    rng = np.random.default_rng(180)
    n = 40
    sample = np.linspace(0, n - 1, 16).astype(int)
    # integer rows: the 16th and 40th largest are equal (5 - 4 = 1): the second tier is not wider, only one is kept;
    # entries sit exactly on the thresholds
    B = rng.integers(0, 4, size=(n, 160)).astype(float)
    for y in range(n):
        cols = rng.permutation(160)
        B[y, cols[:10]], B[y, cols[10:60]] = 5.0, 4.0
    ints = [rng.permutation(160).astype(float), rng.permutation(160) * 0.5, rng.permutation(160) * 2.0]
    _check_screen(MaxPlus(B), B, ints)
    assert MaxPlus(B).n_tiers == 1
    # rows outside the sample crowd the second tier: it is dropped (more than 4 * 64 entries per row), the first kept
    B = np.zeros((n, 1024))
    for y in range(n):
        cols = rng.permutation(1024)
        B[y, cols[0]], B[y, cols[1:16]] = 12.0, 11.0
        if y in sample:
            B[y, cols[16:64]] = 10.0
        else:
            B[y, cols[16:516]] = 10.5
    mp = MaxPlus(B)
    assert mp.screen and mp.n_tiers == 1
    _check_screen(mp, B, [rng.permutation(1024) * 0.01, rng.normal(size=1024)])
    # tiers = 4 by k growth^j: 16, 64, 256, then the cap (V / 16 = 262)
    B = rng.normal(size=(8, 4200))
    _check_screen(MaxPlus(B), B, [rng.normal(size=4200)])
    assert MaxPlus(B).n_tiers == 3
    _check_screen(MaxPlus(B, tiers=4), B, [rng.normal(size=4200)], tiers=4)
    # a row whose max swallows its thresholds (no first-tier candidates), and two picked columns (m = 2) added one at
    # a time: large distinct spikes make the picked columns decide most rows
    monkeypatch.setattr(markov, "BLOCK_BYTES", 8)
    B = rng.normal(size=(n, 64))
    B[5] = 1e20 + rng.normal(size=64)
    vs = []
    for heights in [(100.0, 99.0, 98.0), (3.0, 2.5, 2.0), (1.0, 0.9, 0.8)]:
        v = rng.normal(size=64) * 0.01
        v[rng.choice(64, size=3, replace=False)] += heights
        vs.append(v)
    mp = MaxPlus(B, m=2)
    assert mp.has0.size == n - 1
    _check_screen(mp, B, vs)
    _check_screen(MaxPlus(B, m=1), B, vs)  # one picked column: the largest v


def _cached_screen(monkeypatch, seed: int, slots: int):
    """A max-plus screen of a random (30, 64) table whose column cache holds ``slots`` columns (16 picked per call),
    and a call that picks the given columns (they stand 10 above the rest) and returns the cached ones, sorted."""
    rng = np.random.default_rng(seed)
    n, V = 30, 64
    B = rng.normal(size=(n, V))
    monkeypatch.setattr(markov, "COLUMN_CACHE_BYTES", 8 * n * slots)
    mp = MaxPlus(B, m=16)
    assert mp.screen and mp._cols.shape[0] == slots

    def call(cols) -> list[int]:
        v = rng.normal(size=V) * 0.01
        v[cols] += 10.0 + np.arange(16) * 0.1
        out = np.empty(n)
        mp(v, out)
        np.testing.assert_array_equal(out, (B + v).max(axis=1))
        return sorted(int(c) for c in mp._owner if c >= 0)

    return mp, call


def test_max_plus_column_cache_evicts_the_oldest_exactly(monkeypatch):
    mp, call = _cached_screen(monkeypatch, 190, 24)
    calls = [np.arange(16), np.arange(16), np.arange(8, 24), np.arange(16, 32), np.arange(16, 32), np.arange(40, 56)]
    for i, cols in enumerate(calls):
        cached = call(cols)
        assert len(cached) == np.count_nonzero(mp._owner >= 0) == np.count_nonzero(mp._slot >= 0)
        for slot, c in enumerate(mp._owner):
            if c >= 0:
                assert mp._slot[c] == slot
        # after the third call the columns of the first call not used since (0..7) are the oldest: they go
        want = {0: range(16), 1: range(16), 2: range(24), 3: range(8, 32), 4: range(8, 32)}.get(i)
        if want is not None:
            assert cached == list(want), i
    assert set(range(40, 56)) <= set(int(c) for c in mp._owner)


def test_max_plus_column_cache_one_new_column_and_a_full_turnover(monkeypatch):
    _, call = _cached_screen(monkeypatch, 200, 17)
    # one new column a call: the least recently used one goes (never one picked in the same call)
    calls = [(list(range(16)), range(16)), ([0, *range(2, 17)], range(17)), ([0, *range(3, 18)], [0, *range(2, 18)])]
    calls.append((list(range(20, 36)), None))  # 16 new columns at once: the 16 oldest go
    for cols, want in calls:
        cached = call(cols)
        if want is not None:
            assert cached == sorted(want)
    # column 2 (last used two calls ago) went first; one of the last call's 16 columns stays
    assert len(cached) == 17 and set(range(20, 36)) <= set(cached)
    assert (set(cached) - set(range(20, 36))) <= {0, *range(3, 18)}


def test_markov_sample_rollout_and_likely_follow_merged_states():
    """The generic sampler steps through the Markov world's children (which read the depth)."""
    mw, ew = MarkovWorld(2, 3, 3), EnumeratedWorld(2, 3, 3)
    m = _markov_index(mw, ew)
    pi_m = _policy(np.random.default_rng(210), mw.n_states, 3)
    pi_e = pi_m[m]  # the same policy on the tree
    n = 6
    draws = np.random.default_rng(211).random((3, n))
    prompts = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # float prompts are cast
    seqs = mw.sample(Table(mw, pi_m), prompts, _Stream(list(draws)))
    assert seqs.prompt.dtype == np.int64
    for i in range(n):
        toks, _ = _walk(ew, pi_e, int(prompts[i]), draws[:, i])
        assert seqs.tokens[i, : len(toks)].tolist() == toks and seqs.length[i] == len(toks)

    class Channel:
        def episode_flags(self, batch, rng):
            return None

        def pay(self, pending, s, a, depth, end, rng, carries):
            return np.zeros(s.size)

    states, actions, _, alive = mw.rollout(Table(mw, pi_m), Channel(), _Stream(list(draws), [1, 0, 1, 1, 0, 1]), n)
    for i in range(n):
        toks, path = _walk(ew, pi_e, int(prompts[i]), draws[:, i])
        np.testing.assert_array_equal(states[i, : len(path)], m[[s for s, _ in path]])
    rows = np.tile([0.2, 0.3, 0.5], (mw.n_states, 1))
    rows[int(mw.level_start[1]) + 1 * 2 + 1] = [0.6, 0.3, 0.1]  # EOS after (x1, t2)
    seqs, probs = mw.likely_sequences(Table(mw, rows), 1)
    np.testing.assert_array_equal(seqs.tokens, [[2, 0, -1]])
    np.testing.assert_allclose(probs, [0.5 * 0.6], rtol=1e-15)
    assert (
        MarkovWorld(1, 3, 2, eos=False).format(int(MarkovWorld(1, 3, 2, eos=False).level_start[1])) == "x0 @1 after t0"
    )


def test_generic_world_edges(monkeypatch):
    import warnings

    mw = MarkovWorld(2, 3, 3)
    r = np.random.default_rng(220).normal(size=(mw.n_states, 3))
    level_only = SimpleNamespace(level=lambda t: r[slice(*mw.level(t))])
    want = mw.flow_reward(Table(mw, r))
    monkeypatch.setattr(base, "BLOCK_ENTRIES", 3)  # a state a block for blockable rows; level-only rows stay whole
    for got_level, want_level in zip(mw.flow_reward(level_only), want, strict=True):
        np.testing.assert_allclose(got_level, want_level, rtol=1e-14)
    # potentials: one array per level, of its size; a large reward (scale 1e3) converges to the same relative accuracy
    lam = mw.occupancy_potentials(Table(mw, r))
    assert [x.size for x in lam] == [int(n) for n in mw.sizes]
    big = mw.occupancy_potentials(Table(mw, 1e3 * r))
    for x, y in zip(big, lam, strict=True):
        np.testing.assert_allclose(x, 1e3 * y, rtol=1e-9, atol=1e-9)
    # the greedy policy is a policy of this world
    assert mw.greedy_policy(Table(mw, r)).world is mw
    # sequences that all end before the horizon: the passes stop early and still return every sequence's value
    w = _world(2, 3, 3, seed=221)
    short = w.sequences_of(np.array([0, 1, 2, 5]))  # EOS at the root or after one token
    assert short.length.max() < 3
    rets = w.sequence_returns(Table(w, np.ones((w.n_states, 3))), short)
    np.testing.assert_array_equal(rets, short.length)  # a reward of 1 per token
    pi0 = w.ref.values.copy()
    pi0[0, 0] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log 0 is -inf without a warning
        logp = w.sequence_log_prob(Table(w, pi0), short)
    assert logp.shape == (4,) and logp[0] == -np.inf and np.isfinite(logp[1])
    # the uniform source draws through this world
    src = World.uniform_source(w)
    assert src.world is w and src.policy.world is w
    assert base._mean_sd(0.0, 1e-24) == (0.0, 1.0)  # sd exactly 1e-12: no spread


def test_weighted_sequences_edges():
    import warnings

    w, r, _ = _solved_world(P=2, V=3, H=3, seed=230)
    seqs = w.sequences_of(np.array([0, 3, 7]))  # prompt 0 only
    ws = World.weighted_policy(w, seqs, np.array([1.0, 0.0, 3.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the zero weight's 0 log 0 is 0, quietly
        ev = ws.evaluate({"r": Table(w, r)})
    assert np.isfinite(ev["kl_to_reference"])
    pr = ws.prompt_returns(Table(w, r))
    assert pr.shape == (2,) and pr[1] == 0.0
    # ties keep the sequences' order (a stable sort), also past 16 of them
    many = w.sequences_of(np.tile(np.array([0, 2, 3, 6, 7]), 8))
    weights = np.tile([1.0, 2.0, 1.0, 3.0, 2.0], 8)
    tied = World.weighted_policy(w, many, weights)
    top, probs = tied.top(0, 40)
    order = np.concatenate([np.flatnonzero(weights == x) for x in (3.0, 2.0, 1.0)])  # heaviest first, then in order
    np.testing.assert_array_equal(top.ids, many.ids[order])
    np.testing.assert_allclose(probs, weights[order] / weights.sum(), rtol=1e-14)


def test_passes_over_rows_that_form_whole_levels_only(monkeypatch):
    """Rewards and policies without ``rows_at`` are taken a whole level at a time even when others are blocked."""
    w, r, pi = _solved_world(P=2, V=3, H=3, seed=240)
    m1, m2 = brute_moments(w, pi, r)
    whole_r = SimpleNamespace(level=lambda t: r[slice(*w.level(t))])
    whole_pi = SimpleNamespace(level=lambda t: pi[slice(*w.level(t))])
    d_want = np.concatenate(w.occupancy(Table(w, pi)))
    monkeypatch.setattr(base, "BLOCK_ENTRIES", 3)  # a state a block for the others
    for reward, policy in [(whole_r, Table(w, pi)), (Table(w, r), whole_pi), (whole_r, whole_pi)]:
        assert w.return_moments(policy, reward) == pytest.approx((m1, m2), rel=1e-13)
    np.testing.assert_allclose(np.concatenate(w.occupancy(whole_pi)), d_want, rtol=1e-14)
    # integer rewards are taken as floats
    ri = np.random.default_rng(241).integers(-2, 3, size=r.shape)
    i1, i2 = brute_moments(w, pi, ri.astype(float))
    assert w.return_moments(Table(w, pi), Table(w, ri)) == pytest.approx((i1, i2), rel=1e-13)
    # a discount of 2 weighs the earlier tokens more (not the undiscounted sum)
    seqs = w.all_sequences()
    by_end = {path[-1]: path for _, path in sequences(w)}
    s_all, a_all = w.terminal_transitions()
    got = w.sequence_returns(Table(w, r), seqs, gamma=2.0)
    for i in range(seqs.n):
        path = by_end[(int(s_all[i]), int(a_all[i]))]
        assert got[i] == pytest.approx(sum(2.0 ** (len(path) - 1 - t) * r[x] for t, x in enumerate(path)), rel=1e-13)


def test_soft_pass_over_rewards_that_form_whole_levels_only():
    from tests.brute import brute_return

    w, r, _ = _solved_world(P=2, V=3, H=3, seed=250)
    whole_r = SimpleNamespace(level=lambda t: r[slice(*w.level(t))])
    soft = w.soft_policy(whole_r, 0.6, evaluate={"r": whole_r})
    np.testing.assert_allclose(
        np.concatenate(w.soft_values(whole_r, 0.6)), np.concatenate(w.soft_values(Table(w, r), 0.6))
    )
    st = w.table(soft)
    np.testing.assert_allclose(st, w.table(w.soft_policy(Table(w, r), 0.6)), rtol=1e-13)
    assert w.evaluate(soft, {"r": whole_r})["r"] == pytest.approx(brute_return(w, st, r), rel=1e-12)


@pytest.mark.parametrize("V", [3, 34])  # the column-by-column max, and the max over formed Q rows
def test_optimal_and_soft_values_of_integer_and_level_only_rewards(V):
    w = _world(2, V, 2, seed=260 + V)
    ri = np.random.default_rng(261).integers(-3, 4, size=(w.n_states, V))
    rf = ri.astype(float)
    want = w.optimal_values(Table(w, rf))
    for reward in (Table(w, ri), SimpleNamespace(level=lambda t: rf[slice(*w.level(t))])):
        for g, x in zip(w.optimal_values(reward), want, strict=True):
            np.testing.assert_array_equal(g, x)
    soft = w.soft_values(Table(w, rf), 0.5)
    for g, x in zip(w.soft_values(Table(w, ri), 0.5), soft, strict=True):
        np.testing.assert_allclose(g, x, rtol=1e-14)
    assert w.soft_policy(Table(w, rf), 0.5).world is w


def test_evaluation_and_values_over_whole_level_rows(monkeypatch):
    import warnings

    from tests.brute import brute_kl, brute_return

    w, r, pi = _solved_world(P=2, V=3, H=3, seed=270)
    whole_r = SimpleNamespace(level=lambda t: r[slice(*w.level(t))])
    whole_pi = SimpleNamespace(level=lambda t: pi[slice(*w.level(t))])
    J, kl = brute_return(w, pi, r), brute_kl(w, pi, w.ref.values)
    opt = w.optimal_values(Table(w, r))
    for block in (None, 3):
        if block is not None:
            monkeypatch.setattr(base, "BLOCK_ENTRIES", block)  # a state a block for blockable rows
        for policy, reward in [(whole_pi, Table(w, r)), (Table(w, pi), whole_r), (whole_pi, whole_r)]:
            ev = w.evaluate(policy, {"r": reward})
            assert ev["r"] == pytest.approx(J, rel=1e-13) and ev["kl_to_reference"] == pytest.approx(kl, rel=1e-12)
        for g, x in zip(w.optimal_values(whole_r), opt, strict=True):
            np.testing.assert_array_equal(g, x)
    # the last level has no continuation, whatever values are passed
    np.testing.assert_array_equal(w.q_level(Table(w, r), 2, np.arange(5.0)), r[6:])
    # integer rewards are taken as floats by the policy's values
    ri = np.random.default_rng(271).integers(-2, 3, size=r.shape)
    V_i, _ = w.policy_values(Table(w, pi), Table(w, ri))
    V_f, _ = w.policy_values(Table(w, pi), Table(w, ri.astype(float)))
    for g, x in zip(V_i, V_f, strict=True):
        np.testing.assert_allclose(g, x, rtol=1e-15)
    # the per-row KL takes no log of 0 and no 0 * inf: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(divide="ignore"):
            log_ref = np.log(np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]]))
        got = base.row_kl(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]), log_ref)
    np.testing.assert_allclose(got, [np.log(2.0), np.log(2.0)], rtol=1e-15)


def test_a_new_world_has_no_reference_and_the_markov_world_no_previous_token():
    assert EnumeratedWorld(1, 3, 2).ref is None and MarkovWorld(1, 3, 2).ref is None
    assert MarkovWorld(1, 3, 2).prev_token is None
