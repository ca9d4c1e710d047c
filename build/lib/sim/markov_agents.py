"""Learners with sampled rollouts on compressed worlds, stepping the batched env (:mod:`sim.markov_env`).

``loglinear_pg``: the reference-anchored log-linear policy ``pi(a | p, t, y) ∝ pi_ref(a | .) exp(theta . phi)`` over
Markov templates (unigram, position, bigram, prompt) is itself Markov, so it is trained on sampled episodes
(REINFORCE with the KL as a per-token penalty and a baseline per compressed state) and evaluated *exactly* by
dynamic programming at every checkpoint. ``linear_q``: semi-gradient Q-learning over the same templates. Both
receive rewards the way the env delivers them (learner-side sparsity, delivery noise, episode budget).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from sim import markov
from sim.errors import ConfigError
from sim.features import template_dim

LEARNABLE = ("unigram", "position", "bigram", "prompt")


def _check_templates(world: markov.MarkovWorld, templates) -> None:
    for name in templates:
        if name not in LEARNABLE:
            raise ConfigError("agent.templates", name, f"templates among {list(LEARNABLE)} on a compressed world")
    if "bigram" in templates:
        markov.check_bigram_size(world.vocab_size, "agent.templates", "bigram")


def expected_proxy(proxy: markov.MarkovReward, corruption) -> markov.MarkovReward:
    """The expected delivered reward: sparsity and delivery noise leave it unchanged, a budget p scales it by p."""
    p = 1.0 if corruption is None else corruption.sparsity.budget
    if p >= 1.0:
        return proxy
    return markov.MarkovReward(None if proxy.bigram is None else p * proxy.bigram, p * proxy.row)


class ExactCurve:
    """Log-spaced checkpoints over an episode budget, each evaluated exactly by dynamic programming."""

    def __init__(self, world, oracle, proxy, ref, corruption, steps: int, k: int):
        self.world, self.ref = world, ref
        self.rewards = {"oracle": oracle, "proxy": expected_proxy(proxy, corruption)}
        self.points = np.unique(np.geomspace(1, steps, k).round().astype(int))
        self.steps, self.next, self.rows = steps, 0, []

    def after(self, episodes: int, policy: markov.Policy) -> None:
        """Record ``policy`` if ``episodes`` crossed a checkpoint or finished the budget."""
        due = self.next < self.points.size and episodes >= self.points[self.next]
        while self.next < self.points.size and episodes >= self.points[self.next]:
            self.next += 1
        if due or episodes >= self.steps:
            ev = markov.evaluate(self.world, policy, self.rewards, self.ref)
            self.rows.append(
                {
                    "step": episodes,
                    "oracle_return": ev["oracle"],
                    "proxy_return": ev["proxy"],
                    "kl_to_reference": ev["kl_to_reference"],
                }
            )


class LogLinearPolicy:
    """``log pi_t[p, y, a] = log_softmax(log pi_ref + bigram[y, a] + row[t, p, a])``, with theta over templates."""

    def __init__(self, world: markov.MarkovWorld, ref: markov.MarkovReference, templates):
        _check_templates(world, templates)
        self.world, self.ref, self.templates = world, ref, tuple(templates)
        self.dims = [template_dim(world, t) for t in self.templates]
        self.offsets = np.concatenate([[0], np.cumsum(self.dims)]).astype(int)
        self.theta = np.zeros(int(self.offsets[-1]))

    def block(self, name: str, vec: np.ndarray | None = None) -> np.ndarray:
        k = self.templates.index(name)
        return (self.theta if vec is None else vec)[self.offsets[k] : self.offsets[k + 1]]

    def log_policy(self, t: int) -> np.ndarray:
        """(P, Y, V) log-probabilities at position t."""
        r = markov.markov_reward_from_theta(self.world, self.templates, self.theta)
        with np.errstate(divide="ignore"):
            log_ref = np.log(self.ref.rows(t))
        logits = np.stack([log_ref + r.rows(t, p) for p in range(self.world.n_prompts)])
        return log_softmax(logits, axis=-1)

    def __call__(self, t: int) -> np.ndarray:
        return np.exp(self.log_policy(t))

    def gradient(self, p, t, y, a, adv) -> np.ndarray:
        """``sum_visits adv * (phi(s, a) - E_pi phi(s, .))`` for visits at (p, t, y) taking a."""
        V = self.world.vocab_size
        grad = np.zeros_like(self.theta)
        for step in np.unique(t):
            at = t == step
            logp = self.log_policy(int(step))
            rows = np.exp(logp[p[at], y[at] if logp.shape[1] > 1 else 0])  # (n, V)
            w = -rows * adv[at, None]
            w[np.arange(w.shape[0]), a[at]] += adv[at]
            for name in self.templates:
                g = self.block(name, grad)
                if name == "unigram":
                    g += w.sum(axis=0)
                elif name == "position":
                    g[int(step) * V : (int(step) + 1) * V] += w.sum(axis=0)
                elif name == "bigram":
                    np.add.at(g.reshape(V + 1, V), y[at], w)
                else:
                    np.add.at(g.reshape(-1, V), p[at], w)
        return grad


def _env(world, proxy, oracle, ref, corruption, batch: int, rng: np.random.Generator):
    """The batched env the learners roll out in, seeded from the agent's stream."""
    from sim.markov_env import MarkovSetup, MarkovVectorEnv

    env = MarkovVectorEnv(batch, setup=MarkovSetup(world, ref, oracle, proxy), corruption=corruption)
    env.reset(seed=int(rng.integers(2**63)))
    return env


