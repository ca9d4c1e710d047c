"""Gymnasium environments over a text-MDP and a reward channel.

``gymnasium.make("rmsim/TextMDP-v0", ...)`` gives :class:`TextMDPEnv`;
``gymnasium.make_vec("rmsim/TextMDP-v0", num_envs=B, ...)`` gives the natively batched
:class:`TextMDPVectorEnv`, which steps all B episodes with a few numpy indexing operations.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sim.config import EnvConfig, OracleConfig
from sim.corruption import CorruptionConfig
from sim.errors import check
from sim.mdp import TextMDP
from sim.world import World, build_world, corruption_from_dict

OBS_MODES = ("state", "tokens")


def _world(
    world: World | None,
    n_prompts: int,
    vocab_size: int,
    horizon: int,
    eos: bool,
    oracle: dict | None,
    corruption: dict | CorruptionConfig | None,
    world_seed: int,
) -> World:
    if world is not None:
        return world
    env_cfg = EnvConfig(n_prompts=n_prompts, vocab_size=vocab_size, horizon=horizon, eos=eos)
    return build_world(env_cfg, OracleConfig(**(oracle or {})), corruption_from_dict(corruption), world_seed)


def token_table(mdp: TextMDP) -> np.ndarray:
    """Int64 (S, H + 2): ``[prompt, tokens padded with V, length]`` for every decision state."""
    H, V = mdp.horizon, mdp.vocab_size
    table = np.full((mdp.n_states, H + 2), V, dtype=np.int64)
    table[:, 0] = mdp.prompt
    table[:, H + 1] = mdp.depth
    for t in range(1, H):
        clo, chi = mdp.level(t)
        parents = np.repeat(np.arange(*mdp.level(t - 1)), mdp.branching)
        table[clo:chi, 1:t] = table[parents, 1:t]
        table[clo:chi, t] = mdp.last_token[clo:chi]
    return table


class _Spec:
    """What both environments share: the world, its spaces and the token observation table."""

    def _setup(self, world: World, obs_mode: str) -> None:
        check(obs_mode in OBS_MODES, "obs_mode", obs_mode, f"one of {list(OBS_MODES)}")
        self.world = world
        self.mdp = world.mdp
        self.obs_mode = obs_mode
        self._next = world.mdp.next_state
        self._oracle = world.oracle.reward
        H, V, P = self.mdp.horizon, self.mdp.vocab_size, self.mdp.n_prompts
        if obs_mode == "state":
            self._single_obs_space = spaces.Discrete(self.mdp.n_states)
        else:
            self._single_obs_space = spaces.MultiDiscrete([P] + [V + 1] * H + [H + 1])
            self._tokens = token_table(self.mdp)
        self._single_act_space = spaces.Discrete(V)

    def _obs(self, states: np.ndarray, final_actions: np.ndarray | None = None) -> np.ndarray:
        """Observations of ``states``; with ``final_actions``, of the completed sequences instead."""
        if self.obs_mode == "state":
            return states
        obs = self._tokens[states]
        if final_actions is not None:
            mdp = self.mdp
            rows = np.flatnonzero(~(mdp.eos & (final_actions == 0)))  # EOS is not written into the response
            d = mdp.depth[states[rows]]
            obs[rows, 1 + d] = final_actions[rows]
            obs[rows, -1] = d + 1
        return obs


class TextMDPEnv(gym.Env, _Spec):
    """A prompt, then one token per step until EOS or the horizon.

    ## Description
    A synthetic text-generation task: the episode starts at a random prompt; each action emits a token.
    The learner is paid by a *reward channel* (the oracle reward, possibly corrupted: sparse, noisy or
    misspecified); the true oracle reward of every step is always in ``info["oracle_reward"]``.

    ## Action Space
    ``Discrete(V)``: the token to emit. With ``eos=True`` token 0 is EOS.

    ## Observation Space
    * ``obs_mode="state"``: ``Discrete(S)``, the index of the prefix in the enumerated tree.
    * ``obs_mode="tokens"``: ``MultiDiscrete([P, V+1, ..., V+1, H+1])``: the prompt id, the ``H`` token slots
      padded with ``V``, and the current length.

    ## Starting State
    A prompt drawn uniformly, with an empty response.

    ## Reward
    The reward channel's sample for ``(s, a)``: the oracle reward at zero corruption.

    ## Episode End
    Terminated when EOS is emitted or the ``H``-th token is emitted. The final observation is the last prefix
    (``state``) or the completed response (``tokens``). Never truncated: the horizon is part of the task.

    ## Arguments
    * ``n_prompts``, ``vocab_size``, ``horizon``, ``eos``: the world size.
    * ``oracle``: keyword arguments of :class:`sim.config.OracleConfig`, e.g. ``{"kind": "nonlinear"}``.
    * ``corruption``: nested dict or :class:`sim.corruption.CorruptionConfig`, e.g.
      ``{"sparsity": {"mode": "terminal"}, "noise": {"sigma": 0.5}}``.
    * ``world_seed``: draws the oracle and the corruption (the same world as ``experiments.run seed=...``).
    * ``obs_mode``: ``state`` or ``tokens``.
    * ``world``: a prebuilt :class:`sim.world.World` (overrides the size, oracle and corruption arguments).

    Example:
        >>> import gymnasium as gym, sim
        >>> env = gym.make("rmsim/TextMDP-v0", n_prompts=2, vocab_size=4, horizon=3)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(0)  # EOS ends the episode
        >>> bool(terminated), "oracle_reward" in info
        (True, True)
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        n_prompts: int = 2,
        vocab_size: int = 4,
        horizon: int = 3,
        eos: bool = True,
        oracle: dict | None = None,
        corruption: dict | CorruptionConfig | None = None,
        world_seed: int = 0,
        obs_mode: str = "state",
        render_mode: str | None = None,
        world: World | None = None,
    ):
        self._setup(_world(world, n_prompts, vocab_size, horizon, eos, oracle, corruption, world_seed), obs_mode)
        self.observation_space = self._single_obs_space
        self.action_space = self._single_act_space
        self.render_mode = render_mode
        self._state = -1
        self._carries: np.ndarray | None = None
        self._last: tuple[int, int] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        self._state = int(rng.choice(self.mdp.n_prompts, p=self.mdp.initial_dist[: self.mdp.n_prompts]))
        self._carries = self.world.channel.episode_flags(1, rng)
        self._last = None
        return self._obs(np.array([self._state]))[0], {"state": self._state}

    def step(self, action):
        if self._state < 0:
            raise RuntimeError("call reset() before step(): the episode has ended or not started")
        s, a = self._state, int(action)
        states, actions = np.array([s]), np.array([a])
        reward = float(self.world.channel.sample(states, actions, self.np_random, self._carries)[0])
        nxt = int(self._next[s, a])
        terminated = nxt < 0
        info = {"oracle_reward": float(self._oracle[s, a]), "state": s}
        self._last = (s, a)
        if terminated:
            obs = self._obs(states, actions)[0]
            self._state = -1
        else:
            self._state = nxt
            obs = self._obs(np.array([nxt]))[0]
        return obs, reward, terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._state >= 0:
            return self.mdp.format_sequence(self._state)
        return self.mdp.format_sequence(*self._last) if self._last else "(not started)"


