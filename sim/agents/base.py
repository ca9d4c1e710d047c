"""The agent interface, learning curves and the registry.

An agent is a function ``(ctx: AgentContext, cfg: AgentConfig) -> AgentResult``, registered with what it can do
(:func:`register`). It sees the world only through the context: the world (structure, pi_ref, exact solvers,
sampling), the expected proxy reward (planners), the reward channel it can sample (learners), its own random
generator and, for preference learners, the feedback data. ``ctx.evaluate`` measures a policy exactly against the
oracle; agents call it only at curve checkpoints, never to learn. Nothing here asks which kind of world it holds.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import log_softmax

from sim.errors import ConfigError

#: ``progress(done, total)``: a callback for long training loops (the command line draws a bar with it).
Progress = Callable[[int, int], None]


@dataclass(eq=False)
class AgentContext:
    """What an agent may use.

    Attributes:
        world: the world (structure, ``world.ref`` = pi_ref, exact solvers, sampling, envs).
        proxy: the expected proxy reward (r_hat) that planners optimise.
        channel: what sampling agents receive for a transition (:class:`sim.corruption.Channel`).
        oracle: the true reward (a :class:`sim.oracle.Oracle`), for :meth:`evaluate` and envs' infos only.
        rng: the agent's generator.
        feedback: preference data for preference learners (rlhf pipeline), else None.
        progress: called as ``progress(done, total)`` during training, if given.
    """

    world: object
    proxy: object
    channel: object
    oracle: object
    rng: np.random.Generator
    feedback: object | None = None
    progress: Progress | None = None

    @property
    def rewards(self) -> dict[str, object]:
        """What :meth:`evaluate` measures: ``{"oracle": ..., "proxy": ...}`` (the soft optimum can be evaluated in the
        pass that solves it: ``world.soft_policy(ctx.proxy, beta, evaluate=ctx.rewards)``)."""
        return {"oracle": self.oracle.reward, "proxy": self.proxy}

    def evaluate(self, policy) -> dict[str, float]:
        """Exact oracle return, proxy return and KL to the reference of ``policy``."""
        ev = self.world.evaluate(policy, self.rewards)
        return {"oracle_return": ev["oracle"], "proxy_return": ev["proxy"], "kl_to_reference": ev["kl_to_reference"]}


@dataclass
class AgentResult:
    """What an agent returns.

    Attributes:
        policy: a policy of the world (rows per level, or a weighted set of sequences).
        curve: learning-curve rows (``step``, ``oracle_return``, ``proxy_return``, ``kl_to_reference``);
            empty for planners.
        extra: agent-specific metrics (e.g. best_of_n's analytic KL bound).
    """

    policy: object
    curve: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)


class Curve:
    """A learning curve recorded at ``k`` log-spaced steps in ``[1, total]`` (always including ``total``)."""

    def __init__(self, ctx: AgentContext, total: int, k: int = 20):
        self.ctx = ctx
        self.total = total
        self.points = np.unique(np.geomspace(1, total, k).round().astype(np.int64))
        self.next = 0
        self.rows: list[dict[str, float]] = []

    def due(self, step: int) -> bool:
        """Whether ``step`` has reached the next checkpoint (and report progress)."""
        if self.ctx.progress is not None:
            self.ctx.progress(min(step, self.total), self.total)
        return self.next < self.points.size and step >= self.points[self.next]

    def record(self, step: int, policy, **extra: float) -> None:
        """Record the policy at ``step`` (skipping checkpoints that ``step`` has already passed)."""
        while self.next < self.points.size and step >= self.points[self.next]:
            self.next += 1
        self.rows.append({"step": int(step), **self.ctx.evaluate(policy), **extra})


def beta_path(cfg) -> np.ndarray:
    """The betas of an optimisation-pressure path: log-spaced from ``path_max_beta`` (default max(100, 1000 beta))
    down to ``beta``."""
    top = cfg.path_max_beta if cfg.path_max_beta is not None else max(100.0, 1000.0 * cfg.beta)
    return np.geomspace(top, cfg.beta, cfg.checkpoints)


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


@dataclass(frozen=True)
class AgentSpec:
    """A registered agent and what it can do.

    Attributes:
        name: its contract name (``agent=<name>``).
        run: the agent function.
        worlds: the world kinds it runs on.
        learns_from: ``expected`` (the expected proxy table), ``samples`` (the reward channel, in episodes) or
            ``preferences`` (the rlhf pipeline's preference data).
        kl: whether ``agent.beta`` is its KL coefficient.
        keys: the ``agent.*`` keys it reads (besides ``name``).
        templates: which feature templates it uses, given its config (``None``: none).
        check: extra validation of a whole :class:`sim.config.Config` before any work (raises ``ConfigError``):
            limits of the agent's own maths, e.g. sizes it cannot handle.
        requires: modules it imports when it runs (an optional extra, e.g. ``stable_baselines3``); without them
            its ``check`` refuses it, and :attr:`available` is false.
    """

    name: str
    run: AgentFn
    worlds: tuple[str, ...] = ("enumerated", "markov")
    learns_from: str = "expected"
    kl: bool = False
    keys: tuple[str, ...] = ()
    templates: Callable[[object], Sequence[str]] | None = None
    check: Callable[[object], None] | None = None
    requires: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        """Whether every module it requires can be imported (without importing them)."""
        return all(importlib.util.find_spec(m) is not None for m in self.requires)


AGENTS: dict[str, AgentSpec] = {}


def register(
    name: str,
    *,
    worlds: tuple[str, ...] = ("enumerated", "markov"),
    learns_from: str = "expected",
    kl: bool = False,
    keys: tuple[str, ...] = (),
    templates: Callable[[object], Sequence[str]] | None = None,
    check: Callable[[object], None] | None = None,
    requires: tuple[str, ...] = (),
) -> Callable[[AgentFn], AgentFn]:
    """Decorator: register an agent under its contract name, with its capabilities (:class:`AgentSpec`).

    Example:
        >>> @register("uniform_guess", keys=())
        ... def uniform_guess(ctx, cfg):
        ...     return AgentResult(ctx.world.ref)
        >>> AGENTS["uniform_guess"].learns_from
        'expected'
        >>> del AGENTS["uniform_guess"]
    """

    def wrap(fn: AgentFn) -> AgentFn:
        AGENTS[name] = AgentSpec(
            name, fn, tuple(worlds), learns_from, kl, tuple(keys), templates, check, tuple(requires)
        )
        return fn

    return wrap


def agent_spec(name: str) -> AgentSpec:
    """The registered agent ``name``.

    Raises:
        ConfigError: naming ``agent.name`` and the registered agents.
    """
    if name not in AGENTS:
        raise ConfigError("agent.name", name, f"one of {sorted(AGENTS)}")
    return AGENTS[name]


def run_agent(ctx: AgentContext, cfg) -> AgentResult:
    """Run the agent ``cfg.name`` (an :class:`sim.config.AgentConfig`)."""
    return agent_spec(cfg.name).run(ctx, cfg)


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


def sample_from(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of ``probs`` (B, A) (inverse CDF; rows need not be exactly normalised)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cum[:, -1]
    return np.minimum((u[:, None] >= cum).sum(axis=1), probs.shape[1] - 1)


def averaged_update(
    table: np.ndarray, visits: np.ndarray, flat: np.ndarray, delta: np.ndarray, lr: float, decay: float
) -> None:
    """``table[k] += lr / (1 + visits[k])^decay * mean(delta over the batch entries at k)``; counts the visits.

    Updates of one batch are averaged per key, so an entry visited by many episodes at once is not over-stepped.
    """
    keys, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    mean = np.bincount(inverse, weights=delta, minlength=keys.size) / counts
    step = lr / (1.0 + visits.flat[keys]) ** decay if decay > 0 else lr
    table.flat[keys] += step * mean
    visits.flat[keys] += counts


def epsilon_at(episodes: int, total: int, final: float) -> float:
    """Linear anneal from 1 to ``final`` over the first half of training."""
    return max(final, 1.0 - (1.0 - final) * episodes / max(1.0, 0.5 * total))


def explore(q: np.ndarray, cfg, episodes: int, rng: np.random.Generator) -> np.ndarray:
    """Actions for a batch of Q rows (B, A) under the configured exploration."""
    if cfg.exploration == "boltzmann":
        return sample_from(softmax_rows(q / cfg.temperature), rng)
    greedy = q.argmax(axis=1)  # ties: Q starts at tiny random values, so exact ties do not occur
    eps = epsilon_at(episodes, cfg.steps, cfg.epsilon)
    return np.where(rng.random(q.shape[0]) < eps, rng.integers(0, q.shape[1], q.shape[0]), greedy)


def row_max(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(argmax, max)`` per row; through argmax, which numpy reduces faster than max over short rows."""
    best = q.argmax(axis=1)
    return best, q[np.arange(q.shape[0]), best]


def greedy_rows(q: np.ndarray) -> np.ndarray:
    """One-hot rows on ``argmax q`` (ties to the lowest token)."""
    pi = np.zeros_like(q, dtype=np.float64)
    pi[np.arange(q.shape[0]), q.argmax(axis=1)] = 1.0
    return pi
