"""Misspecification: the proxy is a different reward *function*, not a noisy view of the right one.

It acts on the oracle's parameters, once for every world kind (the world then renders the proxy in its own form):

* misweight: the linear part's weights rotated to exactly angle ``alpha`` from ``theta*``, same norm.
* omit: the weights of some feature templates set to zero.
* length bias: ``lambda * length`` added (in dense form ``lambda`` per non-EOS token).
* project: the oracle replaced by its least-squares fit, over all complete sequences with equal weight, in a
  smaller linear class (a list of templates; worlds that can list their sequences).
* scope (Pan et al. 2022): the proxy covers only part of the behaviour, the first ``k`` tokens of a response or
  the first ``ceil(fraction * P)`` prompts, and pays nothing elsewhere.
* exploit (reward hacking): one bad output per prompt, the oracle's worst (of a given length), is overrated until
  it beats the proxy's best output by a margin. The rarer it is under pi_ref, the more optimisation pressure it
  takes before a policy finds it (worlds that can list their sequences).

Order: project, then misweight, then omit, then length bias, then scope, then the exploit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sim.config import MisspecConfig
from sim.errors import ConfigError
from sim.features import FeatureMap
from sim.oracle import Oracle, per_token


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
        k = fm.templates.index(name)
        out[fm.offsets[k] : fm.offsets[k + 1]] = 0.0
    return out


def project(world, reward, templates: Sequence[str]) -> tuple[FeatureMap, np.ndarray]:
    """Least-squares fit of the returns of ``reward`` in the linear class of ``templates``.

    Minimises ``sum_{(x, y)} (R(x, y) - theta . Psi(x, y))^2`` over all complete sequences (min-norm solution
    when the templates are collinear).

    Returns:
        ``(feature_map, theta)``.
    """
    fm = FeatureMap(world, templates, field="corruption.misspec.project_to")
    seqs = world.all_sequences()
    Psi = fm.sequences(seqs)
    R = world.sequence_returns(reward, seqs)
    gram = (Psi.T @ Psi).toarray()
    theta = np.linalg.lstsq(gram, Psi.T @ R, rcond=None)[0]
    return fm, theta


def restrict_scope(world, reward, tokens: int = 0, prompts: float = 1.0):
    """``reward`` with nothing paid outside the scope: tokens at positions >= ``tokens`` (0 = all in scope) and
    prompts from ``ceil(prompts * P)`` on."""
    out = world.table(reward).copy()
    if tokens:
        out[world.depth >= tokens] = 0.0
    if prompts < 1:
        out[world.prompt >= math.ceil(prompts * world.n_prompts - 1e-9)] = 0.0
    return world.table_reward(out)


def response_length(world, seqs) -> np.ndarray:
    """(n,) non-EOS tokens of each sequence."""
    last = seqs.tokens[np.arange(seqs.n), seqs.length - 1]
    return seqs.length - ((last == 0) if world.eos else 0)


def add_exploit(world, proxy, oracle, margin: float, length: int | None = None):
    """``proxy`` plus one exploit per prompt: the oracle-worst complete output (among those of response length
    ``length``, or all) gets a bonus on its last token so that its proxy return exceeds the prompt's best other
    proxy return by ``margin`` standard deviations of the oracle's returns (over all complete outputs). Every other
    output keeps its proxy return: a last transition belongs to one output only.

    Raises:
        ConfigError: if no output has that length.
    """
    seqs = world.all_sequences()
    true = world.sequence_returns(oracle, seqs)
    seen = world.sequence_returns(proxy, seqs)
    ends = response_length(world, seqs)
    unit = float(true.std()) or 1.0
    bonus = np.zeros(seqs.n)
    for p in range(world.n_prompts):
        mine = seqs.prompt == p
        cand = np.flatnonzero(mine & (ends == length)) if length is not None else np.flatnonzero(mine)
        if cand.size == 0:
            lengths = sorted(set(ends[mine].tolist()))
            raise ConfigError("corruption.misspec.exploit_length", length, f"a response length among {lengths}")
        target = cand[np.argmin(true[cand])]
        others = np.flatnonzero(mine)
        best_other = seen[others[others != target]].max() if others.size > 1 else seen[target]
        bonus[target] = best_other - seen[target] + margin * unit
    return proxy + world.sequence_reward(seqs, bonus)


def misspecify(world, oracle: Oracle, m: MisspecConfig, rng: np.random.Generator):
    """The misspecified reward, in the oracle's form (the oracle's own reward when nothing is set)."""
    reweight = m.angle > 0 or bool(m.omit)
    scoped = m.scope_tokens > 0 or m.scope_prompts < 1
    if not (m.project_to or reweight or m.length_bias != 0 or scoped or m.exploit > 0):
        return oracle.reward
    r = oracle.reward
    if m.project_to or reweight:
        if m.project_to:
            fm, theta = project(world, oracle.reward, m.project_to)
            rest = None  # the projection replaces the whole oracle
        else:
            if oracle.features is None:
                key, value = (
                    ("corruption.misspec.angle", m.angle) if m.angle > 0 else ("corruption.misspec.omit", m.omit)
                )
                raise ConfigError(
                    key, value, "only with an oracle that has a linear part (oracle.kind linear/nonlinear)"
                )
            fm, theta, rest = oracle.features, oracle.theta, oracle.rest
        r = fm.reward(omit(fm, misweight(theta, m.angle, rng), m.omit))
        r = r if rest is None else r + rest
    if m.length_bias != 0:
        r = r + per_token(world, np.full(world.horizon, float(m.length_bias)))
    if scoped:
        if m.scope_tokens and oracle.form != "dense":
            raise ConfigError(
                "corruption.misspec.scope_tokens",
                m.scope_tokens,
                "0 with oracle.form=sequence (a sequence-form reward is paid at the end, not token by token)",
            )
        r = restrict_scope(world, r, m.scope_tokens, m.scope_prompts)
    if m.exploit > 0:
        r = add_exploit(world, r, oracle.reward, m.exploit, m.exploit_length)
    return world.table_reward(world.sequence_form(r)) if oracle.form == "sequence" else r
