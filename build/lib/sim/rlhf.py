"""The rlhf pipeline: simulated feedback -> reward model (MAP) -> agent -> exact evaluation.

1. A teacher judges complete sequences by the reward it perceives: the oracle, seen through the corruption
   pipeline if one is configured (e.g. ``corruption.misspec.length_bias`` = annotators who like long answers).
2. ``feedback.n`` labels on sequences from the sampler over the covered prompts (``feedback.prompt_coverage``).
3. A reward model is fitted by MAP; its table is the proxy reward the agent optimises.
   ``feedback.sampler = expert`` mixes pi_ref with a near-optimal policy (data that cover the optimum).
4. With ``feedback.sampler = policy`` this repeats for ``feedback.rounds`` rounds (iterated RLHF): round 0
   samples from pi_ref, each later round from the agent's current policy, refitting on all data so far.
5. The reward model is scored on held-out pairs from the training distribution and from a shifted one (the
   oracle's soft optimum over all prompts), and by its reward distance to the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.agents import AgentContext, AgentResult, run_agent
from sim.config import Config
from sim.corruption import identity_channel
from sim.feedback import Sequences, SequenceSampler, collect, covered_prompts, make_teacher, preference_accuracy
from sim.feedback.datasets import FeedbackData, evaluation_pairs, expert_policy, sampling_probs
from sim.metrics import per_prompt_gap, reward_distance
from sim.reward_models import RewardModel, fit_reward_model
from sim.solvers import soft_optimal
from sim.world import World


@dataclass(eq=False)
class RLHFResult:
    """What the rlhf pipeline produced."""

    agent: AgentResult
    reward_model: RewardModel
    data: FeedbackData
    metrics: dict[str, float | int | None]


def run_rlhf(
    cfg: Config,
    world: World,
    feedback_seed: np.random.SeedSequence,
    agent_rng: np.random.Generator,
    progress: bool = False,
) -> RLHFResult:
    """Run the rlhf pipeline on a built world."""
    fb, rmc = cfg.feedback, cfg.reward_model
    mdp, ref = world.mdp, world.ref_policy
    data_ss, eval_ss = feedback_seed.spawn(2)
    rng = np.random.default_rng(data_ss)
    seqs = Sequences.of(mdp)
    if fb.sampler == "expert":
        expert = expert_policy(seqs, world.oracle.reward, ref, fb.expert_beta)
        probs0 = sampling_probs(seqs, "expert", ref, expert, fb.expert_mix)
    else:
        probs0 = sampling_probs(seqs, "reference" if fb.sampler == "policy" else fb.sampler, ref)
    covered = covered_prompts(mdp.n_prompts, fb.prompt_coverage, rng)
    teacher = make_teacher(
        seqs,
        world.channel.expected(),
        probs0,
        rng,
        oracle=world.oracle,
        rationality=fb.rationality,
        flip=fb.flip,
        myopia=fb.myopia,
        skip=fb.skip,
        equal=fb.equal,
        sigma=fb.sigma,
        levels=fb.levels,
        annotators=fb.annotators,
        annotator_spread=fb.annotator_spread,
    )
    per_round = np.diff(np.linspace(0, fb.n, fb.rounds + 1).round().astype(int))
    data: FeedbackData | None = None
    probs = probs0
    for n_round in per_round:
        new = collect(teacher, SequenceSampler(seqs, probs), covered, fb.kind, int(n_round), rng, fb.k)
        data = new if data is None else data + new
        rm = fit_reward_model(
            seqs,
            data,
            rmc.name,
            rmc.templates,
            rmc.prior_scale,
            rmc.ensemble,
            rmc.pessimism,
            rmc.rating_sigma,
            rmc.tol,
            rng,
            rmc.ranking_likelihood,
        )
        ctx = AgentContext(
            world, rm.table, identity_channel(mdp, rm.table), agent_rng, feedback=data, progress=progress
        )
        agent = run_agent(ctx, cfg.agent)
        probs = seqs.probs(agent.policy)

    # evaluation of the reward model
    eval_rng = np.random.default_rng(eval_ss)
    true = seqs.returns(world.oracle.reward)
    in_pairs = evaluation_pairs(SequenceSampler(seqs, probs0), covered, fb.n_eval, eval_rng)
    shift_policy = soft_optimal(mdp, world.oracle.reward, ref, fb.shift_beta * teacher.scale)[2]
    all_prompts = np.arange(mdp.n_prompts)
    shifted = evaluation_pairs(SequenceSampler(seqs, seqs.probs(shift_policy)), all_prompts, fb.n_eval, eval_rng)
    gaps = per_prompt_gap(mdp, agent.policy, world.oracle.reward)
    uncovered = np.setdiff1d(all_prompts, covered)
    metrics = {
        "rm_accuracy_in_dist": preference_accuracy(rm.mean_returns, true, in_pairs),
        "rm_accuracy_shifted": preference_accuracy(rm.mean_returns, true, shifted),
        "reward_distance": reward_distance(true, rm.mean_returns, probs0, seqs.prompt),
        "n_feedback": data.n,
        "n_covered_prompts": int(covered.size),
        "gap_covered": float(gaps[covered].mean()),
        "gap_uncovered": float(gaps[uncovered].mean()) if uncovered.size else None,
    }
    return RLHFResult(agent=agent, reward_model=rm, data=data, metrics=metrics)
