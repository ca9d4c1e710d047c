"""The direct corruption pipeline: zero-strength identities, exact invariants, fixed-seed statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.build import build_setup
from sim.config import (
    AgentConfig,
    Config,
    CorruptionConfig,
    EnvConfig,
    MisspecConfig,
    NoiseConfig,
    OracleConfig,
    SparsityConfig,
)
from sim.corruption import Channel, build_channel
from sim.corruption.misspec import misweight
from sim.errors import ConfigError
from sim.features import FeatureMap
from sim.metrics import exact_metrics
from sim.oracle import make_oracle
from sim.reference import make_reference
from sim.run import check
from sim.worlds import EnumeratedWorld, MarkovWorld, Table
from tests.conftest import SMALL_WORLDS, random_policy

ZERO_STRENGTH = [
    CorruptionConfig(),
    CorruptionConfig(sparsity=SparsityConfig(mode="chunk", chunk=1)),
    CorruptionConfig(sparsity=SparsityConfig(budget=1.0)),
    CorruptionConfig(noise=NoiseConfig(sigma=0.0, levels=0, drop=0.0, mode="delivery")),
    CorruptionConfig(noise=NoiseConfig(sigma=0.0, mode="fixed")),
    CorruptionConfig(misspec=MisspecConfig(angle=0.0, omit=[], length_bias=0.0, project_to=[])),
    CorruptionConfig(misspec=MisspecConfig(scope_tokens=0, scope_prompts=1.0)),
    CorruptionConfig(misspec=MisspecConfig(exploit=0.0, exploit_length=2)),
]


def _world(*dims) -> EnumeratedWorld:
    """An enumerated world with a uniform reference (exact evaluation reports the KL to it)."""
    m = EnumeratedWorld(*dims)
    m.ref = make_reference(m, "uniform")
    return m


def expected_return(m, pi, r) -> float:
    """``J_r(pi)``; ``pi`` and ``r`` are arrays or reward/policy objects."""
    pi = pi if hasattr(pi, "level") else Table(m, pi)
    r = r if hasattr(r, "level") else Table(m, r)
    return m.evaluate(pi, {"r": r})["r"]


def pay_once(ch, m, s, a, rng, carries=None) -> np.ndarray:
    """The payments of single transitions ``(s, a)``, each the first of its episode's payments (nothing pending)."""
    s, a = np.asarray(s), np.asarray(a)
    ends = m.next_state(s, a) < 0
    return ch.pay(np.zeros(s.shape), s, a, m.depth[s], ends, rng, carries)


def pay_step(ch, m, pending, s, a, rng) -> float:
    s, a = np.array([s]), np.array([a])
    return float(ch.pay(pending, s, a, m.depth[s], m.next_state(s, a) < 0, rng)[0])


@given(
    world=st.sampled_from(SMALL_WORLDS),
    kind=st.sampled_from(["linear", "nonlinear", "length", "linear+length"]),
    form=st.sampled_from(["dense", "sequence"]),
    which=st.integers(0, len(ZERO_STRENGTH) - 1),
    seed=st.integers(0, 1000),
)
def test_every_module_at_zero_strength_is_the_identity(world, kind, form, which, seed):
    m = EnumeratedWorld(*world)
    o = make_oracle(m, kind, form, seed)
    ch = build_channel(m, o, ZERO_STRENGTH[which], seed)
    r = m.table(o.reward)
    np.testing.assert_array_equal(m.table(ch.expected()), r)
    rng = np.random.default_rng(seed)
    s = rng.integers(0, m.n_states, 50)
    a = rng.integers(0, m.n_actions, 50)
    np.testing.assert_array_equal(pay_once(ch, m, s, a, rng), r[s, a])


