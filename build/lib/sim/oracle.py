"""Oracle reward families: the true reward r*[S, A] that every experiment is measured against.

Families (``kind``; join several with ``+`` to add them, e.g. ``"linear+length"``):

* ``linear``: ``theta* ~ N(0, scale^2 / K)`` over ``K`` feature templates; ``r*(s, a) = theta* . phi(s, a)``.
* ``nonlinear``: ``linear`` plus terms no linear template spans: co-occurrence bonuses ``c_ij`` paid when the
  second token of a chosen pair ``(i, j)`` first appears in the response, and an i.i.d. per-sequence
  component ``N(0, seq_noise^2)`` on each complete sequence.
* ``length``: ``g(L) = w * L (2 L* - L) / L*^2``, peaked at the target length ``L*`` with value ``w`` and 0 at
  ``L = 0``. In dense form each non-EOS token at depth ``t`` pays ``g(t+1) - g(t)``.
* ``repetition``: each token that already occurs in the response costs ``repetition_weight``. It depends on the
  whole prefix, so no unigram/position/bigram model represents it; it rarely matters for diverse samples
  but dominates when an optimiser repeats its favourite tokens (extremal Goodhart).
* ``stutter``: each token equal to the one just before it costs ``repetition_weight``: the Markov (bigram-diagonal)
  cousin of ``repetition``, so compressed worlds can carry it.

Forms: ``dense`` (token-level: each term is paid on the transition that earns it) or ``sequence`` (the
whole return ``R(x, y)`` on the episode-ending transition). Both give every sequence the same return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.errors import ConfigError, check
from sim.features import FeatureMap, check_templates
from sim.mdp import TextMDP

FAMILIES = ("linear", "nonlinear", "length", "repetition", "stutter")
FORMS = ("dense", "sequence")
_FAMILY_STREAM = {"linear": 0, "nonlinear": 1, "length": 2, "repetition": 3, "stutter": 4}


def parse_kind(kind: str, field: str = "oracle.kind") -> tuple[str, ...]:
    """Split a ``+``-joined family name and validate each part."""
    parts = tuple(p.strip() for p in str(kind).split("+"))
    for p in parts:
        if p not in FAMILIES:
            raise ConfigError(field, kind, f"one of {list(FAMILIES)} or a '+'-joined sum of them")
    if len(set(parts)) != len(parts):
        raise ConfigError(field, kind, "each family at most once")
    return parts


def sequence_form(mdp: TextMDP, reward: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Move a reward to the episode end: each terminal ``(s, a)`` carries the full path return.

    Args:
        mdp: the world.
        reward: float array (S, A), any reward.
        gamma: myopia: a path ``r_0..r_{T-1}`` gets ``sum_t gamma^(T-1-t) r_t`` (the last token weighs 1).
            ``gamma = 1`` (default) is the plain return.

    Returns:
        float array (S, A): the (discounted) return ``R(x, y)`` on terminal transitions, 0 elsewhere.
        With ``gamma = 1`` every complete sequence keeps its return exactly.
    """
    f = mdp.first_token
    prefix = np.zeros(mdp.n_states)  # (discounted) reward accumulated before reaching each state
    for t in range(mdp.horizon - 1):
        lo, hi = mdp.level(t)
        clo, chi = mdp.level(t + 1)
        prefix[clo:chi] = (gamma * prefix[lo:hi, None] + reward[lo:hi, f:]).reshape(-1)
    return np.where(mdp.terminal_mask(), gamma * prefix[:, None] + reward, 0.0)


def token_presence(mdp: TextMDP) -> np.ndarray:
    """Bool array (S, V): whether token ``v`` occurs in the prefix of state ``s``."""
    present = np.zeros((mdp.n_states, mdp.vocab_size), dtype=bool)
    b = mdp.branching
    for t in range(mdp.horizon - 1):
        lo, hi = mdp.level(t)
        clo, chi = mdp.level(t + 1)
        present[clo:chi] = np.repeat(present[lo:hi], b, axis=0)
        present[np.arange(clo, chi), mdp.last_token[clo:chi]] = True
    return present


@dataclass(eq=False)
class Oracle:
    """The true reward of a world.

    Attributes:
        kind: the families, ``+``-joined.
        form: ``dense`` or ``sequence``.
        reward: float array (S, A) in the chosen form.
        features: the feature map of the linear part (``None`` without one).
        theta: float array (D,), the linear part's weights ``theta*`` (``None`` without one).
    """

    kind: str
    form: str
    reward: np.ndarray
    features: FeatureMap | None = None
    theta: np.ndarray | None = None


