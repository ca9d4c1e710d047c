"""The golden set: runs whose ``metrics.json`` and ``curve.csv`` must survive refactors (to 1e-9 relative).

Each case is a list of CLI overrides. ``python -m tests.golden.record`` (re)writes ``tests/golden/runs/<case>/``;
``tests/test_golden.py`` reruns every case in-process and compares. Record only when a change of results is
intended, and say why in the commit.
"""

from __future__ import annotations

LARGE_FAST = ["env=large", "agent.steps=2048", "agent.batch=512", "agent.checkpoints=4"]

CASES: dict[str, list[str]] = {
    # the README's printed examples
    "readme_default": [],
    "readme_misweighted": ["corruption=misweighted"],
    "readme_rlhf_coverage": ["pipeline=rlhf", "feedback.prompt_coverage=0.25"],
    "readme_sweep_job": ["env=tiny", "agent.beta=1"],
    "readme_large": ["env=large"],
    "readme_large_rlhf": [
        "env=large",
        "env.n_prompts=1",
        "pipeline=rlhf",
        "feedback.n=300",
        "oracle.templates=[unigram,position,bigram]",
        "reward_model.templates=[unigram,position,bigram]",
        "agent.beta=0.03",
    ],
    # one run per agent on the enumerated world (and the modes that change the maths)
    "enum_exact_planner": ["agent=exact_planner", "oracle=nonlinear"],
    "enum_soft_planner_path": ["agent=soft_planner", "agent.path=true", "agent.checkpoints=6"],
    "enum_q_learning": ["env=tiny", "agent=q_learning", "agent.steps=3000"],
    "enum_q_learning_boltzmann": ["env=tiny", "agent=q_learning", "agent.steps=2000", "agent.exploration=boltzmann"],
    "enum_policy_gradient_npg": ["agent=policy_gradient", "agent.steps=100"],
    "enum_policy_gradient_plain": ["agent=policy_gradient", "agent.steps=100", "agent.natural=false"],
    "enum_policy_gradient_sampled": ["env=tiny", "agent=policy_gradient", "agent.mode=sampled", "agent.steps=3000"],
    "enum_linear_q": ["env=tiny", "agent=linear_q", "agent.steps=3000"],
    "enum_lspi": ["env=tiny", "agent=lspi", "agent.steps=2000"],
    "enum_loglinear_pg_npg": ["env=tiny", "agent=loglinear_pg", "agent.steps=50"],
    "enum_loglinear_pg_lbfgs": ["env=tiny", "agent=loglinear_pg", "agent.steps=50", "agent.natural=false"],
    "enum_loglinear_pg_sampled": ["env=tiny", "agent=loglinear_pg", "agent.mode=sampled", "agent.steps=3000"],
    "enum_best_of_n": ["agent=best_of_n", "corruption=misweighted"],
    "enum_best_of_n_path": ["agent=best_of_n", "agent.path=true", "agent.checkpoints=5"],
    "enum_dpo_tabular": ["pipeline=rlhf", "agent=dpo", "feedback.n=300", "agent.steps=100"],
    "enum_dpo_loglinear": ["pipeline=rlhf", "agent=dpo", "agent.policy=loglinear", "feedback.n=300"],
    "enum_dpo_path": ["env=tiny", "pipeline=rlhf", "agent=dpo", "agent.path=true", "agent.checkpoints=4"],
    "enum_ipo": ["pipeline=rlhf", "agent=ipo", "feedback.n=300", "agent.steps=100"],
    # the direct corruption pipeline
    "corr_terminal": ["env=tiny", "agent=q_learning", "agent.steps=2000", "corruption=sparse"],
    "corr_chunk_budget": [
        "env=tiny",
        "agent=q_learning",
        "agent.steps=2000",
        "corruption.sparsity.mode=chunk",
        "corruption.sparsity.budget=0.5",
    ],
    "corr_noise_delivery": [
        "env=tiny",
        "agent=q_learning",
        "agent.steps=2000",
        "corruption.noise.sigma=0.5",
        "corruption.noise.levels=3",
        "corruption.noise.drop=0.2",
    ],
    "corr_noise_fixed": ["corruption=regressional", "corruption.noise.levels=4", "corruption.noise.drop=0.1"],
    "corr_misspec_mix": [
        "oracle=nonlinear",
        "corruption.misspec.angle=0.4",
        "corruption.misspec.omit=[prompt]",
        "corruption.misspec.length_bias=0.3",
    ],
    "corr_project": ["oracle=nonlinear", "corruption.misspec.project_to=[unigram,position]", "agent=exact_planner"],
    "corr_scope": ["corruption.misspec.scope_tokens=2", "corruption.misspec.scope_prompts=0.5"],
    "corr_exploit": ["agent=exact_planner", "corruption.misspec.exploit=1", "corruption.misspec.exploit_length=2"],
    "corr_sequence_form": ["oracle.form=sequence", "oracle.kind=linear+length", "corruption=length_biased"],
    "oracle_repetition_softmax_ref": ["oracle.kind=linear+repetition", "env.reference=softmax"],
    "oracle_stutter_eos_hazard": ["oracle.kind=linear+stutter", "env.reference=eos_hazard"],
    # the rlhf pipeline
    "rlhf_tabular": ["pipeline=rlhf", "reward_model=tabular", "feedback.n=300"],
    "rlhf_rankings_ensemble_pessimism": [
        "pipeline=rlhf",
        "feedback=rankings",
        "feedback.n=200",
        "reward_model.ensemble=3",
        "reward_model.pessimism=1",
    ],
    "rlhf_rankings_pairs": ["pipeline=rlhf", "feedback=rankings", "reward_model.ranking_likelihood=pairs"],
    "rlhf_ratings_laplace": ["pipeline=rlhf", "feedback=ratings", "feedback.levels=5", "reward_model.pessimism=0.5"],
    "rlhf_tabular_laplace": ["pipeline=rlhf", "reward_model=tabular", "reward_model.pessimism=2", "feedback.n=200"],
    "rlhf_iterated": ["pipeline=rlhf", "feedback.sampler=policy", "feedback.rounds=3", "agent.beta=0.3"],
    "rlhf_expert_mistake": ["pipeline=rlhf", "feedback=mistake", "feedback.sampler=expert"],
    "rlhf_annotators_myopic": [
        "pipeline=rlhf",
        "feedback=myopic",
        "feedback.annotators=3",
        "feedback.annotator_spread=0.5",
        "feedback.equal=0.1",
        "feedback.skip=-1",
    ],
    "rlhf_uniform_sampler": ["pipeline=rlhf", "feedback.sampler=uniform", "agent=exact_planner"],
    # compressed worlds: each of today's compressed agents
    "large_exact_planner": ["env=large", "agent=exact_planner"],
    "large_soft_planner_path": ["env=large", "agent.path=true", "agent.checkpoints=4"],
    "large_loglinear_pg": [*LARGE_FAST, "agent=loglinear_pg", "agent.mode=sampled", "agent.templates=[position]"],
    "large_linear_q": [*LARGE_FAST, "agent=linear_q", "agent.templates=[position]"],
    "markov_small_loglinear_pg": [
        "env=small",
        "env.compressed=true",
        "env.reference=bigram",
        "agent=loglinear_pg",
        "agent.mode=sampled",
        "agent.steps=4096",
        "corruption.sparsity.mode=terminal",
        "corruption.noise.sigma=0.3",
        "corruption.sparsity.budget=0.7",
    ],
    "markov_small_linear_q": [
        "env=small",
        "env.compressed=true",
        "agent=linear_q",
        "agent.steps=4096",
        "corruption.sparsity.mode=chunk",
        "corruption.misspec.angle=0.5",
        "corruption.misspec.length_bias=0.2",
    ],
    "markov_position_only": [
        "env=large",
        "env.vocab_size=5000",
        "env.horizon=16",
        "env.reference=uniform",
        "oracle.kind=linear+length",
        "oracle.templates=[unigram,position,length]",
        "corruption.misspec.omit=[length]",
    ],
    "markov_rlhf_small": [
        "env=small",
        "env.compressed=true",
        "pipeline=rlhf",
        "feedback.n=500",
        "feedback.prompt_coverage=0.5",
        "oracle.templates=[unigram,position,bigram]",
        "reward_model.templates=[unigram,position]",
    ],
}