@given(world=st.sampled_from(SMALL_WORLDS), seed=st.integers(0, 1000), k=st.integers(1, 6))
def test_terminal_and_chunk_sparsity_preserve_every_return(world, seed, k):
    m = _world(*world)
    o = make_oracle(m, "nonlinear", "dense", seed)
    r = m.table(o.reward)
    rng = np.random.default_rng(seed)
    pi = random_policy(rng, r.shape, sharp=2.0)
    J = expected_return(m, pi, r)
    term_ch = build_channel(m, o, CorruptionConfig(sparsity=SparsityConfig(mode="terminal")))
    chunk_ch = build_channel(m, o, CorruptionConfig(sparsity=SparsityConfig(mode="chunk", chunk=k)))
    # the tabulated payments (what the channel pays on each transition, given the path so far)
    term = m.table(m.chunk_table(term_ch.reward, m.horizon))
    assert np.all(term[~m.terminal_mask()] == 0)
    assert expected_return(m, pi, term) == pytest.approx(J, abs=1e-9)
    chunk = m.table(m.chunk_table(chunk_ch.reward, k))
    assert np.all(chunk[~m.delivery_mask(k)] == 0)
    assert expected_return(m, pi, chunk) == pytest.approx(J, abs=1e-9)
    np.testing.assert_allclose(m.sequence_form(Table(m, chunk)), m.sequence_form(o.reward), atol=1e-9)
    # what planners optimise: the expected payment has the same return
    for ch in (term_ch, chunk_ch):
        assert expected_return(m, pi, ch.expected()) == pytest.approx(J, abs=1e-9)
    # at run time: along whole episodes, each payment is the tabulated one and every return is kept
    for ch, table in ((term_ch, term), (chunk_ch, chunk)):
        states, actions, paid, alive = m.rollout(Table(m, pi), ch, rng, 64)
        np.testing.assert_allclose(paid, np.where(alive, table[states, actions], 0.0), atol=1e-12)
        np.testing.assert_allclose(paid.sum(axis=1), np.where(alive, r[states, actions], 0.0).sum(axis=1), atol=1e-9)


def test_chunk_pays_the_sum_of_each_block():
    m = EnumeratedWorld(1, 3, 4, eos=False)  # every path has 4 tokens
    r = np.arange(m.n_states * 3, dtype=float).reshape(-1, 3)
    c = m.table(m.chunk_table(Table(m, r), 2))
    s1 = m.encode(0, (1,))
    s2 = m.encode(0, (1, 2))
    s3 = m.encode(0, (1, 2, 0))
    assert c[0, 1] == 0 and c[s1, 2] == r[0, 1] + r[s1, 2]
    assert c[s2, 0] == 0 and c[s3, 1] == r[s2, 0] + r[s3, 1]
    # the channel pays the same along that episode, step by step
    ch = Channel(m, Table(m, r), every=2)
    pending, rng = np.zeros(1), np.random.default_rng(0)
    paid = [pay_step(ch, m, pending, s, a, rng) for s, a in [(0, 1), (s1, 2), (s2, 0), (s3, 1)]]
    assert paid == [0.0, r[0, 1] + r[s1, 2], 0.0, r[s2, 0] + r[s3, 1]]
    assert pending[0] == 0.0


@given(alpha=st.floats(0.0, np.pi), seed=st.integers(0, 10_000), dim=st.integers(2, 300))
def test_misweight_is_at_exactly_alpha_with_same_norm(alpha, seed, dim):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=dim)
    hat = misweight(theta, alpha, rng)
    cos = hat @ theta / (np.linalg.norm(hat) * np.linalg.norm(theta))
    assert cos == pytest.approx(np.cos(alpha), abs=1e-9)
    assert np.linalg.norm(hat) == pytest.approx(np.linalg.norm(theta), rel=1e-12)


def test_misweight_in_the_pipeline_rotates_the_oracle_weights():
    m = EnumeratedWorld(2, 4, 3)
    o = make_oracle(m, "linear", seed=0)
    ch = build_channel(m, o, CorruptionConfig(misspec=MisspecConfig(angle=0.7)), seed=0)
    # the proxy is the oracle's feature map under the rotated weights (the channel's first draw)
    hat_theta = misweight(o.theta, 0.7, np.random.default_rng(0))
    np.testing.assert_allclose(m.table(ch.expected()), m.table(o.features.reward(hat_theta)), atol=1e-12)
    cos = hat_theta @ o.theta / np.linalg.norm(hat_theta) / np.linalg.norm(o.theta)
    assert cos == pytest.approx(np.cos(0.7), abs=1e-12)


