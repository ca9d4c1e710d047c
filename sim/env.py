"""Gymnasium environments over any world and reward channel (written once for both world kinds).

``gymnasium.make("rmsim/TextMDP-v0", ...)`` gives :class:`TextEnv` on an enumerated world and
``gymnasium.make_vec("rmsim/TextMDP-v0", num_envs=B, ...)`` the natively batched :class:`TextVectorEnv`, which steps
all ``B`` episodes with a few numpy indexing operations; ``rmsim/MarkovText-v0`` is the same pair on a compressed
Markov world at language-model scale. Learners of :mod:`sim.agents` roll out in :class:`TextVectorEnv`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sim.build import Setup, build_setup, check_setup, config_from
from sim.config import EnvConfig
from sim.errors import ConfigError, check
from sim.proxy import learned_setup
from sim.resources import GB, check_memory, default_limit_gb
from sim.worlds import Table, bigram_uses, n_states, sequence_total

OBS_MODES = ("state", "tokens", "markov")
#: Render modes gymnasium defines; tools ask for them by default (accepted with a warning, rendering nothing).
GYM_RENDER_MODES = ("human", "rgb_array", "rgb_array_list", "depth_array")
_INT64 = np.dtype(np.int64)  # (an identity test: the step's hot path)


#: The world keyword arguments an env takes as shorthands for ``config.env.*``.
ENV_KEYS = ("n_prompts", "vocab_size", "horizon", "eos", "reference", "ref_temperature", "compressed")


def env_setup(config: Any = None, world_seed: int = 0, oracle: Any = None, corruption: Any = None, **env: Any) -> Setup:
    """The setup an env is built on, from the command line's config and defaults (:func:`sim.build.config_from`).

    Args:
        config: a :class:`sim.config.Config`, or its nested mapping (a dict or an OmegaConf config), e.g.
            ``{"env": {"n_prompts": 4}, "corruption": {"noise": {"sigma": 0.5}}}``; keys left out keep the command
            line's defaults. For the command line's presets and override strings (``["env=medium"]``) pass
            ``experiments.config.compose_config([...])``.
        world_seed: the seed of the world (the same world as ``experiments.run seed=world_seed``).
        oracle, corruption: mappings merged into ``config.oracle`` / ``config.corruption`` (shorthands).
        env: shorthands for ``config.env.*`` (``n_prompts``, ``vocab_size``, ...).
    """
    check(isinstance(world_seed, int | np.integer) and not isinstance(world_seed, bool) and world_seed >= 0,
          "world_seed", world_seed, "an integer >= 0")  # fmt: skip
    unknown = set(env) - set(ENV_KEYS)
    if unknown:
        raise ConfigError(sorted(unknown)[0], env[sorted(unknown)[0]], f"env keyword arguments among {list(ENV_KEYS)}")
    cfg = config_from(config, {"env": env, "oracle": oracle or {}, "corruption": corruption or {}})
    track = check_setup(cfg.env, cfg.oracle, cfg.corruption, cfg)
    # the world (and with pipeline=rlhf the reward model and its data) must fit in memory, checked before any work
    check_memory(cfg, n_states(cfg.env, track), sequence_total(cfg.env), len(bigram_uses(cfg)) if track else 0)
    setup = build_setup(cfg.env, cfg.oracle, cfg.corruption, world_seed, track)
    if cfg.pipeline == "rlhf":
        setup, model, _ = learned_setup(cfg, setup, world_seed)
        setup.reward_model = model
    return setup


class _Spec:
    """What both environments share: the setup, its spaces and observations."""

    def _init_spec(self, setup: Setup, obs_mode: str) -> None:
        check(obs_mode in OBS_MODES, "obs_mode", obs_mode, f"one of {list(OBS_MODES)}")
        self.setup = setup
        self.world = w = setup.world
        self.obs_mode = obs_mode
        H, V, P = w.horizon, w.vocab_size, w.n_prompts
        if obs_mode == "state":
            self._single_obs_space = spaces.Discrete(w.n_states)
        elif obs_mode == "tokens":
            self._tokens = w.token_table()
            self._single_obs_space = spaces.MultiDiscrete([P] + [V + 1] * H + [H + 1])
        else:
            self._single_obs_space = spaces.MultiDiscrete([P, H + 1, V + 1])
        self._single_act_space = spaces.Discrete(V)

    def _obs(self, states: np.ndarray, last: np.ndarray, final_actions: np.ndarray | None = None) -> np.ndarray:
        """Observations of ``states`` (``last``: each slot's last token, ``V`` at the start); with ``final_actions``,
        of the completed sequences instead."""
        w = self.world
        if self.obs_mode == "state":
            return states.copy()
        if self.obs_mode == "tokens":
            obs = self._tokens[states]
            if final_actions is not None:
                rows = np.flatnonzero(~(w.eos & (final_actions == 0)))  # EOS is not written into the response
                d = w.depth[states[rows]]
                obs[rows, 1 + d] = final_actions[rows]
                obs[rows, -1] = d + 1
            return obs
        t = w.depth[states] + (0 if final_actions is None else 1)
        y = last if final_actions is None else final_actions
        return np.stack([w.prompt[states], t, y], axis=1).astype(np.int64)


class TextEnv(gym.Env, _Spec):
    """A prompt, then one token per step until EOS or the horizon.

    ## Description
    A synthetic text-generation task: the episode starts at a random prompt; each action emits a token.
    The learner is paid by a *reward channel* (the oracle reward, possibly corrupted: sparse, noisy or
    misspecified); the true oracle reward of every step is always in ``info["oracle_reward"]``.

    ## Action Space
    ``Discrete(V)``: the token to emit. With ``eos=True`` token 0 is EOS.

    ## Observation Space
    * ``obs_mode="state"``: ``Discrete(S)``, the index of the state (a prefix in the enumerated tree; a
      (prompt, position, last token) triple in a compressed world).
    * ``obs_mode="tokens"`` (enumerated worlds): ``MultiDiscrete([P, V+1, ..., V+1, H+1])``: the prompt id, the
      ``H`` token slots padded with ``V``, and the current length.
    * ``obs_mode="markov"``: ``MultiDiscrete([P, H+1, V+1])``: prompt, position, last token (``V`` at the start).

    ## Starting State
    A prompt drawn uniformly, with an empty response.

    ## Reward
    The reward channel's payment for ``(s, a)``: the oracle reward at zero corruption. With ``pipeline=rlhf`` in the
    config, the reward of the model fitted to simulated feedback (:func:`sim.proxy.learned_setup`: the same model
    as ``experiments.run seed=world_seed pipeline=rlhf``; ``setup.reward_model``).

    ## Episode End
    Terminated when EOS is emitted or the ``H``-th token is emitted. The final observation is the last prefix
    (``state``), the completed response (``tokens``) or ``[prompt, length, last token]`` (``markov``). Never
    truncated: the horizon is part of the task.

    ## Arguments
    * ``config``: the command line's config: a :class:`sim.config.Config` or its nested mapping (a dict, an OmegaConf
      config, or ``experiments.config.compose_config(["env=medium", ...])`` for presets and override strings); what
      it leaves out keeps the command line's defaults, so ``world_seed=k`` and the same settings give the world of
      ``python -m experiments.run seed=k``.
    * ``world_seed``: draws the reference, the oracle and the corruption.
    * ``obs_mode``: ``state``, ``tokens`` or ``markov``.
    * ``n_prompts``, ``vocab_size``, ``horizon``, ``eos``, ``reference``, ``ref_temperature``, ``compressed``:
      shorthands for ``config.env.*``; ``oracle``, ``corruption``: mappings merged into ``config.oracle`` and
      ``config.corruption`` (e.g. ``corruption={"sparsity": {"mode": "terminal"}, "noise": {"sigma": 0.5}}``).
    * ``setup``: a prebuilt :class:`sim.build.Setup` (instead of all of the above).

    Example:
        >>> import gymnasium as gym, sim
        >>> env = gym.make("rmsim/TextMDP-v0", config={"env": {"n_prompts": 2, "vocab_size": 4, "horizon": 3}})
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(0)  # EOS ends the episode
        >>> bool(terminated), "oracle_reward" in info
        (True, True)
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        config: Any = None,
        world_seed: int = 0,
        obs_mode: str = "state",
        render_mode: str | None = None,
        setup: Setup | None = None,
        oracle: Any = None,
        corruption: Any = None,
        **env: Any,
    ):
        modes = self.metadata["render_modes"]
        check(render_mode is None or render_mode in (*modes, *GYM_RENDER_MODES), "render_mode", render_mode,
              f"None or one of {modes}")  # fmt: skip
        if render_mode is not None and render_mode not in modes:
            # gymnasium's own render modes: stable-baselines3's make_vec_env asks for rgb_array unless told otherwise,
            # so they are accepted, with gymnasium's warning, and render() draws nothing
            gym.logger.warn(f"render_mode={render_mode!r} is not supported (only {modes}): render() returns None")
            render_mode = None
        if setup is None:
            setup = env_setup(config, world_seed, oracle, corruption, **env)
        self._init_spec(setup, obs_mode)
        self.observation_space = self._single_obs_space
        self.action_space = self._single_act_space
        self.render_mode = render_mode
        self._state = -1
        self._last_token = self.world.vocab_size
        self._pending = np.zeros(1)
        self._carries: np.ndarray | None = None
        self._last: tuple[int, int] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        P = self.world.n_prompts
        self._state = int(rng.choice(P, p=np.full(P, 1.0 / P)))
        self._last_token = self.world.vocab_size
        self._pending[:] = 0.0
        self._carries = self.setup.channel.episode_flags(1, rng)
        self._last = None
        return self._obs(np.array([self._state]), np.array([self._last_token]))[0], {"state": self._state}

    def step(self, action):
        if self._state < 0:
            raise EpisodeOver("call reset() before step(): the episode has ended or not started")
        w = self.world
        s, a = self._state, _action(action, w.vocab_size)
        states, actions = np.array([s]), np.array([a])
        nxt = int(w.next_state(states, actions)[0])
        terminated = nxt < 0
        reward = float(
            self.setup.channel.pay(
                self._pending, states, actions, w.depth[states], np.array([terminated]), self.np_random, self._carries
            )[0]
        )
        info = {"oracle_reward": float(self.setup.oracle.reward.at(states, actions)[0]), "state": s}
        self._last = (s, a)
        if terminated:
            obs = self._obs(states, np.array([self._last_token]), actions)[0]
            self._state = -1
        else:
            self._state = nxt
            self._last_token = a
            obs = self._obs(np.array([nxt]), np.array([a]))[0]
        return obs, reward, terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._state >= 0:
            return self.world.format(self._state)
        return self.world.format(*self._last) if self._last else "(not started)"


