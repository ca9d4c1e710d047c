"""``ppo``: proximal policy optimisation with a per-token KL penalty to pi_ref, the optimiser RLHF practice uses
(Schulman et al. 2017; Ziegler et al. 2019; Ouyang et al. 2022), on any world.

Each iteration rolls out ``agent.batch`` episodes of the current policy in the world (through the reward channel),
pays each token ``r_t - beta (log pi(a_t|s_t) - log pi_ref(a_t|s_t))`` (so the objective is
``E[sum r] - beta KL(pi || pi_ref)``, whose optimum is the soft optimum), estimates advantages by GAE(lambda) with a
learned *linear* value function ``V_w(s) = w . psi(s)`` (one-hots of the depth, of (prompt, depth) and of (last
token, depth)), and takes ``agent.epochs`` passes of ``agent.minibatch`` minibatches over the batch, minimising the
clipped surrogate ``-mean min(rho A, clip(rho, 1 - eps, 1 + eps) A)`` (``rho = pi / pi_old``) by Adam, and the
value loss ``mean (V_w(s) - R)^2`` by Adam. With ``agent.target_kl`` an adaptive controller moves beta after each
batch: ``beta <- beta (1 + 0.1 clip((KL - target) / target, -0.2, 0.2))`` (Ziegler et al. 2019).

The policy is log-linear, ``pi(a|s) ∝ pi_ref(a|s) exp(theta . phi(s, a))`` over ``agent.templates``, or tabular
(``agent.policy=tabular``: a logit per state and token). ``agent.steps`` counts episodes; the learning curve is
evaluated exactly at log-spaced checkpoints, with ``sqrt_kl`` (the x-axis of Gao et al. 2022's curves) beside the
usual columns, and the controller's ``beta`` when ``agent.target_kl`` is set. All randomness comes from the agent's
generator: the same seed gives the same run.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from sim.agents.base import AgentContext, AgentResult, Curve, register, softmax_rows
from sim.features import FeatureMap
from sim.worlds import LevelPolicy


def kl_penalised(
    rewards: np.ndarray, logp: np.ndarray, logp_ref: np.ndarray, alive: np.ndarray, beta: float
) -> np.ndarray:
    """Per-token rewards with the KL penalty: ``r_t - beta (log pi(a_t|s_t) - log pi_ref(a_t|s_t))``, 0 after the end.

    All arrays are (B, H); the penalty summed along an episode is ``beta`` times a one-sample estimate of the sequence
    KL.
    """
    return np.where(alive, rewards - beta * (logp - logp_ref), 0.0)


def gae(
    rewards: np.ndarray, values: np.ndarray, alive: np.ndarray, lam: float, gamma: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates and value targets, (B, H) each (0 after the end).

    ``delta_t = r_t + gamma V(s_{t+1}) - V(s_t)`` (``V = 0`` after the last token),
    ``A_t = delta_t + gamma lam A_{t+1}``, target ``R_t = A_t + V(s_t)``. ``lam = 1`` gives Monte Carlo returns,
    ``lam = 0`` one-step TD.
    """
    B, H = rewards.shape
    adv = np.zeros((B, H))
    following = np.zeros(B)  # A_{t+1}
    next_value = np.zeros(B)  # V(s_{t+1}), 0 at the end
    for t in reversed(range(H)):
        live = alive[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv[:, t] = np.where(live, delta + gamma * lam * following, 0.0)
        following = adv[:, t]
        next_value = np.where(live, values[:, t], 0.0)
    return adv, np.where(alive, adv + values, 0.0)


def clipped_surrogate(
    logp_new: np.ndarray, logp_old: np.ndarray, adv: np.ndarray, eps: float
) -> tuple[float, np.ndarray]:
    """PPO's clipped loss ``-mean min(rho A, clip(rho, 1 - eps, 1 + eps) A)`` and its gradient in ``logp_new``.

    The gradient of a sample is ``-rho A / n`` where the unclipped term is the smaller one (inside the clip range the
    two are equal) and 0 where the clipped one is: a ratio that has moved beyond ``1 +- eps`` in the advantage's
    direction stops pulling.
    """
    ratio = np.exp(logp_new - logp_old)
    unclipped = ratio * adv
    clipped = np.clip(ratio, 1.0 - eps, 1.0 + eps) * adv
    n = max(adv.size, 1)
    loss = -float(np.minimum(unclipped, clipped).sum()) / n
    return loss, np.where(unclipped <= clipped, -unclipped / n, 0.0)


class Adam:
    """Adam (Kingma and Ba 2015) on a parameter vector, in place."""

    def __init__(self, size: int, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.m, self.v = np.zeros(size), np.zeros(size)
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        """One descent step on ``params`` along ``grad`` (the gradient of what is minimised)."""
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m_hat = self.m / (1 - self.b1**self.t)
        v_hat = self.v / (1 - self.b2**self.t)
        params -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class ValueFunction:
    """``V_w(s) = w[depth] + w[(prompt, depth)] + w[(last token, depth)]``: linear in one-hots of the state."""

    def __init__(self, world):
        self.world = world
        H, P, V = world.horizon, world.n_prompts, world.vocab_size
        self.offsets = np.array([0, H, H + P * H])
        self.w = np.zeros(H + P * H + (V + 1) * H)

    def indices(self, states: np.ndarray) -> np.ndarray:
        """(n, 3) global weight indices of ``states``."""
        w = self.world
        t, p, y = w.depth[states], w.prompt[states], w.last_token[states]
        y = np.where(y < 0, w.vocab_size, y)
        return np.stack([t, self.offsets[1] + p * w.horizon + t, self.offsets[2] + y * w.horizon + t], axis=1)

    def __call__(self, states: np.ndarray) -> np.ndarray:
        return self.w[self.indices(states)].sum(axis=1)

    def gradient(self, states: np.ndarray, residual: np.ndarray) -> np.ndarray:
        """Gradient of ``mean (V - R)^2 / 2`` given ``residual = V - R``."""
        idx = self.indices(states)
        return np.bincount(idx.ravel(), weights=np.repeat(residual, 3), minlength=self.w.size) / max(residual.size, 1)


class PPOPolicy:
    """A log-linear (``pi ∝ pi_ref exp(theta . phi)``) or tabular (``pi ∝ pi_ref exp(theta[s])``) policy."""

    def __init__(self, world, cfg):
        self.world = world
        self.tabular = cfg.policy == "tabular"
        self.fm = None if self.tabular else FeatureMap(world, cfg.templates, field="agent.templates")
        self.theta = np.zeros(world.n_states * world.n_actions if self.tabular else self.fm.dim)

    def logits(self, states: np.ndarray) -> np.ndarray:
        """``log pi_ref + theta . phi`` rows (n, A) of global states."""
        w = self.world
        log_ref = np.empty((states.size, w.n_actions))
        depth = w.depth[states]
        for t in np.unique(depth):
            mine = depth == t
            log_ref[mine] = w.log_ref_rows(int(t), states[mine] - w.level_start[t])
        if self.tabular:
            return log_ref + self.theta.reshape(w.n_states, w.n_actions)[states]
        return log_ref + self.fm.values(self.theta, states)

    def gradient(self, states: np.ndarray, actions: np.ndarray, coef: np.ndarray, pi: np.ndarray) -> np.ndarray:
        """``sum_i coef_i d log pi(a_i|s_i) / d theta`` (the score ``phi(s, a) - E_pi phi(s, .)`` of each sample)."""
        weights = -pi * coef[:, None]
        weights[np.arange(states.size), actions] += coef
        if self.tabular:
            grad = np.zeros((self.world.n_states, self.world.n_actions))
            np.add.at(grad, states, weights)
            return grad.ravel()
        return self.fm.score_gradient(states, weights)

    def snapshot(self) -> LevelPolicy:
        """The policy of the current parameters, frozen (rows formed when asked)."""
        frozen = PPOPolicy.__new__(PPOPolicy)
        frozen.world, frozen.tabular, frozen.fm, frozen.theta = self.world, self.tabular, self.fm, self.theta.copy()
        w = self.world
        return LevelPolicy(
            w,
            lambda t: softmax_rows(frozen.logits(np.arange(*w.level(t)))),
            lambda t, local: softmax_rows(frozen.logits(w.level_start[t] + local)),
        )


def _templates(cfg):
    return [] if cfg.policy == "tabular" else list(cfg.templates)


PPO_KEYS = ("beta", "steps", "lr", "batch", "templates", "policy", "checkpoints", "clip", "epochs", "minibatch",
            "gae_lambda", "value_lr", "target_kl")  # fmt: skip


@register("ppo", learns_from="samples", kl=True, keys=PPO_KEYS, templates=_templates)
def ppo(ctx: AgentContext, cfg) -> AgentResult:
    """PPO with a per-token KL penalty, GAE and a linear value function (module docstring)."""
    world, rng = ctx.world, ctx.rng
    policy = PPOPolicy(world, cfg)
    value = ValueFunction(world)
    opt_pi, opt_v = Adam(policy.theta.size, cfg.lr), Adam(value.w.size, cfg.value_lr)
    beta = cfg.beta
    curve = Curve(ctx, cfg.steps, cfg.checkpoints)
    episodes = 0
    while episodes < cfg.steps:
        snapshot = policy.snapshot()
        states, actions, rewards, alive = world.rollout(snapshot, ctx.channel, rng, cfg.batch)
        s, a = states[alive], actions[alive]
        logp_old_flat = log_softmax(policy.logits(s), axis=1)[np.arange(s.size), a]
        logp_ref_flat = np.empty(s.size)
        depth = world.depth[s]
        for t in np.unique(depth):
            mine = depth == t
            logp_ref_flat[mine] = world.log_ref_rows(int(t), s[mine] - world.level_start[t])[
                np.arange(int(mine.sum())), a[mine]
            ]
        logp_old, logp_ref = np.zeros(states.shape), np.zeros(states.shape)
        logp_old[alive], logp_ref[alive] = logp_old_flat, logp_ref_flat
        penalised = kl_penalised(rewards, logp_old, logp_ref, alive, beta)
        values = np.zeros(states.shape)
        values[alive] = value(s)
        adv2d, ret2d = gae(penalised, values, alive, cfg.gae_lambda)
        adv, ret = adv2d[alive], ret2d[alive]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        for _ in range(cfg.epochs):
            for mb in np.array_split(rng.permutation(s.size), min(cfg.minibatch, s.size)):
                logits = policy.logits(s[mb])
                logp_all = log_softmax(logits, axis=1)
                _, coef = clipped_surrogate(logp_all[np.arange(mb.size), a[mb]], logp_old_flat[mb], adv[mb], cfg.clip)
                opt_pi.step(policy.theta, policy.gradient(s[mb], a[mb], coef, np.exp(logp_all)))
                opt_v.step(value.w, value.gradient(s[mb], value(s[mb]) - ret[mb]))
        if cfg.target_kl is not None:  # the batch's sequence KL, estimated from the sampled log-ratios
            kl = float((logp_old - logp_ref).sum(axis=1).mean())
            beta *= 1.0 + 0.1 * float(np.clip((kl - cfg.target_kl) / cfg.target_kl, -0.2, 0.2))
        episodes += cfg.batch
        if curve.due(episodes) or episodes >= cfg.steps:
            curve.record(episodes, policy.snapshot())
            curve.rows[-1]["sqrt_kl"] = float(np.sqrt(max(curve.rows[-1]["kl_to_reference"], 0.0)))  # Gao's x-axis
            if cfg.target_kl is not None:  # the controller's beta, when it moves
                curve.rows[-1]["beta"] = float(beta)
    return AgentResult(policy.snapshot(), curve.rows, {"final_beta": float(beta)})