def loglinear_pg(
    world: markov.MarkovWorld,
    proxy: markov.MarkovReward,
    oracle: markov.MarkovReward,
    ref: markov.MarkovReference,
    cfg,
    rng: np.random.Generator,
    corruption=None,
) -> tuple[LogLinearPolicy, list[dict[str, float]]]:
    """Sampled REINFORCE for the log-linear policy on batches of episodes of the batched env
    (:class:`sim.markov_env.MarkovVectorEnv`); returns the policy and its exact learning curve."""
    pol = LogLinearPolicy(world, ref, cfg.templates)
    H = world.horizon
    B = cfg.batch
    baseline = np.zeros((world.n_prompts, H, world.vocab_size + 1))
    counts = np.zeros_like(baseline)
    curve = ExactCurve(world, oracle, proxy, ref, corruption, cfg.steps, cfg.checkpoints)
    env = _env(world, proxy, oracle, ref, corruption, B, rng)
    episodes = 0
    while episodes < cfg.steps:
        obs, _ = env.reset()
        pp, yy, aa = (np.zeros((B, H), dtype=np.int64) for _ in range(3))
        r, logratio = np.zeros((B, H)), np.zeros((B, H))
        live = np.zeros((B, H), dtype=bool)
        finished = np.zeros(B, dtype=bool)
        for step in range(H):
            p, y = obs[:, 0], obs[:, 2]
            logp = pol.log_policy(step)
            yi = y if logp.shape[1] > 1 else np.zeros(B, dtype=np.int64)
            a = markov.sample_tokens(np.exp(logp), p, yi, rng)
            with np.errstate(divide="ignore"):
                log_ref = np.log(ref.rows(step)[y if ref.depends_on_last_token else 0, a])
            obs, delivered, terminated, _, _ = env.step(a)
            on = ~finished  # slots still in their first episode of this batch
            live[:, step], pp[:, step], yy[:, step], aa[:, step] = on, p, y, a
            r[on, step] = delivered[on]
            logratio[on, step] = logp[p, yi, a][on] - log_ref[on]
            finished |= terminated
            if finished.all():
                break
        reg = np.where(live, r - cfg.beta * logratio, 0.0)
        G = np.cumsum(reg[:, ::-1], axis=1)[:, ::-1]
        tt = np.broadcast_to(np.arange(H), (B, H))
        P_, T_, Y_, A_, G_ = pp[live], tt[live], yy[live], aa[live], G[live]
        adv = G_ - baseline[P_, T_, Y_]
        pol.theta += cfg.lr * pol.gradient(P_, T_, Y_, A_, adv) / B
        np.add.at(counts, (P_, T_, Y_), 1.0)
        np.add.at(baseline, (P_, T_, Y_), (G_ - baseline[P_, T_, Y_]) / counts[P_, T_, Y_])
        episodes += B
        curve.after(episodes, pol)
    return pol, curve.rows


