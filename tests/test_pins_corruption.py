"""Pins of the corruption pipeline (sim.corruption) against hand computation (mutation testing, issue #18).

Quantisation ``Q(v) = lo + step * rint((clip(v, lo, hi) - lo) / step)``, ``step = (hi - lo) / (K - 1)``, and its
exact Gaussian expectation; the channel's fixed-mode drop mask and quantisation alone; misspecification of a
sequence-form oracle (the proxy must stay in sequence form).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from sim.config import CorruptionConfig, MisspecConfig, NoiseConfig, SparsityConfig
from sim.corruption import build_channel
from sim.corruption.noise import Quantizer, quantizer_for
from sim.oracle import make_oracle
from sim.worlds import EnumeratedWorld


def test_quantizer_rounds_onto_k_levels_and_clips():
    q = Quantizer(-1.0, 2.0, 4)  # levels -1, 0, 1, 2
    assert q.step == 1.0
    v = np.array([-3.0, -0.6, -0.4, 0.45, 0.55, 1.49, 1.51, 2.2, 7.0])
    np.testing.assert_array_equal(q(v), [-1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    two = Quantizer(0.5, 3.5, 2)  # levels=2: the two ends, the midpoint 2 the edge
    np.testing.assert_array_equal(two(np.array([-1.0, 1.9, 2.1, 9.0])), [0.5, 0.5, 3.5, 3.5])
    assert two.step == 3.0


def test_a_constant_reward_quantises_to_itself_not_nan():
    q = quantizer_for(np.full(6, 1.25), 5)
    assert q == Quantizer(1.25, 1.25, 5)
    v = np.array([1, 2, 3])  # an integer array still gives float levels
    out = q(v)
    assert out.dtype == np.float64 and np.array_equal(out, [1.25, 1.25, 1.25])
    e = q.expected(np.array([1.25, 0.0]), 0.7)
    assert np.array_equal(e, [1.25, 1.25])
    assert np.array_equal(q.expected(np.array([1, 4]), 0.0), [1.25, 1.25])


def test_quantizer_for_spans_the_values_and_is_off_without_levels():
    assert quantizer_for(np.array([0.5, -2.0, 3.0]), 0) is None
    assert quantizer_for(np.array([]), 3) is None
    assert quantizer_for(np.array([2.0]), 3) == Quantizer(2.0, 2.0, 3)
    q = quantizer_for(np.array([0.5, -2.0, 3.0]), 6)
    assert q == Quantizer(-2.0, 3.0, 6) and isinstance(q.levels, int)


def _expected_by_quadrature(q: Quantizer, mean: float, sigma: float) -> float:
    """``E[Q(mean + eps)]``, ``eps ~ N(0, sigma^2)``, by numerical integration over each level's interval."""
    edges = [-np.inf, *(q.lo + (j - 0.5) * q.step for j in range(1, q.levels)), np.inf]
    total = 0.0
    for j in range(q.levels):
        mass = integrate.quad(lambda x: stats.norm.pdf(x, mean, sigma), edges[j], edges[j + 1])[0]
        total += (q.lo + j * q.step) * mass
    return total


@pytest.mark.parametrize("sigma", [1.0, 0.35])
def test_quantised_gaussian_expectation_by_quadrature(sigma):
    q = Quantizer(-1.0, 2.0, 4)
    means = np.array([-1.7, -0.2, 0.5, 1.3, 2.6])
    got = q.expected(means, sigma)
    want = [_expected_by_quadrature(q, m, sigma) for m in means]
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    # the expectation is smooth: at an edge it is the midpoint of the two levels (Q itself rounds half to even)
    assert q.expected(np.array([0.5]), sigma)[0] == pytest.approx(0.5, abs=0.02 if sigma == 1.0 else 1e-9)
    ints = q.expected(np.array([0, 1]), sigma)  # integer means: float output
    np.testing.assert_allclose(ints, [_expected_by_quadrature(q, 0.0, sigma), _expected_by_quadrature(q, 1.0, sigma)])


