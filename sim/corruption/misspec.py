"""Misspecification: the proxy is a different reward *function*, not a noisy view of the right one.

* misweight: the linear part's weights rotated to exactly angle ``alpha`` from ``theta*``, same norm.
* omit: the weights of some feature templates set to zero.
* length bias: ``lambda * length`` added (in dense form ``lambda`` per non-EOS token).
* project: the oracle replaced by its least-squares fit, over all complete sequences with equal weight, in a
  smaller linear class (a list of templates).
* scope (Pan et al. 2022): the proxy covers only part of the behaviour, the first ``k`` tokens of a response or
  the first ``ceil(fraction * P)`` prompts, and pays nothing elsewhere.
* exploit (reward hacking): one bad output per prompt, the oracle's worst (of a given length), is overrated until
  it beats the proxy's best output by a margin. The rarer it is under pi_ref, the more optimisation pressure it
  takes before a policy finds it.

Order: project, then misweight, then omit, then length bias, then scope, then the exploit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sim.errors import ConfigError
from sim.features import FeatureMap, sequence_features, terminal_transitions
from sim.mdp import TextMDP
from sim.oracle import sequence_form


def misweight(theta: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """A vector at angle ``alpha`` (radians, in [0, pi]) from ``theta`` with the same norm.

    ``theta_hat = cos(alpha) theta + sin(alpha) |theta| u`` with ``u`` a random unit vector orthogonal to
    ``theta``. ``alpha = 0`` returns ``theta`` itself.
    """
    if alpha == 0:
        return theta
    norm = np.linalg.norm(theta)
    u = rng.normal(size=theta.shape)
    u -= (u @ theta) / (norm**2) * theta
    u -= (u @ theta) / (norm**2) * theta  # a second pass makes the orthogonality exact to rounding
    u /= np.linalg.norm(u)
    return np.cos(alpha) * theta + np.sin(alpha) * norm * u


def omit(fm: FeatureMap, theta: np.ndarray, templates: Sequence[str]) -> np.ndarray:
    """``theta`` with the blocks of ``templates`` set to zero."""
    out = theta.copy()
    for name in templates:
        if name not in fm.templates:
            raise ConfigError(
                "corruption.misspec.omit", name, f"templates of the oracle's linear part {list(fm.templates)}"
            )
        out[fm.offsets[fm.templates.index(name)] : fm.offsets[fm.templates.index(name) + 1]] = 0.0
    return out


def length_reward(mdp: TextMDP, lam: float) -> np.ndarray:
    """Dense ``lambda`` per non-EOS token: ``lambda * length`` summed along any path."""
    r = np.zeros((mdp.n_states, mdp.n_actions))
    r[:, mdp.first_token :] = lam
    return r


def project(mdp: TextMDP, r: np.ndarray, templates: Sequence[str]) -> tuple[FeatureMap, np.ndarray]:
    """Least-squares fit of the returns of ``r`` in the linear class of ``templates``.

    Minimises ``sum_{(x, y)} (R(x, y) - theta . Psi(x, y))^2`` over all complete sequences (min-norm solution
    when the templates are collinear).

    Returns:
        ``(feature_map, theta)``.
    """
    fm = FeatureMap(mdp, templates)
    Psi = sequence_features(fm)
    R = sequence_form(mdp, r)[mdp.terminal_mask()]
    gram = (Psi.T @ Psi).toarray()
    theta = np.linalg.lstsq(gram, Psi.T @ R, rcond=None)[0]
    return fm, theta


def restrict_scope(mdp: TextMDP, r: np.ndarray, tokens: int = 0, prompts: float = 1.0) -> np.ndarray:
    """``r`` with nothing paid outside the scope: tokens at positions >= ``tokens`` (0 = all in scope) and prompts
    from ``ceil(prompts * P)`` on."""
    out = r.copy()
    if tokens:
        out[mdp.depth >= tokens] = 0.0
    if prompts < 1:
        out[mdp.prompt >= math.ceil(prompts * mdp.n_prompts - 1e-9)] = 0.0
    return out


def add_exploit(
    mdp: TextMDP, proxy: np.ndarray, oracle: np.ndarray, margin: float, length: int | None = None
) -> np.ndarray:
    """``proxy`` with one exploit per prompt: the oracle-worst complete output (among those of response length
    ``length``, or all) gets a bonus on its last transition so that its proxy return exceeds the prompt's best other
    proxy return by ``margin`` standard deviations of the oracle's returns (over all complete outputs). Every other
    output keeps its proxy return: a last transition belongs to one output only.

    Raises:
        ConfigError: if no output has that length.
    """
    s, a = terminal_transitions(mdp)
    true = sequence_form(mdp, oracle)[s, a]
    seen = sequence_form(mdp, proxy)[s, a]
    ends = mdp.end_length()[s, a]
    prompt = mdp.prompt[s]
    unit = float(true.std()) or 1.0
    out = proxy.copy()
    for p in range(mdp.n_prompts):
        mine = prompt == p
        cand = np.flatnonzero(mine & (ends == length)) if length is not None else np.flatnonzero(mine)
        if cand.size == 0:
            lengths = sorted(set(ends[mine].tolist()))
            raise ConfigError("corruption.misspec.exploit_length", length, f"a response length among {lengths}")
        target = cand[np.argmin(true[cand])]
        others = np.flatnonzero(mine)
        best_other = seen[others[others != target]].max() if others.size > 1 else seen[target]
        out[s[target], a[target]] += best_other - seen[target] + margin * unit
    return out
