"""Oracle reward families: the true reward that every experiment is measured against, on any world.

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

``linear``, ``length`` and ``stutter`` are Markov (they are linear in the ``unigram``/``position``/``bigram``/
``prompt``/``length`` templates), so compressed worlds carry them; the others need every prefix (enumerated worlds).

Forms: ``dense`` (token-level: each term is paid on the transition that earns it) or ``sequence`` (the
whole return ``R(x, y)`` on the episode-ending transition; enumerated worlds). Both give every sequence the same
return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.errors import ConfigError, check
from sim.features import FeatureMap, check_templates

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


@dataclass(eq=False)
class Oracle:
    """The true reward of a world.

    Attributes:
        kind: the families, ``+``-joined.
        form: ``dense`` or ``sequence``.
        reward: the reward in the chosen form, in the world's own representation.
        features: the feature map of the linear part (``None`` without one).
        theta: float array (D,), the linear part's weights ``theta*`` (``None`` without one).
        rest: the terms outside the linear part, in dense form (``None`` when there are none): what a misweighted
            proxy keeps.
    """

    kind: str
    form: str
    reward: object
    features: FeatureMap | None = None
    theta: np.ndarray | None = None
    rest: object | None = None


def length_step(horizon: int, target_length: int, weight: float) -> np.ndarray:
    """(H,): what a non-EOS token at depth ``t`` pays under the length family, ``g(t+1) - g(t)``."""
    L = np.arange(horizon + 1)
    return np.diff(weight * L * (2 * target_length - L) / target_length**2)


def per_token(world, step: np.ndarray):
    """The reward paying ``step[t]`` for every non-EOS token at depth ``t`` (nothing for EOS): a position term."""
    V, H = world.vocab_size, world.horizon
    theta = np.zeros((H, V))
    theta[:, world.first_token :] = np.asarray(step, dtype=np.float64)[:, None]
    return FeatureMap(world, ["position"]).reward(theta.ravel())


def stutter_reward(world, weight: float):
    """The reward charging ``weight`` for a token equal to the previous one: a bigram diagonal."""
    V = world.vocab_size
    theta = np.zeros((V + 1, V))
    tokens = np.arange(world.first_token, V)
    theta[tokens, tokens] = -weight
    return FeatureMap(world, ["bigram"], field="oracle.kind").reward(theta.ravel())


def make_oracle(
    world,
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
        world: the world.
        kind: family or ``+``-joined families (module docstring).
        form: ``dense`` or ``sequence``.
        seed: an int or a ``SeedSequence``; each family draws from its own child stream, so adding a
            family does not change the others (and a compressed world draws what an enumerated one does).
        templates: feature templates of the linear part.
        scale: standard deviation of a token's linear reward (``theta*`` entries have variance scale^2/K).
        n_pairs: number of co-occurrence pairs (``nonlinear``).
        pair_scale: standard deviation of a co-occurrence bonus (``nonlinear``).
        seq_noise: standard deviation of the i.i.d. per-sequence term (``nonlinear``).
        target_length: the preferred response length ``L*`` (``length``); default ``ceil(H/2)``.
        length_weight: the value ``w`` of ``g`` at the target (``length``).
        repetition_weight: the cost of a repeated token (``repetition``, ``stutter``).

    Raises:
        ConfigError: naming the key, for a family or form the world cannot carry.
    """
    families = parse_kind(kind)
    check(form in FORMS, "oracle.form", form, f"one of {list(FORMS)}")
    check(np.isfinite(scale) and scale > 0, "oracle.scale", scale, "a finite number > 0")
    check(n_pairs >= 0, "oracle.n_pairs", n_pairs, ">= 0")
    check(seq_noise >= 0, "oracle.seq_noise", seq_noise, ">= 0")
    templates = check_templates(templates, "oracle.templates")
    H = world.horizon
    if target_length is None:
        target_length = (H + 1) // 2
    check(1 <= target_length <= H, "oracle.target_length", target_length, f"in [1, horizon={H}]")
    world.check_oracle(families, form, kind)
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)

    def stream(name: str) -> np.random.Generator:
        return np.random.default_rng(
            np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, _FAMILY_STREAM[name]))
        )

    linear = features = theta = None
    rest: list = []
    if "linear" in families or "nonlinear" in families:
        rng = stream("linear")
        features = FeatureMap(world, templates, field="oracle.templates")
        theta = rng.normal(0.0, scale / np.sqrt(len(templates)), size=features.dim)
        linear = features.reward(theta)
    if "nonlinear" in families:
        rng = stream("nonlinear")
        rest.append(_cooccurrence(world, rng, n_pairs, pair_scale))
        s, a = world.terminal_transitions()
        noise = np.zeros((world.n_states, world.n_actions))
        if seq_noise > 0:
            noise[s, a] = rng.normal(0.0, seq_noise, size=s.size)
        rest.append(world.table_reward(noise))
    if "length" in families:
        rest.append(per_token(world, length_step(H, target_length, length_weight)))
    if "repetition" in families:
        repeated = token_presence(world)
        if world.eos:
            repeated[:, 0] = False  # EOS is never a repetition
        rest.append(world.table_reward(-repetition_weight * repeated))
    if "stutter" in families:
        rest.append(stutter_reward(world, repetition_weight))
    reward = _total([linear, *rest], world)
    rest_total = _total(rest, world) if rest else None
    if form == "sequence":
        reward = world.table_reward(world.sequence_form(reward))
    return Oracle(kind="+".join(families), form=form, reward=reward, features=features, theta=theta, rest=rest_total)


def _total(parts: list, world):
    """The sum of reward terms, added in order (``None`` entries skipped)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return world.linear_reward(FeatureMap(world, ["unigram"]), np.zeros(world.vocab_size))
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def token_presence(world) -> np.ndarray:
    """Bool array (S, V): whether token ``v`` occurs in the prefix of state ``s`` (enumerated worlds)."""
    present = np.zeros((world.n_states, world.vocab_size), dtype=bool)
    b = world.branching
    for t in range(world.horizon - 1):
        lo, hi = world.level(t)
        clo, chi = world.level(t + 1)
        present[clo:chi] = np.repeat(present[lo:hi], b, axis=0)
        present[np.arange(clo, chi), world.last_token[clo:chi]] = True
    return present


def _cooccurrence(world, rng: np.random.Generator, n_pairs: int, pair_scale: float):
    """Bonus c_ij on the transition where the second token of pair (i, j) first appears."""
    tokens = np.arange(world.first_token, world.vocab_size)
    V = world.vocab_size
    C = np.zeros((V, V))
    all_pairs = [(i, j) for k, i in enumerate(tokens) for j in tokens[k + 1 :]]
    if n_pairs == 0 or not all_pairs:
        return world.table_reward(np.zeros((world.n_states, V)))
    chosen = rng.choice(len(all_pairs), size=min(n_pairs, len(all_pairs)), replace=False)
    bonus = rng.normal(0.0, pair_scale, size=len(chosen))
    for c, k in zip(bonus, chosen, strict=True):
        i, j = all_pairs[k]
        C[i, j] = C[j, i] = c
    present = token_presence(world)
    # the bonus of emitting a: sum over partners i already present, only if a itself is new
    return world.table_reward((present.astype(np.float64) @ C) * ~present)
