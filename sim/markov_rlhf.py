"""The rlhf pipeline on compressed worlds: preferences over *sampled* sequences, a linear reward model over Markov
templates, exact evaluation by dynamic programming.

Sequences are drawn from a Markov policy in batches (``sample_sequences``); their features ``Psi`` are sparse
counts of template indices along each path, laid out exactly like :class:`sim.features.FeatureMap`, so that
``Psi @ theta`` is the return of :func:`sim.markov.markov_reward_from_theta` on every sampled sequence. The fitted
model is itself a Markov reward, so every planner and every metric stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from sim import markov
from sim.errors import ConfigError
from sim.features import template_dim


@dataclass
class SampledSequences:
    """Sequences drawn from a policy on a compressed world.

    Attributes:
        prompt: (n,) prompts.
        tokens: (n, H) tokens; ``-1`` after the sequence ended (EOS is kept as the last token).
        length: (n,) number of tokens emitted, EOS included.
    """

    prompt: np.ndarray
    tokens: np.ndarray
    length: np.ndarray

    @property
    def n(self) -> int:
        return int(self.prompt.size)


def sample_sequences(
    world: markov.MarkovWorld,
    policy: markov.Policy,
    n: int,
    rng: np.random.Generator,
    prompts: np.ndarray | None = None,
) -> SampledSequences:
    """``n`` sequences of ``policy`` (Markov callable), stepped together; prompts uniform unless given."""
    P, H = world.n_prompts, world.horizon
    p = rng.integers(0, P, n) if prompts is None else np.asarray(prompts)
    y = np.full(n, world.bos)
    tokens = np.full((n, H), -1, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    cont = world.continuing()
    length = np.zeros(n, dtype=np.int64)
    for t in range(H):
        a = markov.sample_tokens(policy(t), p, y, rng)
        tokens[alive, t] = a[alive]
        length += alive
        alive &= cont[a] & (t < H - 1)
        y = np.where(alive, a, y)
        if not alive.any():
            break
    return SampledSequences(prompt=p, tokens=tokens, length=length)


def sequence_returns(world: markov.MarkovWorld, reward: markov.MarkovReward, seqs: SampledSequences) -> np.ndarray:
    """(n,) returns of ``reward`` on sampled sequences."""
    total = np.zeros(seqs.n)
    y = np.full(seqs.n, world.bos)
    for t in range(world.horizon):
        a = seqs.tokens[:, t]
        live = a >= 0
        if not live.any():
            break
        aa = np.where(live, a, 0)
        total += np.where(live, reward.token(seqs.prompt, t, y, aa), 0.0)
        y = np.where(live, aa, y)
    return total


def sequence_features(world: markov.MarkovWorld, templates, seqs: SampledSequences) -> sparse.csr_matrix:
    """Sparse ``Psi`` (n, D) over Markov ``templates``, in the layout of :class:`sim.features.FeatureMap`."""
    V, H = world.vocab_size, world.horizon
    for name in templates:
        if name not in markov.MARKOV_TEMPLATES:
            raise ConfigError(
                "reward_model.templates",
                name,
                f"Markov templates {list(markov.MARKOV_TEMPLATES)} on a compressed world",
            )
    offsets = np.concatenate([[0], np.cumsum([template_dim(world, t) for t in templates])])
    n = seqs.n
    t_idx = np.broadcast_to(np.arange(H), (n, H))
    live = seqs.tokens >= 0
    a = np.where(live, seqs.tokens, 0)
    prev = np.concatenate([np.full((n, 1), V), np.where(live[:, :-1], a[:, :-1], V)], axis=1)
    rows_all = np.broadcast_to(np.arange(n)[:, None], (n, H))
    rows, cols = [], []
    last = seqs.length - 1
    for k, name in enumerate(templates):
        if name == "length":
            # length at the end: the number of non-EOS tokens of the response
            ended_eos = world.eos & (seqs.tokens[np.arange(n), last] == 0)
            L = seqs.length - ended_eos
            rows.append(np.arange(n))
            cols.append(offsets[k] + L)
            continue
        if name == "unigram":
            idx = a
        elif name == "position":
            idx = t_idx * V + a
        elif name == "bigram":
            idx = prev * V + a
        else:  # prompt
            idx = seqs.prompt[:, None] * V + a
        rows.append(rows_all[live])
        cols.append(offsets[k] + idx[live])
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sparse.csr_matrix((np.ones(r.size), (r, c)), shape=(n, int(offsets[-1])))


def _pairs(world, policy, prompts, rng) -> tuple[SampledSequences, SampledSequences]:
    return (
        sample_sequences(world, policy, prompts.size, rng, prompts),
        sample_sequences(world, policy, prompts.size, rng, prompts),
    )


def _concat(a: SampledSequences, b: SampledSequences) -> SampledSequences:
    return SampledSequences(
        np.concatenate([a.prompt, b.prompt]), np.concatenate([a.tokens, b.tokens]), np.concatenate([a.length, b.length])
    )


def run_rlhf_compressed(
    cfg,
    world: markov.MarkovWorld,
    oracle: markov.MarkovReward,
    perceived: markov.MarkovReward,
    ref: markov.MarkovReference,
    feedback_seed: np.random.SeedSequence,
):
    """Preferences on sampled pairs -> linear reward model (MAP) -> a Markov proxy, plus reward-model metrics.

    Returns:
        ``(proxy, metrics)``.
    """
    from sim.feedback.datasets import covered_prompts, preference_accuracy
    from sim.feedback.teachers import Teacher
    from sim.metrics import reward_distance
    from sim.reward_models.fit import fit_bt

    fb, rmc = cfg.feedback, cfg.reward_model
    data_ss, eval_ss = feedback_seed.spawn(2)
    rng = np.random.default_rng(data_ss)
    covered = covered_prompts(world.n_prompts, fb.prompt_coverage, rng)
    ref_policy = markov.reference_policy(world, ref)
    first, second = _pairs(world, ref_policy, rng.choice(covered, size=fb.n), rng)
    both = _concat(first, second)
    R = sequence_returns(world, perceived, both)
    teacher = Teacher(
        returns=R[None, :],
        myopic=R[None, :],
        center=float(R.mean()),
        scale=float(R.std()) or 1.0,
        rationality=fb.rationality,
        flip=fb.flip,
        skip=fb.skip,
        equal=fb.equal,
    )
    i, j = np.arange(fb.n), fb.n + np.arange(fb.n)
    labels, kept = teacher.prefer(i, j, rng)
    if not kept.any():
        raise ConfigError("feedback.skip", fb.skip, f"a threshold that keeps some of the {fb.n} pairs")
    Psi = sequence_features(world, rmc.templates, both)
    theta = fit_bt(Psi[i[kept]] - Psi[j[kept]], labels, rmc.prior_scale, rmc.tol)
    proxy = markov.markov_reward_from_theta(world, tuple(rmc.templates), theta)

    eval_rng = np.random.default_rng(eval_ss)
    held = _concat(*_pairs(world, ref_policy, eval_rng.choice(covered, size=fb.n_eval), eval_rng))
    shift_policy = markov.soft_policy(world, oracle, ref, fb.shift_beta * teacher.scale)
    shifted = _concat(*_pairs(world, shift_policy, eval_rng.integers(0, world.n_prompts, fb.n_eval), eval_rng))
    pairs = np.stack([np.arange(fb.n_eval), fb.n_eval + np.arange(fb.n_eval)], axis=1)

    def accuracy(s: SampledSequences) -> float | None:
        true = sequence_returns(world, oracle, s)
        return preference_accuracy(sequence_features(world, rmc.templates, s) @ theta, true, pairs)

    coverage = _concat(*_pairs(world, ref_policy, eval_rng.integers(0, world.n_prompts, fb.n_eval), eval_rng))
    true_c = sequence_returns(world, oracle, coverage)
    metrics = {
        "rm_accuracy_in_dist": accuracy(held),
        "rm_accuracy_shifted": accuracy(shifted),
        "reward_distance": reward_distance(
            true_c, sequence_features(world, rmc.templates, coverage) @ theta, np.ones(coverage.n), coverage.prompt
        ),
        "n_feedback": int(kept.sum()),
        "n_covered_prompts": int(covered.size),
    }
    return proxy, metrics