def test_quantised_expectation_without_noise_is_q_itself_even_on_an_edge():
    q = Quantizer(0.0, 3.0, 4)
    np.testing.assert_array_equal(q.expected(np.array([0.5, 1.7, 2.5, -1.0]), 0.0), [0.0, 2.0, 2.0, 0.0])


def _small(form="dense"):
    world = EnumeratedWorld(2, 3, 3)
    return world, make_oracle(world, "linear", form=form, seed=2)


def test_fixed_mode_with_only_drop_loses_the_same_payments_every_time():
    world, oracle = _small()
    r = world.table(oracle.reward)
    ch = build_channel(world, oracle, CorruptionConfig(noise=NoiseConfig(drop=0.4, mode="fixed")), seed=11)
    assert ch.fixed_drop is not None and ch.fixed_quantizer is None and ch.drop == 0.0 and ch.sigma == 0.0
    lost = ch.fixed_drop
    valid = np.zeros_like(lost)
    valid[:, world.first_token :] = True
    valid[:, 0] = world.eos
    frac = lost[valid].mean()  # about 0.4 of the (S, A) payments: 2 * 13 states x 3 tokens here
    assert abs(frac - 0.4) < 4 * np.sqrt(0.24 / valid.sum())
    np.testing.assert_array_equal(world.table(ch.expected()), np.where(lost, 0.0, r))  # no (1 - drop) factor
    s, a = np.nonzero(valid)
    for seed in (0, 1):
        ends = world.next_state(s, a) < 0
        paid = ch.pay(np.zeros(s.size), s, a, world.depth[s], ends, np.random.default_rng(seed))
        np.testing.assert_array_equal(paid, np.where(lost[s, a], 0.0, r[s, a]))
    # chunked: only delivering transitions can be lost
    chunked = CorruptionConfig(
        sparsity=SparsityConfig(mode="chunk", chunk=2), noise=NoiseConfig(drop=0.5, mode="fixed")
    )
    ch = build_channel(world, oracle, chunked, seed=11)
    assert not np.any(ch.fixed_drop & ~world.delivery_mask(2))
    assert ch.fixed_drop.any()


def test_delivery_quantisation_alone_pays_q_of_each_payment():
    world, oracle = _small()
    r = world.table(oracle.reward)
    ch = build_channel(world, oracle, CorruptionConfig(noise=NoiseConfig(levels=3)))
    valid = np.zeros(r.shape, dtype=bool)
    valid[:, world.first_token :] = True
    valid[:, 0] = world.eos
    lo, hi = r.min(), r.max()
    q = Quantizer(lo, hi, 3)
    assert ch.quantizer == q and ch.fixed_quantizer is None and ch.sigma == 0.0 and ch.drop == 0.0
    np.testing.assert_allclose(world.table(ch.expected()), q(r), rtol=1e-15)
    s, a = np.nonzero(valid)
    paid = ch.pay(np.zeros(s.size), s, a, world.depth[s], world.next_state(s, a) < 0, np.random.default_rng(0))
    np.testing.assert_array_equal(paid, q(r[s, a]))
    assert set(np.unique(paid)) <= {lo, (lo + hi) / 2, hi}


def test_two_levels_pay_the_two_ends():
    world, oracle = _small()
    r = world.table(oracle.reward)
    for mode in ("delivery", "fixed"):
        ch = build_channel(world, oracle, CorruptionConfig(noise=NoiseConfig(levels=2, mode=mode)))
        got = world.table(ch.expected())
        np.testing.assert_array_equal(got, np.where(r - r.min() > (r.max() - r.min()) / 2, r.max(), r.min()))


class _ConstantOracle:
    """An oracle paying the same reward on every transition (nothing linear to misweight)."""

    form, features, theta, rest = "dense", None, None, None

    def __init__(self, world, c):
        self.reward = world.table_reward(np.full((world.n_states, world.n_actions), c))