def make_oracle(
    mdp: TextMDP,
    kind: str = "linear",
    form: str = "dense",
    seed: int | np.random.SeedSequence = 0,
    templates: Sequence[str] = ("unigram", "position", "bigram", "prompt"),
    scale: float = 1.0,
    n_pairs: int = 4,
    pair_scale: float = 1.0,
    seq_noise: float = 0.5,
    target_length: int | None = None,
    length_weight: float = 1.0,
    repetition_weight: float = 1.0,
) -> Oracle:
    """Draw an oracle reward.

    Args:
        mdp: the world.
        kind: family or ``+``-joined families (module docstring).
        form: ``dense`` or ``sequence``.
        seed: an int or a ``SeedSequence``; each family draws from its own child stream, so adding a
            family does not change the others.
        templates: feature templates of the linear part.
        scale: standard deviation of a token's linear reward (``theta*`` entries have variance scale^2/K).
        n_pairs: number of co-occurrence pairs (``nonlinear``).
        pair_scale: standard deviation of a co-occurrence bonus (``nonlinear``).
        seq_noise: standard deviation of the i.i.d. per-sequence term (``nonlinear``).
        target_length: the preferred response length ``L*`` (``length``); default ``ceil(H/2)``.
        length_weight: the value ``w`` of ``g`` at the target (``length``).
        repetition_weight: the cost of a repeated token (``repetition``).

    Returns:
        The :class:`Oracle`.
    """
    families = parse_kind(kind)
    check(form in FORMS, "oracle.form", form, f"one of {list(FORMS)}")
    check(scale > 0, "oracle.scale", scale, "> 0")
    check(n_pairs >= 0, "oracle.n_pairs", n_pairs, ">= 0")
    check(seq_noise >= 0, "oracle.seq_noise", seq_noise, ">= 0")
    templates = check_templates(templates, "oracle.templates")
    H = mdp.horizon
    if target_length is None:
        target_length = (H + 1) // 2
    check(1 <= target_length <= H, "oracle.target_length", target_length, f"in [1, horizon={H}]")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)

    def stream(name: str) -> np.random.Generator:
        return np.random.default_rng(
            np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, _FAMILY_STREAM[name]))
        )

    reward = np.zeros((mdp.n_states, mdp.n_actions))
    features = theta = None
    if "linear" in families or "nonlinear" in families:
        rng = stream("linear")
        features = FeatureMap(mdp, templates)
        theta = rng.normal(0.0, scale / np.sqrt(len(templates)), size=features.dim)
        reward += features.reward(theta)
    if "nonlinear" in families:
        rng = stream("nonlinear")
        reward += _cooccurrence(mdp, rng, n_pairs, pair_scale)
        terminal = mdp.terminal_mask()
        reward[terminal] += rng.normal(0.0, seq_noise, size=int(terminal.sum())) if seq_noise > 0 else 0.0
    if "length" in families:
        g = length_weight * np.arange(H + 1) * (2 * target_length - np.arange(H + 1)) / target_length**2
        step = np.diff(g)  # paid by a non-EOS token at depth t
        reward[:, mdp.first_token :] += step[mdp.depth][:, None]
    if "repetition" in families:
        repeated = token_presence(mdp)
        if mdp.eos:
            repeated[:, 0] = False  # EOS is never a repetition
        reward -= repetition_weight * repeated
    if "stutter" in families:
        stutter = mdp.last_token[:, None] == np.arange(mdp.vocab_size)[None, :]
        if mdp.eos:
            stutter[:, 0] = False
        reward -= repetition_weight * stutter
    if form == "sequence":
        reward = sequence_form(mdp, reward)
    return Oracle(kind="+".join(families), form=form, reward=reward, features=features, theta=theta)


def _cooccurrence(mdp: TextMDP, rng: np.random.Generator, n_pairs: int, pair_scale: float) -> np.ndarray:
    """Bonus c_ij on the transition where the second token of pair (i, j) first appears."""
    tokens = np.arange(mdp.first_token, mdp.vocab_size)
    V = mdp.vocab_size
    C = np.zeros((V, V))
    all_pairs = [(i, j) for k, i in enumerate(tokens) for j in tokens[k + 1 :]]
    if n_pairs == 0 or not all_pairs:
        return np.zeros((mdp.n_states, V))
    chosen = rng.choice(len(all_pairs), size=min(n_pairs, len(all_pairs)), replace=False)
    bonus = rng.normal(0.0, pair_scale, size=len(chosen))
    for c, k in zip(bonus, chosen, strict=True):
        i, j = all_pairs[k]
        C[i, j] = C[j, i] = c
    present = token_presence(mdp)
    # the bonus of emitting a: sum over partners i already present, only if a itself is new
    return (present.astype(np.float64) @ C) * ~present