def test_delivery_noise_keeps_expected_and_sample_mean():
    m = EnumeratedWorld(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    r = m.table(o.reward)
    sigma, n = 1.5, 20_000
    ch = build_channel(m, o, CorruptionConfig(noise=NoiseConfig(sigma=sigma)), seed=1)
    np.testing.assert_array_equal(m.table(ch.expected()), r)
    rng = np.random.default_rng(2)
    draws = pay_once(ch, m, np.full(n, 3), np.full(n, 2), rng)
    assert abs(draws.mean() - r[3, 2]) < 4 * sigma / np.sqrt(n)
    assert draws.std() == pytest.approx(sigma, rel=0.03)  # sd of the sd estimate is sigma/sqrt(2n) = 0.5%


def test_delivery_noise_lands_only_on_delivering_transitions():
    m = EnumeratedWorld(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    cfg = CorruptionConfig(sparsity=SparsityConfig(mode="terminal"), noise=NoiseConfig(sigma=1.0))
    ch = build_channel(m, o, cfg)
    inner = m.encode(0, (1,))
    assert not m.terminal_mask()[inner, 2]
    assert np.all(pay_once(ch, m, np.full(100, inner), np.full(100, 2), np.random.default_rng(0)) == 0.0)
    # along whole episodes: nothing (not even noise) before the end, the return plus noise at the end
    rng = np.random.default_rng(1)
    states, actions, paid, alive = m.rollout(make_reference(m, "uniform"), ch, rng, 2000)
    last = alive.sum(axis=1) - 1
    at_end = np.zeros_like(alive)
    at_end[np.arange(alive.shape[0]), last] = True
    assert np.all(paid[~at_end] == 0.0)
    r = m.table(o.reward)
    noise = paid.sum(axis=1) - np.where(alive, r[states, actions], 0.0).sum(axis=1)
    assert abs(noise.mean()) < 4 / np.sqrt(noise.size)
    assert noise.std() == pytest.approx(1.0, rel=0.1)


def test_fixed_noise_is_persistent_and_seeded():
    m = EnumeratedWorld(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    cfg = CorruptionConfig(noise=NoiseConfig(sigma=1.0, mode="fixed"))
    a, b, c = (m.table(build_channel(m, o, cfg, seed).expected()) for seed in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # one draw per complete sequence, on its last transition
    diff = a - m.table(o.reward)
    assert np.all(diff[~m.terminal_mask()] == 0) and np.all(diff[m.terminal_mask()] != 0)
    ch = build_channel(m, o, cfg, 5)
    s, t = np.nonzero(m.terminal_mask())
    np.testing.assert_array_equal(pay_once(ch, m, s, t, np.random.default_rng(0)), a[s, t])
    np.testing.assert_array_equal(pay_once(ch, m, s, t, np.random.default_rng(1)), a[s, t])


def test_budget_scales_expected_and_sample_frequency():
    m = EnumeratedWorld(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    r = m.table(o.reward)
    p, n = 0.3, 20_000
    ch = build_channel(m, o, CorruptionConfig(sparsity=SparsityConfig(budget=p)))
    np.testing.assert_allclose(m.table(ch.expected()), p * r, rtol=1e-15)
    draws = pay_once(ch, m, np.full(n, 3), np.full(n, 2), np.random.default_rng(0))
    frac = np.mean(draws != 0)
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert set(np.unique(draws)) == {0.0, r[3, 2]}


def test_budget_keeps_or_drops_whole_episodes():
    m = EnumeratedWorld(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    r = m.table(o.reward)
    p, n = 0.3, 20_000
    ch = build_channel(m, o, CorruptionConfig(sparsity=SparsityConfig(budget=p)))
    states, actions, paid, alive = m.rollout(make_reference(m, "uniform"), ch, np.random.default_rng(0), n)
    dense = np.where(alive, r[states, actions], 0.0)
    kept = np.all(paid == dense, axis=1)
    assert np.all(kept | np.all(paid == 0.0, axis=1))  # each episode is paid in full or not at all
    carried = kept & np.any(dense != 0, axis=1)
    assert abs(carried.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("mode", ["delivery", "fixed"])
def test_quantisation_onto_k_levels(mode):
    m = EnumeratedWorld(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    ch = build_channel(m, o, CorruptionConfig(noise=NoiseConfig(levels=5, mode=mode)))
    r = m.table(ch.expected())
    r_star = m.table(o.reward)
    levels = np.linspace(r_star.min(), r_star.max(), 5)
    assert np.all(np.min(np.abs(r[..., None] - levels), axis=-1) < 1e-12)
    assert np.all(np.abs(r - r_star) <= (levels[1] - levels[0]) / 2 + 1e-12)


def test_quantised_noisy_expectation_is_exact():
    m = EnumeratedWorld(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    ch = build_channel(m, o, CorruptionConfig(noise=NoiseConfig(sigma=0.8, levels=4, drop=0.2)))
    expected = m.table(ch.expected())
    n, rng = 40_000, np.random.default_rng(3)
    for s, a in [(0, 1), (5, 3), (7, 0)]:
        draws = pay_once(ch, m, np.full(n, s), np.full(n, a), rng)
        se = draws.std() / np.sqrt(n)
        assert abs(draws.mean() - expected[s, a]) < 4 * se


def test_quantised_noisy_chunked_expectation_is_exact_along_episodes():
    # sparse delivery pays what was accumulated: E[sum of an episode's payments] is the return of expected()
    m = _world(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    cfg = CorruptionConfig(
        sparsity=SparsityConfig(mode="chunk", chunk=2), noise=NoiseConfig(sigma=0.8, levels=4, drop=0.2)
    )
    ch = build_channel(m, o, cfg)
    n, rng = 40_000, np.random.default_rng(4)
    _, _, paid, _ = m.rollout(m.ref, ch, rng, n)
    total = paid.sum(axis=1)
    assert abs(total.mean() - expected_return(m, m.ref, ch.expected())) < 4 * total.std() / np.sqrt(n)


def test_length_bias_adds_lambda_times_length():
    m = EnumeratedWorld(2, 4, 4)
    for form in ("dense", "sequence"):
        o = make_oracle(m, "linear", form, seed=1)
        r_hat = build_channel(m, o, CorruptionConfig(misspec=MisspecConfig(length_bias=0.7))).expected()
        diff = m.sequence_form(r_hat) - m.sequence_form(o.reward)
        term = m.terminal_mask()
        np.testing.assert_allclose(diff[term], 0.7 * m.end_length_table()[term], atol=1e-12)


def test_omit_all_templates_leaves_nothing_but_the_nonlinear_part():
    m = EnumeratedWorld(2, 4, 3)
    lin = make_oracle(m, "linear", seed=1)
    cfg = CorruptionConfig(misspec=MisspecConfig(omit=list(lin.features.templates)))
    assert np.all(m.table(build_channel(m, lin, cfg).expected()) == 0)
    non = make_oracle(m, "nonlinear", "sequence", seed=1)
    extra = m.table(non.reward) - m.sequence_form(non.features.reward(non.theta))
    np.testing.assert_allclose(m.table(build_channel(m, non, cfg).expected()), extra, atol=1e-12)


def test_projection_is_the_least_squares_fit():
    m = EnumeratedWorld(2, 4, 3)
    o = make_oracle(m, "nonlinear", seed=2)
    cfg = CorruptionConfig(misspec=MisspecConfig(project_to=["unigram", "position"]))
    r_hat = build_channel(m, o, cfg).expected()
    term = m.terminal_mask()
    resid = m.sequence_form(o.reward)[term] - m.sequence_form(r_hat)[term]
    Psi = FeatureMap(m, ["unigram", "position"]).sequences(m.all_sequences())
    np.testing.assert_allclose(Psi.T @ resid, 0, atol=1e-8)  # normal equations: residual ⟂ the class
    # a linear oracle projected onto its own class is itself
    lin = make_oracle(m, "linear", seed=2)
    own = CorruptionConfig(misspec=MisspecConfig(project_to=list(lin.features.templates)))
    np.testing.assert_allclose(
        m.sequence_form(build_channel(m, lin, own).expected())[term],
        m.sequence_form(lin.reward)[term],
        atol=1e-9,
    )


@given(world=st.sampled_from(SMALL_WORLDS), seed=st.integers(0, 1000), k=st.integers(1, 4))
def test_token_scope_pays_the_first_k_tokens_exactly_and_nothing_after(world, seed, k):
    m = EnumeratedWorld(*world)
    o = make_oracle(m, "nonlinear", "dense", seed)
    r_hat = m.table(build_channel(m, o, CorruptionConfig(misspec=MisspecConfig(scope_tokens=k))).expected())
    inside = m.depth < k
    np.testing.assert_array_equal(r_hat[inside], m.table(o.reward)[inside])
    assert np.all(r_hat[~inside] == 0)


def test_prompt_scope_leaves_a_gap_only_on_the_prompts_outside_it():
    cfg = Config()  # 4 prompts
    setup = build_setup(cfg.env, cfg.oracle, CorruptionConfig(misspec=MisspecConfig(scope_prompts=0.5)), seed=0)
    w = setup.world
    r_hat = w.table(setup.channel.expected())
    outside = w.prompt >= 2
    assert np.all(r_hat[outside] == 0)
    np.testing.assert_array_equal(r_hat[~outside], w.table(setup.oracle.reward)[~outside])
    pi = w.greedy_policy(setup.channel.expected())
    gaps = w.prompt_values(None, setup.oracle.reward) - w.prompt_values(pi, setup.oracle.reward)
    assert np.all(gaps[:2] == 0) and np.all(gaps[2:] > 0)  # optimal where the proxy looks, indifferent elsewhere


@pytest.mark.parametrize("form", ["dense", "sequence"])
@pytest.mark.parametrize("length", [None, 0, 2])
def test_exploit_overrates_exactly_one_bad_output_per_prompt(form, length):
    m = _world(3, 4, 3)
    o = make_oracle(m, "nonlinear", form, seed=3)
    cfg = CorruptionConfig(misspec=MisspecConfig(exploit=0.5, exploit_length=length))
    r_hat = build_channel(m, o, cfg).expected()
    s, a = m.terminal_transitions()
    true, proxy = m.sequence_form(o.reward)[s, a], m.sequence_form(r_hat)[s, a]
    ends, prompt = m.end_length_table()[s, a], m.prompt[s]
    changed = ~np.isclose(proxy, true, rtol=0, atol=1e-12)
    for p in range(m.n_prompts):
        mine = np.flatnonzero(prompt == p)
        cand = mine if length is None else mine[ends[mine] == length]
        target = cand[np.argmin(true[cand])]
        assert np.flatnonzero(changed & (prompt == p)).tolist() == [target]  # the one output touched
        rest = mine[mine != target]
        assert proxy[target] == pytest.approx(proxy[rest].max() + 0.5 * true.std(), abs=1e-9)
    pi = m.greedy_policy(r_hat)  # the exact planner falls for it: it returns the worst of those outputs
    fooled = np.array([true[cand].min() for cand in _candidates(m, ends, prompt, length)])
    assert expected_return(m, pi, o.reward) == pytest.approx(fooled.mean(), abs=1e-9)


def _candidates(m, ends, prompt, length):
    return [
        np.flatnonzero((prompt == p) & ((ends == length) if length is not None else True)) for p in range(m.n_prompts)
    ]


def test_exploit_length_must_exist():
    m = EnumeratedWorld(2, 4, 3)
    with pytest.raises(ConfigError, match="corruption.misspec.exploit_length"):
        build_channel(m, make_oracle(m), CorruptionConfig(misspec=MisspecConfig(exploit=1.0, exploit_length=7)))


def test_scope_refuses_what_it_cannot_mean():
    m = EnumeratedWorld(2, 4, 3)
    seq = make_oracle(m, "linear", "sequence", seed=0)
    with pytest.raises(ConfigError, match="corruption.misspec.scope_tokens"):
        build_channel(m, seq, CorruptionConfig(misspec=MisspecConfig(scope_tokens=2)))
    # the capability check of a compressed world moved from the dataclasses to sim.run.check
    cfg = Config(
        env=EnvConfig(compressed=True, reference="uniform"),
        oracle=OracleConfig(templates=["unigram", "position"]),
        corruption=CorruptionConfig(misspec=MisspecConfig(scope_prompts=0.5)),
        agent=AgentConfig(name="exact_planner"),
    )
    with pytest.raises(ConfigError, match="corruption.misspec.scope_prompts"):
        check(cfg)


def test_exact_planner_gap_zero_at_alpha_zero_and_positive_beyond():
    cfg = Config()
    gaps = []
    for alpha in (0.0, 0.5, 1.0, 1.5):
        setup = build_setup(cfg.env, cfg.oracle, CorruptionConfig(misspec=MisspecConfig(angle=alpha)), seed=0)
        w, proxy = setup.world, setup.channel.expected()
        pi = w.greedy_policy(proxy)
        gaps.append(exact_metrics(w, pi, setup.oracle.reward, proxy)["gap"])
    assert gaps[0] == 0.0
    assert max(gaps[1:]) > 0.1


def _with_misspec(**kwargs) -> Config:
    return Config(corruption=CorruptionConfig(misspec=MisspecConfig(**kwargs)))


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda: NoiseConfig(sigma=-0.1), "corruption.noise.sigma"),
        (lambda: NoiseConfig(levels=1), "corruption.noise.levels"),
        (lambda: NoiseConfig(drop=1.0), "corruption.noise.drop"),
        (lambda: NoiseConfig(mode="sometimes"), "corruption.noise.mode"),
        (lambda: SparsityConfig(budget=0.0), "corruption.sparsity.budget"),
        (lambda: SparsityConfig(budget=1.5), "corruption.sparsity.budget"),
        (lambda: SparsityConfig(mode="dense"), "corruption.sparsity.mode"),
        (lambda: SparsityConfig(chunk=0), "corruption.sparsity.chunk"),
        (lambda: MisspecConfig(angle=-0.1), "corruption.misspec.angle"),
        (lambda: MisspecConfig(angle=3.2), "corruption.misspec.angle"),
        # names are checked against the template registry by sim.run.check (the dataclasses know no domain code)
        (lambda: check(_with_misspec(omit=["trigram"])), "corruption.misspec.omit"),
        (lambda: check(_with_misspec(project_to=["unigram", "nope"])), "corruption.misspec.project_to"),
        (lambda: MisspecConfig(scope_tokens=-1), "corruption.misspec.scope_tokens"),
        (lambda: MisspecConfig(scope_prompts=0.0), "corruption.misspec.scope_prompts"),
        (lambda: MisspecConfig(exploit=-1.0), "corruption.misspec.exploit"),
        (lambda: MisspecConfig(exploit_length=-1), "corruption.misspec.exploit_length"),
    ],
)
def test_bad_corruption_values_name_the_key(build, key):
    with pytest.raises(ConfigError) as e:
        build()
    assert e.value.field == key


def test_reweighting_needs_a_linear_part():
    m = EnumeratedWorld(2, 4, 3)
    o = make_oracle(m, "length")
    with pytest.raises(ConfigError, match="corruption.misspec.angle"):
        build_channel(m, o, CorruptionConfig(misspec=MisspecConfig(angle=0.3)))
    lin = make_oracle(m, "linear", templates=["unigram"])
    with pytest.raises(ConfigError, match="corruption.misspec.omit"):
        build_channel(m, lin, CorruptionConfig(misspec=MisspecConfig(omit=["bigram"])))


def test_world_from_env_and_oracle_configs():
    setup = build_setup(EnvConfig(), OracleConfig(), None, 0)
    w = setup.world
    np.testing.assert_array_equal(w.table(setup.channel.expected()), w.table(setup.oracle.reward))


# ------------------------------------------------ what the world interface adds
@pytest.mark.parametrize("mode, k", [("terminal", None), ("chunk", 2)])
def test_sparse_delivery_on_a_compressed_world_keeps_every_return(mode, k):
    # a Markov world cannot tabulate chunks, but its channel accumulates them at run time
    w = MarkovWorld(2, 4, 4, eos=True, track_last_token=True)
    w.ref = make_reference(w, "bigram", np.random.default_rng(0))
    o = make_oracle(w, "linear+stutter", seed=2)
    cfg = CorruptionConfig(sparsity=SparsityConfig(mode=mode, chunk=k or 1))
    ch = build_channel(w, o, cfg)
    with pytest.raises(ConfigError) as e:
        w.chunk_table(ch.reward, ch.every)
    assert e.value.field == "corruption.sparsity.mode"
    every = w.horizon if mode == "terminal" else k
    states, actions, paid, alive = w.rollout(w.ref, ch, np.random.default_rng(1), 500)
    dense = np.where(alive, o.reward.at(states, actions), 0.0)
    np.testing.assert_allclose(paid.sum(axis=1), dense.sum(axis=1), atol=1e-9)
    ends = w.ends(w.depth[states], actions)
    delivers = alive & (ends | ((w.depth[states] + 1) % every == 0))
    assert np.all(paid[~delivers] == 0.0)
    assert expected_return(w, w.ref, ch.expected()) == pytest.approx(expected_return(w, w.ref, o.reward), abs=1e-12)
