"""Heavy-tailed fixed-mode noise (``corruption.noise.dist``): the gaussian default unchanged draw for draw, the heavy
tails drawn from the right law at the right scale, and bad settings refused naming their key."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sim.config import Config, CorruptionConfig, EnvConfig, NoiseConfig, OracleConfig
from sim.corruption import build_channel, misspec
from sim.corruption.noise import GAUSSIAN_IQR, error_law, fixed_errors
from sim.errors import ConfigError
from sim.oracle import make_oracle
from sim.run import check
from sim.worlds import EnumeratedWorld

#: KS tests at this level; the tolerance on the statistic is the DKW bound sqrt(log(2 / level) / (2 n)), which holds
#: for any n (not only asymptotically).
LEVEL = 1e-3
HEAVY = [("student_t", {"df": 1.0}), ("student_t", {"df": 2.0}), ("student_t", {"df": 3.0}),
         ("student_t", {"df": 10.0}), ("pareto", {"alpha": 1.5}), ("pareto", {"alpha": 3.0})]  # fmt: skip


def law(dist: str, sigma: float, df: float = 3.0, alpha: float = 3.0):
    """The error's distribution as a scipy frozen law, from :func:`error_law`'s affine map."""
    centre, scale = error_law(dist, sigma, df, alpha)
    if dist == "student_t":
        return stats.t(df, scale=scale)
    if dist == "pareto":
        return stats.lomax(alpha, loc=-centre * scale, scale=scale)
    return stats.norm(scale=scale)


def channel_errors(dist: str, seed: int = 7, sigma: float = 1.5, **kw) -> np.ndarray:
    """The fixed errors a channel puts on the complete sequences of a world (31,104 sequences, no EOS)."""
    w = EnumeratedWorld(4, 6, 5, eos=False)
    o = make_oracle(w, "linear", seed=1)
    cfg = CorruptionConfig(noise=NoiseConfig(sigma=sigma, mode="fixed", dist=dist, **kw))
    diff = w.table(build_channel(w, o, cfg, seed).expected()) - w.table(o.reward)
    s, a = w.terminal_transitions()
    assert np.all(np.delete(diff.ravel(), np.ravel_multi_index((s, a), diff.shape)) == 0)  # only on the last token
    return diff[s, a]


def test_gaussian_is_the_default_and_unchanged_byte_for_byte():
    w = EnumeratedWorld(3, 5, 4)
    o = make_oracle(w, "linear", seed=2)
    default = CorruptionConfig(noise=NoiseConfig(sigma=0.8, mode="fixed"))
    explicit = CorruptionConfig(noise=NoiseConfig(sigma=0.8, mode="fixed", dist="gaussian", df=1.0, alpha=0.5))
    assert default.noise.dist == "gaussian"
    # the channel as it was built before dist existed: misspecification, then one N(0, sigma^2) draw per sequence
    rng = np.random.default_rng(11)
    reward = misspec.misspecify(w, o, default.misspec, rng)
    s, a = w.terminal_transitions()
    noise = np.zeros((w.n_states, w.n_actions))
    noise[s, a] = rng.normal(0.0, 0.8, size=s.size)
    before = w.table(reward + w.table_reward(noise))
    for cfg in (default, explicit):  # df and alpha are not read by the gaussian
        assert w.table(build_channel(w, o, cfg, 11).expected()).tobytes() == before.tobytes()
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    assert fixed_errors(r1, 1000, 0.8).tobytes() == r2.normal(0.0, 0.8, size=1000).tobytes()


@pytest.mark.parametrize(("dist", "kw"), HEAVY)
def test_scale_means_the_gaussian_spread(dist, kw):
    """sigma is the error's sd where a variance exists, and gives N(0, sigma^2)'s interquartile range where not; the
    error's mean is 0 where it exists (else its median)."""
    sigma = 1.5
    index = kw.get("df", kw.get("alpha"))
    f = law(dist, sigma, **kw)
    if index > 2:
        assert f.std() == pytest.approx(sigma, rel=1e-12)
    else:
        assert not np.isfinite(f.var())  # inf, or nan where not even a mean exists
        assert f.ppf(0.75) - f.ppf(0.25) == pytest.approx(GAUSSIAN_IQR * sigma, rel=1e-12)
    centre = f.mean() if index > 1 else f.median()
    assert centre == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("dist", "kw"), HEAVY)
