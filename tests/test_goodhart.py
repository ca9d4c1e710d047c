"""``sim.goodhart``: the projected angle, NDH and the early-stopping rule against brute force on tiny worlds.

The reference builds the flow-constraint matrix ``C`` (one row per state: its outflow minus its inflow) explicitly and
projects with numpy's pseudo-inverse: ``M = I - C^+ C``. The library solves the tree-tridiagonal system on an
enumerated world and runs conjugate gradients on a compressed one (whose own MDP has another polytope).
"""

from __future__ import annotations

import numpy as np
import pytest

from sim import goodhart
from sim.build import build_setup
from sim.config import AgentConfig, CorruptionConfig, EnvConfig, MisspecConfig, OracleConfig
from sim.errors import ConfigError
from sim.worlds.base import Table
from tests import brute

WORLDS = {
    "tiny": EnvConfig(n_prompts=2, vocab_size=4, horizon=3),
    "no_eos": EnvConfig(n_prompts=2, vocab_size=3, horizon=3, eos=False),
    "h1": EnvConfig(n_prompts=3, vocab_size=4, horizon=1),
    "softmax_ref": EnvConfig(n_prompts=1, vocab_size=5, horizon=3, reference="softmax"),
    "compressed": EnvConfig(n_prompts=2, vocab_size=4, horizon=4, compressed=True),
    "compressed_no_eos": EnvConfig(
        n_prompts=1, vocab_size=5, horizon=3, eos=False, reference="bigram", compressed=True
    ),
}


def setup_of(name: str, seed: int = 0, angle: float = 0.0):
    return build_setup(WORLDS[name], OracleConfig(), CorruptionConfig(misspec=MisspecConfig(angle=angle)), seed)


def constraints(world) -> np.ndarray:
    """``C`` (S, S*A): ``(C eta)(s) = sum_a eta(s, a) - eta(parent(s), a_in(s))``, built from ``next_state``."""
    S, A = world.n_states, world.n_actions
    C = np.zeros((S, S * A))
    for s in range(S):
        C[s, s * A : (s + 1) * A] = 1.0
    states = np.repeat(np.arange(S), A)
    actions = np.tile(np.arange(A), S)
    nxt = world.next_state(states, actions)
    for k in np.flatnonzero(nxt >= 0):
        C[nxt[k], k] -= 1.0
    return C


def brute_projection(world, r: np.ndarray) -> np.ndarray:
    C = constraints(world)
    return (r.ravel() - np.linalg.pinv(C) @ (C @ r.ravel())).reshape(r.shape)


def brute_angle(world, r0: np.ndarray, r1: np.ndarray) -> float:
    u, v = brute_projection(world, r0).ravel(), brute_projection(world, r1).ravel()
    return float(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))


def occupancy_vector(world, policy) -> np.ndarray:
    d = np.concatenate(world.occupancy(policy))
    return (d[:, None] * world.table(policy)).ravel()


@pytest.mark.parametrize("name", list(WORLDS))
def test_projection_matches_the_pseudo_inverse(name):
    s = setup_of(name, seed=1, angle=0.7)
    world = s.world
    for reward in (s.oracle.reward, s.channel.expected()):
        r = world.table(reward)
        got = goodhart.project(world, reward)
        want = brute_projection(world, r)
        assert np.abs(got - want).max() < 1e-10 * max(1.0, np.abs(r).max())
        C = constraints(world)
        assert np.abs(C @ got.ravel()).max() < 1e-10  # M R lies in null(C): the space parallel to the polytope


@pytest.mark.parametrize("name", list(WORLDS))
def test_angle_matches_brute_force(name):
    for seed, angle in [(0, 0.3), (1, 1.2), (2, 2.5)]:
        s = setup_of(name, seed=seed, angle=angle)
        r0, r1 = s.oracle.reward, s.channel.expected()
        got = goodhart.reward_angle(s.world, r0, r1)
        assert got == pytest.approx(brute_angle(s.world, s.world.table(r0), s.world.table(r1)), abs=1e-10)


def test_projection_preserves_every_return_difference():
    """``<M R, eta_p - eta_q> = J_R(p) - J_R(q)`` for any two policies (what makes M the right projection)."""
    s = setup_of("tiny", seed=3)
    world, r = s.world, s.oracle.reward
    mr = goodhart.project(world, r).ravel()
    p, q = world.ref, world.soft_policy(r, 0.3)
    lhs = mr @ (occupancy_vector(world, p) - occupancy_vector(world, q))
    rhs = world.evaluate(p, {"r": r})["r"] - world.evaluate(q, {"r": r})["r"]
    assert lhs == pytest.approx(rhs, abs=1e-12)


