"""Pins of Karwowski et al.'s occupancy-space measures (sim.goodhart) for mutation testing (issue #18).

Every quantity is checked against brute force on a tiny tree (the explicit constraint matrix ``C`` and its
pseudo-inverse for the projection, explicit occupancy vectors for steps and distances, every complete sequence for
the worst return), both with each level taken whole and with the exact passes cut into blocks of two states
(``BLOCK_ENTRIES`` patched), and with rewards and policies that can only form whole levels. Rewards are random
(not symmetric), integer- and boolean-valued where the module promises float arithmetic; the edge cases of the step
angle, the stopping rule and the drop height are worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

import sim.worlds.base as world_base
from sim import goodhart
from sim.build import build_setup
from sim.config import CorruptionConfig, EnvConfig, MisspecConfig, OracleConfig
from sim.worlds.base import Table
from tests import brute
from tests.test_goodhart import brute_angle, brute_projection, occupancy_vector

TINY = EnvConfig(n_prompts=2, vocab_size=4, horizon=3)
NO_EOS = EnvConfig(n_prompts=2, vocab_size=3, horizon=3, eos=False)


class LevelOnly:
    """A reward or policy that can only form whole levels (no ``rows_at``: never cut into blocks)."""

    def __init__(self, x):
        self.x = x

    def level(self, t: int) -> np.ndarray:
        return self.x.level(t)


@pytest.fixture(params=["whole", "blocks"])
def mode(request, monkeypatch):
    if request.param == "blocks":  # 8 entries over 4 actions: blocks of 2 states on every level
        monkeypatch.setattr(world_base, "BLOCK_ENTRIES", 8)
    return request.param


@pytest.fixture(scope="module", params=["tiny", "no_eos"])
def setup(request):
    env = TINY if request.param == "tiny" else NO_EOS
    return build_setup(env, OracleConfig(), CorruptionConfig(misspec=MisspecConfig(angle=0.7)), 3)


def _count_calls(monkeypatch, world, name: str) -> list[int]:
    calls = [0]
    real = getattr(world, name)

    def counted(*a, **k):
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(world, name, counted)
    return calls


def _rewards(world, seed: int = 0):
    """A float reward, an integer-valued one and a float32 one (S, A), none symmetric."""
    rng = np.random.default_rng(seed)
    shape = (world.n_states, world.n_actions)
    return rng.normal(size=shape), rng.integers(-4, 5, size=shape), rng.normal(size=shape).astype(np.float32)


# --- the projection, its norm and the raw norm ----------------------------------------------------------------------


def test_projection_and_norms_match_the_pseudo_inverse(setup, mode):
    world = setup.world
    for values in _rewards(world):
        want = brute_projection(world, values.astype(np.float64))
        for reward in (Table(world, values), LevelOnly(Table(world, values))):
            np.testing.assert_allclose(goodhart.project(world, reward), want, atol=1e-10)
            norm = goodhart.projected_norm(world, reward)
            assert norm == pytest.approx(np.linalg.norm(want), rel=1e-10)
            lam = goodhart.potentials(world, reward)
            assert goodhart.projected_norm(world, reward, lam) == norm
            raw = goodhart._raw_norm(world, reward)  # over every level, in float64 even for float32 rows
            assert raw == pytest.approx(np.linalg.norm(values.astype(np.float64)), rel=1e-13)


# --- the angle ------------------------------------------------------------------------------------------------------


def test_angle_matches_brute_force_with_rewards_of_every_form(setup, mode, monkeypatch):
    world = setup.world
    a, b, c = _rewards(world, 1)
    calls = _count_calls(monkeypatch, world, "occupancy_potentials")
    got = goodhart.reward_angle(world, LevelOnly(Table(world, a)), Table(world, b))
    assert got == pytest.approx(brute_angle(world, a, b.astype(np.float64)), abs=1e-9)
    assert calls[0] == 2  # one potential solve per reward
    got = goodhart.reward_angle(world, Table(world, c), LevelOnly(Table(world, a)))
    assert got == pytest.approx(brute_angle(world, c.astype(np.float64), a), abs=1e-9)


def test_angle_is_scale_free_down_to_tiny_rewards_and_none_for_zero(setup):
    world = setup.world
    a, b, _ = _rewards(world, 2)
    want = goodhart.reward_angle(world, Table(world, a), Table(world, b))
    # a reward of norm ~1e-13 still has a direction: the None rule is relative to |R|
    assert goodhart.reward_angle(world, Table(world, 1e-14 * a), Table(world, b)) == pytest.approx(want, abs=1e-9)
    assert goodhart.reward_angle(world, Table(world, a), Table(world, 1e-14 * b)) == pytest.approx(want, abs=1e-9)
    zero = Table(world, np.zeros((world.n_states, world.n_actions)))
    assert goodhart.reward_angle(world, zero, Table(world, b)) is None
    assert goodhart.reward_angle(world, Table(world, a), zero) is None


# --- steps and distances in occupancy space -------------------------------------------------------------------------


def _policies(setup):
    world, proxy = setup.world, setup.channel.expected()
    return world, proxy, world.soft_policy(proxy, 2.0), world.soft_policy(proxy, 0.4)


def test_occupancy_step_and_distance_match_explicit_vectors(setup, mode, monkeypatch):
    world, proxy, p, q = _policies(setup)
    d = occupancy_vector(world, q) - occupancy_vector(world, p)
    r = world.table(proxy).ravel()
    want_gain, want_len = float(r @ d), float(np.linalg.norm(d))
    assert want_len > 0.01 and abs(want_gain) > 1e-3
    dp, dq = world.occupancy(p), world.occupancy(q)
    calls = _count_calls(monkeypatch, world, "occupancy")
    lp, lq, lr = LevelOnly(p), LevelOnly(q), LevelOnly(proxy)
    for args in [(p, q, proxy), (lp, q, proxy), (p, lq, proxy), (p, q, lr)]:
        for occ, n_calls in [((dp, dq), 0), ((None, dq), 1), ((dp, None), 1), ((None, None), 2)]:
            calls[0] = 0
            gain, length = goodhart.occupancy_step(world, *args, *occ)
            assert gain == pytest.approx(want_gain, rel=1e-10) and length == pytest.approx(want_len, rel=1e-10)
            assert calls[0] == n_calls  # given occupancies are used, not formed again
    for pair in [(p, q), (lp, q), (p, lq)]:
        for occ, n_calls in [((dp, dq), 0), ((None, dq), 1), ((dp, None), 1), ((None, None), 2)]:
            calls[0] = 0
            assert goodhart.occupancy_distance(world, *pair, *occ) == pytest.approx(want_len, rel=1e-10)
            assert calls[0] == n_calls
    assert goodhart.occupancy_distance(world, q, p) == pytest.approx(want_len, rel=1e-10)
    assert goodhart.occupancy_distance(world, p, p) == 0.0


def test_path_step_angles_form_each_occupancy_once(setup, mode, monkeypatch):
    world, proxy, p, q = _policies(setup)
    r = world.soft_policy(proxy, 0.1)
    m1 = brute_projection(world, world.table(proxy)).ravel()
    etas = [occupancy_vector(world, x) for x in (p, q, r)]
    steps = [etas[1] - etas[0], etas[2] - etas[1]]
    want = [np.arccos(m1 @ d / np.linalg.norm(m1) / np.linalg.norm(d)) for d in steps]
    calls = _count_calls(monkeypatch, world, "occupancy")
    got = goodhart.path_step_angles(world, proxy, [p, q, r])
    assert calls[0] == 3
    np.testing.assert_allclose(got, want, atol=1e-9)


# --- the step angle, the stopping rule, the drop height, the worst return ------------------------------------------


def test_step_angle_edge_cases_by_hand():
    assert goodhart.step_angle(0.5, 2.0, 0.5) == pytest.approx(np.pi / 3, abs=1e-15)  # arccos(0.5 / 1)
    assert goodhart.step_angle(0.1, 0.5, 0.4) == pytest.approx(np.arccos(0.5), abs=1e-15)  # |M R1| < 1 is a norm too
    assert goodhart.step_angle(3.0, 1.0, 2.0) == 0.0  # rounding past 1 is clipped
    assert goodhart.step_angle(-3.0, 1.0, 2.0) == pytest.approx(np.pi, abs=1e-15)  # and past -1
    assert goodhart.step_angle(-1.0, 1.0, goodhart.MIN_STEP) == 0.0  # a step of exactly MIN_STEP is no move
    assert goodhart.step_angle(-1e-10, 1.0, 2 * goodhart.MIN_STEP) == pytest.approx(2 * np.pi / 3, abs=1e-12)
    assert goodhart.step_angle(1.0, 0.0, 1.0) == pytest.approx(np.pi / 2, abs=0)


def test_stop_index_stops_only_strictly_past_the_bound():
    limit = np.pi / 2 - 0.25
    assert goodhart.stop_index([0.1, limit, 0.2], bound=0.25) == 3  # exactly at the bound: keep going
    assert goodhart.stop_index([0.1, limit, np.nextafter(limit, 2.0)], bound=0.25) == 2
    assert goodhart.stop_index([], bound=0.25) == 0


def test_normalized_drop_height_by_hand():
    assert goodhart.normalized_drop_height([1.0, 3.0, 2.5], best=5.0, worst=1.0) == 0.125  # (3 - 2.5) / 4
    assert goodhart.normalized_drop_height([2, 7, 4], best=9, worst=-1) == 0.3  # integers: (7 - 4) / 10
    assert goodhart.normalized_drop_height([], best=5.0, worst=1.0) == 0.0
    # float32 returns are subtracted in float64: 1 - 2^-30 (float32 would round it to 1)
    drop = goodhart.normalized_drop_height(np.array([1.0, 2.0**-30], dtype=np.float32), best=1.0, worst=0.0)
    assert drop == 1.0 - 2.0**-30
    # the span must exceed 1e-12 x max(1, |best|, |worst|)
    assert goodhart.normalized_drop_height([0.0, 1e-12, 0.0], best=1e-12, worst=0.0) == 0.0  # span = 1e-12 exactly
    assert goodhart.normalized_drop_height([0.0, 1.5e-12, 0.0], best=0.5, worst=0.5 - 1.5e-12) == pytest.approx(
        1.0, rel=1e-3
    )  # above 1e-12 x 1 (|best| = 0.5 < 1)
    assert goodhart.normalized_drop_height([0.0, 5e-13, 0.0], best=1e-3, worst=1e-3 - 5e-13) == 0.0
    assert goodhart.normalized_drop_height([0.0, 1e-9, 0.0], best=1e4, worst=1e4 - 1e-9) == 0.0  # below 1e-12 x 1e4
    assert goodhart.normalized_drop_height([0.0, 1e-9, 0.0], best=-1e4, worst=-1e4 - 1e-9) == 0.0


def test_worst_return_of_an_indicator_reward_by_enumeration(setup, mode):
    world = setup.world
    values = np.random.default_rng(4).random((world.n_states, world.n_actions)) < 0.8  # a boolean reward
    per_prompt: dict[int, list[float]] = {}
    for prompt, path in brute.sequences(world):
        per_prompt.setdefault(prompt, []).append(brute.seq_return(path, values.astype(np.float64)))
    want = np.mean([min(v) for v in per_prompt.values()])
    assert 0 < want < np.mean([max(v) for v in per_prompt.values()])
    assert goodhart.worst_return(world, Table(world, values)) == pytest.approx(want, abs=1e-12)
    assert goodhart.worst_return(world, LevelOnly(Table(world, values))) == pytest.approx(want, abs=1e-12)


def test_negated_rows_are_float_and_formed_like_the_reward(setup):
    world = setup.world
    values = np.random.default_rng(5).integers(0, 3, size=(world.n_states, world.n_actions)).astype(np.uint8)
    neg = goodhart._Negated(Table(world, values))
    local = np.array([3, 0, 2])
    rows = neg.rows_at(1, local)
    np.testing.assert_array_equal(rows, -values[world.level_start[1] + local].astype(np.float64))
    assert rows.dtype == np.float64 and neg.level(2).dtype == np.float64
    lo, hi = world.level(2)
    np.testing.assert_array_equal(neg.level(2), -values[lo:hi].astype(np.float64))
    assert not hasattr(goodhart._Negated(LevelOnly(Table(world, values))), "rows_at")