def test_draws_follow_the_law(dist, kw):
    x = channel_errors(dist, **kw)
    n = x.size
    tol = np.sqrt(np.log(2 / LEVEL) / (2 * n))  # DKW: P(D > tol) <= LEVEL under the right law
    d = stats.kstest(x, law(dist, 1.5, **kw).cdf).statistic
    assert d < tol, f"KS distance {d:.4f} from the {dist} law (tolerance {tol:.4f}, n = {n})"
    # the test has power here: the draws are outside the tolerance of the gaussian of the same sigma (even t(10), whose
    # cdf is at most 0.02 from it)
    assert stats.kstest(x, stats.norm(scale=1.5).cdf).statistic > tol
    if dist == "pareto":  # one-sided: the error never underrates by more than the centre
        assert x.min() >= law(dist, 1.5, **kw).support()[0]


def test_heavy_tails_are_seeded_and_heavier_than_the_gaussian():
    a, b, c = (
        channel_errors("student_t", 5, df=2.0),
        channel_errors("student_t", 5, df=2.0),
        channel_errors("student_t", 6, df=2.0),
    )
    assert a.tobytes() == b.tobytes() and not np.array_equal(a, c)
    g = channel_errors("gaussian", 5)
    # the largest of 31,104 errors: about 4.1 sigma for the gaussian; at the same bulk, t(2) reaches ~0.68 * 1.5 *
    # sqrt(n / 2 ...) >> 10 sigma (its tail P(T > x) ~ 1/x^2)
    assert np.abs(g).max() < 5 * 1.5 < 20 * 1.5 < np.abs(a).max()


@pytest.mark.parametrize(
    ("noise", "key", "allowed"),
    [
        ({"dist": "cauchy", "mode": "fixed"}, "corruption.noise.dist", "gaussian, student_t or pareto"),
        ({"dist": "student_t"}, "corruption.noise.dist", "corruption.noise.mode=fixed"),
        ({"dist": "pareto", "mode": "delivery"}, "corruption.noise.dist", "corruption.noise.mode=fixed"),
        ({"dist": "student_t", "mode": "fixed", "df": 0.0}, "corruption.noise.df", "> 0"),
        ({"dist": "student_t", "mode": "fixed", "df": float("inf")}, "corruption.noise.df", "> 0"),
        ({"dist": "pareto", "mode": "fixed", "alpha": -1.0}, "corruption.noise.alpha", "> 0"),
        ({"dist": "pareto", "mode": "fixed", "alpha": float("nan")}, "corruption.noise.alpha", "> 0"),
        ({"unit": "prompt", "mode": "fixed"}, "corruption.noise.unit", "sequence or token"),
        ({"unit": "token"}, "corruption.noise.unit", "corruption.noise.mode=fixed"),
    ],
)
def test_bad_values_are_refused_naming_the_key(noise, key, allowed):
    with pytest.raises(ConfigError) as e:
        NoiseConfig(sigma=1.0, **noise)
    assert key in str(e.value) and allowed in str(e.value)


def test_compressed_worlds_refuse_a_persistent_error_per_sequence_naming_why():
    """A fixed draw per complete sequence is not Markov: a compressed world refuses it, heavy-tailed or not, and
    names the alternative (one error per state and token)."""
    cfg = Config(
        env=EnvConfig(compressed=True),
        corruption=CorruptionConfig(noise=NoiseConfig(sigma=1.0, mode="fixed", dist="student_t", df=2.0)),
    )
    with pytest.raises(ConfigError) as e:
        check(cfg)
    assert "corruption.noise.mode" in str(e.value) and "complete sequence" in str(e.value)
    assert "corruption.noise.unit=token" in str(e.value)
    cfg.corruption.noise.unit = "token"
    check(cfg)  # accepted: Markov
    cfg.corruption.noise.drop = 0.1
    with pytest.raises(ConfigError) as e:
        check(cfg)
    assert e.value.field == "corruption.noise.drop"