def test_quantising_a_constant_reward_keeps_it():
    world, _ = _small()
    oracle = _ConstantOracle(world, 0.75)
    for noise in (NoiseConfig(levels=4), NoiseConfig(levels=4, sigma=0.5), NoiseConfig(levels=3, mode="fixed")):
        ch = build_channel(world, oracle, CorruptionConfig(noise=noise))
        got = world.table(ch.expected())
        assert np.all(np.isfinite(got)) and np.all(got == 0.75), noise


def test_describe_lists_every_active_setting():
    assert CorruptionConfig().describe() == "none"
    cfg = CorruptionConfig(
        sparsity=SparsityConfig(mode="terminal", chunk=3, budget=0.5),
        noise=NoiseConfig(sigma=0.25, drop=0.1, mode="fixed"),
        misspec=MisspecConfig(angle=0.3, length_bias=-0.2),
    )
    assert cfg.describe() == (
        "sparsity.mode=terminal, sparsity.budget=0.5, noise.sigma=0.25, noise.drop=0.1, noise.mode=fixed, "
        "misspec.angle=0.3, misspec.length_bias=-0.2"
    )
    assert CorruptionConfig(sparsity=SparsityConfig(mode="chunk", chunk=3)).describe() == (
        "sparsity.mode=chunk, sparsity.chunk=3"
    )
    assert CorruptionConfig(noise=NoiseConfig(mode="fixed")).describe() == "none"  # a mode without noise is none


def test_a_sequence_form_oracle_keeps_a_sequence_form_proxy():
    world, oracle = _small("sequence")
    terminal = world.terminal_mask()
    assert np.all(world.table(oracle.reward)[~terminal] == 0)
    seqs = world.all_sequences()
    for misspec in (MisspecConfig(length_bias=0.3), MisspecConfig(angle=0.9), MisspecConfig(scope_prompts=0.5)):
        proxy = build_channel(world, oracle, CorruptionConfig(misspec=misspec), seed=4).reward
        table = world.table(proxy)
        assert np.all(table[~terminal] == 0), misspec  # paid at the end only, like the oracle
        assert np.any(table[terminal] != world.table(oracle.reward)[terminal])
    proxy = build_channel(world, oracle, CorruptionConfig(misspec=MisspecConfig(length_bias=0.3))).reward
    from sim.corruption.misspec import response_length

    np.testing.assert_allclose(
        world.sequence_returns(proxy, seqs),
        world.sequence_returns(oracle.reward, seqs) + 0.3 * response_length(world, seqs),
        rtol=1e-12,
        atol=1e-12,
    )


def test_misweight_at_zero_is_theta_itself_and_draws_nothing():
    from sim.corruption.misspec import misweight

    theta = np.array([0.5, -1.5, 2.0])
    rng = np.random.default_rng(3)
    assert misweight(theta, 0.0, rng) is theta
    assert rng.random() == np.random.default_rng(3).random()
    hat = misweight(theta, 0.7, np.random.default_rng(3))
    # u is the draw z ~ N(0, I) with its theta component removed, normalised (uniform on the circle orthogonal to theta)
    z = np.random.default_rng(3).normal(size=3)
    z -= (z @ theta) / (theta @ theta) * theta
    want = np.cos(0.7) * theta + np.sin(0.7) * np.linalg.norm(theta) * z / np.linalg.norm(z)
    np.testing.assert_allclose(hat, want, rtol=1e-13, atol=1e-15)
    u = (hat - np.cos(0.7) * theta) / (np.sin(0.7) * np.linalg.norm(theta))
    assert abs(u @ theta) < 1e-14 and np.linalg.norm(u) == pytest.approx(1.0, rel=1e-14)
    assert np.linalg.norm(hat) == pytest.approx(np.linalg.norm(theta), rel=1e-14)


def test_omit_zeroes_exactly_the_named_blocks():
    from sim.corruption.misspec import omit
    from sim.errors import ConfigError

    world, oracle = _small()
    fm = oracle.features
    theta = np.arange(1.0, fm.dim + 1.0)
    out = omit(fm, theta, ["position", "prompt"])
    for k, name in enumerate(fm.templates):
        block = slice(fm.offsets[k], fm.offsets[k + 1])
        if name in ("position", "prompt"):
            assert np.all(out[block] == 0), name
        else:
            np.testing.assert_array_equal(out[block], theta[block])
    assert theta[0] == 1.0  # the input is not modified
    with pytest.raises(ConfigError) as err:
        omit(fm, theta, ["trigram"])
    assert (err.value.field, err.value.value) == ("corruption.misspec.omit", "trigram")
    assert err.value.allowed == f"templates of the oracle's linear part {list(fm.templates)}"


