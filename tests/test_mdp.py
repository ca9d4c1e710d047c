from __future__ import annotations

import re
import time

import numpy as np
import pytest

from sim.errors import ConfigError
from sim.worlds import EnumeratedWorld, World
from sim.worlds.enumerated import MAX_ENUMERATED_ENTRIES, enumerated_size, validate_world
from tests.brute import sequences


def test_sizes_match_formula(small_world):
    m = small_world
    b = m.vocab_size - 1 if m.eos else m.vocab_size
    assert m.n_states == m.n_prompts * sum(b**t for t in range(m.horizon))
    assert m.n_states == enumerated_size(m.n_prompts, m.vocab_size, m.horizon, m.eos)
    assert m.next_table.shape == (m.n_states, m.vocab_size)


def test_level_order_and_children_contiguous(small_world):
    m = small_world
    for t in range(m.horizon):
        lo, hi = m.level(t)
        assert np.all(m.depth[lo:hi] == t)
    for t in range(m.horizon - 1):
        lo, hi = m.level(t)
        clo, chi = m.level(t + 1)
        children = m.next_table[lo:hi, m.first_token :]
        np.testing.assert_array_equal(children.reshape(-1), np.arange(clo, chi))


def test_terminal_transitions(small_world):
    m = small_world
    lo, hi = m.level(m.horizon - 1)
    assert np.all(m.next_table[lo:hi] == -1)
    if m.eos:
        assert np.all(m.next_table[:, 0] == -1)
    assert np.all(m.next_table[: m.level(m.horizon - 1)[0], m.first_token :] >= 0)


def test_decode_encode_roundtrip_and_parent_structure(small_world):
    m = small_world
    for s in range(m.n_states):
        p, toks = m.decode(s)
        assert m.encode(p, toks) == s
        assert len(toks) == m.depth[s]
        assert m.prompt[s] == p
        assert m.last_token[s] == (toks[-1] if toks else -1)
        assert m.prev_token[s] == (toks[-2] if len(toks) > 1 else -1)
        assert m.parent[s] == (m.encode(p, toks[:-1]) if toks else -1)
        for a in range(m.first_token, m.vocab_size):
            if m.next_table[s, a] >= 0:
                assert m.decode(int(m.next_table[s, a])) == (p, (*toks, a))


def test_sequence_count_matches_enumeration(small_world):
    assert small_world.terminal_transitions()[0].size == len(sequences(small_world))


def test_end_length(small_world):
    m = small_world
    L = m.end_length_table()
    for _p, path in sequences(m):
        s, a = path[-1]
        n_tokens = len(path) - (1 if (m.eos and a == 0) else 0)
        assert L[s, a] == n_tokens
    assert np.all(L[~m.terminal_mask()] == -1)


def test_initial_dist_uniform_over_prompts():
    m = EnumeratedWorld(3, 3, 2)
    np.testing.assert_allclose(m.initial_dist[:3], 1 / 3)
    assert m.initial_dist.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(n_prompts=0, vocab_size=4, horizon=3), "n_prompts"),
        (dict(n_prompts=1, vocab_size=1, horizon=3), "vocab_size"),
        (dict(n_prompts=1, vocab_size=4, horizon=0), "horizon"),
        (dict(n_prompts=100, vocab_size=50, horizon=8), "horizon"),
    ],
)
def test_bad_sizes_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        EnumeratedWorld(**kwargs)
    assert e.value.field == field
    assert field in str(e.value)


def test_too_large_fails_before_allocation():
    # a world of ~1e15 entries must fail instantly, not try to allocate
    with pytest.raises(ConfigError, match=re.escape(f"{MAX_ENUMERATED_ENTRIES:.0e}")):
        EnumeratedWorld(1000, 1000, 6)


def test_format_sequence():
    m = EnumeratedWorld(2, 4, 3)
    s = m.encode(1, (2, 3))
    assert m.format(s, 0) == "x1: t2 t3 <eos>"
    assert m.format(1) == "x1: (empty)"