class TextMDPVectorEnv(VectorEnv, _Spec):
    """``num_envs`` independent episodes of :class:`TextMDPEnv`, stepped together with numpy indexing.

    Next-step autoreset (``metadata["autoreset_mode"]``): after an episode terminates, the next ``step``
    ignores that slot's action, starts a new episode there and returns its first observation with reward 0.
    ``infos["oracle_reward"]`` carries the true reward of every slot (``infos["_oracle_reward"]`` marks
    the slots that really stepped). Same arguments as :class:`TextMDPEnv`, plus ``num_envs``.

    Example:
        >>> import gymnasium as gym, numpy as np, sim
        >>> envs = gym.make_vec("rmsim/TextMDP-v0", num_envs=8, vocab_size=4, horizon=3)
        >>> obs, infos = envs.reset(seed=0)
        >>> obs, rewards, terminations, truncations, infos = envs.step(np.zeros(8, dtype=np.int64))
        >>> bool(terminations.all())
        True
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        n_prompts: int = 2,
        vocab_size: int = 4,
        horizon: int = 3,
        eos: bool = True,
        oracle: dict | None = None,
        corruption: dict | CorruptionConfig | None = None,
        world_seed: int = 0,
        obs_mode: str = "state",
        world: World | None = None,
    ):
        check(num_envs >= 1, "num_envs", num_envs, ">= 1")
        self._setup(_world(world, n_prompts, vocab_size, horizon, eos, oracle, corruption, world_seed), obs_mode)
        self.num_envs = int(num_envs)
        self.single_observation_space = self._single_obs_space
        self.single_action_space = self._single_act_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._states = np.zeros(self.num_envs, dtype=np.int64)
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._carries: np.ndarray | None = None
        self._init_p = self.mdp.initial_dist[: self.mdp.n_prompts]

    def _new_prompts(self, n: int) -> np.ndarray:
        return self.np_random.choice(self.mdp.n_prompts, size=n, p=self._init_p).astype(np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed, options=options)
        self._states = self._new_prompts(self.num_envs)
        self._done[:] = False
        self._carries = self.world.channel.episode_flags(self.num_envs, self.np_random)
        return self._obs(self._states), {}

    def step(self, actions):
        a = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        s = self._states
        rewards = self.world.channel.sample(s, a, self.np_random, self._carries)
        oracle = self._oracle[s, a]
        nxt = self._next[s, a]
        terminated = nxt < 0
        stepped = ~self._done
        new_states = np.where(terminated, s, nxt)
        obs = self._obs(new_states)
        if self.obs_mode == "tokens" and terminated.any():
            obs[terminated] = self._obs(s[terminated], a[terminated])
        if self._done.any():  # next-step autoreset of the slots that ended last step
            idx = np.flatnonzero(self._done)
            fresh = self._new_prompts(idx.size)
            new_states[idx] = fresh
            obs[idx] = self._obs(fresh)
            rewards[idx] = 0.0
            oracle = oracle.copy()
            oracle[idx] = 0.0
            terminated[idx] = False
            if self._carries is not None:
                self._carries[idx] = self.world.channel.episode_flags(idx.size, self.np_random)
        self._states = new_states
        self._done = terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos = {"oracle_reward": oracle, "_oracle_reward": stepped}
        return obs, rewards, terminated, truncated, infos