def test_prompt_scope_rounds_the_covered_fraction_up_despite_rounding():
    from sim.corruption.misspec import restrict_scope

    world = EnumeratedWorld(10, 2, 2)
    r = np.arange(1.0, world.n_states * world.n_actions + 1).reshape(world.n_states, world.n_actions)
    for fraction, covered in [(0.7, 7), (0.25, 3), (1.0, 10), (0.05, 1)]:  # 0.7 * 10 = 7.000000000000001
        out = world.table(restrict_scope(world, world.table_reward(r), prompts=fraction))
        inside = world.prompt < covered
        np.testing.assert_array_equal(out[inside], r[inside])
        assert np.all(out[~inside] == 0), fraction
    out = world.table(restrict_scope(world, world.table_reward(r), tokens=1))
    np.testing.assert_array_equal(out, np.where(world.depth[:, None] >= 1, 0.0, r))


def test_response_length_counts_tokens_but_not_eos():
    from sim.corruption.misspec import response_length

    for eos in (True, False):
        world = EnumeratedWorld(2, 3, 3, eos=eos)
        seqs = world.all_sequences()
        last = seqs.tokens[np.arange(seqs.n), seqs.length - 1]
        want = seqs.length - ((last == 0) if eos else 0)
        np.testing.assert_array_equal(response_length(world, seqs), want)
        assert (response_length(world, seqs) < seqs.length).any() == eos


def test_misspecify_without_settings_is_the_oracle_reward_itself():
    from sim.corruption.misspec import misspecify, response_length
    from sim.errors import ConfigError

    for form in ("dense", "sequence"):
        world, oracle = _small(form)
        assert misspecify(world, oracle, MisspecConfig(), np.random.default_rng(0)) is oracle.reward
        # a length bias of exactly 1 is a setting like any other
        seqs = world.all_sequences()
        biased = misspecify(world, oracle, MisspecConfig(length_bias=1.0), np.random.default_rng(0))
        np.testing.assert_allclose(
            world.sequence_returns(biased, seqs),
            world.sequence_returns(oracle.reward, seqs) + response_length(world, seqs),
            rtol=1e-12,
        )
    world, _ = _small()
    const = _ConstantOracle(world, 1.0)
    allowed = "only with an oracle that has a linear part (oracle.kind linear/nonlinear)"
    for cfg, key, value in [
        (MisspecConfig(angle=0.5), "corruption.misspec.angle", 0.5),
        (MisspecConfig(omit=["unigram"]), "corruption.misspec.omit", ["unigram"]),
    ]:
        with pytest.raises(ConfigError) as err:
            misspecify(world, const, cfg, np.random.default_rng(0))
        assert (err.value.field, err.value.value, err.value.allowed) == (key, value, allowed)


def test_fixed_quantisation_of_chunked_payments_in_expectation_and_in_payment():
    world, oracle = _small()
    cfg = CorruptionConfig(sparsity=SparsityConfig(mode="chunk", chunk=2), noise=NoiseConfig(levels=3, mode="fixed"))
    ch = build_channel(world, oracle, cfg)
    deliver = world.delivery_mask(2)
    chunks = world.table(world.chunk_table(oracle.reward, 2))
    q = quantizer_for(chunks[deliver], 3)
    assert ch.fixed_quantizer == q and ch.quantizer is None and ch.every == 2
    got = world.table(ch.expected())
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.where(deliver, q(chunks), 0.0))
    # along an episode: the first token pays nothing (pending), the second pays Q(r0 + r1)
    s0, a0 = 0, world.first_token
    s1, a1 = int(world.next_state(np.array([s0]), np.array([a0]))[0]), world.first_token
    r = world.table(oracle.reward)
    pending = np.zeros(1)
    first = ch.pay(pending, np.array([s0]), np.array([a0]), world.depth[[s0]], np.array([False]), None)
    assert first[0] == 0.0 and pending[0] == r[s0, a0]
    second = ch.pay(pending, np.array([s1]), np.array([a1]), world.depth[[s1]], np.array([False]), None)
    assert second[0] == q(np.array([r[s0, a0] + r[s1, a1]]))[0] and pending[0] == 0.0


