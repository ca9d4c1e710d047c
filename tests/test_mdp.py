from __future__ import annotations

import re

import numpy as np
import pytest

from sim.errors import ConfigError
from sim.mdp import MAX_ENUMERATED_ENTRIES, TextMDP, world_size
from tests.brute import sequences


def test_sizes_match_formula(small_world):
    m = small_world
    b = m.vocab_size - 1 if m.eos else m.vocab_size
    assert m.n_states == m.n_prompts * sum(b**t for t in range(m.horizon))
    assert m.n_states == world_size(m.n_prompts, m.vocab_size, m.horizon, m.eos)
    assert m.next_state.shape == (m.n_states, m.vocab_size)


def test_level_order_and_children_contiguous(small_world):
    m = small_world
    for t in range(m.horizon):
        lo, hi = m.level(t)
        assert np.all(m.depth[lo:hi] == t)
    for t in range(m.horizon - 1):
        lo, hi = m.level(t)
        clo, chi = m.level(t + 1)
        children = m.next_state[lo:hi, m.first_token :]
        np.testing.assert_array_equal(children.reshape(-1), np.arange(clo, chi))


def test_terminal_transitions(small_world):
    m = small_world
    lo, hi = m.level(m.horizon - 1)
    assert np.all(m.next_state[lo:hi] == -1)
    if m.eos:
        assert np.all(m.next_state[:, 0] == -1)
    assert np.all(m.next_state[: m.level(m.horizon - 1)[0], m.first_token :] >= 0)


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
            if m.next_state[s, a] >= 0:
                assert m.decode(int(m.next_state[s, a])) == (p, (*toks, a))


def test_sequence_count_matches_enumeration(small_world):
    assert small_world.sequence_count() == len(sequences(small_world))


def test_end_length(small_world):
    m = small_world
    L = m.end_length()
    for _p, path in sequences(m):
        s, a = path[-1]
        n_tokens = len(path) - (1 if (m.eos and a == 0) else 0)
        assert L[s, a] == n_tokens
    assert np.all(L[~m.terminal_mask()] == -1)


def test_initial_dist_uniform_over_prompts():
    m = TextMDP(3, 3, 2)
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
        TextMDP(**kwargs)
    assert e.value.field == field
    assert field in str(e.value)


def test_too_large_fails_before_allocation():
    # a world of ~1e15 entries must fail instantly, not try to allocate
    with pytest.raises(ConfigError, match=re.escape(f"{MAX_ENUMERATED_ENTRIES:.0e}")):
        TextMDP(1000, 1000, 6)


def test_format_sequence():
    m = TextMDP(2, 4, 3)
    s = m.encode(1, (2, 3))
    assert m.format_sequence(s, 0) == "x1: t2 t3 <eos>"
    assert m.format_sequence(1) == "x1: (empty)"
