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
) -> tuple[LogLinearPolicy, list[dict[str, float]]]:
    """Sampled REINFORCE for the log-linear policy; returns it and its exact learning curve."""
    pol = LogLinearPolicy(world, ref, cfg.templates)
    H, V = world.horizon, world.vocab_size
    baseline = np.zeros((world.n_prompts, H, V + 1))
    counts = np.zeros_like(baseline)
    points = np.unique(np.geomspace(1, cfg.steps, cfg.checkpoints).round().astype(int))
    curve, nxt, episodes = [], 0, 0
    rewards = {"oracle": oracle, "proxy": proxy}
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
        reg = np.where(live, r - cfg.beta * logratio, 0.0)
        G = np.cumsum(reg[:, ::-1], axis=1)[:, ::-1]
        P_, T_, Y_, A_, G_ = pp[live], tt[live], y[live], a[live], G[live]
        adv = G_ - baseline[P_, T_, Y_]
        pol.theta += cfg.lr * pol.gradient(P_, T_, Y_, A_, adv) / n
        np.add.at(counts, (P_, T_, Y_), 1.0)
        np.add.at(baseline, (P_, T_, Y_), (G_ - baseline[P_, T_, Y_]) / counts[P_, T_, Y_])
        episodes += n
        due = nxt < points.size and episodes >= points[nxt]
        while nxt < points.size and episodes >= points[nxt]:
            nxt += 1
        if due or episodes >= cfg.steps:
            ev = markov.evaluate(world, pol, rewards, ref)
            curve.append(
                {
                    "step": episodes,
                    "oracle_return": ev["oracle"],
                    "proxy_return": ev["proxy"],
                    "kl_to_reference": ev["kl_to_reference"],
                }
            )
    return pol, curve
