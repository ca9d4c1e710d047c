"""The direct corruption pipeline: zero-strength identities, exact invariants, fixed-seed statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.config import AgentConfig, Config, EnvConfig, OracleConfig
from sim.corruption import CorruptionConfig, MisspecConfig, NoiseConfig, SparsityConfig, build_channel
from sim.corruption.misspec import misweight
from sim.corruption.sparsity import chunked, delivery_mask
from sim.errors import ConfigError
from sim.features import sequence_features
from sim.mdp import TextMDP
from sim.metrics import exact_metrics
from sim.oracle import make_oracle, sequence_form
from sim.solvers import expected_return, optimal_policy
from sim.world import build_world
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


@given(
    world=st.sampled_from(SMALL_WORLDS),
    kind=st.sampled_from(["linear", "nonlinear", "length", "linear+length"]),
    form=st.sampled_from(["dense", "sequence"]),
    which=st.integers(0, len(ZERO_STRENGTH) - 1),
    seed=st.integers(0, 1000),
)
def test_every_module_at_zero_strength_is_the_identity(world, kind, form, which, seed):
    m = TextMDP(*world)
    o = make_oracle(m, kind, form, seed)
    ch = build_channel(m, o, ZERO_STRENGTH[which], seed)
    np.testing.assert_array_equal(ch.expected(), o.reward)
    rng = np.random.default_rng(seed)
    s = rng.integers(0, m.n_states, 50)
    a = rng.integers(0, m.n_actions, 50)
    np.testing.assert_array_equal(ch.sample(s, a, rng), o.reward[s, a])


@given(world=st.sampled_from(SMALL_WORLDS), seed=st.integers(0, 1000), k=st.integers(1, 6))
def test_terminal_and_chunk_sparsity_preserve_every_return(world, seed, k):
    m = TextMDP(*world)
    o = make_oracle(m, "nonlinear", "dense", seed)
    pi = random_policy(np.random.default_rng(seed), o.reward.shape, sharp=2.0)
    J = expected_return(m, pi, o.reward)
    term = build_channel(m, o, CorruptionConfig(sparsity=SparsityConfig(mode="terminal"))).expected()
    assert np.all(term[~m.terminal_mask()] == 0)
    assert expected_return(m, pi, term) == pytest.approx(J, abs=1e-9)
    chunk = build_channel(m, o, CorruptionConfig(sparsity=SparsityConfig(mode="chunk", chunk=k))).expected()
    assert np.all(chunk[~delivery_mask(m, k)] == 0)
    assert expected_return(m, pi, chunk) == pytest.approx(J, abs=1e-9)
    np.testing.assert_allclose(sequence_form(m, chunk), sequence_form(m, o.reward), atol=1e-9)


def test_chunk_pays_the_sum_of_each_block():
    m = TextMDP(1, 3, 4, eos=False)  # every path has 4 tokens
    r = np.arange(m.n_states * 3, dtype=float).reshape(-1, 3)
    c = chunked(m, r, 2)
    s1 = m.encode(0, (1,))
    s2 = m.encode(0, (1, 2))
    s3 = m.encode(0, (1, 2, 0))
    assert c[0, 1] == 0 and c[s1, 2] == r[0, 1] + r[s1, 2]
    assert c[s2, 0] == 0 and c[s3, 1] == r[s2, 0] + r[s3, 1]


@given(alpha=st.floats(0.0, np.pi), seed=st.integers(0, 10_000), dim=st.integers(2, 300))
def test_misweight_is_at_exactly_alpha_with_same_norm(alpha, seed, dim):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=dim)
    hat = misweight(theta, alpha, rng)
    cos = hat @ theta / (np.linalg.norm(hat) * np.linalg.norm(theta))
    assert cos == pytest.approx(np.cos(alpha), abs=1e-9)
    assert np.linalg.norm(hat) == pytest.approx(np.linalg.norm(theta), rel=1e-12)


def test_misweight_in_the_pipeline_rotates_the_oracle_weights():
    m = TextMDP(2, 4, 3)
    o = make_oracle(m, "linear", seed=0)
    ch = build_channel(m, o, CorruptionConfig(misspec=MisspecConfig(angle=0.7)), seed=0)
    # the proxy is the oracle's feature map under the rotated weights (the channel's first draw)
    hat_theta = misweight(o.theta, 0.7, np.random.default_rng(0))
    np.testing.assert_allclose(ch.expected(), o.features.reward(hat_theta), atol=1e-12)
    cos = hat_theta @ o.theta / np.linalg.norm(hat_theta) / np.linalg.norm(o.theta)
    assert cos == pytest.approx(np.cos(0.7), abs=1e-12)


def test_delivery_noise_keeps_expected_and_sample_mean():
    m = TextMDP(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    sigma, n = 1.5, 20_000
    ch = build_channel(m, o, CorruptionConfig(noise=NoiseConfig(sigma=sigma)), seed=1)
    np.testing.assert_array_equal(ch.expected(), o.reward)
    rng = np.random.default_rng(2)
    s, a = np.full(n, 3), np.full(n, 2)
    draws = ch.sample(s, a, rng)
    assert abs(draws.mean() - o.reward[3, 2]) < 4 * sigma / np.sqrt(n)
    assert draws.std() == pytest.approx(sigma, rel=0.03)  # sd of the sd estimate is sigma/sqrt(2n) = 0.5%


def test_delivery_noise_lands_only_on_delivering_transitions():
    m = TextMDP(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    cfg = CorruptionConfig(sparsity=SparsityConfig(mode="terminal"), noise=NoiseConfig(sigma=1.0))
    ch = build_channel(m, o, cfg)
    inner = m.encode(0, (1,))
    assert not m.terminal_mask()[inner, 2]
    assert np.all(ch.sample(np.full(100, inner), np.full(100, 2), np.random.default_rng(0)) == 0.0)


def test_fixed_noise_is_persistent_and_seeded():
    m = TextMDP(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    cfg = CorruptionConfig(noise=NoiseConfig(sigma=1.0, mode="fixed"))
    a, b, c = (build_channel(m, o, cfg, seed).expected() for seed in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # one draw per complete sequence, on its last transition
    diff = a - o.reward
    assert np.all(diff[~m.terminal_mask()] == 0) and np.all(diff[m.terminal_mask()] != 0)
    ch = build_channel(m, o, cfg, 5)
    s, t = np.nonzero(m.terminal_mask())
    np.testing.assert_array_equal(ch.sample(s, t, np.random.default_rng(0)), a[s, t])
    np.testing.assert_array_equal(ch.sample(s, t, np.random.default_rng(1)), a[s, t])


def test_budget_scales_expected_and_sample_frequency():
    m = TextMDP(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    p, n = 0.3, 20_000
    ch = build_channel(m, o, CorruptionConfig(sparsity=SparsityConfig(budget=p)))
    np.testing.assert_allclose(ch.expected(), p * o.reward, rtol=1e-15)
    draws = ch.sample(np.full(n, 3), np.full(n, 2), np.random.default_rng(0))
    frac = np.mean(draws != 0)
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert set(np.unique(draws)) == {0.0, o.reward[3, 2]}


@pytest.mark.parametrize("mode", ["delivery", "fixed"])
def test_quantisation_onto_k_levels(mode):
    m = TextMDP(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    ch = build_channel(m, o, CorruptionConfig(noise=NoiseConfig(levels=5, mode=mode)))
    r = ch.expected()
    levels = np.linspace(o.reward.min(), o.reward.max(), 5)
    assert np.all(np.min(np.abs(r[..., None] - levels), axis=-1) < 1e-12)
    assert np.all(np.abs(r - o.reward) <= (levels[1] - levels[0]) / 2 + 1e-12)


def test_quantised_noisy_expectation_is_exact():
    m = TextMDP(2, 4, 3)
    o = make_oracle(m, "linear", seed=1)
    ch = build_channel(m, o, CorruptionConfig(noise=NoiseConfig(sigma=0.8, levels=4, drop=0.2)))
    n, rng = 40_000, np.random.default_rng(3)
    for s, a in [(0, 1), (5, 3), (7, 0)]:
        draws = ch.sample(np.full(n, s), np.full(n, a), rng)
        se = draws.std() / np.sqrt(n)
        assert abs(draws.mean() - ch.expected()[s, a]) < 4 * se


def test_length_bias_adds_lambda_times_length():
    m = TextMDP(2, 4, 4)
    for form in ("dense", "sequence"):
        o = make_oracle(m, "linear", form, seed=1)
        r_hat = build_channel(m, o, CorruptionConfig(misspec=MisspecConfig(length_bias=0.7))).expected()
        diff = sequence_form(m, r_hat) - sequence_form(m, o.reward)
        term = m.terminal_mask()
        np.testing.assert_allclose(diff[term], 0.7 * m.end_length()[term], atol=1e-12)


def test_omit_all_templates_leaves_nothing_but_the_nonlinear_part():
    m = TextMDP(2, 4, 3)
    lin = make_oracle(m, "linear", seed=1)
    cfg = CorruptionConfig(misspec=MisspecConfig(omit=list(lin.features.templates)))
    assert np.all(build_channel(m, lin, cfg).expected() == 0)
    non = make_oracle(m, "nonlinear", "sequence", seed=1)
    extra = non.reward - sequence_form(m, non.features.reward(non.theta))
    np.testing.assert_allclose(build_channel(m, non, cfg).expected(), extra, atol=1e-12)


def test_projection_is_the_least_squares_fit():
    m = TextMDP(2, 4, 3)
    o = make_oracle(m, "nonlinear", seed=2)
    cfg = CorruptionConfig(misspec=MisspecConfig(project_to=["unigram", "position"]))
    r_hat = build_channel(m, o, cfg).expected()
    term = m.terminal_mask()
    resid = sequence_form(m, o.reward)[term] - sequence_form(m, r_hat)[term]
    from sim.features import FeatureMap

    Psi = sequence_features(FeatureMap(m, ["unigram", "position"]))
    np.testing.assert_allclose(Psi.T @ resid, 0, atol=1e-8)  # normal equations: residual ⟂ the class
    # a linear oracle projected onto its own class is itself
    lin = make_oracle(m, "linear", seed=2)
    own = CorruptionConfig(misspec=MisspecConfig(project_to=list(lin.features.templates)))
    np.testing.assert_allclose(
        sequence_form(m, build_channel(m, lin, own).expected())[term],
        sequence_form(m, lin.reward)[term],
        atol=1e-9,
    )


@given(world=st.sampled_from(SMALL_WORLDS), seed=st.integers(0, 1000), k=st.integers(1, 4))
def test_token_scope_pays_the_first_k_tokens_exactly_and_nothing_after(world, seed, k):
    m = TextMDP(*world)
    o = make_oracle(m, "nonlinear", "dense", seed)
    r_hat = build_channel(m, o, CorruptionConfig(misspec=MisspecConfig(scope_tokens=k))).expected()
    inside = m.depth < k
    np.testing.assert_array_equal(r_hat[inside], o.reward[inside])
    assert np.all(r_hat[~inside] == 0)


def test_prompt_scope_leaves_a_gap_only_on_the_prompts_outside_it():
    from sim.metrics import per_prompt_gap

    cfg = Config()  # 4 prompts
    w = build_world(cfg.env, cfg.oracle, CorruptionConfig(misspec=MisspecConfig(scope_prompts=0.5)), seed=0)
    r_hat = w.channel.expected()
    outside = w.mdp.prompt >= 2
    assert np.all(r_hat[outside] == 0)
    np.testing.assert_array_equal(r_hat[~outside], w.oracle.reward[~outside])
    gaps = per_prompt_gap(w.mdp, optimal_policy(w.mdp, r_hat), w.oracle.reward)
    assert np.all(gaps[:2] == 0) and np.all(gaps[2:] > 0)  # optimal where the proxy looks, indifferent elsewhere


@pytest.mark.parametrize("form", ["dense", "sequence"])
@pytest.mark.parametrize("length", [None, 0, 2])
def test_exploit_overrates_exactly_one_bad_output_per_prompt(form, length):
    from sim.features import terminal_transitions

    m = TextMDP(3, 4, 3)
    o = make_oracle(m, "nonlinear", form, seed=3)
    cfg = CorruptionConfig(misspec=MisspecConfig(exploit=0.5, exploit_length=length))
    r_hat = build_channel(m, o, cfg).expected()
    s, a = terminal_transitions(m)
    true, proxy = sequence_form(m, o.reward)[s, a], sequence_form(m, r_hat)[s, a]
    ends, prompt = m.end_length()[s, a], m.prompt[s]
    changed = ~np.isclose(proxy, true, rtol=0, atol=1e-12)
    for p in range(m.n_prompts):
        mine = np.flatnonzero(prompt == p)
        cand = mine if length is None else mine[ends[mine] == length]
        target = cand[np.argmin(true[cand])]
        assert np.flatnonzero(changed & (prompt == p)).tolist() == [target]  # the one output touched
        rest = mine[mine != target]
        assert proxy[target] == pytest.approx(proxy[rest].max() + 0.5 * true.std(), abs=1e-9)
    pi = optimal_policy(m, r_hat)  # the exact planner falls for it: it returns the worst of those outputs
    fooled = np.array([true[cand].min() for cand in _candidates(m, ends, prompt, length)])
    assert expected_return(m, pi, o.reward) == pytest.approx(fooled.mean(), abs=1e-9)


def _candidates(m, ends, prompt, length):
    return [
        np.flatnonzero((prompt == p) & ((ends == length) if length is not None else True)) for p in range(m.n_prompts)
    ]


def test_exploit_length_must_exist():
    m = TextMDP(2, 4, 3)
    with pytest.raises(ConfigError, match="corruption.misspec.exploit_length"):
        build_channel(m, make_oracle(m), CorruptionConfig(misspec=MisspecConfig(exploit=1.0, exploit_length=7)))


def test_scope_refuses_what_it_cannot_mean():
    m = TextMDP(2, 4, 3)
    seq = make_oracle(m, "linear", "sequence", seed=0)
    with pytest.raises(ConfigError, match="corruption.misspec.scope_tokens"):
        build_channel(m, seq, CorruptionConfig(misspec=MisspecConfig(scope_tokens=2)))
    with pytest.raises(ConfigError, match="corruption.misspec.scope_prompts"):
        Config(
            env=EnvConfig(compressed=True, reference="uniform"),
            oracle=OracleConfig(templates=["unigram", "position"]),
            corruption=CorruptionConfig(misspec=MisspecConfig(scope_prompts=0.5)),
            agent=AgentConfig(name="exact_planner"),
        )


def test_exact_planner_gap_zero_at_alpha_zero_and_positive_beyond():
    cfg = Config()
    gaps = []
    for alpha in (0.0, 0.5, 1.0, 1.5):
        w = build_world(cfg.env, cfg.oracle, CorruptionConfig(misspec=MisspecConfig(angle=alpha)), seed=0)
        pi = optimal_policy(w.mdp, w.channel.expected())
        gaps.append(exact_metrics(w.mdp, pi, w.oracle.reward, w.channel.expected(), w.ref_policy)["gap"])
    assert gaps[0] == 0.0
    assert max(gaps[1:]) > 0.1


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
        (lambda: MisspecConfig(omit=["trigram"]), "corruption.misspec.omit"),
        (lambda: MisspecConfig(project_to=["unigram", "nope"]), "corruption.misspec.project_to"),
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
    m = TextMDP(2, 4, 3)
    o = make_oracle(m, "length")
    with pytest.raises(ConfigError, match="corruption.misspec.angle"):
        build_channel(m, o, CorruptionConfig(misspec=MisspecConfig(angle=0.3)))
    lin = make_oracle(m, "linear", templates=["unigram"])
    with pytest.raises(ConfigError, match="corruption.misspec.omit"):
        build_channel(m, lin, CorruptionConfig(misspec=MisspecConfig(omit=["bigram"])))


def test_world_from_env_and_oracle_configs():
    w = build_world(EnvConfig(), OracleConfig(), None, 0)
    np.testing.assert_array_equal(w.channel.expected(), w.oracle.reward)
