"""Exact metrics of a policy against the oracle, on any world.

``optimal_return = max_pi J_{r*}(pi)``, ``oracle_return = J_{r*}(pi_hat)``, ``gap = optimal - oracle``,
``reference_return = J_{r*}(pi_ref)``, ``normalized_gap = gap / (optimal - reference)``,
``proxy_return = J_{r_hat}(pi_hat)``, ``reference_proxy_return = J_{r_hat}(pi_ref)``,
``kl_to_reference = KL(pi_hat || pi_ref)`` (sequence level).
"""

from __future__ import annotations

import numpy as np


def gap_metrics(optimal: float, oracle: float, reference: float) -> dict[str, float | None]:
    """``optimal_return``, ``oracle_return``, ``reference_return``, ``gap`` and ``normalized_gap``.

    The gap is >= 0 mathematically; the last-bit rounding of two summation orders is clipped. ``normalized_gap``
    is ``None`` when ``optimal == reference`` (nothing to normalise by).
    """
    gap = max(optimal - oracle, 0.0) if optimal - oracle > -1e-9 * max(1.0, abs(optimal)) else optimal - oracle
    span = optimal - reference
    return {
        "optimal_return": optimal,
        "oracle_return": oracle,
        "reference_return": reference,
        "gap": gap,
        "normalized_gap": gap / span if span > 1e-12 * max(1.0, abs(optimal)) else None,
    }


def exact_metrics(world, policy, oracle_reward, proxy_reward) -> dict[str, float | None]:
    """All exact metrics of ``policy`` on ``world``: the gap metrics, ``proxy_return``, ``reference_proxy_return``
    and ``kl_to_reference``.

    Args:
        world: the world (``world.ref`` is pi_ref).
        policy: pi_hat.
        oracle_reward: r*.
        proxy_reward: r_hat, the expected reward the agent optimised.
    """
    rewards = {"oracle": oracle_reward, "proxy": proxy_reward}
    ev = world.evaluate(policy, rewards)
    ref = world.evaluate(world.ref, rewards)
    return {
        **gap_metrics(world.optimal_return(oracle_reward), ev["oracle"], ref["oracle"]),
        "proxy_return": ev["proxy"],
        "reference_proxy_return": ref["proxy"],
        "kl_to_reference": ev["kl_to_reference"],
    }


def reward_distance(true: np.ndarray, proxy: np.ndarray, weights: np.ndarray, prompt: np.ndarray) -> float:
    """EPIC-style Pearson distance ``sqrt((1 - rho) / 2)`` between two return vectors over complete sequences.

    Returns are first centred within each prompt (a reward model learned from comparisons is identified only
    up to a per-prompt constant), then ``rho`` is their ``weights``-weighted Pearson correlation. The distance
    is invariant to positive scaling and per-prompt shifts of either reward: 0 for the same ordering
    everywhere, 1/sqrt(2) for uncorrelated, 1 for reversed. A constant proxy counts as uncorrelated.

    Args:
        true, proxy: (n_seq,) returns.
        weights: (n_seq,) the coverage distribution (need not be normalised).
        prompt: (n_seq,) prompt of each sequence.
    """
    w = weights / weights.sum()
    mass = np.bincount(prompt, weights=w)
    safe = np.where(mass > 0, mass, 1.0)

    def centred(x: np.ndarray) -> np.ndarray:
        return x - (np.bincount(prompt, weights=w * x) / safe)[prompt]

    x, y = centred(true), centred(proxy)
    vx, vy = w @ (x * x), w @ (y * y)
    scale = max(1.0, float(np.max(np.abs(true))), float(np.max(np.abs(proxy))))
    if vx <= 1e-24 * scale * scale or vy <= 1e-24 * scale * scale:  # scale * scale: inf, not OverflowError
        rho = 0.0
    else:
        rho = float(np.clip(w @ (x * y) / np.sqrt(vx * vy), -1.0, 1.0))
    return float(np.sqrt((1.0 - rho) / 2.0))