def test_zero_strength_pays_the_reward_object_itself_and_flags_every_episode():
    from sim.corruption import identity_channel

    world, oracle = _small()
    ch = build_channel(world, oracle)
    assert ch.expected() is oracle.reward and ch.reward is oracle.reward
    assert ch.episode_flags(5, np.random.default_rng(0)) is None
    ident = identity_channel(world, oracle.reward)
    assert ident.world is world and ident.expected() is oracle.reward
    budget = build_channel(world, oracle, CorruptionConfig(sparsity=SparsityConfig(budget=0.3)))
    flags = budget.episode_flags(20_000, np.random.default_rng(1))
    assert flags.dtype == bool and abs(flags.mean() - 0.3) < 4 * np.sqrt(0.21 / 20_000)
    np.testing.assert_allclose(world.table(budget.expected()), 0.3 * world.table(oracle.reward), rtol=1e-15)


def test_error_law_centres_and_scales_by_hand():
    from sim.corruption.noise import GAUSSIAN_IQR, error_law

    assert error_law("gaussian", 0.8) == (0.0, 0.8)
    # Lomax: mean 1 / (alpha - 1) and sd sqrt(alpha / ((alpha - 1)^2 (alpha - 2))) for alpha > 2; at alpha = 4: 1/3, 1/3
    centre, scale = error_law("pareto", 0.8, alpha=4.0)
    assert centre == pytest.approx(1 / 3, rel=1e-14) and scale == pytest.approx(0.8 / np.sqrt(4 / 18), rel=1e-14)
    # alpha = 2 has a mean but no variance: the bulk's spread, IQR 4^(1/2) - (4/3)^(1/2), sets the scale
    centre, scale = error_law("pareto", 0.8, alpha=2.0)
    assert centre == 1.0 and scale == pytest.approx(0.8 * GAUSSIAN_IQR / (2 - np.sqrt(4 / 3)), rel=1e-14)
    # alpha <= 1 has no mean: centred at the median 2^(1/alpha) - 1
    assert error_law("pareto", 0.8, alpha=1.0)[0] == 1.0
    assert error_law("pareto", 0.8, alpha=0.8)[0] == pytest.approx(2**1.25 - 1, rel=1e-14)
    # Student t: sd sqrt(df / (df - 2)) above df = 2, the t quartiles below; df = 3 and alpha = 3 are the defaults
    assert error_law("student_t", 0.8, df=5.0) == (0.0, pytest.approx(0.8 / np.sqrt(5 / 3), rel=1e-14))
    assert error_law("student_t", 0.8) == error_law("student_t", 0.8, df=3.0) != error_law("student_t", 0.8, df=4.0)
    assert error_law("pareto", 0.8) == error_law("pareto", 0.8, alpha=3.0) != error_law("pareto", 0.8, alpha=4.0)
    with pytest.raises(ValueError, match=r"unknown noise distribution 'cauchy'; choose from \['gaussian', 'student_t'"):
        error_law("cauchy", 0.8)


def test_fixed_errors_defaults_are_those_of_error_law():
    from sim.corruption.noise import fixed_errors

    for dist, kw in [("student_t", {"df": 3.0}), ("pareto", {"alpha": 3.0})]:
        a = fixed_errors(np.random.default_rng(5), 50, 0.7, dist)
        np.testing.assert_array_equal(a, fixed_errors(np.random.default_rng(5), 50, 0.7, dist, **kw))
        other = {k: 4.0 for k in kw}
        assert not np.array_equal(a, fixed_errors(np.random.default_rng(5), 50, 0.7, dist, **other))