@pytest.mark.parametrize("name", ["tiny", "no_eos", "softmax_ref", "compressed", "compressed_no_eos"])
def test_potential_shaping_and_constants_give_angle_zero_and_negation_pi(name):
    s = setup_of(name, seed=4)
    world = s.world
    r = world.table(s.oracle.reward)
    rng = np.random.default_rng(0)
    phi = rng.normal(size=world.n_states) * 3.0
    states = np.repeat(np.arange(world.n_states), world.n_actions)
    nxt = world.next_state(states, np.tile(np.arange(world.n_actions), world.n_states)).reshape(r.shape)
    shaped = r + np.where(nxt >= 0, phi[np.maximum(nxt, 0)], 0.0) - phi[:, None]  # R + Phi(s') - Phi(s)
    prompt_const = np.zeros_like(r)
    prompt_const[: world.n_prompts] += rng.normal(size=(world.n_prompts, 1))  # a per-prompt constant on every return
    for other in (shaped, 2.5 * r + prompt_const, shaped * 0.1):
        assert goodhart.reward_angle(world, Table(world, r), Table(world, other)) == pytest.approx(0.0, abs=1e-7)
    assert goodhart.reward_angle(world, Table(world, r), Table(world, -shaped)) == pytest.approx(np.pi, abs=1e-7)
    assert (
        goodhart.reward_angle(
            world, Table(world, r), Table(world, phi[:, None] - np.where(nxt >= 0, phi[np.maximum(nxt, 0)], 0.0))
        )
        is None
    )  # pure shaping: no direction


def test_angle_is_not_the_weight_angle_nor_the_sequence_return_angle():
    """The projected angle is its own number: it differs from the misweight angle of the linear weights and from
    the angle between per-prompt-centred returns over complete sequences (a different inner product)."""
    s = setup_of("tiny", seed=5, angle=0.8)
    world = s.world
    r0, r1 = world.table(s.oracle.reward), world.table(s.channel.expected())
    got = goodhart.reward_angle(world, s.oracle.reward, s.channel.expected())
    seqs = brute.sequences(world)
    prompts = np.array([p for p, _ in seqs])
    g0 = np.array([brute.seq_return(path, r0) for _, path in seqs])
    g1 = np.array([brute.seq_return(path, r1) for _, path in seqs])
    for p in range(world.n_prompts):
        g0[prompts == p] -= g0[prompts == p].mean()
        g1[prompts == p] -= g1[prompts == p].mean()
    seq_angle = np.arccos(g0 @ g1 / np.linalg.norm(g0) / np.linalg.norm(g1))
    assert abs(got - 0.8) > 1e-3 and abs(got - seq_angle) > 1e-3


def test_worst_return_and_ndh():
    s = setup_of("tiny", seed=6)
    world, r = s.world, s.oracle.reward
    seqs = brute.sequences(world)
    table = world.table(r)
    per_prompt = {}
    for p, path in seqs:
        per_prompt.setdefault(p, []).append(brute.seq_return(path, table))
    worst = np.mean([min(v) for v in per_prompt.values()])
    assert goodhart.worst_return(world, r) == pytest.approx(worst, abs=1e-12)
    best = world.optimal_return(r)
    assert goodhart.normalized_drop_height([1.0, 3.0, 2.0], best=5.0, worst=1.0) == pytest.approx(0.25)
    assert goodhart.normalized_drop_height([1.0, 2.0, 3.0], best=5.0, worst=1.0) == 0.0
    assert goodhart.normalized_drop_height([1.0, 0.0], best=best, worst=best) == 0.0


def test_step_angle_matches_the_explicit_vectors():
    s = setup_of("tiny", seed=7, angle=0.9)
    world, proxy = s.world, s.channel.expected()
    p, q = world.soft_policy(proxy, 1.0), world.soft_policy(proxy, 0.3)
    d = occupancy_vector(world, q) - occupancy_vector(world, p)
    m1 = brute_projection(world, world.table(proxy)).ravel()
    want = np.arccos(m1 @ d / np.linalg.norm(m1) / np.linalg.norm(d))
    (got,) = goodhart.path_step_angles(world, proxy, [p, q])
    assert got == pytest.approx(want, abs=1e-10)
    assert goodhart.step_angle(1.0, 2.0, 0.0) == 0.0 and goodhart.step_angle(1.0, 0.0, 1.0) == pytest.approx(np.pi / 2)
    assert goodhart.stop_index([0.1, 0.5, 1.4, 0.2], bound=0.3) == 2
    assert goodhart.stop_index([0.1, 0.5], bound=0.3) == 2


