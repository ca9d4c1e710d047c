"""Pins of the simulated annotators (sim.feedback.teachers) against their formulas (mutation testing, issue #18).

Teachers are built directly on hand-made perceived returns where the world does not matter: every number below
follows from the formulas of the module docstring, with centres, scales and returns that do not cancel.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import expit

from sim.errors import ConfigError
from sim.feedback import make_teacher
from sim.feedback.datasets import (
    FeedbackData,
    collect,
    covered_prompts,
    preference_accuracy,
    sample_items,
    stutter_free,
)
from sim.feedback.teachers import Teacher
from sim.oracle import make_oracle
from sim.reference import make_reference
from sim.worlds import EnumeratedWorld, Sequences
from sim.worlds.base import Table


def _teacher(**kw) -> Teacher:
    return Teacher(world=None, perceived=None, center=kw.pop("center", 1.0), scale=kw.pop("scale", 2.0), **kw)


@pytest.fixture(scope="module")
def small():
    world = EnumeratedWorld(2, 3, 3)
    oracle = make_oracle(world, "linear", seed=5)
    world.ref = make_reference(world, "softmax", np.random.default_rng(6))
    return world, oracle, world.all_sequences()


# the returns of 2 annotators (rows) for 5 sequences, and their myopic returns (different, so the two cannot swap)
R = np.array([[0.0, 1.0, 3.0, 3.5, -2.0], [1.0, 0.2, 2.0, 5.0, -1.0]])
G = np.array([[0.5, 1.0, 2.0, 4.0, -1.0], [0.0, 1.5, 2.5, 3.0, 0.0]])


def test_preference_prob_is_the_formula_with_equal_and_flips():
    t = _teacher(rationality=1.5, flip=0.2, equal=0.3, scale=2.0)
    i, j = np.array([0, 2, 3, 4, 1]), np.array([1, 3, 0, 2, 4])
    want = np.zeros(5)
    for w in range(2):
        p = expit(1.5 * (G[w, i] - G[w, j]) / 2.0)
        p = np.where(np.abs(R[w, i] - R[w, j]) / 2.0 < 0.3, 0.5, p)  # |3 - 3.5| / 2 = 0.25 < 0.3 for annotator 0
        want += 0.8 * p + 0.2 * (1 - p)
    got = t.preference_prob(R, G, i, j)
    np.testing.assert_allclose(got, want / 2, rtol=1e-13)
    assert got[1] == pytest.approx((0.5 + (0.8 * expit(-0.375) + 0.2 * expit(0.375))) / 2, rel=1e-13)
    # equal-marking uses the strict inequality |R1 - R2| / scale < equal: a difference of exactly 0.3 is judged
    at = _teacher(rationality=1.0, equal=0.25, scale=2.0)
    r = np.array([[0.0, 0.5]])
    assert at.preference_prob(r, np.array([[1.0, 0.0]]), np.array([0]), np.array([1]))[0] == pytest.approx(expit(0.5))


def test_preference_prob_at_infinite_rationality_is_a_step_with_half_at_ties():
    t = _teacher(rationality=np.inf, flip=0.1)
    g = np.array([[2.0, 1.0, 2.0, -3.0]])
    p = t.preference_prob(g, g, np.array([0, 1, 2, 3]), np.array([1, 0, 0, 2]))
    np.testing.assert_allclose(p, [0.9, 0.1, 0.5, 0.1], rtol=1e-15)


def test_prefer_at_infinite_rationality_labels_exactly():
    t = _teacher(rationality=np.inf, equal=0.3, scale=2.0)
    rng = np.random.default_rng(0)
    i, j = np.array([0, 2, 3, 4, 1, 2]), np.array([1, 3, 0, 2, 4, 2])
    y, kept = t.prefer(R[:1], G[:1], i, j, rng)
    assert kept.all()
    # myopic G decides: 0.5 < 1.0 -> 0; |3 - 3.5| / 2 < 0.3 -> 1/2; 4 > 0.5 -> 1; -1 < 2 -> 0; 1 > -1 -> 1; tie -> 1/2
    np.testing.assert_array_equal(y, [0.0, 0.5, 1.0, 0.0, 1.0, 0.5])
    flipped = _teacher(rationality=np.inf, flip=1.0, equal=0.3, scale=2.0)
    y, _ = flipped.prefer(R[:1], G[:1], i, j, rng)
    np.testing.assert_array_equal(y, [1.0, 0.5, 0.0, 1.0, 0.0, 0.5])


def test_prefer_frequencies_follow_the_sigmoid_of_the_standardised_myopic_difference():
    t = _teacher(rationality=2.0, flip=0.15, scale=2.0)
    n = 40_000
    y, kept = t.prefer(R[:1], G[:1], np.full(n, 2), np.full(n, 1), np.random.default_rng(3))
    p = 0.85 * expit(2.0 * (2.0 - 1.0) / 2.0) + 0.15 * expit(-1.0)  # 0.6938...
    assert kept.all() and abs(y.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_skip_keeps_the_best_standardised_return_at_the_threshold():
    t = _teacher(rationality=np.inf, skip=0.5, center=1.0, scale=2.0)  # keep iff max(R) >= 1 + 0.5 * 2 = 2
    r = np.array([[2.0, 1.9, 0.0, 3.0]])
    _, kept = t.prefer(r, r, np.array([0, 1, 1, 2]), np.array([2, 2, 3, 1]), np.random.default_rng(0))
    np.testing.assert_array_equal(kept, [True, False, True, False])
    z, kept = t.rate(r, r, np.array([0, 1, 2, 3]), np.random.default_rng(0))
    np.testing.assert_array_equal(kept, [True, False, False, True])
    np.testing.assert_allclose(z, [0.5, 1.0])


def test_rate_standardises_and_quantises_onto_likert_levels():
    t = _teacher(center=1.0, scale=2.0, levels=4)
    t.myopic_range = (-1.0, 5.0)  # z spans [-1, 2]: levels -1, 0, 1, 2
    g = np.array([[0.2, 1.9, 4.4, 8.0, -4.0, 2.1]])  # z = -0.4, 0.45, 1.7, 3.5, -2.5, 0.55
    z, kept = t.rate(g + 10.0, g, np.arange(6), np.random.default_rng(0))
    assert kept.all()
    np.testing.assert_array_equal(z, [0.0, 0.0, 2.0, 2.0, -1.0, 1.0])
    plain = _teacher(center=1.0, scale=2.0)
    z, _ = plain.rate(g, g, np.arange(6), np.random.default_rng(0))
    np.testing.assert_allclose(z, [-0.4, 0.45, 1.7, 3.5, -2.5, 0.55], rtol=1e-14)


def test_rate_noise_has_sd_sigma_in_standard_units():
    t = _teacher(center=1.0, scale=2.0, sigma=0.7)
    n = 40_000
    z, _ = t.rate(G[:1], G[:1], np.full(n, 3), np.random.default_rng(4))
    assert abs(z.mean() - 1.5) < 4 * 0.7 / np.sqrt(n)
    assert z.std() == pytest.approx(0.7, abs=4 * 0.7 / np.sqrt(2 * n))


def test_rank_at_infinite_rationality_sorts_best_first_and_breaks_ties_at_random():
    t = _teacher(rationality=np.inf, scale=2.0)
    g = np.array([[0.5, 3.0, -1.0, 2.0, 3.0]])
    items = np.tile([0, 1, 2, 3], (6, 1))
    ranked, kept = t.rank(g, g, items, np.random.default_rng(0))
    assert kept.all()
    np.testing.assert_array_equal(ranked, np.tile([1, 3, 0, 2], (6, 1)))
    # 1 and 4 tie at 3.0: either comes first, about half the time each
    n = 4000
    ranked, _ = t.rank(g, g, np.tile([4, 1, 2], (n, 1)), np.random.default_rng(1))
    assert set(map(tuple, ranked)) == {(4, 1, 2), (1, 4, 2)}
    first = (ranked[:, 0] == 4).mean()
    assert abs(first - 0.5) < 4 * np.sqrt(0.25 / n)


def test_rank_with_flips_replaces_a_fraction_by_uniform_orders():
    t = _teacher(rationality=np.inf, flip=0.3, scale=2.0)
    g = np.array([[0.5, 3.0, -1.0]])
    n = 12_000
    ranked, _ = t.rank(g, g, np.tile([0, 1, 2], (n, 1)), np.random.default_rng(2))
    freq = {p: np.mean(np.all(ranked == p, axis=1)) for p in itertools.permutations([0, 1, 2])}
    for p, f in freq.items():  # 0.7 + 0.3 / 6 for the true order, 0.3 / 6 for each other
        want = 0.75 if p == (1, 0, 2) else 0.05
        assert abs(f - want) < 4 * np.sqrt(want * (1 - want) / n), (p, f)


def test_rank_at_finite_rationality_uses_the_standardised_utilities():
    t = _teacher(rationality=1.2, scale=2.0)
    g = np.array([[0.5, 3.0, -1.0]])
    n = 20_000
    ranked, _ = t.rank(g, g, np.tile([0, 1, 2], (n, 1)), np.random.default_rng(5))
    u = 1.2 * g[0] / 2.0
    p_top = np.exp(u) / np.exp(u).sum()
    for k in range(3):
        f = np.mean(ranked[:, 0] == k)
        assert abs(f - p_top[k]) < 4 * np.sqrt(p_top[k] * (1 - p_top[k]) / n)


def test_an_annotator_mixture_sees_exactly_base_plus_its_own_linear_change(small):
    world, oracle, seqs = small
    source = world.sequence_source(world.ref)
    for myopia in (1.0, 0.6):
        t = make_teacher(
            world, oracle.reward, source, np.random.default_rng(7), oracle=oracle, annotators=3,
            annotator_spread=0.8, myopia=myopia,
        )  # fmt: skip
        assert t.n_annotators == 3 and len(t.deltas) == 3
        returns, myopic = t.perceive(seqs)
        for w, delta in enumerate(t.deltas):
            assert np.linalg.norm(delta) > 0.1
            seen = oracle.reward + oracle.features.reward(delta)
            np.testing.assert_allclose(returns[w], world.sequence_returns(seen, seqs), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(myopic[w], world.sequence_returns(seen, seqs, myopia), rtol=1e-10, atol=1e-12)
            # each annotator's weights are at angle annotator_spread from theta*
            theta = oracle.theta
            cos = (theta + delta) @ theta / np.linalg.norm(theta + delta) / np.linalg.norm(theta)
            assert cos == pytest.approx(np.cos(0.8), abs=1e-9)


def test_labels_come_from_each_annotator_equally_often(small):
    world, oracle, seqs = small
    t = make_teacher(
        world, oracle.reward, world.sequence_source(world.ref), np.random.default_rng(7), oracle=oracle,
        annotators=3, annotator_spread=1.2, rationality=np.inf,
    )  # fmt: skip
    returns, myopic = t.perceive(seqs)
    # a pair on which the annotators disagree: each label says which annotator wrote it
    d = myopic[:, :, None] - myopic[:, None, :]
    a, b = np.argwhere((np.sign(d[0]) != np.sign(d[1])) & (np.sign(d[1]) == np.sign(d[2])) & (d[0] != 0))[0]
    n = 6000
    y, _ = t.prefer(returns, myopic, np.full(n, a), np.full(n, b), np.random.default_rng(8))
    from_first = np.mean(y == (1.0 if d[0, a, b] > 0 else 0.0))
    assert abs(from_first - 1 / 3) < 4 * np.sqrt(2 / 9 / n)


def test_make_teacher_standardises_by_the_source_and_spans_the_likert_range(small):
    world, oracle, seqs = small
    source = world.sequence_source(world.ref)
    t = make_teacher(world, oracle.reward, source, np.random.default_rng(0), levels=5, rationality=0.7, flip=0.1)
    center, scale = source.moments(oracle.reward)
    assert (t.center, t.scale) == (center, scale)
    assert (t.rationality, t.flip, t.levels, t.n_annotators, t.deltas) == (0.7, 0.1, 5, 1, [])
    R_all = world.sequence_returns(oracle.reward, seqs)
    assert t.myopic_range == pytest.approx((R_all.min(), R_all.max()), rel=1e-12)
    returns, myopic = t.perceive(seqs)
    assert returns.shape == (1, seqs.n)
    np.testing.assert_allclose(returns[0], R_all, rtol=1e-12)
    G_all = world.sequence_returns(oracle.reward, seqs, 0.5)
    assert not np.allclose(G_all, R_all)
    t_myopic = make_teacher(world, oracle.reward, source, np.random.default_rng(0), myopia=0.5)
    np.testing.assert_allclose(t_myopic.perceive(seqs)[1][0], G_all, rtol=1e-12)
    assert make_teacher(world, oracle.reward, source, np.random.default_rng(0)).myopic_range == (0.0, 1.0)


def test_a_mixture_needs_a_linear_part(small):
    world, oracle, _ = small
    source = world.sequence_source(world.ref)
    with pytest.raises(ConfigError) as err:
        make_teacher(world, oracle.reward, source, np.random.default_rng(0), annotators=2)
    assert (err.value.field, err.value.value, err.value.allowed) == (
        "feedback.annotators",
        2,
        "1 unless the oracle has a linear part",
    )


def test_make_teacher_defaults(small):
    world, oracle, seqs = small
    source = world.sequence_source(world.ref)
    t = make_teacher(world, oracle.reward, source, np.random.default_rng(0))
    got = (t.rationality, t.flip, t.myopia, t.skip, t.equal, t.sigma, t.levels, t.features, t.deltas)
    assert got == (1.0, 0.0, 1.0, None, 0.0, 0.0, 0, None, [])
    # the default spread is 0: every annotator of a mixture judges by the oracle's own weights
    two = make_teacher(world, oracle.reward, source, np.random.default_rng(0), oracle=oracle, annotators=2)
    assert len(two.deltas) == 2 and all(np.all(d == 0) for d in two.deltas)


def test_two_annotators_both_write_labels(small):
    world, oracle, seqs = small
    t = make_teacher(
        world, oracle.reward, world.sequence_source(world.ref), np.random.default_rng(7), oracle=oracle,
        annotators=2, annotator_spread=1.0,
    )  # fmt: skip
    returns, myopic = t.perceive(seqs)
    n = 2000
    z, _ = t.rate(returns, myopic, np.full(n, 5), np.random.default_rng(9))
    views = (myopic[:, 5] - t.center) / t.scale
    assert views[0] != views[1]
    share = np.mean(z == views[1])
    assert abs(share - 0.5) < 4 * np.sqrt(0.25 / n) and np.all((z == views[0]) | (z == views[1]))


def test_prefer_marks_equal_strictly_below_the_threshold():
    t = _teacher(rationality=np.inf, equal=0.25, scale=2.0)
    r = np.array([[0.0, 0.5, 0.49]])  # |0 - 0.5| / 2 = 0.25 is not below 0.25; 0.245 is
    y, _ = t.prefer(r, r, np.array([1, 2]), np.array([0, 0]), np.random.default_rng(0))
    np.testing.assert_array_equal(y, [1.0, 0.5])


def test_ties_are_broken_at_random_and_small_gaps_kept_whatever_the_scale():
    t = _teacher(rationality=np.inf, scale=1e6, center=0.0)
    n = 4000
    g = np.array([[3e6, 1e6, 3e6]])  # a tie at 3e6: the jitter (1e-12 scale = 1e-6) is above its rounding (1e-10)
    ranked, _ = t.rank(g, g, np.tile([0, 1, 2], (n, 1)), np.random.default_rng(0))
    assert abs((ranked[:, 0] == 0).mean() - 0.5) < 4 * np.sqrt(0.25 / n)
    g = np.array([[0.0, 1e-3, 2e-3]])  # gaps of 1e-9 scale: still ranked exactly
    ranked, _ = t.rank(g, g, np.tile([0, 1, 2], (n, 1)), np.random.default_rng(1))
    assert np.all(ranked == [2, 1, 0])


def test_a_mixture_rates_and_ranks_with_each_annotator_in_turn(small):
    world, oracle, seqs = small
    t = make_teacher(
        world, oracle.reward, world.sequence_source(world.ref), np.random.default_rng(7), oracle=oracle,
        annotators=3, annotator_spread=1.2, rationality=np.inf,
    )  # fmt: skip
    returns, myopic = t.perceive(seqs)
    n = 3000
    z, kept = t.rate(returns, myopic, np.full(n, 5), np.random.default_rng(9))
    views = (myopic[:, 5] - t.center) / t.scale
    assert kept.all() and len(set(views)) == 3
    counts = np.array([(z == v).sum() for v in views])
    assert counts.sum() == n and np.all(np.abs(counts / n - 1 / 3) < 4 * np.sqrt(2 / 9 / n))

    # rankings: a triple the annotators order differently; each order appears about a third of the time
    def orders(trio):
        return {tuple(np.array(trio)[np.argsort(-myopic[w, list(trio)])]) for w in range(3)}

    a, b, c = next(trio for trio in itertools.combinations(range(seqs.n), 3) if len(orders(trio)) == 3)
    ranked, _ = t.rank(returns, myopic, np.tile([a, b, c], (n, 1)), np.random.default_rng(10))
    assert set(map(tuple, ranked)) == orders((a, b, c))


# ------------------------------------------------------------------------------------ datasets (sim.feedback.datasets)
def _seqs(prompt, first) -> Sequences:
    """Sequences of prompts ``prompt`` whose first token is ``first`` (one token, length 1): easy to tell apart."""
    prompt = np.asarray(prompt)
    tokens = np.full((prompt.size, 2), -1)
    tokens[:, 0] = first
    return Sequences(prompt, tokens, np.ones(prompt.size, dtype=np.int64))


def test_feedback_data_add_offsets_the_second_pool_and_subset_keeps_rows():
    a = FeedbackData(
        "preferences", _seqs([0, 1, 2], 1), np.array([[0, 1], [2, 0]]), np.array([1.0, 0.5]), np.array([0, 1, 2])
    )
    b = FeedbackData("preferences", _seqs([3, 4], 2), np.array([[1, 0]]), np.array([0.0]), np.array([3, 4]))
    c = a + b
    assert c.kind == "preferences" and c.n == 3 and c.pool.n == 5
    np.testing.assert_array_equal(c.items, [[0, 1], [2, 0], [4, 3]])  # b's items moved past a's 3 sequences
    np.testing.assert_array_equal(c.labels, [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(c.pool.prompt, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(c.covered, [0, 1, 2])
    s = c.subset(np.array([2, 0]))
    assert s.pool is c.pool and s.kind == "preferences" and s.covered is c.covered
    np.testing.assert_array_equal(s.items, [[4, 3], [0, 1]])
    np.testing.assert_array_equal(s.labels, [0.0, 1.0])
    r = FeedbackData("rankings", _seqs([0, 1, 2], 1), np.array([[2, 0, 1]]), None, np.array([0]))
    r2 = r + FeedbackData("rankings", _seqs([1, 1, 1], 2), np.array([[1, 2, 0]]), None, np.array([1]))
    assert r2.labels is None and r2.subset(np.array([1])).labels is None
    np.testing.assert_array_equal(r2.items, [[2, 0, 1], [4, 5, 3]])
    np.testing.assert_array_equal(r2.subset(np.array([1])).items, [[4, 5, 3]])


def test_covered_prompts_is_a_sorted_ceil_kappa_p_draw():
    for P, kappa, k in [(5, 0.5, 3), (5, 0.6, 3), (5, 0.61, 4), (5, 0.01, 1), (5, 0.0, 1), (7, 1.0, 7), (10, 0.3, 3)]:
        got = covered_prompts(P, kappa, np.random.default_rng(3))
        want = np.sort(np.random.default_rng(3).permutation(P)[:k])
        np.testing.assert_array_equal(got, want)


class _Source:
    """Draws one sequence per asked prompt, its first token the call's number (so draws are told apart)."""

    def __init__(self):
        self.calls = []

    def draw(self, prompts, rng):
        self.calls.append(np.array(prompts))
        rng.random()  # a draw uses the stream
        return _seqs(prompts, len(self.calls))


