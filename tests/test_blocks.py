"""The exact passes taken a block of states at a time (what keeps big worlds at a few bytes per entry) give what
the whole-level passes give, on both world kinds; the enumerated world's closed-form sequence numbering equals the
row-major order of its terminal transitions; the streamed most-likely sequences equal a sort of every sequence."""

from __future__ import annotations

import numpy as np
import pytest

import sim.worlds.base as base
from sim.build import build_setup
from sim.config import EnvConfig, OracleConfig
from sim.worlds import EnumeratedWorld, LevelPolicy, Table
from tests.conftest import random_policy

WORLDS = {
    "enumerated": EnvConfig(n_prompts=2, vocab_size=4, horizon=4),
    "enumerated_noeos": EnvConfig(n_prompts=2, vocab_size=3, horizon=4, eos=False),
    "markov": EnvConfig(n_prompts=3, vocab_size=5, horizon=4, compressed=True, reference="bigram"),
    "markov_no_last_token": EnvConfig(n_prompts=3, vocab_size=5, horizon=4, compressed=True),
}
ORACLES = {
    "markov": OracleConfig(templates=["unigram", "position", "bigram"]),
    "markov_no_last_token": OracleConfig(templates=["unigram", "position"]),
}


def _everything(world, reward, policy):
    """Every blocked pass of the world, as arrays."""
    opt = world.optimal_values(reward)
    soft = world.soft_values(reward, 0.3)
    ev = world.evaluate(policy, {"r": reward, "twice": reward * 2.0})
    occ = world.occupancy(policy)
    moments = world.return_moments(policy, reward)
    soft_pi = world.soft_policy(reward, 0.3)
    soft_ev = world.evaluate(soft_pi, {"r": reward})
    return [*opt, *soft, *occ, np.array(list(ev.values())), np.array(moments), np.array(list(soft_ev.values()))]


@pytest.mark.parametrize("name", WORLDS)
def test_blocked_passes_equal_whole_level_passes(name, monkeypatch):
    setup = build_setup(WORLDS[name], ORACLES.get(name, OracleConfig()), None, 3)
    world, reward = setup.world, setup.oracle.reward
    pi = random_policy(np.random.default_rng(0), (world.n_states, world.n_actions), sharp=2.0)
    policies = [Table(world, pi), world.soft_policy(reward, 1.0)]
    whole = [_everything(world, reward, p) for p in policies]
    sizes = world.sizes * world.n_actions
    assert sizes.max() > 2 * world.n_actions  # some level is split into several blocks below
    monkeypatch.setattr(base, "BLOCK_ENTRIES", world.n_actions * 2 + 1)  # two states per block
    assert max(len(world.blocks(t, policies[0])) for t in range(world.horizon)) > 2
    for p, expected in zip(policies, whole, strict=True):
        for got, want in zip(_everything(world, reward, p), expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_policy_that_only_forms_whole_levels_is_taken_whole(monkeypatch):
    world = build_setup(WORLDS["enumerated"], OracleConfig(), None, 0).world
    calls = []

    def rows(t):
        calls.append(t)
        return world.ref.level(t)

    monkeypatch.setattr(base, "BLOCK_ENTRIES", 2 * world.n_actions)
    policy = LevelPolicy(world, rows)
    assert all(len(world.blocks(t, policy)) == 1 for t in range(world.horizon))
    world.evaluate(policy, {})
    assert sorted(calls) == list(range(world.horizon))  # each level formed once, not once per block


@pytest.mark.parametrize("eos", [True, False])
def test_closed_form_sequence_numbering_is_the_row_major_order(eos):
    world = EnumeratedWorld(2, 4, 3, eos)
    s, a = np.nonzero(world.terminal_mask())
    ids = np.arange(s.size)
    assert world.n_sequences == s.size
    got_s, got_a = world.transitions_of(ids)
    np.testing.assert_array_equal(got_s, s)
    np.testing.assert_array_equal(got_a, a)
    np.testing.assert_array_equal(world.ids_of(s, a), ids)
    np.testing.assert_array_equal(world.sequence_ids(world.sequences_of(ids[::-1])), ids[::-1])
    table = world.next_table
    rng = np.random.default_rng(1)
    states, actions = rng.integers(0, world.n_states, 200), rng.integers(0, world.n_actions, 200)
    np.testing.assert_array_equal(world.next_state(states, actions), table[states, actions])
    assert np.array_equal(table < 0, world.terminal_mask())


def _likely_by_sorting(world, policy, prompt, k):
    """Every complete sequence's probability given the prompt, sorted (ties: the later sequence first)."""
    s, a = world.terminal_transitions()
    d = np.concatenate(world.occupancy(policy))
    prob = np.where(world.prompt[s] == prompt, d[s] * world.table(policy)[s, a], -1.0) / world.initial_dist[prompt]
    ids = np.argsort(prob, kind="stable")[::-1][:k]
    ids = ids[prob[ids] > 0]
    return ids, prob[ids]


@pytest.mark.parametrize("block", [None, 9])
@pytest.mark.parametrize("sharp", [0.0, 3.0], ids=["uniform_ties", "random"])
def test_streamed_most_likely_sequences_equal_sorting_every_sequence(sharp, block, monkeypatch):
    world = EnumeratedWorld(2, 4, 4, True)
    policy = Table(world, random_policy(np.random.default_rng(2), (world.n_states, world.n_actions), sharp))
    if block is not None:
        monkeypatch.setattr(base, "BLOCK_ENTRIES", block)
        import sim.worlds.enumerated as enumerated

        monkeypatch.setattr(enumerated, "BLOCK_ENTRIES", block)
    for prompt in range(world.n_prompts):
        for k in (1, 3, 7):
            seqs, prob = world.likely_sequences(policy, prompt, k)
            ids, want = _likely_by_sorting(world, policy, prompt, k)
            np.testing.assert_array_equal(world.sequence_ids(seqs), ids)
            np.testing.assert_allclose(prob, want, rtol=1e-12)