class TextVectorEnv(VectorEnv, _Spec):
    """``num_envs`` independent episodes of :class:`TextEnv`, stepped together with numpy indexing.

    Next-step autoreset (``metadata["autoreset_mode"]``): after an episode terminates, the next ``step``
    ignores that slot's action, starts a new episode there and returns its first observation with reward 0.
    ``infos["oracle_reward"]`` carries the true reward of every slot and ``infos["state"]`` the state it acted in
    (``infos["_oracle_reward"]``, ``infos["_state"]`` mark the slots that really stepped): the same keys as gymnasium's
    own vector envs around :class:`TextEnv`. Same arguments as :class:`TextEnv`, plus ``num_envs``.

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
        config: Any = None,
        world_seed: int = 0,
        obs_mode: str = "state",
        setup: Setup | None = None,
        oracle: Any = None,
        corruption: Any = None,
        **env: Any,
    ):
        check(isinstance(num_envs, int | np.integer) and not isinstance(num_envs, bool) and num_envs >= 1,
              "num_envs", num_envs, "an integer >= 1")  # fmt: skip
        if setup is None:
            setup = env_setup(config, world_seed, oracle, corruption, **env)
        self._init_spec(setup, obs_mode)
        need = 8.0 * num_envs * (setup.world.horizon + 16)  # per env: states, tokens, rewards and an observation row
        check(need <= default_limit_gb() * GB, "num_envs", num_envs,
              f"fewer envs: {num_envs} need about {need / GB:.3g} GB, above {default_limit_gb():.3g} GB")  # fmt: skip
        self.num_envs = int(num_envs)
        self.single_observation_space = self._single_obs_space
        self.single_action_space = self._single_act_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        B = self.num_envs
        self._states = np.zeros(B, dtype=np.int64)
        self._last_tokens = np.full(B, self.world.vocab_size, dtype=np.int64)
        self._pending = np.zeros(B)
        self._done = np.zeros(B, dtype=bool)
        self._carries: np.ndarray | None = None
        # The uniform initial distribution's CDF, formed as ``Generator.choice(P, p=uniform)`` forms it.
        self._init_cdf = np.full(self.world.n_prompts, 1.0 / self.world.n_prompts).cumsum()
        self._init_cdf /= self._init_cdf[-1]
        # the channel pays the oracle reward itself, exactly: the payments are the oracle rewards (no second gather)
        self._pays_oracle = setup.channel.reward is setup.oracle.reward and setup.channel.exact
        self._fast = self._fast_step_tables()
        self._n_actions = self.world.n_actions
        # the next state in closed form where the world has one (World.step_offsets): s * b + offset[a]
        self._closed_form = self.world.step_offsets()

    def _fast_step_tables(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The flat ``(S * A,)`` views of the payment and oracle tables (oracle ``None`` when the payment is the oracle
        reward) when :meth:`step` can take its fast path, else None. The fast path is the general one, output for
        output and draw for draw, specialised to observations of the state, an exact channel (each payment is
        ``reward[s, a]``: nothing pending, no noise, no episode flags) and rewards stored as ``(S, A)`` tables: it
        gathers both rewards at one flat index ``s * A + a`` and skips the last-token bookkeeping, which only other
        observations read."""
        setup, w = self.setup, self.world
        channel, oracle = setup.channel, setup.oracle.reward

        def flat(r) -> np.ndarray | None:
            if not isinstance(r, Table):
                return None
            v = r.values
            ok = v.dtype == np.float64 and v.flags.c_contiguous and v.shape == (w.n_states, w.n_actions)
            return v.reshape(-1) if ok else None

        if self.obs_mode != "state" or not channel.exact:
            return None
        pay = flat(channel.reward)
        if pay is None:
            return None
        if self._pays_oracle:
            return pay, None
        other = flat(oracle)
        return (pay, other) if other is not None else None

    def _new_prompts(self, n: int) -> np.ndarray:
        """``n`` prompts drawn uniformly: ``np_random.choice(P, size=n, p=uniform)`` draw for draw (one uniform each,
        inverted through the CDF), without ``choice``'s per-call checks of ``p``."""
        return self._init_cdf.searchsorted(self.np_random.random(n), side="right").astype(np.int64, copy=False)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed, options=options)
        self._states = self._new_prompts(self.num_envs)
        self._last_tokens[:] = self.world.vocab_size
        self._pending[:] = 0.0
        self._done[:] = False
        self._carries = self.setup.channel.episode_flags(self.num_envs, self.np_random)
        every = np.ones(self.num_envs, dtype=bool)
        return self._obs(self._states, self._last_tokens), {"state": self._states.copy(), "_state": every}

    def step(self, actions):
        w, setup = self.world, self.setup
        a = np.asarray(actions)
        if a.dtype is not _INT64 or a.shape != (self.num_envs,):  # the slow path: any other type or shape
            a = _actions(a, self.num_envs)
        if a.view(np.uint64).max() >= w.vocab_size:  # one unsigned reduction: a negative action wraps to >= 2**63
            bad = a[(a < 0) | (a >= w.vocab_size)]
            raise ValueError(f"action {bad[0]} is out of range: allowed integers in [0, vocab_size={w.vocab_size})")
        if self._fast is not None:
            return self._step_fast(a)
        s = self._states
        nxt = w.next_state(s, a)
        terminated = nxt < 0
        channel = setup.channel
        depth = w.depth[s] if channel.every is not None else None  # only chunked payments read the depth
        rewards = channel.pay(self._pending, s, a, depth, terminated, self.np_random, self._carries)
        oracle = rewards.copy() if self._pays_oracle else setup.oracle.reward.at(s, a)
        done = self._done
        stepped = ~done
        new_states = np.where(terminated, s, nxt)
        new_last = np.where(terminated, self._last_tokens, a)
        idx = done.nonzero()[0]
        if idx.size:  # next-step autoreset of the slots that ended last step: a new prompt, nothing paid
            new_states[idx] = self._new_prompts(idx.size)
            new_last[idx] = w.vocab_size
            self._pending[idx] = 0.0
            rewards[idx] = 0.0
            oracle = oracle.copy()
            oracle[idx] = 0.0
            terminated[idx] = False
            if self._carries is not None:
                self._carries[idx] = setup.channel.episode_flags(idx.size, self.np_random)
        obs = self._obs(new_states, new_last)
        if self.obs_mode != "state" and terminated.any():  # a finished episode shows its completed sequence
            ends = np.flatnonzero(terminated)
            obs[ends] = self._obs(s[ends], self._last_tokens[ends], a[ends])
        self._states = new_states
        self._last_tokens = new_last
        self._done = terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos = {"oracle_reward": oracle, "_oracle_reward": stepped, "state": s, "_state": stepped}
        return obs, rewards, terminated, truncated, infos

    def _step_fast(self, a: np.ndarray):
        """:meth:`step` on :meth:`_fast_step_tables`'s path (valid int64 actions); the same outputs and draws."""
        pay, oracle_flat = self._fast
        s = self._states
        k = s * self._n_actions
        k += a
        rewards = pay.take(k)
        if self._closed_form is None:
            nxt = self.world.next_state(s, a)
            terminated = nxt < 0
        else:  # the world's closed form (World.step_offsets): s * b + offset[a], outside [0, S) at an episode end
            b, offset, n_states = self._closed_form
            nxt = s * b
            nxt += offset.take(a)
            terminated = nxt.view(np.uint64) >= n_states  # past the last state (the last level), or below 0 (EOS)
        np.copyto(nxt, s, where=terminated)  # a finished episode stays on its last state
        idx = self._done.nonzero()[0]  # read from _done, which subclasses may set (sim.integrations.sb3's restart)
        if idx.size:  # next-step autoreset of the slots that ended last step: a new prompt, nothing paid
            nxt[idx] = self._new_prompts(idx.size)
            rewards[idx] = 0.0
            terminated[idx] = False
        if oracle_flat is None:
            oracle = rewards.copy()
        else:
            oracle = oracle_flat.take(k)
            oracle[idx] = 0.0
        stepped = ~self._done
        self._states = nxt
        self._done = terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos = {"oracle_reward": oracle, "_oracle_reward": stepped, "state": s, "_state": stepped}
        return nxt.copy(), rewards, terminated, truncated, infos