def test_fixed_errors_are_the_documented_draws_on_the_last_transitions():
    from sim.corruption.noise import fixed_errors

    world, oracle = _small()
    r = world.table(oracle.reward)
    s, a = world.terminal_transitions()
    cases = [
        (NoiseConfig(sigma=0.6, mode="fixed"), lambda g: g.normal(0.0, 0.6, size=s.size)),
        (NoiseConfig(sigma=0.6, mode="fixed", dist="student_t", df=5.0),
         lambda g: fixed_errors(g, s.size, 0.6, "student_t", 5.0, 3.0)),
        (NoiseConfig(sigma=0.6, mode="fixed", dist="pareto", alpha=2.5),
         lambda g: fixed_errors(g, s.size, 0.6, "pareto", 3.0, 2.5)),
    ]  # fmt: skip
    for noise, draw in cases:
        ch = build_channel(world, oracle, CorruptionConfig(noise=noise), seed=7)
        want = r.copy()
        want[s, a] += draw(np.random.default_rng(7))
        np.testing.assert_array_equal(world.table(ch.expected()), want)
        assert ch.fixed_drop is None and ch.fixed_quantizer is None
    # the default seed is 0
    cfg = CorruptionConfig(noise=NoiseConfig(sigma=0.6, mode="fixed"))
    np.testing.assert_array_equal(
        world.table(build_channel(world, oracle, cfg).expected()),
        world.table(build_channel(world, oracle, cfg, seed=0).expected()),
    )


def test_fixed_drop_alone_leaves_the_reward_and_reaches_every_token():
    world, oracle = _small()
    ch = build_channel(world, oracle, CorruptionConfig(noise=NoiseConfig(drop=0.4, mode="fixed")), seed=11)
    assert ch.reward is oracle.reward  # no Gaussian part: nothing added
    first = world.depth[:, None] + np.zeros(world.n_actions, dtype=int) == 0
    assert (ch.fixed_drop & first & ~world.terminal_mask()).any()  # every token delivers without sparsity


def test_a_budget_and_a_chunk_of_one_survive_every_mode():
    world, oracle = _small()
    r = world.table(oracle.reward)
    for mode in ("delivery", "fixed"):
        cfg = CorruptionConfig(sparsity=SparsityConfig(mode="chunk", chunk=1, budget=0.5), noise=NoiseConfig(
            sigma=0.0 if mode == "delivery" else 0.3, mode=mode))  # fmt: skip
        ch = build_channel(world, oracle, cfg, seed=2)
        assert ch.budget == 0.5 and ch.every is None  # a chunk of 1 is every token
        np.testing.assert_allclose(world.table(ch.expected()), 0.5 * world.table(ch.reward), rtol=1e-15)
    ch = build_channel(world, oracle, CorruptionConfig(noise=NoiseConfig(drop=0.25)))
    assert ch.drop == 0.25 and ch.fixed_drop is None
    np.testing.assert_allclose(world.table(ch.expected()), 0.75 * r, rtol=1e-15)
    n = 20_000
    paid = ch.pay(np.zeros(n), np.full(n, 0), np.full(n, 1), np.zeros(n, dtype=int), np.zeros(n, bool),
                  np.random.default_rng(3))  # fmt: skip
    assert abs(np.mean(paid == 0) - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n) and set(np.unique(paid)) == {0.0, r[0, 1]}


