"""The reward channel: what a learner receives for each transition, on any world. One channel serves every env and
every learner; planners and metrics use its exact expectation.

The corruption pipeline, in a fixed order, each module the identity at zero strength:

1. **misspecification** (:mod:`sim.corruption.misspec`): a different reward function, the *proxy*;
2. **sparsity** (``mode`` = ``none`` | ``terminal`` | ``chunk``): the reward earned since the last payment is paid
   every ``k`` tokens and at the episode end (``terminal``: ``k = H``);
3. **noise** (``sigma``, then ``levels``, then ``drop``) on each payment: fresh on every delivery
   (``mode=delivery``) or drawn once and kept (``mode=fixed``: a persistent error per complete sequence, like a
   reward model's, on worlds that can list their sequences; or with ``unit=token`` one per state and token, paid with
   that token, which a compressed world keeps Markov and exact);
4. **budget** (``p``): only a fraction ``p`` of episodes carry any reward.

A learner keeps a ``pending`` amount per episode and calls :meth:`Channel.pay` once per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import CorruptionConfig
from sim.corruption import misspec
from sim.corruption.noise import Quantizer, fixed_errors, quantizer_for


@dataclass(eq=False)
class Channel:
    """What the learner receives.

    Attributes:
        world: the world.
        reward: the proxy reward per transition (with a fixed-mode per-sequence error included).
        every: sparsity: ``None`` pays every token; ``k`` pays the accumulated reward every ``k`` tokens and at the end.
        sigma, quantizer, drop: fresh (``delivery``-mode) noise on each payment; zero/None when there is none.
        fixed_quantizer, fixed_drop: fixed-mode quantisation of each payment, and the (S, A) mask of payments that
            are always lost.
        budget: fraction of episodes that carry reward.
    """

    world: object
    reward: object
    every: int | None = None
    sigma: float = 0.0
    quantizer: Quantizer | None = None
    drop: float = 0.0
    fixed_quantizer: Quantizer | None = None
    fixed_drop: np.ndarray | None = None
    budget: float = 1.0
    _expected: object | None = None

    @property
    def exact(self) -> bool:
        """Whether every payment is ``reward`` itself (no chunking, noise, quantising, drops or budget)."""
        return (
            self.every is None
            and self.sigma == 0
            and self.quantizer is None
            and self.drop == 0
            and self.fixed_quantizer is None
            and self.fixed_drop is None
            and self.budget >= 1.0
        )

    def expected(self):
        """r_hat: the exact expected payment per transition (what planners optimise and ``proxy_return`` measures).

        Every sequence's expected return is that of ``reward`` times ``(1 - drop) * budget``, unless payments are
        quantised or dropped by a fixed mask, whose expectation is taken payment by payment (enumerated worlds).
        """
        if self._expected is None:
            per_payment = self.quantizer is not None or self.fixed_quantizer is not None or self.fixed_drop is not None
            if per_payment:
                w = self.world
                k = self.every or 1
                paid = w.table(w.chunk_table(self.reward, k))
                deliver = w.delivery_mask(k)
                if self.quantizer is not None:
                    paid = np.where(deliver, self.quantizer.expected(paid, self.sigma), 0.0)
                if self.fixed_quantizer is not None:
                    paid = np.where(deliver, self.fixed_quantizer(paid), paid)
                if self.fixed_drop is not None:
                    paid = np.where(self.fixed_drop, 0.0, paid)
                r = w.table_reward(paid)
            else:
                r = self.reward
            scale = (1.0 - self.drop) * self.budget
            self._expected = r if scale == 1.0 else r * scale
        return self._expected

    def episode_flags(self, n: int, rng: np.random.Generator) -> np.ndarray | None:
        """Which of ``n`` new episodes carry reward (``None`` when all do)."""
        return None if self.budget >= 1.0 else rng.random(n) < self.budget

    def pay(
        self,
        pending: np.ndarray,
        states: np.ndarray,
        actions: np.ndarray,
        depth: np.ndarray | None,
        ends: np.ndarray,
        rng: np.random.Generator,
        carries: np.ndarray | None = None,
    ) -> np.ndarray:
        """The payments of one step of a batch of episodes.

        Args:
            pending: float (n,): reward earned but not yet paid in each episode; updated in place.
            states, actions, depth: int (n,): the transitions and their depths (``depth`` is read only when payments
                are chunked, ``every`` set; None otherwise).
            ends: bool (n,): whether the transition ends its episode.
            rng: the learner's generator (fresh noise); draws are made for every entry of the batch.
            carries: bool (n,) budget flags of the episodes (from :meth:`episode_flags`); ``None`` draws them per
                payment, which is right only when each episode pays once.

        Returns:
            float (n,); its mean over draws, summed along an episode, is the expected return.
        """
        r = self.reward.at(states, actions)
        if self.every is None:
            pays: np.ndarray | bool = True  # every transition pays (broadcasts in the masks below)
        else:
            total = pending + r
            pays = ends | ((depth + 1) % self.every == 0)
            pending[:] = np.where(pays, 0.0, total)
            r = np.where(pays, total, 0.0)
        if self.fixed_quantizer is not None:
            r = np.where(pays, self.fixed_quantizer(r), r)
        if self.fixed_drop is not None:
            r = np.where(pays & self.fixed_drop[states, actions], 0.0, r)
        if self.sigma > 0:
            r = r + np.where(pays, rng.normal(0.0, self.sigma, size=r.shape), 0.0)
        if self.quantizer is not None:
            r = np.where(pays, self.quantizer(r), r)
        if self.drop > 0:
            r = np.where(pays & (rng.random(r.shape) < self.drop), 0.0, r)
        if self.budget < 1.0:
            if carries is None:
                carries = rng.random(r.shape) < self.budget
            r = np.where(carries, r, 0.0)
        return r


def identity_channel(world, reward) -> Channel:
    """A channel that delivers ``reward`` exactly, token by token."""
    return Channel(world=world, reward=reward)


def build_channel(
    world, oracle, cfg: CorruptionConfig | None = None, seed: int | np.random.SeedSequence = 0
) -> Channel:
    """Apply the corruption pipeline to the oracle.

    Args:
        world: the world.
        oracle: the :class:`sim.oracle.Oracle` (its linear part is what misweight/omit act on).
        cfg: the corruption settings (default: none, the identity).
        seed: randomness of the corruption itself (the misweight direction, fixed noise draws).

    Returns:
        The :class:`Channel`; at zero strength it pays ``oracle.reward`` itself, token by token.
    """
    cfg = cfg or CorruptionConfig()
    rng = np.random.default_rng(seed)
    reward = misspec.misspecify(world, oracle, cfg.misspec, rng)
    sp, nz = cfg.sparsity, cfg.noise
    every = None if sp.mode == "none" else (world.horizon if sp.mode == "terminal" else sp.chunk)
    every = None if every == 1 else every
    quant = None
    if nz.levels:
        k = every or 1
        clean = world.table(world.chunk_table(reward, k))[world.delivery_mask(k)]
        quant = quantizer_for(clean, nz.levels)
    if nz.mode == "fixed" and nz.active:
        fixed_drop = None
        if nz.sigma > 0 and nz.unit == "token":  # one error per (state, token): Markov on a compressed world too
            shape = (world.n_states, world.n_actions)
            noise = fixed_errors(rng, shape[0] * shape[1], nz.sigma, nz.dist, nz.df, nz.alpha).reshape(shape)
            reward = world.table_reward(world.table(reward) + noise)  # a full table: no longer factored
        elif nz.sigma > 0:
            s, a = world.terminal_transitions()
            noise = np.zeros((world.n_states, world.n_actions))
            noise[s, a] = fixed_errors(rng, s.size, nz.sigma, nz.dist, nz.df, nz.alpha)
            reward = reward + world.table_reward(noise)
        if nz.drop > 0:
            fixed_drop = world.delivery_mask(every or 1) & (rng.random((world.n_states, world.n_actions)) < nz.drop)
        return Channel(world, reward, every, fixed_quantizer=quant, fixed_drop=fixed_drop, budget=sp.budget)
    return Channel(world, reward, every, sigma=nz.sigma, quantizer=quant, drop=nz.drop, budget=sp.budget)
