"""stable-baselines3 over rmsim's natively batched env (the ``sb3`` extra: ``pip install -e '.[sb3]'``).

SB3 cannot train on a gymnasium ``VectorEnv``: its own :class:`~stable_baselines3.common.vec_env.VecEnv` API
differs (``step`` returns ``(obs, rewards, dones, infos)`` with one info dict per env, and a finished env is reset
at once). ``make_vec_env`` therefore steps ``n_envs`` single :class:`sim.env.TextEnv` objects one by one in Python.
:class:`RmsimVecEnv` is an SB3 ``VecEnv`` over one :class:`sim.env.TextVectorEnv`, which steps all ``n_envs``
episodes with a few numpy indexing operations.

Conventions (those of SB3's ``DummyVecEnv`` around ``Monitor``-wrapped single envs, so a model trains alike on both):

* **Autoreset in the same step.** rmsim's batched env resets a finished slot on the *next* step (gymnasium's
  next-step autoreset). The adapter restarts it at once instead: when slot ``i`` ends, ``dones[i]`` is true,
  ``obs[i]`` is already the first observation of the next episode and the last observation of the finished one is in
  ``infos[i]["terminal_observation"]``. No step is wasted and no zero-reward transition reaches SB3.
* ``infos[i]``: ``oracle_reward`` (the true reward of that step, whatever the env pays), ``state`` (the state acted
  in), ``TimeLimit.truncated`` (always false: the horizon is part of the task); at an episode's end also
  ``terminal_observation`` and, as SB3's ``Monitor`` writes it, ``episode = {"r": return, "l": length, "t": seconds}``
  plus ``"oracle_r"`` (the episode's oracle return), so SB3 logs ``ep_rew_mean`` without a monitor wrapper.
* Rewards are float32, dones bool, observations the env's own (int64 state indices, token or Markov vectors).
* **Seeding.** The batched env has one generator for all slots: ``seed(s)`` (or SB3's ``seed=`` argument) makes the
  next ``reset()`` reproduce the whole batch from ``s``. (``make_vec_env`` seeds env ``i`` with ``s + i`` instead, so
  the two draw different, equally distributed episodes.)

Scoring: ``sim.score(model, vec_env)`` gives the exact metrics of a model trained here (the adapter exposes the
env's ``setup`` and ``obs_mode``).

Example (plain code blocks here, not doctests: this module imports without the extra, so that pytest's doctest
collection works anywhere; ``tests/test_sb3.py`` runs the same calls)::

    import sim
    from stable_baselines3 import PPO
    from sim.integrations.sb3 import make_rmsim_vec_env

    venv = make_rmsim_vec_env(sim.ENV_ID, n_envs=16, seed=0, config={"env": {"vocab_size": 4, "horizon": 3}})
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, seed=0, device="cpu").learn(1024)
    print(sim.score(model, venv))  # exact: oracle_return, gap, kl_to_reference, proxy_return, ...
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from sim.build import Setup
from sim.env import TextVectorEnv
from sim.integrations import SB3_INSTALL

try:
    from stable_baselines3.common.vec_env import VecEnv
except ImportError as missing:  # the extra is not installed: this module still imports, RmsimVecEnv() says what to do
    VecEnv = object  # type: ignore[misc, assignment]
    _MISSING: ImportError | None = missing
else:
    _MISSING = None

__all__ = ["RestartableTextVectorEnv", "RmsimVecEnv", "action_probs", "make_rmsim_vec_env"]


class RestartableTextVectorEnv(TextVectorEnv):
    """:class:`~sim.env.TextVectorEnv` that can start new episodes in some slots at once (:meth:`restart`), which
    same-step autoreset needs; otherwise the same env (same arguments, next-step autoreset when stepped alone)."""

    def restart(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start new episodes in ``slots`` now, exactly as next-step autoreset would on the next step.

        Args:
            slots: int array (n,) of slot indices.

        Returns:
            The new states ``(n,)`` and their first observations ``(n,)`` or ``(n, k)``.
        """
        fresh = self._new_prompts(slots.size)
        self._states[slots] = fresh
        self._last_tokens[slots] = self.world.vocab_size
        self._pending[slots] = 0.0
        self._done[slots] = False  # already restarted: the next step acts in these slots
        if self._carries is not None:
            self._carries[slots] = self.setup.channel.episode_flags(slots.size, self.np_random)
        return fresh, self._obs(fresh, self._last_tokens[slots])


