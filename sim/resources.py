"""Memory a run will need, estimated in closed form before anything is allocated, and the limit it is checked against.

The estimate is the peak of the run's heaviest stage, from the sizes of what it holds at once: the world's arrays
and the run's reward and policy tables (per state-action entry ``E = S * A``; a compressed world's level rows), and
the stages that can dwarf them: a tabular reward model over every complete sequence (L-BFGS keeps about twenty
vectors of its size, an ensemble one fit per member), a Laplace posterior's dense ``(D, D)`` matrix, a
Plackett-Luce fit's ``(m, k - 1, k)`` block, tabular learners' ``(S, A)`` tables. The coefficients were measured on
this project's runs (peak resident memory over a range of sizes) and are rounded up.
"""

from __future__ import annotations

import os

from sim.errors import ConfigError
from sim.features import template_dim
from sim.reference import TABLE_ENTRIES
from sim.worlds.base import LOG_REF_CACHE_BYTES

GB = 1e9
#: Bytes per state-action entry that every enumerated run holds at its peak: pi_ref, the oracle and the proxy (8
#: each), per-state arrays, and temporaries of a block of states (the exact passes work a block at a time). Measured:
#: 27 with a planner and an uncorrupted proxy at 48.9M entries (1.64 GB peak RSS with the interpreter).
ENUMERATED_BYTES_PER_ENTRY = 40
#: ... and what agents add on top, per entry of their own (S, A) tables.
AGENT_BYTES_PER_ENTRY = {
    "q_learning": 24,
    "policy_gradient": 72,
    "linear_q": 16,
    "lspi": 16,
    "loglinear_pg": 64,
    "ppo": 48,  # with agent.policy=tabular: theta, Adam's two moments, a gradient
    "dpo": 200,  # a tabular DPO keeps a logit per entry; L-BFGS keeps ~20 vectors of that size
    "ipo": 200,
}
#: Python, numpy, scipy and hydra themselves.
BASE_BYTES = 0.3 * GB
#: The default limit is this fraction of the memory available when the run starts.
DEFAULT_FRACTION = 0.8


