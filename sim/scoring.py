"""``sim.score``: exact metrics of any policy, however it was trained (a table, a function of observations, an SB3
model).

A policy trained outside rmsim (stable-baselines3, your own code) is scored exactly the way ``experiments.run``
scores its own agents: it is asked for its action probabilities (or actions) at every state of the world, level by
level, and the result is evaluated by :meth:`sim.worlds.World.evaluate` (the occupancy recursion, no sampling; on a
compressed world, over (prompt, position, last token) states: no enumeration). The keys are those of
``metrics.json``.

Example:
    >>> import gymnasium as gym, numpy as np, sim
    >>> env = gym.make("rmsim/TextMDP-v0", config={"env": {"n_prompts": 2, "vocab_size": 4, "horizon": 3}})
    >>> m = sim.score(lambda obs: np.full((len(obs), 4), 0.25), env)  # the uniform policy
    >>> round(m["kl_to_reference"], 12), m["oracle_return"] == m["reference_return"]
    (0.0, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.build import Setup
from sim.errors import ConfigError, check
from sim.metrics import exact_metrics
from sim.worlds import LevelPolicy, Table


def setup_of(target: Any) -> Setup:
    """The :class:`sim.build.Setup` behind a gymnasium env (wrapped or not), a vector env, or a setup itself."""
    if isinstance(target, Setup):
        return target
    for candidate in (target, getattr(target, "unwrapped", None), getattr(target, "env", None)):
        setup = getattr(candidate, "setup", None)
        if isinstance(setup, Setup):
            return setup
    raise TypeError(f"cannot find an rmsim world in {type(target).__name__}: pass an rmsim env or a sim.build.Setup")


def observations(world, states: np.ndarray, obs_mode: str) -> np.ndarray:
    """What an rmsim env shows at the start of a step in ``states`` (``state``, ``tokens`` or ``markov`` mode)."""
    if obs_mode == "state":
        return np.asarray(states)
    if obs_mode == "tokens":
        return world.token_table()[states]
    if obs_mode == "markov":
        last = world.last_token[states]
        return np.stack([world.prompt[states], world.depth[states], np.where(last < 0, world.vocab_size, last)], axis=1)
    raise ConfigError("obs_mode", obs_mode, "state, tokens or markov")


def _one_hot(actions: np.ndarray, n_actions: int, n: int | None = None) -> np.ndarray:
    """One-hot rows (n, A) of a policy's actions: integers (or integral floats) in ``[0, A)``, one per observation.

    Raises:
        ValueError, TypeError: naming the policy's actions and what was expected.
    """
    actions = np.asarray(actions)
    if actions.dtype.kind not in "biuf":
        raise TypeError(f"a policy's actions must be integers in [0, {n_actions}), not of dtype {actions.dtype}")
    if n is not None and actions.size != n:  # (a scalar was broadcast to every state)
        raise ValueError(
            f"a policy gave actions of shape {actions.shape} for {n} observations: expected ({n},) actions or "
            f"({n}, {n_actions}) probabilities"
        )
    if actions.dtype.kind == "f" and not (np.isfinite(actions).all() and (actions == np.floor(actions)).all()):
        raise ValueError(f"a policy's actions must be integers in [0, {n_actions}): got {actions.reshape(-1)[:4]}")
    actions = actions.reshape(-1).astype(np.int64)
    if actions.size and (actions.min() < 0 or actions.max() >= n_actions):
        raise ValueError(f"a policy's actions must be in [0, {n_actions}): got {actions.min()}..{actions.max()}")
    out = np.zeros((actions.size, n_actions))
    out[np.arange(actions.size), actions] = 1.0
    return out


#: The most Monte Carlo episodes of ``score(mc_episodes=...)``: a cross-check of the exact value, whose 99% interval
#: is then a few 1e-4 return standard deviations wide (1e12 episodes would run for days).
MAX_MC_EPISODES = 10**7

#: Observations per call to a policy, and the most ``observations x n_states`` entries per call (a one-hot input).
QUERY_ROWS = 4096
QUERY_ENTRIES = 1 << 25


def _query(policy: Any, obs: np.ndarray, n_actions: int, deterministic: bool) -> np.ndarray:
    """Action probabilities (n, A) of a batch of observations."""
    sb3 = getattr(policy, "policy", None)
    if hasattr(policy, "predict"):
        if not deterministic and hasattr(sb3, "get_distribution") and hasattr(sb3, "obs_to_tensor"):
            dist = sb3.get_distribution(sb3.obs_to_tensor(obs)[0])  # stable-baselines3: the policy's own probabilities
            probs = dist.distribution.probs.detach().cpu().numpy()
            return np.asarray(probs, dtype=np.float64).reshape(len(obs), n_actions)
        actions, _ = policy.predict(obs, deterministic=True)
        return _one_hot(actions, n_actions, len(obs))
    if callable(policy):
        out = np.asarray(policy(obs))
        if out.ndim == 2:
            if out.shape != (len(obs), n_actions) or out.dtype.kind not in "biuf":
                raise ValueError(
                    f"a policy gave probabilities of shape {out.shape} (dtype {out.dtype}) for {len(obs)} "
                    f"observations: expected ({len(obs)}, {n_actions}) probabilities or ({len(obs)},) actions"
                )
            return out.astype(np.float64)
        return _one_hot(out, n_actions, len(obs))
    raise TypeError("a policy is an (S, A) array, a function of observations, or an object with predict()")


def as_policy(policy: Any, world, obs_mode: str = "state", deterministic: bool = False):
    """A policy of ``world`` (rows per level) from an (S, A) array, a function ``obs -> (n, A) probabilities or (n,)
    actions``, or an object with an SB3-style ``predict(obs, deterministic=...)`` (whose action probabilities are
    used when it exposes them, unless ``deterministic``).

    Raises:
        ConfigError: when the policy reads what the world does not keep (the last token of a compressed world built
            without it).
        ValueError: when a row is not a distribution over the actions.
    """
    A = world.n_actions
    if isinstance(policy, np.ndarray):
        if policy.dtype.kind not in "biuf":
            raise TypeError(f"a policy table holds probabilities (numbers), not dtype {policy.dtype}")
        if policy.shape != (world.n_states, A):
            raise ValueError(f"a policy table has shape (S, A) = {(world.n_states, A)}, not {policy.shape}")
        _check_rows(policy)
        return Table(world, np.asarray(policy, dtype=np.float64))
    if obs_mode == "markov" and not getattr(world, "track", True):
        raise ConfigError(
            "obs_mode",
            obs_mode,
            "state (or a world that keeps the last token): this compressed world's states are (prompt, position) "
            "because nothing in its rewards or reference reads the last token, so a policy that reads it cannot be "
            "scored exactly (mc_episodes estimates it by sampling)",
        )

    # a model may one-hot its input (stable-baselines3 does, for a Discrete(S) observation): at most QUERY_ENTRIES
    # observation entries per call, so scoring a big world never forms an (n, S) block of the whole level
    chunk = max(1, min(QUERY_ROWS, QUERY_ENTRIES // max(world.n_states, 1)))

    def rows_at(t: int, local: np.ndarray) -> np.ndarray:
        states = world.level_start[t] + np.asarray(local)
        probs = np.empty((states.size, A))
        for lo in range(0, states.size, chunk):
            part = states[lo : lo + chunk]
            probs[lo : lo + part.size] = _query(policy, observations(world, part, obs_mode), A, deterministic)
        _check_rows(probs)
        return probs

    return LevelPolicy(world, lambda t: rows_at(t, np.arange(int(world.sizes[t]))), rows_at)


def _check_rows(probs: np.ndarray) -> None:
    total = probs.sum(axis=1)
    if not (np.all(np.isfinite(probs)) and np.all(probs >= -1e-12) and np.allclose(total, 1.0, atol=1e-6)):
        raise ValueError("a policy's rows must be finite, non-negative and sum to 1 (within 1e-6)")


def score(
    policy: Any,
    target: Any,
    obs_mode: str | None = None,
    deterministic: bool = False,
    mc_episodes: int = 0,
    seed: int = 0,
) -> dict[str, float | None]:
    """Exact metrics of any policy on an rmsim world: the keys of ``metrics.json``.

    Args:
        policy: an (S, A) array over the world's states; a function of a batch of observations giving action
            probabilities (n, A) or actions (n,); or an object with ``predict(obs, deterministic=...)``
            (stable-baselines3), scored by its action probabilities when it exposes them.
        target: the env the policy was trained in (``gymnasium.make`` or ``make_vec`` of an rmsim id, wrapped or not),
            or a :class:`sim.build.Setup`.
        obs_mode: the observations the policy reads (default: the env's own).
        deterministic: score the greedy action of an SB3 model instead of its probabilities.
        mc_episodes: also roll the policy itself out for this many episodes in the env and report the mean oracle
            return with a 99% interval (``oracle_return_mc``, ``_ci99_lo``, ``_hi``): a cross-check of the exact value.
        seed: the Monte Carlo rollouts' seed.

    Returns:
        ``optimal_return``, ``oracle_return``, ``reference_return``, ``gap``, ``normalized_gap``, ``proxy_return``
        (under the env's expected reward), ``reference_proxy_return``, ``kl_to_reference``, and the Monte Carlo keys.
    """
    setup = setup_of(target)
    mode = obs_mode or getattr(getattr(target, "unwrapped", target), "obs_mode", None) or "state"
    check(mode in ("state", "tokens", "markov"), "obs_mode", mode, "state, tokens or markov")
    whole = (int, np.integer)
    check(isinstance(mc_episodes, whole) and not isinstance(mc_episodes, bool)
          and (mc_episodes == 0 or 2 <= mc_episodes <= MAX_MC_EPISODES), "mc_episodes", mc_episodes,
          f"0 (off) or an integer in [2, {MAX_MC_EPISODES:.0e}] (an interval needs two episodes)")  # fmt: skip
    check(isinstance(seed, whole) and not isinstance(seed, bool) and seed >= 0, "seed", seed, "an integer >= 0")
    world = setup.world
    rows = as_policy(policy, world, mode, deterministic)
    metrics = exact_metrics(world, rows, setup.oracle.reward, setup.channel.expected())
    if mc_episodes:
        from sim.run import mc_estimate

        returns = rollout_returns(policy, setup, mode, mc_episodes, seed, deterministic)
        mc, lo, hi = mc_estimate(returns, 0.99)
        metrics.update(oracle_return_mc=mc, oracle_return_mc_ci99_lo=lo, oracle_return_mc_ci99_hi=hi)
    return metrics


def rollout_returns(
    policy: Any, setup: Setup, obs_mode: str, episodes: int, seed: int = 0, deterministic: bool = False
) -> np.ndarray:
    """Oracle returns (episodes,) of ``policy`` itself, acting in the batched env on its own observations."""
    from sim.env import TextVectorEnv

    A = setup.world.n_actions
    batch = min(episodes, 1024)
    env = TextVectorEnv(num_envs=batch, setup=setup, obs_mode=obs_mode)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    totals, returns = np.zeros(batch), []
    done = np.zeros(batch, dtype=bool)  # slots that ended last step: the env restarts them, ignoring their action
    while len(returns) < episodes:
        a = np.zeros(batch, dtype=np.int64)
        live = np.flatnonzero(~done)  # the policy is asked only about states it acts in (not final observations)
        probs = policy[obs[live]] if isinstance(policy, np.ndarray) else _query(policy, obs[live], A, deterministic)
        cum = np.cumsum(probs, axis=1)
        a[live] = np.minimum((rng.random(live.size)[:, None] * cum[:, -1:] >= cum).sum(axis=1), A - 1)
        obs, _, terminated, _, info = env.step(a)
        totals += np.where(info["_oracle_reward"], info["oracle_reward"], 0.0)
        for i in np.flatnonzero(terminated):
            returns.append(totals[i])
            totals[i] = 0.0
        done = terminated
    return np.asarray(returns[:episodes])
