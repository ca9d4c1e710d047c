"""Teachers, sources and datasets: label frequencies against their formulas (chi-square at fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from sim.build import Setup
from sim.config import Config, FeedbackConfig
from sim.corruption import identity_channel
from sim.errors import ConfigError
from sim.feedback import collect, covered_prompts, make_teacher, preference_accuracy, sample_items
from sim.metrics import reward_distance
from sim.oracle import make_oracle
from sim.proxy import first_source
from sim.reference import make_reference
from sim.worlds import EnumeratedWorld, MarkovWorld, Sequences
from sim.worlds.enumerated import ExactSource, standardisation


@pytest.fixture(scope="module")
def world():
    m = EnumeratedWorld(3, 4, 4)
    o = make_oracle(m, "linear", seed=0)
    m.ref = make_reference(m, "softmax", np.random.default_rng(1))
    seqs = m.all_sequences()
    return m, o, m.ref, seqs


def _walk(world: EnumeratedWorld) -> list[list[tuple[int, int]]]:
    """Every complete sequence as its path ``[(s, a), ...]``, by plain recursion through ``next_table`` (a reference
    independent of the level-order tricks of the world)."""
    out = []

    def walk(s: int, path: list[tuple[int, int]]) -> None:
        for a in range(world.n_actions):
            step = [*path, (s, a)]
            nxt = int(world.next_table[s, a])
            if nxt < 0:
                out.append(step)
            else:
                walk(nxt, step)

    for p in range(world.n_prompts):
        walk(p, [])
    return out


def _chi2_pvalue(counts: np.ndarray, n: int, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    stat = np.sum((counts - n * p) ** 2 / (n * p * (1 - p)))
    return float(stats.chi2.sf(stat, df=len(p)))


def _pairs(seqs, k=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, seqs.n, k), rng.integers(0, seqs.n, k)


def _label_frequency(teacher, R, G, i, j, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    counts = []
    for a, b in zip(i, j, strict=True):
        y, kept = teacher.prefer(R, G, np.full(n, a), np.full(n, b), rng)
        counts.append(y.sum())
    return np.array(counts)


def test_myopic_returns_match_brute_force(world):
    m, o, _, seqs = world
    s_end, a_end = m.terminal_transitions()
    by_end = {(int(s), int(a)): k for k, (s, a) in enumerate(zip(s_end, a_end, strict=True))}
    r = m.table(o.reward)
    G = m.sequence_returns(o.reward, seqs, 0.8)
    R = m.sequence_returns(o.reward, seqs)
    paths = _walk(m)
    assert len(paths) == seqs.n
    for path in paths[:60]:
        T = len(path)
        expected = sum(0.8 ** (T - 1 - t) * r[s, a] for t, (s, a) in enumerate(path))
        assert G[by_end[path[-1]]] == pytest.approx(expected, abs=1e-12)
        assert R[by_end[path[-1]]] == pytest.approx(sum(r[s, a] for s, a in path), abs=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(rationality=1.0),
        dict(rationality=3.0, flip=0.2),
        dict(rationality=2.0, myopia=0.7),
        dict(rationality=1.0, annotators=3, annotator_spread=0.8),
    ],
    ids=["noisy", "flip", "myopic", "mixture"],
)
def test_preference_frequencies_match_formula(world, kwargs):
    m, o, ref, seqs = world
    teacher = make_teacher(m, o.reward, m.sequence_source(ref), np.random.default_rng(0), oracle=o, **kwargs)
    R, G = teacher.perceive(seqs)
    i, j = _pairs(seqs)
    p = teacher.preference_prob(R, G, i, j)
    if "annotators" not in kwargs:  # the formula itself, written out
        g = m.sequence_returns(o.reward, seqs, kwargs.get("myopia", 1.0))
        flip = kwargs.get("flip", 0.0)
        q = expit(kwargs["rationality"] * (g[i] - g[j]) / teacher.scale)
        np.testing.assert_allclose(p, (1 - flip) * q + flip * (1 - q), atol=1e-12)
    else:
        assert R.shape == (3, seqs.n)
    counts = _label_frequency(teacher, R, G, i, j)
    assert _chi2_pvalue(counts, 3000, p) > 1e-3


def test_rationality_is_scale_aware(world):
    m, o, ref, seqs = world
    source = m.sequence_source(ref)
    i, j = _pairs(seqs)
    t1 = make_teacher(m, o.reward, source, np.random.default_rng(0), rationality=1.5)
    t100 = make_teacher(m, 100 * o.reward, source, np.random.default_rng(0), rationality=1.5)
    np.testing.assert_allclose(
        t1.preference_prob(*t1.perceive(seqs), i, j), t100.preference_prob(*t100.perceive(seqs), i, j), atol=1e-12
    )
    probs = m.sequence_probs(ref)
    w = probs / probs.sum()
    R = m.sequence_returns(o.reward, seqs)
    assert t1.scale == pytest.approx(np.sqrt(w @ (R - w @ R) ** 2))


def test_perfect_teacher_equal_and_skip(world):
    m, o, ref, seqs = world
    source = m.sequence_source(ref)
    R = m.sequence_returns(o.reward, seqs)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, seqs.n, 5000), rng.integers(0, seqs.n, 5000)
    perfect = make_teacher(m, o.reward, source, rng, rationality=np.inf)
    y, kept = perfect.prefer(*perfect.perceive(seqs), i, j, rng)
    assert kept.all()
    np.testing.assert_array_equal(y, np.where(R[i] > R[j], 1.0, np.where(R[i] < R[j], 0.0, y)))
    equal = make_teacher(m, o.reward, source, rng, rationality=np.inf, equal=0.3)
    y, _ = equal.prefer(*equal.perceive(seqs), i, j, rng)
    close = np.abs(R[i] - R[j]) / equal.scale < 0.3
    assert close.any() and np.all(y[close] == 0.5) and np.all(y[~close] != 0.5)
    skipper = make_teacher(m, o.reward, source, rng, rationality=np.inf, skip=0.5)
    _, kept = skipper.prefer(*skipper.perceive(seqs), i, j, rng)
    best = (np.maximum(R[i], R[j]) - skipper.center) / skipper.scale
    np.testing.assert_array_equal(kept, best >= 0.5)


def test_rankings_follow_plackett_luce(world):
    m, o, ref, seqs = world
    teacher = make_teacher(m, o.reward, m.sequence_source(ref), np.random.default_rng(0), rationality=1.0)
    R, G = teacher.perceive(seqs)
    items = np.array([3, 50, 90, 140])
    n = 6000
    ranked, kept = teacher.rank(R, G, np.tile(items, (n, 1)), np.random.default_rng(1))
    assert kept.all() and np.all(np.sort(ranked, axis=1) == np.sort(items))
    returns = m.sequence_returns(o.reward, seqs)
    u = returns[items] / teacher.scale
    p_top = np.exp(u - u.max()) / np.exp(u - u.max()).sum()
    counts = np.array([(ranked[:, 0] == it).sum() for it in items])
    assert stats.chisquare(counts, n * p_top).pvalue > 1e-3
    # second place, given the first: the PL conditional
    first = items[np.argmax(u)]
    rows = ranked[:, 0] == first
    rest = items[items != first]
    u_rest = returns[rest] / teacher.scale
    p2 = np.exp(u_rest) / np.exp(u_rest).sum()
    c2 = np.array([(ranked[rows, 1] == it).sum() for it in rest])
    assert stats.chisquare(c2, rows.sum() * p2).pvalue > 1e-3


def test_ratings_mean_and_noise(world):
    m, o, ref, seqs = world
    source = m.sequence_source(ref)
    teacher = make_teacher(m, o.reward, source, np.random.default_rng(0), sigma=0.5)
    n = 20_000
    r, kept = teacher.rate(*teacher.perceive(seqs), np.full(n, 7), np.random.default_rng(2))
    z = (m.sequence_returns(o.reward, seqs)[7] - teacher.center) / teacher.scale
    assert abs(r.mean() - z) < 4 * 0.5 / np.sqrt(n)
    assert r.std() == pytest.approx(0.5, rel=0.03)
    likert = make_teacher(m, o.reward, source, np.random.default_rng(0), sigma=0.5, levels=5)
    r, _ = likert.rate(*likert.perceive(seqs), np.full(1000, 7), np.random.default_rng(2))
    assert len(np.unique(r)) <= 5


def test_reference_sampler_frequencies(world):
    m, o, ref, seqs = world
    probs = m.sequence_probs(ref)
    source = ExactSource(m, probs)
    n = 30_000
    ids = source.draw_ids(np.full(n, 2), np.random.default_rng(0))
    mine = seqs.prompt == 2
    assert np.all(mine[ids])
    expected = probs[mine] / probs[mine].sum()
    counts = np.bincount(ids, minlength=seqs.n)[mine]
    big = expected * n >= 5  # chi-square needs expected counts >= 5; pool the rest
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum()) * n
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    # draw() is the same draw as a batch of sequences
    drawn = source.draw(np.full(50, 2), np.random.default_rng(0))
    np.testing.assert_array_equal(drawn.ids, ids[:50])
    np.testing.assert_array_equal(drawn.prompt, 2)


def test_uniform_sampler_and_coverage(world):
    m, o, ref, seqs = world
    source = m.uniform_source()
    probs = source.probs
    per_prompt = np.bincount(seqs.prompt, weights=probs)
    np.testing.assert_allclose(per_prompt, 1 / 3)
    assert np.ptp(probs[seqs.prompt == 0]) == 0
    rng = np.random.default_rng(0)
    covered = covered_prompts(10, 0.3, rng)
    assert covered.size == 3 and np.all(np.diff(covered) > 0)
    teacher = make_teacher(m, o.reward, source, rng)
    cov = np.array([1])
    data = collect(teacher, source, cov, "preferences", 500, rng)
    assert data.n == 500 and np.all(data.pool.prompt[data.items] == 1)


def _first_source(m, o, **feedback):
    return first_source(Config(feedback=FeedbackConfig(**feedback)), Setup(m, o, identity_channel(m, o.reward)))


def test_expert_sampler_mixes_pi_ref_with_a_near_optimal_policy(world):
    m, o, ref, seqs = world
    true = m.sequence_returns(o.reward, seqs)
    ref_probs = m.sequence_probs(ref)
    # the expert is the oracle's soft optimum at 0.1 return sds under pi_ref
    expert = m.soft_policy(o.reward, 0.1 * standardisation(true, ref_probs)[1])
    expert_probs = m.sequence_probs(expert)
    np.testing.assert_array_equal(_first_source(m, o, sampler="expert", expert_mix=0.0).probs, ref_probs)
    np.testing.assert_allclose(_first_source(m, o, sampler="expert", expert_mix=1.0).probs, expert_probs, atol=1e-15)
    half = _first_source(m, o, sampler="expert", expert_mix=0.5, expert_beta=0.1).probs
    assert half.sum() == pytest.approx(1.0)
    # near the best output of each prompt
    best = np.array([true[seqs.prompt == x].max() for x in range(m.n_prompts)]).mean()
    reference = ref_probs @ true
    expert_return = expert_probs @ true
    assert (best - expert_return) < 0.02 * (best - reference)  # 0.002 measured
    assert half @ true == pytest.approx((reference + expert_return) / 2)
    # the other samplers' first round: pi_ref (also for sampler=policy, whose later rounds follow the agent), uniform
    np.testing.assert_array_equal(_first_source(m, o, sampler="reference").probs, ref_probs)
    np.testing.assert_array_equal(_first_source(m, o, sampler="policy", rounds=2).probs, ref_probs)
    np.testing.assert_array_equal(_first_source(m, o, sampler="uniform").probs, m.uniform_source().probs)


def test_preference_accuracy_by_hand():
    true = np.array([0.0, 1.0, 2.0, 2.0])
    pred = np.array([0.0, -1.0, 5.0, 5.0])
    pairs = np.array([[0, 1], [1, 2], [2, 3], [0, 2], [2, 0]])
    # informative pairs: (0,1) wrong, (1,2) right, (0,2) right, (2,0) right; (2,3) is a true tie
    assert preference_accuracy(pred, true, pairs) == pytest.approx(3 / 4)
    assert preference_accuracy(np.zeros(4), true, pairs) == 0.5


def test_reward_distance_properties():
    rng = np.random.default_rng(0)
    prompt = np.repeat(np.arange(3), 10)
    w = rng.random(30)
    x = rng.normal(size=30)
    assert reward_distance(x, x, w, prompt) == pytest.approx(0.0, abs=1e-7)
    shifted = 3.0 * x + np.array([5.0, -2.0, 7.0])[prompt]
    assert reward_distance(x, shifted, w, prompt) == pytest.approx(0.0, abs=1e-7)
    assert reward_distance(x, -x, w, prompt) == pytest.approx(1.0)
    assert reward_distance(x, np.zeros(30), w, prompt) == pytest.approx(np.sqrt(0.5))
    y = rng.normal(size=30)
    d = reward_distance(x, y, w, prompt)
    assert 0 < d < 1


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(n=0), "feedback.n"),
        (dict(flip=-0.1), "feedback.flip"),
        (dict(flip=1.5), "feedback.flip"),
        (dict(myopia=0.0), "feedback.myopia"),
        (dict(myopia=1.1), "feedback.myopia"),
        (dict(prompt_coverage=0.0), "feedback.prompt_coverage"),
        (dict(prompt_coverage=1.2), "feedback.prompt_coverage"),
        (dict(kind="essays"), "feedback.kind"),
        (dict(rationality=0.0), "feedback.rationality"),
        (dict(levels=1), "feedback.levels"),
        (dict(k=1), "feedback.k"),
        (dict(rounds=2), "feedback.rounds"),
        (dict(sampler="crowd"), "feedback.sampler"),
        (dict(expert_mix=1.5), "feedback.expert_mix"),
        (dict(expert_beta=0.0), "feedback.expert_beta"),
    ],
)
def test_bad_feedback_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError) as e:
        FeedbackConfig(**kwargs)
    assert e.value.field == key


def test_dataset_left_empty_after_skipping(world):
    m, o, ref, seqs = world
    source = m.sequence_source(ref)
    teacher = make_teacher(m, o.reward, source, np.random.default_rng(0), skip=50.0)
    with pytest.raises(ConfigError, match="feedback.skip"):
        collect(teacher, source, np.arange(3), "preferences", 100, np.random.default_rng(0))


def test_items_index_the_pool_and_name_the_same_sequences_by_id(world):
    """Items are rows of ``data.pool``; ``sequence_ids`` recovers the global ids (also from tokens alone), and adding
    two datasets shifts the second one's items past the first pool."""
    m, o, ref, seqs = world
    source = m.sequence_source(ref)
    rng = np.random.default_rng(3)
    teacher = make_teacher(m, o.reward, source, rng)
    a = collect(teacher, source, np.arange(3), "rankings", 40, rng, 3)
    b = collect(teacher, source, np.arange(3), "rankings", 30, rng, 3)
    assert a.pool.n == 120 and a.items.shape == (40, 3) and a.items.max() < a.pool.n
    ids = m.sequence_ids(a.pool)
    tokens_only = Sequences(a.pool.prompt, a.pool.tokens, a.pool.length)
    np.testing.assert_array_equal(m.sequence_ids(tokens_only), ids)
    np.testing.assert_array_equal(seqs.tokens[ids], a.pool.tokens)
    both = a + b
    assert both.pool.n == a.pool.n + b.pool.n and both.n == 70
    expected = np.concatenate([ids[a.items], m.sequence_ids(b.pool)[b.items]])
    np.testing.assert_array_equal(m.sequence_ids(both.pool)[both.items], expected)
    pool, pairs = sample_items(source, np.array([0, 2]), 25, 2, rng)
    assert pool.n == 50 and pairs.shape == (25, 2)
    assert np.all(pool.prompt[pairs[:, 0]] == pool.prompt[pairs[:, 1]]) and set(pool.prompt) <= {0, 2}