class EpisodeOver(ResetNeeded, RuntimeError):
    """``step`` after the episode ended: gymnasium's :class:`~gymnasium.error.ResetNeeded` (and a RuntimeError)."""


def _action(action: Any, vocab_size: int) -> int:
    """One env's action as an int in ``[0, vocab_size)`` (an integer, or an integral float; a size-1 array).

    Raises:
        ValueError, TypeError: naming the action and the allowed range.
    """
    if isinstance(action, int | np.integer):
        a = int(action)
    else:
        arr = np.asarray(action)
        if arr.size != 1 or arr.dtype.kind not in "biuf":
            raise TypeError(f"action {action!r}: allowed one integer in [0, vocab_size={vocab_size})")
        x = arr.reshape(())[()]
        if not np.isfinite(x) or x != np.floor(x):
            raise ValueError(f"action {action!r} is not an integer: allowed integers in [0, vocab_size={vocab_size})")
        a = int(x)
    if not 0 <= a < vocab_size:
        raise ValueError(f"action {a} is out of range: allowed integers in [0, vocab_size={vocab_size})")
    return a


def _actions(a: np.ndarray, num_envs: int) -> np.ndarray:
    """A vector env's actions as int64 ``(num_envs,)`` (any integer dtype, or integral floats; any shape of that
    size). The range is checked by the caller.

    Raises:
        ValueError, TypeError: naming the actions.
    """
    if a.size != num_envs:
        raise ValueError(f"actions of shape {a.shape}: allowed one action per env ({num_envs})")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.floor(a)).any():
            raise ValueError(f"actions {a.tolist()[:8]} are not all integers: allowed integers in [0, vocab_size)")
    elif a.dtype.kind not in "biu":
        raise TypeError(f"actions of dtype {a.dtype}: allowed integers in [0, vocab_size)")
    return a.astype(np.int64).reshape(num_envs)