def test_sample_items_groups_k_draws_of_one_prompt():
    src = _Source()
    prompts = np.array([2, 5, 7])
    pool, items = sample_items(src, prompts, 4, 3, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    rows = rng.choice(prompts, size=4)
    assert len(src.calls) == 3 and all(np.array_equal(c, rows) for c in src.calls)
    np.testing.assert_array_equal(items, [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]])
    np.testing.assert_array_equal(pool.prompt, np.tile(rows, 3))
    np.testing.assert_array_equal(pool.tokens[items, 0], np.tile([1, 2, 3], (4, 1)))  # group i: one of each draw
    assert items.flags.c_contiguous


class _Teacher:
    """Records what ``collect`` asks and answers fixed labels, keeping the items ``keep``."""

    center, scale, skip = 1.0, 4.0, 0.25

    def __init__(self, keep):
        self.keep = keep
        self.asked = {}

    def perceive(self, pool):
        self.pool = pool
        R = np.arange(pool.n, dtype=np.float64)[None, :] * 2.0 + 3.0  # best return 2 (n - 1) + 3
        return R, R - 1.0

    def prefer(self, R, G, i, j, rng):
        self.asked = dict(R=R, G=G, i=i, j=j)
        return np.linspace(0.0, 1.0, int(np.count_nonzero(self.keep(i.size)))), self.keep(i.size)

    def rate(self, R, G, items, rng):
        self.asked = dict(R=R, G=G, items=items)
        return np.arange(np.count_nonzero(self.keep(items.size)), dtype=float) + 0.5, self.keep(items.size)

    def rank(self, R, G, items, rng):
        self.asked = dict(R=R, G=G, items=items)
        kept = self.keep(items.shape[0])
        return items[kept][:, ::-1], kept