def _path(world, proxy, k=25):
    return [world.soft_policy(proxy, float(b)) for b in np.geomspace(100.0, 0.001, k)]


@pytest.mark.parametrize("name", ["tiny", "compressed"])
def test_the_rule_never_lets_the_true_return_fall_when_the_angle_is_within_theta(name):
    """The guarantee (a theorem, checked here on random worlds of both kinds): with ``arg(R0, R1) <= theta``, the true
    return is non-decreasing over the path's points up to the stop. Where the full path drops, the rule stops before
    it."""
    drops_seen = 0
    for seed in range(12):
        s = setup_of(name, seed=seed, angle=0.6)
        world, r0, r1 = s.world, s.oracle.reward, s.channel.expected()
        theta = goodhart.reward_angle(world, r0, r1)
        path = _path(world, r1)
        j0 = np.array([world.evaluate(p, {"o": r0})["o"] for p in path])
        k = goodhart.stop_index(goodhart.path_step_angles(world, r1, path), theta)
        assert np.all(np.diff(j0[: k + 1]) >= -1e-12)
        drops_seen += bool(j0.max() - j0[-1] > 1e-6)
    assert drops_seen >= 1  # the test is not vacuous: some full paths do drop


def test_soft_planner_early_stop_option(tmp_path):
    from sim.agents import AgentContext, run_agent

    s = setup_of("tiny", seed=2, angle=1.0)
    world, proxy = s.world, s.channel.expected()
    ctx = AgentContext(world, proxy, s.channel, s.oracle, np.random.default_rng(0))
    full = run_agent(ctx, AgentConfig(beta=0.001, path=True, checkpoints=15))
    theta = goodhart.reward_angle(world, s.oracle.reward, proxy)
    stop = run_agent(ctx, AgentConfig(beta=0.001, path=True, checkpoints=15, early_stop_angle=min(theta, np.pi / 2)))
    assert full.extra["reward_angle"] == pytest.approx(theta, abs=1e-12)
    k = int(stop.extra["early_stop_step"])
    assert [r["oracle_return"] for r in stop.curve] == [r["oracle_return"] for r in full.curve]  # the whole path
    assert world.evaluate(stop.policy, {"o": s.oracle.reward})["o"] == pytest.approx(stop.curve[k - 1]["oracle_return"])
    j0 = np.array([r["oracle_return"] for r in full.curve])
    assert np.all(np.diff(j0[:k]) >= -1e-12)
    assert stop.extra["early_stop_beta"] == pytest.approx(stop.curve[k - 1]["beta"])
    best, worst = world.optimal_return(s.oracle.reward), goodhart.worst_return(world, s.oracle.reward)
    assert full.extra["path_ndh"] == pytest.approx((j0.max() - j0[-1]) / (best - worst))


def test_the_rule_runs_on_a_compressed_world_and_bad_settings_are_refused():
    from experiments.config import compose_config
    from sim.run import run

    with pytest.raises(ConfigError, match="early_stop_angle"):
        AgentConfig(early_stop_angle=2.0)
    with pytest.raises(ConfigError, match="agent.path=true"):
        compose_config(["env=tiny", "agent.early_stop_angle=0.3"])
    base = ["env.compressed=true", "env.vocab_size=20", "env.horizon=6", "env.n_prompts=1", "agent=soft_planner",
            "agent.path=true", "agent.beta=0.01", "agent.checkpoints=8", "corruption.misspec.angle=1.0"]  # fmt: skip
    full = run(compose_config(base)).metrics
    stop = run(compose_config([*base, "agent.early_stop_angle=0.3"])).metrics
    assert 0 < full["reward_angle"] < np.pi and full["path_ndh"] >= 0
    assert 1 <= stop["early_stop_step"] <= 8 and stop["reward_angle"] == full["reward_angle"]


@pytest.mark.parametrize("name", ["tiny", "no_eos", "h1", "softmax_ref"])
def test_the_trees_elimination_is_the_generic_solve(name):
    """The enumerated world's exact elimination and the conjugate gradients every world inherits give the same
    potentials (to rounding)."""
    from sim.worlds.base import World

    s = setup_of(name, seed=2, angle=0.9)
    for reward in (s.oracle.reward, s.channel.expected()):
        tree = np.concatenate(s.world.occupancy_potentials(reward))
        generic = np.concatenate(World.occupancy_potentials(s.world, reward))
        assert np.abs(tree - generic).max() < 1e-10 * max(1.0, np.abs(tree).max())