#: ``rmsim/MarkovText-v0``'s world when its config leaves it out: the ``env=large`` preset.
MARKOV_ENV = {"n_prompts": 4, "vocab_size": 1000, "horizon": 32, "eos": True, "reference": "bigram", "compressed": True}


def _markov_defaults(kwargs: dict) -> dict:
    """``rmsim/MarkovText-v0``: the ``env=large`` world unless the config or the keywords say otherwise."""
    if "setup" in kwargs:
        return kwargs
    cfg = config_from(kwargs.pop("config", None))
    if cfg.env == EnvConfig():  # the config did not choose a world: take env=large's
        cfg = replace(cfg, env=EnvConfig(**MARKOV_ENV))
    else:
        cfg = replace(cfg, env=replace(cfg.env, compressed=True))
    return {**kwargs, "config": cfg}


def markov_env(**kwargs: Any) -> TextEnv:
    """``gymnasium.make("rmsim/MarkovText-v0", ...)``: one episode at a time on a compressed world."""
    return TextEnv(**{"obs_mode": "markov", **_markov_defaults(kwargs)})


def markov_vector_env(num_envs: int = 1, **kwargs: Any) -> TextVectorEnv:
    """``gymnasium.make_vec("rmsim/MarkovText-v0", num_envs=B, ...)``: B episodes of a compressed world at once.

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
    return TextVectorEnv(num_envs, **{"obs_mode": "markov", **_markov_defaults(kwargs)})