class RmsimVecEnv(VecEnv):
    """An SB3 ``VecEnv`` over an rmsim :class:`~sim.env.TextVectorEnv` (same-step autoreset, SB3's info keys).

    Args:
        venv: the batched env (``gymnasium.make_vec("rmsim/TextMDP-v0", num_envs=B, ...)`` or ``MarkovText-v0``, or
            a :class:`~sim.env.TextVectorEnv` built directly): the adapter steps a :class:`RestartableTextVectorEnv`
            with its setup (world, oracle, reward channel), observation mode and ``num_envs``.

    Attributes:
        venv: the batched env it steps (a :class:`RestartableTextVectorEnv`).
        setup: the world, oracle and reward channel (what :func:`sim.score` reads).
        obs_mode: ``state``, ``tokens`` or ``markov``.

    Raises:
        ImportError: when stable-baselines3 is not installed.
        TypeError: when ``venv`` is not rmsim's batched env, or is wrapped by gymnasium vector wrappers.

    Example::

        venv = RmsimVecEnv(gym.make_vec(sim.ENV_ID, num_envs=4, vocab_size=4, horizon=3))
        venv.seed(0)
        obs = venv.reset()  # (4,) state indices: each a prompt
        obs, rewards, dones, infos = venv.step(np.zeros(4, dtype=np.int64))  # EOS everywhere: all episodes end
        dones.all(), infos[0]["episode"]["l"], infos[0]["terminal_observation"]  # True, 1, the last state
    """

    def __init__(self, venv: TextVectorEnv):
        if _MISSING is not None:
            raise ImportError(f"RmsimVecEnv needs {SB3_INSTALL}") from _MISSING
        inner = getattr(venv, "unwrapped", venv)
        if not isinstance(inner, TextVectorEnv):
            raise TypeError(
                f"RmsimVecEnv wraps rmsim's batched env (gymnasium.make_vec of an rmsim id), not {type(venv).__name__}"
            )
        if inner is not venv:  # a gymnasium vector wrapper would be silently dropped
            raise TypeError(
                f"RmsimVecEnv wraps the bare batched env, not {type(venv).__name__}: wrap the adapter in SB3's VecEnv "
                "wrappers (VecNormalize, ...) instead"
            )
        if not isinstance(inner, RestartableTextVectorEnv):  # the same world, rewards and observations
            inner = RestartableTextVectorEnv(inner.num_envs, setup=inner.setup, obs_mode=inner.obs_mode)
        self.venv = inner
        self.setup: Setup = inner.setup
        self.obs_mode: str = inner.obs_mode
        self.render_mode = None
        super().__init__(inner.num_envs, inner.single_observation_space, inner.single_action_space)
        B = self.num_envs
        self._actions = np.zeros(B, dtype=np.int64)
        self._returns = np.zeros(B)
        self._oracle_returns = np.zeros(B)
        self._lengths = np.zeros(B, dtype=np.int64)
        self._t0 = time.time()

    # ------------------------------------------------------------------ stepping
    def reset(self) -> np.ndarray:
        """Start ``num_envs`` new episodes (seeded by the last :meth:`seed`, if any).

        Returns:
            The first observations ``(B,)`` (state mode) or ``(B, k)`` (token or Markov vectors).
        """
        options = self._options[0] or None
        obs, info = self.venv.reset(seed=self._seeds[0], options=options)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{"state": s} for s in info["state"].tolist()]
        self._returns[:] = 0.0
        self._oracle_returns[:] = 0.0
        self._lengths[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """One step of every slot; slots whose episode ends are restarted in the same step.

        Returns:
            ``obs`` (B,) or (B, k); ``rewards`` float32 (B,); ``dones`` bool (B,); ``infos``, one dict per slot.
        """
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        oracle = info["oracle_reward"]
        self._returns += rewards
        self._oracle_returns += oracle
        self._lengths += 1
        columns = (oracle.tolist(), info["state"].tolist(), terminated.tolist(), truncated.tolist())
        infos = [
            {"oracle_reward": o, "state": s, "TimeLimit.truncated": tr and not te}
            for o, s, te, tr in zip(*columns, strict=True)
        ]
        ended = np.flatnonzero(dones)
        if ended.size:
            now = round(time.time() - self._t0, 6)
            for i in ended.tolist():
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["episode"] = {
                    "r": round(float(self._returns[i]), 6),
                    "l": int(self._lengths[i]),
                    "t": now,
                    "oracle_r": round(float(self._oracle_returns[i]), 6),
                }
            fresh, first = self.venv.restart(ended)
            obs[ended] = first
            for i, s in zip(ended.tolist(), fresh.tolist(), strict=True):
                self.reset_infos[i] = {"state": s}
            self._returns[ended] = 0.0
            self._oracle_returns[ended] = 0.0
            self._lengths[ended] = 0
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    # ------------------------------------------------------------------ SB3's per-env access
    def _count(self, indices: None | int | Iterable[int]) -> int:
        return len(list(self._get_indices(indices)))

    def get_attr(self, attr_name: str, indices: None | int | Iterable[int] = None) -> list[Any]:
        """The batched env's attribute (``render_mode``, ``setup``, ``obs_mode``: the adapter's), once per index: the
        slots share one env."""
        owner = self if attr_name in ("render_mode", "setup", "obs_mode") else self.venv
        return [getattr(owner, attr_name)] * self._count(indices)

    def set_attr(self, attr_name: str, value: Any, indices: None | int | Iterable[int] = None) -> None:
        """Set an attribute of the batched env (all slots: they share it; a subset of indices is refused)."""
        if self._count(indices) != self.num_envs:
            raise ValueError("the slots of rmsim's batched env share one env: set_attr applies to all of them")
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: None | int | Iterable[int] = None, **method_kwargs
    ) -> list[Any]:
        """Call a method of the batched env once; its result is repeated for each index."""
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result] * self._count(indices)

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: None | int | Iterable[int] = None
    ) -> list[bool]:
        """No slot is a wrapped gymnasium env (episode statistics come from the adapter itself)."""
        return [False] * self._count(indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs


def make_rmsim_vec_env(
    env_id: str = "rmsim/TextMDP-v0", n_envs: int = 1, seed: int | None = None, **env_kwargs: Any
) -> RmsimVecEnv:
    """The batched counterpart of SB3's ``make_vec_env(env_id, n_envs, seed, env_kwargs=...)`` for an rmsim id.

    Args:
        env_id: ``rmsim/TextMDP-v0`` or ``rmsim/MarkovText-v0``.
        n_envs: episodes stepped together.
        seed: seeds the first ``reset()`` (the whole batch; see :class:`RmsimVecEnv`).
        env_kwargs: the env's arguments (``config``, ``world_seed``, ``obs_mode``, shorthands, ...).
    """
    venv = RmsimVecEnv(gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **env_kwargs))
    if seed is not None:
        venv.seed(seed)
    return venv


def action_probs(model: Any, obs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """An SB3 model's action probabilities of a batch of observations, ``chunk`` rows at a time (a one-hot
    ``Discrete`` observation of ``S`` states is ``S`` floats per row inside the model).

    Args:
        model: an SB3 algorithm with a categorical policy (PPO, A2C, ...).
        obs: observations (n,) or (n, k), as the env gives them.
        chunk: rows per forward pass.

    Returns:
        float64 (n, A): what :func:`sim.score` reads from the model (the same numbers when ``n <= chunk``).
    """
    import torch

    policy = model.policy
    out = []
    with torch.no_grad():
        for lo in range(0, len(obs), chunk):
            dist = policy.get_distribution(policy.obs_to_tensor(obs[lo : lo + chunk])[0])
            out.append(dist.distribution.probs.cpu().numpy())
    return np.concatenate(out).astype(np.float64).reshape(len(obs), -1)