def test_exploit_beats_the_best_other_output_by_the_margin_exactly():
    from sim.corruption.misspec import add_exploit
    from sim.errors import ConfigError

    world = EnumeratedWorld(2, 2, 1)  # two outputs per prompt: EOS and one token
    seqs = world.all_sequences()
    assert np.all(np.bincount(seqs.prompt) == 2)
    true = world.table_reward(np.array([[1.0, 3.0], [2.5, 0.5]]))
    proxy = world.table_reward(np.array([[4.0, 2.0], [1.0, 1.5]]))
    R = world.sequence_returns(true, seqs)
    unit = R.std()
    got = world.sequence_returns(add_exploit(world, proxy, true, 0.5), seqs)
    seen = world.sequence_returns(proxy, seqs)
    for p in range(2):
        mine = np.flatnonzero(seqs.prompt == p)
        worst, other = mine if R[mine[0]] < R[mine[1]] else mine[::-1]
        assert got[worst] == pytest.approx(seen[other] + 0.5 * unit, rel=1e-13)
        assert got[other] == seen[other]
    # a constant oracle has no spread: the margin is in units of 1
    flat = world.table_reward(np.full((world.n_states, world.n_actions), 2.0))
    got = world.sequence_returns(add_exploit(world, proxy, flat, 0.5), seqs)
    for p in range(2):
        mine = np.flatnonzero(seqs.prompt == p)
        assert got[mine[0]] == pytest.approx(seen[mine[1]] + 0.5, rel=1e-13)  # the first of equals is the worst
    with pytest.raises(ConfigError) as err:
        add_exploit(world, proxy, true, 0.5, length=4)
    assert (err.value.field, err.value.value, err.value.allowed) == (
        "corruption.misspec.exploit_length",
        4,
        "a response length among [0, 1]",
    )


def test_projection_names_its_key_for_an_unknown_template():
    from sim.corruption.misspec import project
    from sim.errors import ConfigError

    world, oracle = _small()
    with pytest.raises(ConfigError) as err:
        project(world, oracle.reward, ["nonsense"])
    assert err.value.field == "corruption.misspec.project_to"


def test_token_scope_on_a_sequence_form_oracle_names_its_key():
    from sim.corruption.misspec import misspecify
    from sim.errors import ConfigError

    world, oracle = _small("sequence")
    with pytest.raises(ConfigError) as err:
        misspecify(world, oracle, MisspecConfig(scope_tokens=2), np.random.default_rng(0))
    assert (err.value.field, err.value.value, err.value.allowed) == (
        "corruption.misspec.scope_tokens",
        2,
        "0 with oracle.form=sequence (a sequence-form reward is paid at the end, not token by token)",
    )


def test_token_noise_is_the_reward_table_plus_one_exact_draw_per_state_and_token():
    """``unit=token``: reward + fixed_errors(rng, S * A, sigma, dist, df, alpha) drawn right after misspecification
    (pareto with alpha 1.5, not the default 3: the law's own parameter reaches the draw)."""
    import sim.corruption.misspec as misspec
    from sim.corruption.noise import fixed_errors

    world, oracle = _small()
    nz = NoiseConfig(mode="fixed", unit="token", sigma=0.7, dist="pareto", alpha=1.5)
    ch = build_channel(world, oracle, CorruptionConfig(noise=nz), seed=5)
    rng = np.random.default_rng(5)
    base = world.table(misspec.misspecify(world, oracle, CorruptionConfig().misspec, rng))
    noise = fixed_errors(rng, world.n_states * world.n_actions, 0.7, "pareto", 3.0, 1.5)
    np.testing.assert_array_equal(world.table(ch.reward), base + noise.reshape(base.shape))
    assert ch.fixed_drop is None and ch.sigma == 0.0


def test_fixed_drops_without_token_noise_draw_nothing_else_first():
    """sigma = 0 with ``unit=token``: no error table is drawn (the reward stays the oracle's own object), so the
    fixed drop mask is the first draw after misspecification."""
    import sim.corruption.misspec as misspec

    world, oracle = _small()
    nz = NoiseConfig(mode="fixed", unit="token", sigma=0.0, drop=0.3)
    ch = build_channel(world, oracle, CorruptionConfig(noise=nz), seed=9)
    rng = np.random.default_rng(9)
    reward = misspec.misspecify(world, oracle, CorruptionConfig().misspec, rng)
    assert ch.reward is reward or ch.reward is oracle.reward
    want = world.delivery_mask(1) & (rng.random((world.n_states, world.n_actions)) < 0.3)
    np.testing.assert_array_equal(ch.fixed_drop, want)
    assert 0 < want.sum() < want.size
