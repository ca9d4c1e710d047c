"""Teachers, samplers and datasets: label frequencies against their formulas (chi-square at fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from sim.config import FeedbackConfig
from sim.errors import ConfigError
from sim.feedback import Sequences, SequenceSampler, collect, covered_prompts, make_teacher, preference_accuracy
from sim.feedback.datasets import expert_policy, sampling_probs
from sim.mdp import TextMDP
from sim.metrics import reward_distance
from sim.oracle import make_oracle
from sim.reference import make_reference
from tests.brute import seq_return, sequences


@pytest.fixture(scope="module")
def world():
    m = TextMDP(3, 4, 4)
    o = make_oracle(m, "linear", seed=0)
    ref = make_reference(m, "softmax", np.random.default_rng(1))
    seqs = Sequences.of(m)
    return m, o, ref, seqs


def _chi2_pvalue(counts: np.ndarray, n: int, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    stat = np.sum((counts - n * p) ** 2 / (n * p * (1 - p)))
    return float(stats.chi2.sf(stat, df=len(p)))


def _pairs(seqs, k=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, seqs.n, k), rng.integers(0, seqs.n, k)


def _label_frequency(teacher, i, j, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    counts = []
    for a, b in zip(i, j, strict=True):
        y, kept = teacher.prefer(np.full(n, a), np.full(n, b), rng)
        counts.append(y.sum())
    return np.array(counts)


def test_myopic_returns_match_brute_force(world):
    m, o, _, seqs = world
    by_end = {(int(s), int(a)): k for k, (s, a) in enumerate(zip(seqs.s, seqs.a, strict=True))}
    G = seqs.returns(o.reward, 0.8)
    R = seqs.returns(o.reward)
    for _p, path in sequences(m)[:60]:
        T = len(path)
        expected = sum(0.8 ** (T - 1 - t) * o.reward[s, a] for t, (s, a) in enumerate(path))
        assert G[by_end[path[-1]]] == pytest.approx(expected, abs=1e-12)
        assert R[by_end[path[-1]]] == pytest.approx(seq_return(path, o.reward), abs=1e-12)


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
    probs = seqs.probs(ref)
    teacher = make_teacher(seqs, o.reward, probs, np.random.default_rng(0), oracle=o, **kwargs)
    i, j = _pairs(seqs)
    p = teacher.preference_prob(i, j)
    if "annotators" not in kwargs:  # the formula itself, written out
        G = seqs.returns(o.reward, kwargs.get("myopia", 1.0))
        flip = kwargs.get("flip", 0.0)
        q = expit(kwargs["rationality"] * (G[i] - G[j]) / teacher.scale)
        np.testing.assert_allclose(p, (1 - flip) * q + flip * (1 - q), atol=1e-12)
    counts = _label_frequency(teacher, i, j)
    assert _chi2_pvalue(counts, 3000, p) > 1e-3


def test_rationality_is_scale_aware(world):
    m, o, ref, seqs = world
    probs = seqs.probs(ref)
    i, j = _pairs(seqs)
    t1 = make_teacher(seqs, o.reward, probs, np.random.default_rng(0), rationality=1.5)
    t100 = make_teacher(seqs, 100 * o.reward, probs, np.random.default_rng(0), rationality=1.5)
    np.testing.assert_allclose(t1.preference_prob(i, j), t100.preference_prob(i, j), atol=1e-12)
    w = probs / probs.sum()
    R = seqs.returns(o.reward)
    assert t1.scale == pytest.approx(np.sqrt(w @ (R - w @ R) ** 2))


def test_perfect_teacher_equal_and_skip(world):
    m, o, ref, seqs = world
    probs = seqs.probs(ref)
    R = seqs.returns(o.reward)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, seqs.n, 5000), rng.integers(0, seqs.n, 5000)
    perfect = make_teacher(seqs, o.reward, probs, rng, rationality=np.inf)
    y, kept = perfect.prefer(i, j, rng)
    assert kept.all()
    np.testing.assert_array_equal(y, np.where(R[i] > R[j], 1.0, np.where(R[i] < R[j], 0.0, y)))
    equal = make_teacher(seqs, o.reward, probs, rng, rationality=np.inf, equal=0.3)
    y, _ = equal.prefer(i, j, rng)
    close = np.abs(R[i] - R[j]) / equal.scale < 0.3
    assert close.any() and np.all(y[close] == 0.5) and np.all(y[~close] != 0.5)
    skipper = make_teacher(seqs, o.reward, probs, rng, rationality=np.inf, skip=0.5)
    _, kept = skipper.prefer(i, j, rng)
    best = (np.maximum(R[i], R[j]) - skipper.center) / skipper.scale
    np.testing.assert_array_equal(kept, best >= 0.5)


def test_rankings_follow_plackett_luce(world):
    m, o, ref, seqs = world
    teacher = make_teacher(seqs, o.reward, seqs.probs(ref), np.random.default_rng(0), rationality=1.0)
    items = np.array([3, 50, 90, 140])
    n = 6000
    ranked, kept = teacher.rank(np.tile(items, (n, 1)), np.random.default_rng(1))
    assert kept.all() and np.all(np.sort(ranked, axis=1) == np.sort(items))
    u = seqs.returns(o.reward)[items] / teacher.scale
    p_top = np.exp(u - u.max()) / np.exp(u - u.max()).sum()
    counts = np.array([(ranked[:, 0] == it).sum() for it in items])
    assert stats.chisquare(counts, n * p_top).pvalue > 1e-3
    # second place, given the first: the PL conditional
    first = items[np.argmax(u)]
    rows = ranked[:, 0] == first
    rest = items[items != first]
    u_rest = seqs.returns(o.reward)[rest] / teacher.scale
    p2 = np.exp(u_rest) / np.exp(u_rest).sum()
    c2 = np.array([(ranked[rows, 1] == it).sum() for it in rest])
    assert stats.chisquare(c2, rows.sum() * p2).pvalue > 1e-3


def test_ratings_mean_and_noise(world):
    m, o, ref, seqs = world
    teacher = make_teacher(seqs, o.reward, seqs.probs(ref), np.random.default_rng(0), sigma=0.5)
    n = 20_000
    r, kept = teacher.rate(np.full(n, 7), np.random.default_rng(2))
    z = (seqs.returns(o.reward)[7] - teacher.center) / teacher.scale
    assert abs(r.mean() - z) < 4 * 0.5 / np.sqrt(n)
    assert r.std() == pytest.approx(0.5, rel=0.03)
    likert = make_teacher(seqs, o.reward, seqs.probs(ref), np.random.default_rng(0), sigma=0.5, levels=5)
    r, _ = likert.rate(np.full(1000, 7), np.random.default_rng(2))
    assert len(np.unique(r)) <= 5


def test_reference_sampler_frequencies(world):
    m, o, ref, seqs = world
    probs = seqs.probs(ref)
    sampler = SequenceSampler(seqs, probs)
    n = 30_000
    ids = sampler.sample(np.full(n, 2), np.random.default_rng(0))
    mine = seqs.prompt == 2
    assert np.all(mine[ids])
    expected = probs[mine] / probs[mine].sum()
    counts = np.bincount(ids, minlength=seqs.n)[mine]
    big = expected * n >= 5  # chi-square needs expected counts >= 5; pool the rest
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum()) * n
    assert stats.chisquare(obs, exp).pvalue > 1e-3


def test_uniform_sampler_and_coverage(world):
    m, o, ref, seqs = world
    probs = sampling_probs(seqs, "uniform", ref)
    per_prompt = np.bincount(seqs.prompt, weights=probs)
    np.testing.assert_allclose(per_prompt, 1 / 3)
    assert np.ptp(probs[seqs.prompt == 0]) == 0
    rng = np.random.default_rng(0)
    covered = covered_prompts(10, 0.3, rng)
    assert covered.size == 3 and np.all(np.diff(covered) > 0)
    teacher = make_teacher(seqs, o.reward, probs, rng)
    cov = np.array([1])
    data = collect(teacher, SequenceSampler(seqs, probs), cov, "preferences", 500, rng)
    assert data.n == 500 and np.all(seqs.prompt[data.items] == 1)


def test_expert_sampler_mixes_pi_ref_with_a_near_optimal_policy(world):
    m, o, ref, seqs = world
    expert = expert_policy(seqs, o.reward, ref, 0.1)
    true = seqs.returns(o.reward)
    ref_probs = seqs.probs(ref)
    np.testing.assert_array_equal(sampling_probs(seqs, "expert", ref, expert, mix=0.0), ref_probs)
    np.testing.assert_allclose(sampling_probs(seqs, "expert", ref, expert, mix=1.0), seqs.probs(expert), atol=1e-15)
    half = sampling_probs(seqs, "expert", ref, expert, mix=0.5)
    assert half.sum() == pytest.approx(1.0)
    # the expert is the oracle's soft optimum at 0.1 return sds: near the best output of each prompt
    best = np.array([true[seqs.prompt == x].max() for x in range(m.n_prompts)]).mean()
    reference = ref_probs @ true
    expert_return = seqs.probs(expert) @ true
    assert (best - expert_return) < 0.02 * (best - reference)  # 0.002 measured
    assert half @ true == pytest.approx((reference + expert_return) / 2)
    with pytest.raises(ValueError, match="needs a policy"):
        sampling_probs(seqs, "expert", ref)


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
    probs = seqs.probs(ref)
    teacher = make_teacher(seqs, o.reward, probs, np.random.default_rng(0), skip=50.0)
    with pytest.raises(ConfigError, match="feedback.skip"):
        collect(teacher, SequenceSampler(seqs, probs), np.arange(3), "preferences", 100, np.random.default_rng(0))