# ------------------------------------------------ what the world interface adds
@pytest.mark.parametrize(
    "P, V, H, eos, size",
    [
        (1, 2, 10**12, True, 1e12),  # one non-EOS token: a chain of H states per prompt
        (3, 2, 10**12, True, 3e12),
        (1, 2, 7, True, 7.0),
        (1, 3, 10**12, True, np.inf),  # b = 2: 2^(10^12) overflows to inf, not an endless loop
        (1, 2, 10**12, False, np.inf),
        (2, 4, 3, True, 2 * (1 + 3 + 9)),
    ],
)
def test_enumerated_size_is_closed_form_for_any_horizon(P, V, H, eos, size):
    t0 = time.perf_counter()
    assert enumerated_size(P, V, H, eos) == size
    assert time.perf_counter() - t0 < 0.1


@pytest.mark.parametrize("V, eos", [(2, True), (2, False), (3, True), (1000, True)])
def test_huge_horizon_is_refused_instantly(V, eos):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        validate_world(1, V, 10**12, eos)
    assert e.value.field == "env.horizon"
    assert re.escape(f"{MAX_ENUMERATED_ENTRIES:.0e}") in re.escape(str(e.value))
    with pytest.raises(ConfigError) as e:
        EnumeratedWorld(1, V, 10**12, eos)
    assert e.value.field == "horizon"
    assert time.perf_counter() - t0 < 0.5


def test_next_state_agrees_with_next_table(small_world):
    m = small_world
    s, a = (x.ravel() for x in np.meshgrid(np.arange(m.n_states), np.arange(m.n_actions), indexing="ij"))
    np.testing.assert_array_equal(m.next_state(s, a), m.next_table[s, a])
    # the generic, child()-based next_state of the base class walks the same tree
    np.testing.assert_array_equal(World.next_state(m, s, a), m.next_table[s, a])
    np.testing.assert_array_equal(m.ends(m.depth[s], a), m.next_table[s, a] < 0)


def test_elementwise_end_length(small_world):
    m = small_world
    for a in range(m.n_actions):
        if m.eos and a == 0:
            want = m.depth  # EOS completes the response so far
        else:
            want = np.where(m.depth == m.horizon - 1, m.horizon, -1)
        np.testing.assert_array_equal(m.end_length(m.depth, np.full(m.n_states, a)), want)
        np.testing.assert_array_equal(m.end_length(m.depth, a), want)


def test_all_sequences_are_the_enumerated_paths_in_canonical_order(small_world):
    m = small_world
    seqs = m.all_sequences()
    brute = sequences(m)
    s_end, a_end = m.terminal_transitions()
    by_end = {(int(s), int(a)): i for i, (s, a) in enumerate(zip(s_end, a_end, strict=True))}
    assert seqs.n == len(brute)
    np.testing.assert_array_equal(seqs.ids, np.arange(seqs.n))
    states, actions, mask = m.paths(seqs)
    for p, path in brute:
        i = by_end[path[-1]]
        assert seqs.prompt[i] == p
        assert seqs.length[i] == len(path)
        np.testing.assert_array_equal(seqs.tokens[i, : len(path)], [a for _s, a in path])
        assert np.all(seqs.tokens[i, len(path) :] == -1)
        np.testing.assert_array_equal(mask[i], np.arange(m.horizon) < len(path))
        assert list(zip(states[i, mask[i]].tolist(), actions[i, mask[i]].tolist(), strict=True)) == path
    # a batch without ids finds them again from its last transition
    rows = np.random.default_rng(0).permutation(seqs.n)
    part = seqs.take(rows)
    part.ids = None
    np.testing.assert_array_equal(m.sequence_ids(part), rows)
    np.testing.assert_array_equal(m.sequences_of(rows).tokens, seqs.tokens[rows])
