"""Catastrophic Goodhart where sequences cannot be listed: :mod:`experiments.catalog.heavy_tails`'s contrast on a
compressed Markov world (200 tokens, horizon 16, no EOS, uniform pi_ref), with one persistent error per state and
token (``corruption.noise.unit = token``; a state is (prompt, position, last token), so the proxy stays Markov and
every return and KL is exact). A response's error is the sum of its tokens' (sigma 1 per token: a gaussian response
error as large as the oracle's own spread). The same tails, pressure path, statistics and thresholds as
``heavy_tails`` (its docstring states them and what holds by construction); only the world and the unit of the error
differ. Summed over 16 tokens, a heavy-tailed token error stays heavy-tailed (the same tail index), and the
KL-regularised optimum can seek the few (position, last token, token) entries with huge errors.
"""

from __future__ import annotations

from experiments.catalog.heavy_tails import check, plot

TABLE = "curves"
CLAIM = (
    "on a compressed world with per-token errors too, light-tailed error keeps oracle gains under KL regularisation "
    "while heavy-tailed error (no variance) lets the proxy return rise far higher with little or no oracle gain"
)
__all__ = ["CLAIM", "TABLE", "check", "plot"]