def physical_bytes() -> float:
    """The machine's physical memory."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 * GB


def default_limit_gb() -> float:
    """The library's default ``max_memory_gb``: a safe fraction of the physical memory (the command line uses a
    fraction of what is free when the run starts)."""
    return DEFAULT_FRACTION * physical_bytes() / GB


def estimate(cfg, n_states: float, n_sequences: float | None, n_bigram: int = 0) -> list[tuple[str, str, float]]:
    """The memory-heavy stages of a run, as ``(stage, key to change, bytes)``.

    Args:
        cfg: a :class:`sim.config.Config`.
        n_states: the world's number of states (closed form).
        n_sequences: the number of complete sequences where the world lists them, else None.
        n_bigram: how many (V + 1, V) bigram tables the run builds (a compressed world's bigram rewards and
            reference).
    """
    e, a, fb, rm = cfg.env, cfg.agent, cfg.feedback, cfg.reward_model
    V, H = e.vocab_size, e.horizon
    entries = n_states * V
    # the reference's log-rows, kept once computed when they fit the cache (sim.worlds.base.LOG_REF_CACHE_BYTES)
    log_ref = 8.0 * entries if 8.0 * entries <= LOG_REF_CACHE_BYTES else 0.0
    stages = []
    if n_sequences is not None:  # an enumerated world holds (S, A) tables
        per_entry = ENUMERATED_BYTES_PER_ENTRY + AGENT_BYTES_PER_ENTRY.get(a.name, 0) + (8 if log_ref else 0)
        if a.name == "ppo" and a.policy == "loglinear":
            per_entry = ENUMERATED_BYTES_PER_ENTRY
        if a.name in ("dpo", "ipo") and a.policy == "loglinear":
            per_entry = ENUMERATED_BYTES_PER_ENTRY + 32
        if a.name in ("ppo", "dpo", "ipo") and a.policy == "loglinear" and log_ref:
            per_entry += 8
        stages.append(("the enumerated world and the agent's tables", "env.horizon", BASE_BYTES + per_entry * entries))
    else:  # a compressed world: level rows, factored rewards, bigram tables
        level = max(n_states / max(H, 1), e.n_prompts) * V
        bigram = 8.0 * (V + 1) * V
        rows = 8.0 * H * e.n_prompts * V
        tabular = a.name in ("q_learning", "policy_gradient") or (a.name == "ppo" and a.policy == "tabular")
        tables = AGENT_BYTES_PER_ENTRY.get(a.name, 0) * entries if tabular else 0
        # blame the vocabulary when its (V + 1, V) bigram tables dominate, else the largest of P, V and H. Each table
        # may keep a max-plus screen once solved (sim.worlds.markov.MaxPlus): its column cache, at most 64 MiB, and
        # about 12 x 256 bytes of candidates per token (90 MB at V = 10,000)
        screen = min(bigram, 64 * 1024**2) + 12 * 256 * V
        bigrams = 2 * n_bigram * bigram + n_bigram * screen
        # pi_ref as a full (S, A) table where it is stored as one (sim.reference.TABLE_ENTRIES), and its log-rows
        reference = (8.0 * entries if entries <= TABLE_ENTRIES else 0.0) + log_ref
        rest = 12 * 8.0 * level + 4 * rows + tables + reference
        factor = max((e.n_prompts, "env.n_prompts"), (V, "env.vocab_size"), (H, "env.horizon"))[1]
        stages.append(
            (
                "the compressed world's level rows, rewards and the agent's tables",
                "env.vocab_size" if bigrams > rest else factor,
                BASE_BYTES + bigrams + rest,
            )
        )
    if a.name == "best_of_n":  # reference draws per prompt (on either world kind), each a sequence of tokens
        stages.append(("best_of_n's reference samples", "agent.samples", 8.0 * a.samples * e.n_prompts * (H + 4)))
    if _samples_episodes(a.name):  # a batch of episodes stepped together: states, tokens, rewards per step
        stages.append(("the batch of episodes sampled together", "agent.batch", 8.0 * a.batch * (H + 16)))
    if cfg.pipeline == "rlhf":
        k = {"preferences": 2, "ratings": 1, "rankings": fb.k}[fb.kind]
        stages.append(("the feedback data", "feedback.n", 8.0 * fb.n * k * (H + 4)))
        # two held-out evaluation sets of n_eval pairs each
        stages.append(("the held-out evaluation pairs", "feedback.n_eval", 8.0 * 4 * fb.n_eval * (H + 4)))
        if fb.kind == "rankings":
            stages.append(("the Plackett-Luce fit's (m, k-1, k) block", "feedback.k", 3 * 8.0 * fb.n * fb.k * fb.k))
        members = max(rm.ensemble, 1)
        if rm.name == "tabular" and n_sequences is not None:
            stages.append(
                (
                    "the tabular reward model (L-BFGS over every sequence)",
                    "reward_model.name",
                    8.0 * n_sequences * (45 + members),
                )
            )  # fmt: skip  (measured: 15 GB at 44M sequences)
            if rm.pessimism > 0 and rm.ensemble < 2:
                m = min(fb.n * k, n_sequences)
                stages.append(("the tabular Laplace block (m, m)", "feedback.n", 3 * 8.0 * m * m))
        elif rm.name == "linear":
            D = sum(template_dim(t, e.n_prompts, V, H) for t in rm.templates)
            key = "reward_model.ensemble" if members > 24 else "reward_model.templates"  # whichever dominates
            stages.append(("the linear reward model's fit", key, 8.0 * D * (24 + members)))
            if rm.pessimism > 0 and rm.ensemble < 2:
                stages.append(("the Laplace posterior's (D, D) matrix", "reward_model.templates", 3 * 8.0 * D * D))
        if n_sequences is not None:
            stages.append(("every complete sequence (tokens, features)", "env.horizon", 8.0 * n_sequences * (H + 16)))
            if rm.objective != "mean":  # each member's prediction of every sequence, and its standardised copy
                need = 16.0 * n_sequences * members
                stages.append(("the ensemble's predictions of every sequence", "reward_model.ensemble", need))
    return stages


def _samples_episodes(name: str) -> bool:
    """Whether agent ``name`` steps ``agent.batch`` episodes together (it reads ``agent.batch``)."""
    from sim.agents import agent_spec  # the registry imports the agents: not at module import time

    try:
        return "batch" in agent_spec(name).keys
    except ConfigError:  # an unknown agent is refused elsewhere, naming agent.name
        return False


def check_memory(
    cfg, n_states: float, n_sequences: float | None, n_bigram: int = 0, max_memory_gb: float | None = None
) -> float:
    """Refuse a run whose estimated peak memory exceeds the limit, before anything is allocated.

    Args:
        max_memory_gb: the limit (default: :func:`default_limit_gb`).

    Returns:
        The estimated peak, in bytes.

    Raises:
        ConfigError: naming the key to change, the heaviest stage and the estimate.
    """
    limit = (max_memory_gb if max_memory_gb is not None else default_limit_gb()) * GB
    stages = estimate(cfg, n_states, n_sequences, n_bigram)
    stage, key, peak = max(stages, key=lambda s: s[2])
    if peak > limit:
        value = _value(cfg, key)
        raise ConfigError(
            key,
            value,
            f"a smaller setting: the run would need about {peak / GB:.1f} GB for {stage}, above max_memory_gb = "
            f"{limit / GB:.1f} GB (raise max_memory_gb if the machine has the memory)",
        )
    return peak


def _value(cfg, key: str) -> object:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj
