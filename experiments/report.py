"""What a run prints and saves beyond its metrics: the summary text, the decoded outputs and ``arrays.npz``."""

from __future__ import annotations

import numpy as np

from sim.run import RunResult

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


def arrays(result: RunResult) -> dict[str, np.ndarray]:
    """``next_state``, ``initial_dist``, ``oracle_reward``, ``proxy_reward``, ``policy``, ``ref_policy`` ([S, A]
    tables of an enumerated world; from these alone every exact metric can be recomputed)."""
    w = result.setup.world
    return {
        "next_state": w.next_table,
        "initial_dist": w.initial_dist,
        "oracle_reward": w.table(result.setup.oracle.reward),
        "proxy_reward": w.table(result.proxy),
        "policy": w.table(result.policy),
        "ref_policy": w.table(w.ref),
    }


def _metric_lines(m: dict) -> list[str]:
    """One aligned line per metric present in ``m``."""
    lines = []
    for key in SUMMARY_KEYS:
        if key in m:
            v = m[key]
            text = "n/a" if v is None else (f"{v:d}" if isinstance(v, int) else f"{v:.4f}")
            lines.append(f"  {key:<20} {text}")
    return lines


def _text(s: str, width: int = 34) -> str:
    return s if len(s) <= width else s[: width - 3] + "..."


def summary(result: RunResult, config=None, n_prompts: int = 2, k: int = 3) -> str:
    """A short human-readable report: the metrics and what the policy learned to say."""
    m, setup = result.metrics, result.setup
    world, oracle = setup.world, setup.oracle
    head = [world.describe(), f"oracle: {m['oracle']}  corruption: {m['corruption']}"]
    if m.get("pipeline") == "rlhf" and config is not None:
        fb, rm = config.feedback, config.reward_model
        head.append(
            f"pipeline: rlhf ({fb.n} {fb.kind} from {fb.sampler}, coverage {fb.prompt_coverage:g}; {rm.name} reward "
            f"model over {list(rm.templates) if rm.name == 'linear' else 'sequences'}); the corruption is what the "
            "annotators perceive"
        )
    head += [f"agent: {m['agent']}  seed: {m['seed']}", "", *_metric_lines(m), ""]
    lines = [*head, f"  {'most likely outputs':<34} {'prob':>6} {'oracle':>8} {'proxy':>8}"]
    for p in range(min(n_prompts, world.n_prompts)):
        seqs, probs = world.likely_sequences(result.policy, p, k)
        R_o = world.sequence_returns(oracle.reward, seqs)
        R_p = world.sequence_returns(result.proxy, seqs)
        for i in range(seqs.n):
            lines.append(f"  {_text(world.text(seqs, i)):<34} {probs[i]:6.3f} {R_o[i]:8.3f} {R_p[i]:8.3f}")
        best = world.likely_sequences(world.greedy_policy(oracle.reward), p, 1)[0]
        lines.append(f"  {_text('(oracle best) ' + world.text(best, 0)):<34} {'':>6} "
                     f"{world.sequence_returns(oracle.reward, best)[0]:8.3f}")  # fmt: skip
    return "\n".join(lines)