def test_collect_passes_the_pairs_and_keeps_the_kept():
    keep = lambda m: np.arange(m) % 2 == 1  # noqa: E731
    covered = np.array([1, 3])
    for kind, width in [("preferences", 2), ("ratings", 1), ("rankings", 4)]:
        src, teacher = _Source(), _Teacher(keep)
        data = collect(teacher, src, covered, kind, 6, np.random.default_rng(4))
        pool, items = sample_items(_Source(), covered, 6, width, np.random.default_rng(4))
        assert data.kind == kind and data.n == 3 and data.pool is teacher.pool and data.covered is covered
        np.testing.assert_array_equal(data.pool.prompt, pool.prompt)
        R = np.arange(6 * width) * 2.0 + 3.0
        np.testing.assert_array_equal(teacher.asked["R"][0], R)
        np.testing.assert_array_equal(teacher.asked["G"][0], R - 1.0)
        if kind == "preferences":
            np.testing.assert_array_equal(teacher.asked["i"], items[:, 0])
            np.testing.assert_array_equal(teacher.asked["j"], items[:, 1])
            np.testing.assert_array_equal(data.items, items[1::2])
            np.testing.assert_array_equal(data.labels, [0.0, 0.5, 1.0])
        elif kind == "ratings":
            np.testing.assert_array_equal(teacher.asked["items"], items[:, 0])
            np.testing.assert_array_equal(data.items, items[1::2])
            assert data.items.shape == (3, 1)
            np.testing.assert_array_equal(data.labels, [0.5, 1.5, 2.5])
        else:
            np.testing.assert_array_equal(teacher.asked["items"], items)
            np.testing.assert_array_equal(data.items, items[1::2, ::-1])
            assert data.labels is None
    # rankings of k = 3
    teacher = _Teacher(keep)
    data = collect(teacher, _Source(), covered, "rankings", 4, np.random.default_rng(4), k=3)
    assert teacher.asked["items"].shape == (4, 3) and data.items.shape == (2, 3)