@pytest.mark.parametrize("compressed", [False, True])
def test_a_token_error_is_one_persistent_draw_per_state_and_token_on_either_world(compressed):
    """``unit=token``: the proxy is the oracle plus one fixed draw per (state, token) of the world (an (S, A) table
    from the corruption stream, every entry), the same for the same seed; on a compressed world a state is (prompt,
    position, last token), so the proxy's returns along sampled sequences are the oracle's plus the sum of the
    table's entries along them, exactly."""
    from sim.build import build_setup

    env = EnvConfig(n_prompts=2, vocab_size=5, horizon=4, eos=False, compressed=compressed)
    noise = NoiseConfig(sigma=0.7, mode="fixed", unit="token", dist="student_t", df=3.0)
    setup = build_setup(env, OracleConfig(), CorruptionConfig(noise=noise), seed=3)
    w = setup.world
    diff = w.table(setup.channel.expected()) - w.table(setup.oracle.reward)
    assert diff.shape == (w.n_states, w.n_actions) and np.all(diff != 0)
    again = build_setup(env, OracleConfig(), CorruptionConfig(noise=noise), seed=3)
    assert np.array_equal(w.table(again.channel.expected()), w.table(setup.channel.expected()))
    other = build_setup(env, OracleConfig(), CorruptionConfig(noise=noise), seed=4)
    assert not np.array_equal(w.table(other.channel.expected()), w.table(setup.channel.expected()))
    rng = np.random.default_rng(0)
    seqs = w.sequence_source(w.ref).draw(rng.integers(0, 2, 300), rng)
    states, actions, mask = w.paths(seqs)
    proxy = w.sequence_returns(setup.channel.expected(), seqs)
    oracle = w.sequence_returns(setup.oracle.reward, seqs)
    assert np.abs(proxy - oracle).max() > 0.5  # errors of scale 0.7 per token, 4 tokens
    assert mask.all()  # no EOS: every sequence has H tokens
    np.testing.assert_allclose(proxy - oracle, diff[states, actions].sum(axis=1), atol=1e-12)


def test_catastrophic_goodhart_on_a_compressed_world_with_token_errors():
    """Kwa et al.'s contrast where sequences cannot be listed (V = 60, H = 8, uniform pi_ref, no EOS): along the exact
    soft-optimum path, at about 4 nats, gaussian token errors (sd 1 per token) keep an oracle gain that Cauchy ones
    (the same interquartile range) do not, while the Cauchy proxy climbs far higher. Four seeds each."""
    from sim.build import build_setup

    env = EnvConfig(n_prompts=1, vocab_size=60, horizon=8, eos=False, reference="uniform", compressed=True)
    gain = {}
    for dist in ("gaussian", "student_t"):
        out = []
        for seed in range(4):
            noise = NoiseConfig(sigma=1.0, mode="fixed", unit="token", dist=dist, df=1.0)
            setup = build_setup(env, OracleConfig(), CorruptionConfig(noise=noise), seed=seed)
            w, oracle, proxy = setup.world, setup.oracle.reward, setup.channel.expected()
            ref = w.evaluate(w.ref, {"o": oracle, "p": proxy})
            best = w.evaluate(w.soft_policy(oracle, 1e-6), {"o": oracle})["o"]
            betas = np.geomspace(100.0, 0.01, 41)
            evals = [w.evaluate(w.soft_policy(proxy, b), {"o": oracle, "p": proxy}) for b in betas]
            k = int(np.argmin([abs(e["kl_to_reference"] - 4.0) for e in evals]))
            e = evals[k]
            out.append(((e["o"] - ref["o"]) / (best - ref["o"]), e["p"] - ref["p"]))
        gain[dist] = np.array(out)
    light, heavy = gain["gaussian"], gain["student_t"]
    # measured: gaussian 0.28-0.33 of the attainable gain, Cauchy -0.13 to 0.19 (mean 0.02), proxy gain ~800x
    assert light[:, 0].min() > heavy[:, 0].max() and light[:, 0].mean() > 0.2 > 0.1 > heavy[:, 0].mean(), gain
    assert heavy[:, 1].mean() > 10 * light[:, 1].mean(), gain