class LinearQFunction:
    """``Q_w(p, t, y, a) = sum_k w[idx_k(p, t, y, a)]`` over Markov templates, in the FeatureMap layout."""

    def __init__(self, world: markov.MarkovWorld, templates, rng: np.random.Generator):
        _check_templates(world, templates)
        self.world, self.templates = world, tuple(templates)
        self.offsets = np.concatenate([[0], np.cumsum([template_dim(world, t) for t in self.templates])]).astype(int)
        self.w = 1e-12 * rng.random(int(self.offsets[-1]))  # breaks greedy ties at random
        self.visits = np.zeros_like(self.w)

    def index(self, name: str, p, t, y, a):
        V = self.world.vocab_size
        k = self.templates.index(name)
        local = {"unigram": a, "position": t * V + a, "bigram": y * V + a, "prompt": p * V + a}[name]
        return self.offsets[k] + local

    def rows(self, p: np.ndarray, t: int, y: np.ndarray) -> np.ndarray:
        """Q rows (n, V) for states (p, t, y)."""
        a = np.arange(self.world.vocab_size)[None, :]
        out = np.zeros((p.size, self.world.vocab_size))
        for name in self.templates:
            out += self.w[self.index(name, p[:, None], t, y[:, None], a)]
        return out

    def greedy(self) -> markov.Policy:
        world = self.world
        P, Y, V = world.n_prompts, world.vocab_size + 1, world.vocab_size

        def at(t: int) -> np.ndarray:
            p = np.repeat(np.arange(P), Y)
            y = np.tile(np.arange(Y), P)
            best = self.rows(p, t, y).argmax(axis=1)
            out = np.zeros((P * Y, V))
            out[np.arange(P * Y), best] = 1.0
            return out.reshape(P, Y, V)

        return at


def linear_q(
    world: markov.MarkovWorld,
    proxy: markov.MarkovReward,
    oracle: markov.MarkovReward,
    ref: markov.MarkovReference,
    cfg,
    rng: np.random.Generator,
    corruption=None,
) -> tuple[markov.Policy, list[dict[str, float]]]:
    """Semi-gradient Q-learning with linear features on the batched env (``batch`` episodes stepped together);
    the greedy policy is evaluated exactly at log-spaced checkpoints."""
    from sim.agents.tabular import _averaged_update, epsilon_at

    q = LinearQFunction(world, cfg.templates, rng)
    H, V = world.horizon, world.vocab_size
    B = cfg.batch
    K = len(q.templates)
    curve = ExactCurve(world, oracle, proxy, ref, corruption, cfg.steps, cfg.checkpoints)
    env = _env(world, proxy, oracle, ref, corruption, B, rng)
    episodes = 0
    while episodes < cfg.steps:
        obs, _ = env.reset()
        finished = np.zeros(B, dtype=bool)
        eps = epsilon_at(episodes, cfg.steps, cfg.epsilon)
        for t in range(H):
            p, y = obs[:, 0], obs[:, 2]
            rows = q.rows(p, t, y)
            a = np.where(rng.random(B) < eps, rng.integers(0, V, B), rows.argmax(axis=1))
            obs, r, ends, _, _ = env.step(a)
            target = r + (np.where(ends, 0.0, q.rows(p, t + 1, a).max(axis=1)) if t < H - 1 else 0.0)
            on = ~finished  # slots still in their first episode of this batch
            delta = (target - rows[np.arange(B), a])[on]
            for name in q.templates:
                _averaged_update(q.w, q.visits, q.index(name, p, t, y, a)[on], delta, cfg.lr / K, cfg.lr_decay)
            finished |= ends
            if finished.all():
                break
        episodes += B
        curve.after(episodes, q.greedy())
    return q.greedy(), curve.rows
