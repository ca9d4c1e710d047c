"""A gymnasium VectorEnv over a compressed Markov world: language-model scale, never enumerated.

``gymnasium.make_vec("rmsim/MarkovText-v0", num_envs=B, vocab_size=1000, horizon=32, ...)`` gives
:class:`MarkovVectorEnv`. Each slot's observation is its Markov state ``[prompt, position, last token]`` (the last
token is ``V``, i.e. BOS, at position 0): everything the reward, pi_ref and any Markov policy depend on. Rewards are
the proxy's as a learner receives them; the true reward rides along in ``infos["oracle_reward"]``. The compressed
learners (``loglinear_pg``, ``linear_q``) train on this env, and the exact dynamic programmes of
:mod:`sim.markov` evaluate whatever policy comes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sim import markov
from sim.corruption import CorruptionConfig
from sim.errors import check


@dataclass(eq=False)
class MarkovSetup:
    """A compressed world and its rewards: the oracle, and the proxy a learner is paid (before the budget)."""

    world: markov.MarkovWorld
    ref: markov.MarkovReference
    oracle: markov.MarkovReward
    proxy: markov.MarkovReward


def build_markov_setup(env_cfg, oracle_cfg, corruption: CorruptionConfig | None, seed: int) -> MarkovSetup:
    """The compressed world of validated configs (direct pipeline), each part from its own stream of ``seed``."""
    from sim.world import oracle_kwargs, seed_streams

    streams = seed_streams(seed)
    world = markov.MarkovWorld(env_cfg.n_prompts, env_cfg.vocab_size, env_cfg.horizon, env_cfg.eos)
    ref = markov.markov_reference(
        world, env_cfg.reference, np.random.default_rng(streams["reference"]), env_cfg.ref_temperature
    )
    oracle = markov.make_markov_oracle(world, oracle_cfg.kind, streams["oracle"], **oracle_kwargs(oracle_cfg))
    m = (corruption or CorruptionConfig()).misspec
    misspec_rng = np.random.default_rng(streams["corruption"])
    proxy = markov.misspecify(world, oracle, oracle_cfg.templates, m.angle, m.omit, m.length_bias, misspec_rng)
    return MarkovSetup(world, ref, oracle, proxy)


def _setup_from_kwargs(n_prompts, vocab_size, horizon, eos, reference, oracle, corruption, world_seed) -> MarkovSetup:
    from sim.config import AgentConfig, Config, EnvConfig, OracleConfig
    from sim.world import corruption_from_dict

    cfg = Config(  # validates: a Markov oracle and reference, corruption a learner can receive
        env=EnvConfig(n_prompts, vocab_size, horizon, eos, reference=reference, compressed=True),
        oracle=OracleConfig(**(oracle or {})),
        corruption=corruption_from_dict(corruption) or CorruptionConfig(),
        agent=AgentConfig(name="exact_planner"),
    )
    return build_markov_setup(cfg.env, cfg.oracle, cfg.corruption, world_seed)


def single_env(**kwargs: Any):
    """``gymnasium.make("rmsim/MarkovText-v0")`` has no single-episode form: say what to call instead."""
    raise TypeError(
        "rmsim/MarkovText-v0 is a vector env only: use gymnasium.make_vec('rmsim/MarkovText-v0', num_envs=B, ...) "
        "(num_envs=1 for one episode at a time)"
    )


class MarkovVectorEnv(VectorEnv):
    """``num_envs`` episodes of a compressed world stepped together with numpy indexing.

    Reward: the proxy's token reward as a learner receives it, through the corruption's learner-side parts:
    sparsity (``terminal`` or ``chunk``: accumulated and paid at delivery), delivery noise ``sigma``, and the episode
    ``budget`` (an episode carries reward with probability p, drawn at its start). ``infos["oracle_reward"]`` is
    the true reward of each slot's token (``infos["_oracle_reward"]`` marks the slots that really stepped).

    Next-step autoreset (``metadata["autoreset_mode"]``), as :class:`sim.env.TextMDPVectorEnv`: after an episode
    ends, the next ``step`` ignores that slot's action, starts a new episode (uniform prompt) and returns its first
    observation with reward 0. The final observation of an episode has position ``t + 1`` (up to ``H``).

    Args:
        num_envs: B.
        n_prompts, vocab_size, horizon, eos, reference: the world (any size: nothing is enumerated).
        oracle: ``OracleConfig`` fields (a Markov family and templates).
        corruption: ``CorruptionConfig`` or its dict (misspecification shapes the proxy; sparsity, noise and
            budget its delivery).
        world_seed: the root seed of the world, as ``seed`` of a run.
        setup: a ready :class:`MarkovSetup` instead of the arguments above (as the learners pass it).

    Example:
        >>> import gymnasium as gym, numpy as np, sim
        >>> envs = gym.make_vec(  # position-only: no (V + 1) x V table at this size
        ...     "rmsim/MarkovText-v0", num_envs=4, vocab_size=50_000, horizon=64, reference="uniform",
        ...     oracle={"templates": ["unigram", "position", "length"]})
        >>> obs, infos = envs.reset(seed=0)
        >>> obs[:, 1:].tolist()  # position, last token (BOS = V)
        [[0, 50000], [0, 50000], [0, 50000], [0, 50000]]
        >>> obs, rewards, terminations, truncations, infos = envs.step(np.full(4, 7))
        >>> obs[:, 1:].tolist()
        [[1, 7], [1, 7], [1, 7], [1, 7]]
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        n_prompts: int = 4,
        vocab_size: int = 1000,
        horizon: int = 32,
        eos: bool = True,
        reference: str = "bigram",
        oracle: dict | None = None,
        corruption: dict | CorruptionConfig | None = None,
        world_seed: int = 0,
        setup: MarkovSetup | None = None,
    ):
        check(num_envs >= 1, "num_envs", num_envs, ">= 1")
        if setup is None:
            oracle = {"templates": ["unigram", "position", "bigram", "prompt"], **(oracle or {})}
            setup = _setup_from_kwargs(n_prompts, vocab_size, horizon, eos, reference, oracle, corruption, world_seed)
        self.setup = setup
        self.world = world = setup.world
        from sim.world import corruption_from_dict

        self.corruption = corruption = corruption_from_dict(corruption)
        P, H, V = world.n_prompts, world.horizon, world.vocab_size
        self.num_envs = int(num_envs)
        self.single_observation_space = spaces.MultiDiscrete([P, H + 1, V + 1])
        self.single_action_space = spaces.Discrete(V)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._cont = world.continuing()
        sp = corruption.sparsity
        self._every = None if sp.mode == "none" else (H if sp.mode == "terminal" else sp.chunk)
        self._budget = sp.budget
        self._sigma = corruption.noise.sigma
        B = self.num_envs
        self._state = np.zeros((B, 3), dtype=np.int64)
        self._pending = np.zeros(B)
        self._carries = np.ones(B, dtype=bool)
        self._done = np.zeros(B, dtype=bool)

    def _start(self, idx: np.ndarray) -> None:
        rng = self.np_random
        self._state[idx, 0] = rng.integers(0, self.world.n_prompts, idx.size)
        self._state[idx, 1] = 0
        self._state[idx, 2] = self.world.bos
        self._pending[idx] = 0.0
        self._carries[idx] = rng.random(idx.size) < self._budget if self._budget < 1.0 else True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed, options=options)
        self._start(np.arange(self.num_envs))
        self._done[:] = False
        return self._state.copy(), {}

    def step(self, actions):
        B, H = self.num_envs, self.world.horizon
        a = np.asarray(actions, dtype=np.int64).reshape(B)
        stepped = ~self._done
        s = np.flatnonzero(stepped)
        p, t, y, a_s = self._state[s, 0], self._state[s, 1], self._state[s, 2], a[s]
        rewards, oracle = np.zeros(B), np.zeros(B)
        oracle[s] = self.setup.oracle.token(p, t, y, a_s)
        ends = ~self._cont[a_s] | (t == H - 1)
        pending = self._pending[s] + self.setup.proxy.token(p, t, y, a_s)
        pays = np.ones(s.size, dtype=bool) if self._every is None else ends | ((t + 1) % self._every == 0)
        r = np.where(pays, pending, 0.0)
        self._pending[s] = np.where(pays, 0.0, pending)
        if self._sigma > 0:
            r = np.where(pays, r + self.np_random.normal(0.0, self._sigma, s.size), r)
        rewards[s] = np.where(self._carries[s], r, 0.0)
        self._state[s, 1] = t + 1
        self._state[s, 2] = a_s
        terminated = np.zeros(B, dtype=bool)
        terminated[s] = ends
        if not stepped.all():  # next-step autoreset of the slots that ended last step
            self._start(np.flatnonzero(~stepped))
        self._done = terminated
        infos = {"oracle_reward": oracle, "_oracle_reward": stepped}
        return self._state.copy(), rewards, terminated, np.zeros(B, dtype=bool), infos
