"""Bridges to outside RL libraries, each an optional extra (``pip install 'rmsim[sb3]'``).

* :mod:`sim.integrations.sb3`: stable-baselines3. :class:`~sim.integrations.sb3.RmsimVecEnv` is an SB3 ``VecEnv``
  over rmsim's natively batched env, so SB3 algorithms train on all ``n_envs`` episodes with a few numpy operations
  per step instead of ``n_envs`` Python envs.

Nothing here is imported by ``import sim``: importing a submodule imports its library.
"""

from __future__ import annotations

#: What to install when stable-baselines3 is missing.
SB3_INSTALL = "stable-baselines3 and torch: pip install -e '.[sb3]', or make test-sb3"