def test_collect_refusals():
    with pytest.raises(ConfigError) as err:
        collect(_Teacher(lambda m: np.ones(m, bool)), _Source(), np.array([0]), "pairs", 3, np.random.default_rng(0))
    assert (err.value.field, err.value.value, err.value.allowed) == (
        "feedback.kind", "pairs", "one of ['preferences', 'ratings', 'rankings']"
    )  # fmt: skip
    for kind in ["preferences", "ratings", "rankings"]:
        with pytest.raises(ConfigError) as err:
            collect(_Teacher(lambda m: np.zeros(m, bool)), _Source(), np.array([0]), kind, 5, np.random.default_rng(0))
        n = 5 * {"preferences": 2, "ratings": 1, "rankings": 4}[kind]
        best = (2 * (n - 1) + 3 - 1.0) / 4.0  # (max R - centre) / scale
        assert (err.value.field, err.value.value) == ("feedback.skip", 0.25)
        assert (
            err.value.allowed
            == f"a threshold that keeps some of the 5 items (the best standardised return drawn was {best:.3g})"
        )


def test_preference_accuracy_by_hand():
    true = np.array([0.0, 1.0, 2.0, 2.0, -1.0])
    pred = np.array([0.5, 0.2, 3.0, 1.0, 0.5])
    pairs = np.array([[0, 1], [2, 1], [2, 3], [4, 0], [3, 1], [0, 4]])
    # informative: (0,1) true - pred + -> 0; (2,1) + + -> 1; (2,3) a true tie, left out; (4,0) true - pred tie -> 1/2;
    # (3,1) + + -> 1; (0,4) + pred tie -> 1/2
    assert preference_accuracy(pred, true, pairs) == pytest.approx((0 + 1 + 0.5 + 1 + 0.5) / 5, rel=1e-15)
    assert preference_accuracy(pred, true, np.array([[2, 3], [3, 2]])) is None
    assert preference_accuracy(pred, true, np.array([[1, 0]])) == 0.0  # true + , pred -


