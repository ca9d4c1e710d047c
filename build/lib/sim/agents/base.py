"""The agent interface, learning curves and the registry.

An agent is a function ``(ctx: AgentContext, cfg: AgentConfig) -> AgentResult``. It sees the world only through
the context: the expected proxy table (planners), the reward channel it can sample (learners), the reference
policy, its own random generator and, for dpo, the preference data. ``ctx.evaluate`` measures a policy exactly
against the oracle; agents call it only at curve checkpoints, never to learn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import log_softmax
from tqdm.auto import tqdm

from sim.corruption import RewardChannel
from sim.errors import check
from sim.feedback.datasets import FeedbackData
from sim.solvers import expected_return, kl_divergence, occupancy
from sim.world import World


@dataclass(eq=False)
class AgentContext:
    """What an agent may use.

    Attributes:
        world: the world (agents use ``world.mdp`` and ``world.ref_policy``; the oracle is for ``evaluate``).
        proxy: float (S, A), the expected proxy reward (r_hat) that planners optimise.
        channel: what sampling agents receive for a transition; its ``expected()`` is ``proxy``.
        rng: the agent's generator.
        feedback: preference data for dpo (rlhf pipeline), else None.
        progress: show a progress bar over the training budget.
    """

    world: World
    proxy: np.ndarray
    channel: RewardChannel
    rng: np.random.Generator
    feedback: FeedbackData | None = None
    progress: bool = False

    @property
    def mdp(self):
        return self.world.mdp

    @property
    def ref_policy(self) -> np.ndarray:
        return self.world.ref_policy

    def evaluate(self, policy: np.ndarray) -> dict[str, float]:
        """Exact oracle return, proxy return and KL to the reference of ``policy``."""
        d = occupancy(self.mdp, policy)
        return {
            "oracle_return": expected_return(self.mdp, policy, self.world.oracle.reward, d),
            "proxy_return": expected_return(self.mdp, policy, self.proxy, d),
            "kl_to_reference": kl_divergence(self.mdp, policy, self.ref_policy, d),
        }


@dataclass
class AgentResult:
    """What an agent returns.

    Attributes:
        policy: float array (S, A), rows sum to 1.
        curve: learning-curve rows (``step``, ``oracle_return``, ``proxy_return``, ``kl_to_reference``);
            empty for planners.
        extra: agent-specific metrics (e.g. best_of_n's analytic KL bound).
    """

    policy: np.ndarray
    curve: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)


class Curve:
    """A learning curve recorded at ``k`` log-spaced steps in ``[1, total]`` (always including ``total``)."""

    def __init__(self, ctx: AgentContext, total: int, k: int = 20):
        self.ctx = ctx
        self.points = np.unique(np.geomspace(1, total, k).round().astype(np.int64))
        self.next = 0
        self.rows: list[dict[str, float]] = []
        self.bar = tqdm(total=total, disable=not ctx.progress, leave=False, dynamic_ncols=True, desc="training")

    def due(self, step: int) -> bool:
        """Whether ``step`` has reached the next checkpoint (and advance the progress bar to ``step``)."""
        if step > self.bar.n:
            self.bar.update(min(step, self.bar.total) - self.bar.n)
            if step >= self.bar.total:
                self.bar.close()
        return self.next < self.points.size and step >= self.points[self.next]

    def record(self, step: int, policy: np.ndarray, **extra: float) -> None:
        """Record the policy at ``step`` (skipping checkpoints that ``step`` has already passed)."""
        while self.next < self.points.size and step >= self.points[self.next]:
            self.next += 1
        self.rows.append({"step": int(step), **self.ctx.evaluate(policy), **extra})


def beta_path(cfg) -> np.ndarray:
    """The betas of an optimisation-pressure path: log-spaced from ``path_max_beta`` down to ``beta``."""
    return np.geomspace(cfg.path_max_beta, cfg.beta, cfg.checkpoints)


def pressure_path(ctx: AgentContext, cfg, policy_at) -> AgentResult:
    """Solve at every beta of the path; the curve has ``step`` = 1..K and a ``beta`` column."""
    curve = Curve(ctx, cfg.checkpoints, cfg.checkpoints)
    pi = None
    for k, beta in enumerate(beta_path(cfg), start=1):
        pi = policy_at(float(beta))
        curve.due(k)
        curve.record(k, pi, beta=float(beta))
    return AgentResult(pi, curve.rows)


AgentFn = Callable[[AgentContext, object], AgentResult]
AGENTS: dict[str, AgentFn] = {}


def register(name: str) -> Callable[[AgentFn], AgentFn]:
    """Decorator: register an agent under its contract name."""

    def wrap(fn: AgentFn) -> AgentFn:
        AGENTS[name] = fn
        return fn

    return wrap


def run_agent(ctx: AgentContext, cfg) -> AgentResult:
    """Run the agent ``cfg.name`` (an :class:`sim.config.AgentConfig`)."""
    from sim.agents import linear, planners, rl_free, tabular  # noqa: F401  (registration)

    check(cfg.name in AGENTS, "agent.name", cfg.name, f"one of {sorted(AGENTS)}")
    return AGENTS[cfg.name](ctx, cfg)


def sample_from(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of ``probs`` (B, A) (inverse CDF; rows need not be exactly normalised)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cum[:, -1]
    return np.minimum((u[:, None] >= cum).sum(axis=1), probs.shape[1] - 1)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def log_ratio(logits: np.ndarray, log_ref: np.ndarray) -> np.ndarray:
    """``log pi(a|s) - log pi_ref(a|s)`` for ``pi = softmax(logits)``, from ``log_softmax`` so that it stays finite
    where ``pi`` underflows to 0 (``log(pi)`` would give -inf, and ``pi * -inf`` NaN); 0 where ``pi_ref`` is 0."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isneginf(log_ref), 0.0, log_softmax(logits, axis=1) - log_ref)


def rollout(
    mdp, policy: np.ndarray, channel: RewardChannel, rng: np.random.Generator, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``batch`` complete episodes of ``policy``, stepped together (no Python loop per transition).

    Returns:
        ``(states, actions, rewards, alive)``, each (batch, H); ``alive[b, t]`` marks real steps (an episode that
        ended before ``t`` is padded). Rewards are the channel's samples, with episode-level budget flags.
    """
    H = mdp.horizon
    P = mdp.n_prompts
    s = rng.choice(P, size=batch, p=mdp.initial_dist[:P])
    carries = channel.episode_flags(batch, rng)
    states = np.zeros((batch, H), dtype=np.int64)
    actions = np.zeros((batch, H), dtype=np.int64)
    rewards = np.zeros((batch, H))
    alive = np.zeros((batch, H), dtype=bool)
    live = np.ones(batch, dtype=bool)
    for t in range(H):
        a = sample_from(policy[s], rng)
        states[:, t], actions[:, t], alive[:, t] = s, a, live
        rewards[:, t] = np.where(live, channel.sample(s, a, rng, carries), 0.0)
        nxt = mdp.next_state[s, a]
        live = live & (nxt >= 0)
        if not live.any():
            break
        s = np.where(live, nxt, s)
    return states, actions, rewards, alive
