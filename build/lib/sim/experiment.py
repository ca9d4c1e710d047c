"""Build a world from a :class:`~sim.config.Config`, run the agent, measure it exactly.

No hydra and no files here: :func:`run` returns a :class:`RunResult`; ``experiments/run.py`` writes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from sim.agents import AgentContext, run_agent
from sim.agents.base import beta_path
from sim.config import Config
from sim.mdp import TextMDP
from sim.metrics import exact_metrics, gap_metrics
from sim.oracle import sequence_form
from sim.rlhf import run_rlhf
from sim.solvers import occupancy
from sim.world import build_world, seed_streams


@dataclass
class RunResult:
    """Everything a run produced.

    Attributes:
        metrics: the flat metrics record (DESIGN section 9).
        arrays: ``next_state``, ``initial_dist``, ``oracle_reward``, ``proxy_reward``, ``policy``,
            ``ref_policy``.
        curve: learning-curve rows (empty for planners).
        mdp: the world, for printing.
    """

    metrics: dict[str, float | int | str | None]
    arrays: dict[str, np.ndarray]
    mdp: TextMDP | None
    curve: list[dict[str, float]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # a compressed run's decoded outputs, for the summary


def run(cfg: Config, progress: bool = False) -> RunResult:
    """Run one experiment end to end (``progress`` shows a bar on long training loops)."""
    t0 = time.perf_counter()
    if cfg.env.compressed:
        return run_compressed(cfg, t0)
    world = build_world(cfg.env, cfg.oracle, cfg.corruption, cfg.seed)
    mdp, ref, oracle = world.mdp, world.ref_policy, world.oracle
    streams = seed_streams(cfg.seed)
    agent_rng = np.random.default_rng(streams["agent"])
    extra: dict[str, float | int | None] = {}
    if cfg.pipeline == "rlhf":
        result = run_rlhf(cfg, world, streams["feedback"], agent_rng, progress)
        agent, proxy = result.agent, result.reward_model.table
        extra = {**result.metrics, **agent.extra}
    else:
        proxy = world.channel.expected()
        agent = run_agent(AgentContext(world, proxy, world.channel, agent_rng, progress=progress), cfg.agent)
        extra = dict(agent.extra)
    metrics: dict[str, float | int | str | None] = dict(exact_metrics(mdp, agent.policy, oracle.reward, proxy, ref))
    metrics.update(
        seed=cfg.seed,
        pipeline=cfg.pipeline,
        oracle=f"{cfg.oracle.kind} ({cfg.oracle.form})",
        corruption=cfg.corruption.describe(),
        **extra,
        agent=cfg.agent.name,
        n_states=mdp.n_states,
        n_actions=mdp.n_actions,
        wall_time_s=time.perf_counter() - t0,
    )
    arrays = {
        "next_state": mdp.next_state,
        "initial_dist": mdp.initial_dist,
        "oracle_reward": oracle.reward,
        "proxy_reward": proxy,
        "policy": agent.policy,
        "ref_policy": ref,
    }
    return RunResult(metrics=metrics, arrays=arrays, mdp=mdp, curve=agent.curve)


def top_sequences(mdp: TextMDP, policy: np.ndarray, prompt: int, k: int = 3) -> list[tuple[int, int, float]]:
    """The ``k`` most likely complete sequences of ``policy`` for ``prompt``.

    Returns:
        ``(s, a, prob)`` per sequence: its last transition and its probability given the prompt.
    """
    d = occupancy(mdp, policy)
    mine = (mdp.prompt == prompt)[:, None] & mdp.terminal_mask()
    prob = np.where(mine, d[:, None] * policy, -1.0) / mdp.initial_dist[prompt]
    flat = np.argsort(prob, axis=None, kind="stable")[::-1][:k]
    s, a = np.unravel_index(flat, prob.shape)
    return [(int(i), int(j), float(prob[i, j])) for i, j in zip(s, a, strict=True) if prob[i, j] > 0]


def run_compressed(cfg: Config, t0: float) -> RunResult:
    """A run on a compressed Markov world: every metric by exact dynamic programming over (p, t, y)."""
    from sim import markov, markov_agents
    from sim.markov_env import build_markov_setup

    streams = seed_streams(cfg.seed)
    e, o = cfg.env, cfg.oracle
    setup = build_markov_setup(e, o, cfg.corruption, cfg.seed)
    world, ref, oracle, proxy = setup.world, setup.ref, setup.oracle, setup.proxy
    extra: dict[str, float | int | None] = {}
    if cfg.pipeline == "rlhf":  # annotators perceive the (possibly misspecified) reward; the agent sees the model
        from sim.markov_rlhf import run_rlhf_compressed

        proxy, extra = run_rlhf_compressed(cfg, world, oracle, proxy, ref, streams["feedback"])
    received = proxy  # what a learner is paid when its episode carries reward (learners draw the budget flags)
    proxy = markov_agents.expected_proxy(received, cfg.corruption)  # p times it: what planners optimise
    rewards = {"oracle": oracle, "proxy": proxy}
    curve: list[dict[str, float]] = []
    if cfg.agent.name == "exact_planner":
        policy = markov.greedy_policy(world, proxy)
    elif cfg.agent.name in ("loglinear_pg", "linear_q"):  # sampled rollouts; every checkpoint evaluated exactly
        learner = getattr(markov_agents, cfg.agent.name)
        agent_rng = np.random.default_rng(streams["agent"])
        policy, curve = learner(world, received, oracle, ref, cfg.agent, agent_rng, cfg.corruption)
    else:
        policy = markov.soft_policy(world, proxy, ref, cfg.agent.beta)
        if cfg.agent.path:  # the optimisation-pressure path, exactly
            for k, beta in enumerate(beta_path(cfg.agent), start=1):
                ev_k = markov.evaluate(world, markov.soft_policy(world, proxy, ref, float(beta)), rewards, ref)
                curve.append(
                    {
                        "step": k,
                        "oracle_return": ev_k["oracle"],
                        "proxy_return": ev_k["proxy"],
                        "kl_to_reference": ev_k["kl_to_reference"],
                        "beta": float(beta),
                    }
                )
    ev = markov.evaluate(world, policy, rewards, ref)
    ref_ev = markov.evaluate(world, markov.reference_policy(world, ref), rewards, ref)
    # a Monte Carlo estimate beside the exact value (what a sampling-only simulator would report)
    mc_rng = np.random.default_rng(streams["agent"].spawn(1)[0])
    mc, lo, hi = markov.mc_estimate(markov.sample_returns(world, policy, oracle, 2000, mc_rng), 0.99)
    extra.update(oracle_return_mc=mc, oracle_return_mc_ci99_lo=lo, oracle_return_mc_ci99_hi=hi)
    metrics: dict[str, float | int | str | None] = {
        **gap_metrics(markov.optimal_return(world, oracle), ev["oracle"], ref_ev["oracle"]),
        "proxy_return": ev["proxy"],
        "reference_proxy_return": ref_ev["proxy"],
        "kl_to_reference": ev["kl_to_reference"],
        "seed": cfg.seed,
        "pipeline": cfg.pipeline,
        "oracle": f"{o.kind} ({o.form})",
        "corruption": cfg.corruption.describe(),
        "agent": cfg.agent.name,
        "compressed": True,
        "n_states": None,
        "n_actions": e.vocab_size,
        **extra,
        "wall_time_s": time.perf_counter() - t0,
    }
    best = markov.greedy_policy(world, oracle)
    outputs = []
    for p in range(min(2, world.n_prompts)):
        for label, pol in (("policy's most likely", policy), ("oracle's best", best)):
            toks, prob, ret = markov.most_likely_path(world, pol, rewards, p)
            words = " ".join("<eos>" if (world.eos and a == 0) else f"t{a}" for a in toks)
            words = words if len(words) <= 60 else words[:57] + "..."
            outputs.append(
                f"  x{p} {label:<20} p={prob:6.3f} oracle={ret['oracle']:8.3f} proxy={ret['proxy']:8.3f}  {words}"
            )
    return RunResult(metrics=metrics, arrays={}, mdp=None, curve=curve, outputs=outputs)


SUMMARY_KEYS = (
    "optimal_return",
    "oracle_return",
    "reference_return",
    "gap",
    "normalized_gap",
    "proxy_return",
    "kl_to_reference",
    "rm_accuracy_in_dist",
    "rm_accuracy_shifted",
    "reward_distance",
    "n_feedback",
    "wall_time_s",
)


def _metric_lines(m: dict) -> list[str]:
    """One aligned line per metric present in ``m``."""
    lines = []
    for key in SUMMARY_KEYS:
        if key in m:
            v = m[key]
            text = "n/a" if v is None else (f"{v:d}" if isinstance(v, int) else f"{v:.4f}")
            lines.append(f"  {key:<20} {text}")
    return lines


def summary(result: RunResult, n_prompts: int = 2, k: int = 3) -> str:
    """A short human-readable report: the metrics and what the policy learned to say."""
    m, mdp = result.metrics, result.mdp
    head = [
        mdp.describe()
        if mdp is not None
        else f"compressed Markov world (never enumerated); n_actions={m['n_actions']}",
        f"oracle: {m['oracle']}  corruption: {m['corruption']}",
        f"agent: {m['agent']}  seed: {m['seed']}",
        "",
        *_metric_lines(m),
    ]
    if mdp is None:
        return "\n".join([*head, "", *result.outputs])
    R_oracle = sequence_form(mdp, result.arrays["oracle_reward"])
    R_proxy = sequence_form(mdp, result.arrays["proxy_reward"])
    lines = head
    lines.append("")
    lines.append(f"  {'most likely outputs':<34} {'prob':>6} {'oracle':>8} {'proxy':>8}")
    for p in range(min(n_prompts, mdp.n_prompts)):
        for s, a, prob in top_sequences(mdp, result.arrays["policy"], p, k):
            lines.append(f"  {mdp.format_sequence(s, a):<34} {prob:6.3f} {R_oracle[s, a]:8.3f} {R_proxy[s, a]:8.3f}")
        mine = (mdp.prompt == p)[:, None] & mdp.terminal_mask()
        s, a = np.unravel_index(np.argmax(np.where(mine, R_oracle, -np.inf)), R_oracle.shape)
        lines.append(f"  {'(oracle best) ' + mdp.format_sequence(int(s), int(a)):<34} {'':>6} {R_oracle[s, a]:8.3f}")
    return "\n".join(lines)
