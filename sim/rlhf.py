"""The rlhf pipeline, written once over the world interface: a source of sequences, a teacher, a reward model, an
agent, then exact evaluation.

1. A teacher judges complete sequences by the reward it perceives: the oracle, seen through the corruption
   pipeline if one is configured (e.g. ``corruption.misspec.length_bias`` = annotators who like long answers).
2. ``feedback.n`` labels on sequences from the source over the covered prompts (``feedback.prompt_coverage``);
   ``feedback.query`` other than ``random`` chooses the pairs by the model's uncertainty (:mod:`sim.feedback.active`).
3. A reward model is fitted by MAP; its reward is the proxy the agent optimises.
   ``feedback.sampler = expert`` mixes pi_ref with a near-optimal policy (data that cover the optimum);
   ``feedback.stutter_free`` keeps every output that repeats a token right after itself out of the data.
4. With ``feedback.sampler = policy`` this repeats for ``feedback.rounds`` rounds (iterated RLHF): round 0
   samples from pi_ref, each later round from the agent's current policy, refitting on all data so far.
5. The reward model is scored on held-out pairs from the training distribution and from a shifted one (the
   oracle's soft optimum over all prompts), and by its reward distance to the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.agents import AgentContext, AgentResult, run_agent
from sim.build import Setup
from sim.config import Config
from sim.corruption import identity_channel
from sim.feedback import FeedbackData, preference_accuracy, sample_items
from sim.metrics import reward_distance
from sim.proxy import fit, gather, start_feedback
from sim.reward_models import RewardModel


@dataclass(eq=False)
class RLHFResult:
    """What the rlhf pipeline produced."""

    agent: AgentResult
    reward_model: RewardModel
    data: FeedbackData
    metrics: dict[str, float | int | None]


def run_rlhf(
    cfg: Config,
    setup: Setup,
    feedback_seed: np.random.SeedSequence,
    agent_rng: np.random.Generator,
    progress=None,
) -> RLHFResult:
    """Run the rlhf pipeline on a built setup."""
    fb = cfg.feedback
    world, oracle = setup.world, setup.oracle
    feedback = start_feedback(cfg, setup, feedback_seed)  # the same draws as an env with pipeline=rlhf
    rng, eval_ss, source0, covered, teacher = (
        feedback.rng,
        feedback.eval_seed,
        feedback.source,
        feedback.covered,
        feedback.teacher,
    )
    per_round = np.diff(np.linspace(0, fb.n, fb.rounds + 1).round().astype(int))
    data: FeedbackData | None = None
    source = source0
    for n_round in per_round:
        new = gather(cfg, world, feedback, source, int(n_round), prior=data)  # pairs chosen by feedback.query
        data = new if data is None else data + new
        rm = fit(cfg, world, data, rng)
        ctx = AgentContext(world, rm.reward, identity_channel(world, rm.reward), oracle, agent_rng, data, progress)
        agent = run_agent(ctx, cfg.agent)
        source = world.sequence_source(agent.policy)

    # evaluation of the reward model
    eval_rng = np.random.default_rng(eval_ss)

    def accuracy(src, prompts) -> float | None:
        pool, pairs = sample_items(src, prompts, fb.n_eval, 2, eval_rng)
        return preference_accuracy(rm.predict(pool), world.sequence_returns(oracle.reward, pool), pairs)

    all_prompts = np.arange(world.n_prompts)
    in_dist = accuracy(source0, covered)
    shift = world.sequence_source(world.soft_policy(oracle.reward, fb.shift_beta * teacher.scale))
    shifted = accuracy(shift, all_prompts)
    seqs, weights = source0.coverage(eval_rng.integers(0, world.n_prompts, 2 * fb.n_eval), eval_rng)
    true = world.sequence_returns(oracle.reward, seqs)
    gaps = world.prompt_values(None, oracle.reward) - world.prompt_values(agent.policy, oracle.reward)
    uncovered = np.setdiff1d(all_prompts, covered)
    metrics = {
        "rm_accuracy_in_dist": in_dist,
        "rm_accuracy_shifted": shifted,
        "reward_distance": reward_distance(true, rm.predict(seqs), weights, seqs.prompt),
        "n_feedback": data.n,
        "n_covered_prompts": int(covered.size),
        "gap_covered": float(gaps[covered].mean()),
        "gap_uncovered": float(gaps[uncovered].mean()) if uncovered.size else None,
    }
    return RLHFResult(agent=agent, reward_model=rm, data=data, metrics=metrics)