def test_a_teacher_judges_the_same_sequences_alike_on_both_world_kinds():
    """The oracle draws the same weights on an enumerated and a compressed world: a pool sampled on one is judged
    identically on the other (returns, myopic returns, preference probabilities, standardisation)."""
    worlds = [EnumeratedWorld(2, 4, 4), MarkovWorld(2, 4, 4, True)]
    teachers = []
    for w in worlds:
        w.ref = make_reference(w, "bigram", np.random.default_rng(5))
        o = make_oracle(w, "linear", seed=2)
        teachers.append(make_teacher(w, o.reward, w.sequence_source(w.ref), np.random.default_rng(0), myopia=0.8))
    rng = np.random.default_rng(1)
    pool = worlds[1].sequence_source(worlds[1].ref).draw(rng.integers(0, 2, 400), rng)
    assert pool.ids is None
    (R0, G0), (R1, G1) = (t.perceive(pool) for t in teachers)
    np.testing.assert_allclose(R1, R0, atol=1e-12)
    np.testing.assert_allclose(G1, G0, atol=1e-12)
    assert teachers[1].center == pytest.approx(teachers[0].center, abs=1e-12)
    assert teachers[1].scale == pytest.approx(teachers[0].scale, rel=1e-10)
    i, j = np.arange(200), np.arange(200, 400)
    np.testing.assert_allclose(teachers[1].preference_prob(R1, G1, i, j), teachers[0].preference_prob(R0, G0, i, j))
