"""Learners with sampled rollouts on compressed worlds.

``loglinear_pg``: the reference-anchored log-linear policy ``pi(a | p, t, y) ∝ pi_ref(a | .) exp(theta . phi)`` over
Markov templates (unigram, position, bigram, prompt) is itself Markov, so it is trained on sampled episodes
(REINFORCE with the KL as a per-token penalty and a baseline per compressed state) and evaluated *exactly* by
dynamic programming at every checkpoint.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from sim import markov
from sim.errors import ConfigError
from sim.features import template_dim
from sim.markov_rlhf import sample_sequences

LEARNABLE = ("unigram", "position", "bigram", "prompt")


def expected_proxy(proxy: markov.MarkovReward, corruption) -> markov.MarkovReward:
    """The expected delivered reward: sparsity and delivery noise leave it unchanged, a budget p scales it by p."""
    p = 1.0 if corruption is None else corruption.sparsity.budget
    if p >= 1.0:
        return proxy
    return markov.MarkovReward(None if proxy.bigram is None else p * proxy.bigram, p * proxy.row)


def deliver(r: np.ndarray, live: np.ndarray, corruption, rng: np.random.Generator) -> np.ndarray:
    """What a learner receives for rewards ``r`` (n, H) on live steps: the direct corruption pipeline's sparsity
    (terminal or every k tokens: accumulated and paid at delivery), delivery noise, then the episode budget."""
    if corruption is None:
        return np.where(live, r, 0.0)
    n, H = r.shape
    sp, nz = corruption.sparsity, corruption.noise
    last = live & ~np.concatenate([live[:, 1:], np.zeros((n, 1), dtype=bool)], axis=1)  # each episode's final step
    if sp.mode == "none":  # every step pays its own reward (exactly: no cumulative sums)
        pays = live
        out = np.where(live, r, 0.0)
    else:
        k = H if sp.mode == "terminal" else sp.chunk
        pays = live & (last | ((np.arange(H) + 1) % k == 0)[None, :])
        cum = np.cumsum(np.where(live, r, 0.0), axis=1)
        paid_before = np.zeros_like(cum)
        for t in range(1, H):  # the cumulative reward at the previous delivery
            paid_before[:, t] = np.where(pays[:, t - 1], cum[:, t - 1], paid_before[:, t - 1])
        out = np.where(pays, cum - paid_before, 0.0)
    if nz.sigma > 0:
        out = np.where(pays, out + rng.normal(0.0, nz.sigma, size=out.shape), out)
    if sp.budget < 1.0:
        out *= (rng.random(n) < sp.budget)[:, None]
    return out


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
        for name in templates:
            if name not in LEARNABLE:
                raise ConfigError("agent.templates", name, f"templates among {list(LEARNABLE)} on a compressed world")
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


def loglinear_pg(
    world: markov.MarkovWorld,
    proxy: markov.MarkovReward,
    oracle: markov.MarkovReward,
    ref: markov.MarkovReference,
    cfg,
    rng: np.random.Generator,
    corruption=None,
) -> tuple[LogLinearPolicy, list[dict[str, float]]]:
    """Sampled REINFORCE for the log-linear policy; returns it and its exact learning curve."""
    pol = LogLinearPolicy(world, ref, cfg.templates)
    H, V = world.horizon, world.vocab_size
    baseline = np.zeros((world.n_prompts, H, V + 1))
    counts = np.zeros_like(baseline)
    curve = ExactCurve(world, oracle, proxy, ref, corruption, cfg.steps, cfg.checkpoints)
    episodes = 0
    while episodes < cfg.steps:
        seqs = sample_sequences(world, pol, cfg.batch, rng)
        n = seqs.n
        live = seqs.tokens >= 0
        y = np.concatenate([np.full((n, 1), world.bos), np.where(live[:, :-1], seqs.tokens[:, :-1], 0)], axis=1)
        a = np.where(live, seqs.tokens, 0)
        tt = np.broadcast_to(np.arange(H), (n, H))
        pp = np.broadcast_to(seqs.prompt[:, None], (n, H))
        r = np.zeros((n, H))
        logratio = np.zeros((n, H))
        for step in range(H):
            m = live[:, step]
            if not m.any():
                break
            r[m, step] = proxy.row[step, pp[m, step], a[m, step]] + (
                proxy.bigram[y[m, step], a[m, step]] if proxy.bigram is not None else 0.0
            )
            logp = pol.log_policy(step)
            lp = logp[pp[m, step], y[m, step] if logp.shape[1] > 1 else 0, a[m, step]]
            with np.errstate(divide="ignore"):
                lr_ = np.log(ref.rows(step)[y[m, step] if ref.depends_on_last_token else 0, a[m, step]])
            logratio[m, step] = lp - lr_
        reg = np.where(live, deliver(r, live, corruption, rng) - cfg.beta * logratio, 0.0)
        G = np.cumsum(reg[:, ::-1], axis=1)[:, ::-1]
        P_, T_, Y_, A_, G_ = pp[live], tt[live], y[live], a[live], G[live]
        adv = G_ - baseline[P_, T_, Y_]
        pol.theta += cfg.lr * pol.gradient(P_, T_, Y_, A_, adv) / n
        np.add.at(counts, (P_, T_, Y_), 1.0)
        np.add.at(baseline, (P_, T_, Y_), (G_ - baseline[P_, T_, Y_]) / counts[P_, T_, Y_])
        episodes += n
        curve.after(episodes, pol)
    return pol, curve.rows


class LinearQFunction:
    """``Q_w(p, t, y, a) = sum_k w[idx_k(p, t, y, a)]`` over Markov templates, in the FeatureMap layout."""

    def __init__(self, world: markov.MarkovWorld, templates, rng: np.random.Generator):
        for name in templates:
            if name not in LEARNABLE:
                raise ConfigError("agent.templates", name, f"templates among {list(LEARNABLE)} on a compressed world")
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
    """Semi-gradient Q-learning with linear features on sampled episodes (``batch`` at a time, stepped together);
    the greedy policy is evaluated exactly at log-spaced checkpoints."""
    from sim.agents.tabular import _averaged_update, epsilon_at

    q = LinearQFunction(world, cfg.templates, rng)
    H, V, P = world.horizon, world.vocab_size, world.n_prompts
    cont = world.continuing()
    K = len(q.templates)
    curve = ExactCurve(world, oracle, proxy, ref, corruption, cfg.steps, cfg.checkpoints)
    episodes = 0
    sp = corruption.sparsity if corruption is not None else None
    sigma = corruption.noise.sigma if corruption is not None else 0.0
    while episodes < cfg.steps:
        B = cfg.batch
        p = rng.integers(0, P, B)
        y = np.full(B, world.bos)
        alive = np.ones(B, dtype=bool)
        pending = np.zeros(B)
        carries = rng.random(B) < sp.budget if sp is not None and sp.budget < 1 else np.ones(B, dtype=bool)
        eps = epsilon_at(episodes, cfg.steps, cfg.epsilon)
        for t in range(H):
            rows = q.rows(p, t, y)
            a = np.where(rng.random(B) < eps, rng.integers(0, V, B), rows.argmax(axis=1))
            pending += proxy.row[t, p, a] + (proxy.bigram[y, a] if proxy.bigram is not None else 0.0)
            ends = ~cont[a] | (t == H - 1)
            if sp is None or sp.mode == "none":
                pays = np.ones(B, dtype=bool)
            else:
                k = H if sp.mode == "terminal" else sp.chunk
                pays = ends | ((t + 1) % k == 0)
            r = np.where(pays, pending, 0.0)
            pending = np.where(pays, 0.0, pending)
            if sigma > 0:
                r = np.where(pays, r + rng.normal(0.0, sigma, B), r)
            r = np.where(carries, r, 0.0)
            target = r + (np.where(ends, 0.0, q.rows(p, t + 1, a).max(axis=1)) if t < H - 1 else 0.0)
            delta = (target - rows[np.arange(B), a])[alive]
            for name in q.templates:
                _averaged_update(q.w, q.visits, q.index(name, p, t, y, a)[alive], delta, cfg.lr / K, cfg.lr_decay)
            alive &= ~ends
            y = np.where(alive, a, y)
            if not alive.any():
                break
        episodes += B
        curve.after(episodes, q.greedy())
    return q.greedy(), curve.rows