def test_stutter_free_masks_the_last_token_and_renormalises():
    world = EnumeratedWorld(1, 4, 3)  # EOS 0, tokens 1..3
    rows = np.array([0.1, 0.2, 0.3, 0.4])
    base = Table(world, np.tile(rows, (world.n_states, 1)))
    base.values[2] = [0.0, 1.0, 0.0, 0.0]  # state 2 (last token 2): no mass on the stutter, unchanged
    base.values[1] = [0.0, 1.0, 0.0, 0.0]  # state 1 (last token 1): all its mass on the stutter
    pol = stutter_free(world, base)
    assert pol.world is world
    np.testing.assert_allclose(pol.level(0), [rows], rtol=0)  # depth 0: no last token, untouched
    got = np.concatenate([pol.level(t) for t in range(3)])
    for s in range(world.n_states):
        y = world.last_token[s]
        if s == 1:
            np.testing.assert_allclose(got[s], [1 / 3, 0.0, 1 / 3, 1 / 3], rtol=1e-15)  # uniform over the others
        elif y >= 1:
            want = base.values[s].copy()
            want[y] = 0.0
            np.testing.assert_allclose(got[s], want / want.sum(), rtol=1e-15)
    assert base.values[3, 3] == 0.4  # the policy's own rows are not changed
    # no EOS: token 0 is a real token and is masked too
    w0 = EnumeratedWorld(1, 3, 2, eos=False)
    p0 = stutter_free(w0, Table(w0, np.tile([0.5, 0.3, 0.2], (w0.n_states, 1))))
    lo = w0.level(1)[0]
    np.testing.assert_allclose(p0.level(1), [[0.0, 0.6, 0.4], [0.5 / 0.7, 0.0, 0.2 / 0.7], [0.625, 0.375, 0.0]])
    assert w0.last_token[lo] == 0


def test_stutter_free_needs_the_last_token():
    from sim.worlds.markov import MarkovWorld

    m = MarkovWorld(2, 3, 3, track_last_token=False)
    with pytest.raises(ConfigError) as err:
        stutter_free(m, make_reference(m, "uniform"))
    assert (err.value.field, err.value.value) == ("feedback.stutter_free", True)
    assert err.value.allowed == "false on a world whose states do not keep the last token (nothing reads it)"
    with pytest.raises(ConfigError):  # horizon 2: level 1 has states, none keeping a token
        stutter_free(MarkovWorld(2, 3, 2, track_last_token=False), make_reference(MarkovWorld(2, 3, 2), "uniform"))
    # a horizon-2 world keeps the last token at depth 1 (level 2 is empty): accepted
    stutter_free(MarkovWorld(2, 3, 2), make_reference(MarkovWorld(2, 3, 2), "uniform"))
    # a horizon-1 world has no last token to read and nothing to mask
    w1 = EnumeratedWorld(2, 3, 1)
    np.testing.assert_allclose(stutter_free(w1, make_reference(w1, "uniform")).level(0), np.full((2, 3), 1 / 3))
