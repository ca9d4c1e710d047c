"""RL-free optimisers on any world: best-of-n sampling, direct preference optimisation (DPO) and IPO.

``best_of_n``: draw ``n`` responses from pi_ref for the prompt and keep the one the proxy scores highest. With
``F`` the reference CDF of proxy returns within a prompt, a tie group ``g`` of equal proxy return is chosen with
probability ``F_<=(g)^n - F_<(g)^n``, shared within the group in proportion to pi_ref. Where the world can list its
sequences this is exact over all of them (a policy table); otherwise it is the best-of-n distribution of
``agent.samples`` reference draws per prompt, each draw's returns exact, and its KL is to that empirical
distribution. ``kl_bound = log n - (n - 1)/n`` (Beirami et al. 2024) is reported beside the KL.

``dpo`` (Rafailov et al. 2023) on the preference data of the rlhf pipeline: minimise
``-mean[y log s(u) + (1 - y) log s(-u)]``, ``u = beta [log pi/pi_ref (y_1) - log pi/pi_ref (y_2)]`` over a tabular
(a logit per state and token) or a reference-anchored log-linear policy, both starting at pi_ref, by L-BFGS for
at most ``agent.steps`` iterations. With labels equal to the Bradley-Terry probabilities of a reward ``R`` on
all pairs, its optimum is the soft optimum ``pi ∝ pi_ref exp(R / beta)``; with deterministic labels the
dispreferred responses are driven towards probability 0 whatever beta (Azar et al. 2023). Only the states on the
data's paths carry gradient, so on a large world only their logits are parameters (the others stay at pi_ref).

``ipo`` (Azar et al. 2023) regresses the same log-ratio difference ``h = log pi/pi_ref (y_1) - log pi/pi_ref (y_2)``
onto a finite target instead: minimise ``mean[y (h - 1/(2 beta))^2 + (1 - y) (h + 1/(2 beta))^2]``. Its optimum
keeps ``|h| <= 1/(2 beta)`` however deterministic the labels, so beta keeps the policy near pi_ref.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from scipy.special import expit, log_expit

from sim.agents.base import AgentContext, AgentResult, Curve, pressure_path, register, softmax_rows
from sim.errors import ConfigError
from sim.features import FeatureMap
from sim.worlds import LevelPolicy, Table

#: Tabular DPO keeps a logit for every state and token up to this many entries, else only for the data's states.
DENSE_DPO_ENTRIES = 20_000_000


def best_of_n_distribution(
    prompt: np.ndarray, proxy_returns: np.ndarray, ref_probs: np.ndarray, n: int, n_prompts: int
) -> np.ndarray:
    """Joint (prompt, sequence) probabilities of best-of-n under the proxy.

    Args:
        prompt: (m,) the prompt of each sequence.
        proxy_returns: (m,) the proxy's return of each sequence.
        ref_probs: (m,) joint probabilities (or weights) under pi_ref.
        n: samples per prompt.
        n_prompts: the number of prompts.
    """
    return best_of_n_distributions(prompt, proxy_returns, ref_probs, n_prompts)(n)


def best_of_n_distributions(
    prompt: np.ndarray, proxy_returns: np.ndarray, ref_probs: np.ndarray, n_prompts: int
) -> Callable[[int], np.ndarray]:
    """:func:`best_of_n_distribution` as a function of ``n``: the sort by proxy return, its tie groups and their
    reference mass are formed once, for a whole path of ``n``."""
    prompt_mass = np.bincount(prompt, weights=ref_probs, minlength=n_prompts)
    cond = ref_probs / prompt_mass[prompt]
    order = np.lexsort((proxy_returns, prompt))
    p, r, c = prompt[order], proxy_returns[order], cond[order]
    new_group = np.ones(order.size, dtype=bool)
    new_group[1:] = (p[1:] != p[:-1]) | (r[1:] != r[:-1])
    group = np.cumsum(new_group) - 1
    mass = np.bincount(group, weights=c)
    group_prompt = p[new_group]
    cum = np.cumsum(mass)
    prompt_start = np.concatenate([[0.0], cum])[np.searchsorted(group_prompt, group_prompt)]  # mass before prompt
    upper = np.clip(cum - prompt_start, 0.0, 1.0)
    lower = np.clip(upper - mass, 0.0, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(mass[group] > 0, c / mass[group], 0.0)
    sorted_mass = prompt_mass[p]

    def at(n: int) -> np.ndarray:
        chosen = upper**n - lower**n
        out = np.empty_like(ref_probs)
        out[order] = chosen[group] * share * sorted_mass
        return out

    return at


def best_of_n_kl_bound(n: int) -> float:
    """``log n - (n - 1) / n``: an upper bound on KL(best-of-n || pi_ref) (Beirami et al. 2024)."""
    return float(np.log(n) - (n - 1) / n)


@register("best_of_n", keys=("n", "path", "checkpoints", "samples"))
def best_of_n(ctx: AgentContext, cfg) -> AgentResult:
    """The best-of-n policy under the expected proxy (exact where the world lists its sequences)."""
    world = ctx.world
    P = world.n_prompts
    seqs, ref_probs = world.sequence_source(world.ref).coverage(np.repeat(np.arange(P), cfg.samples), ctx.rng)
    proxy_returns = world.sequence_returns(ctx.proxy, seqs)

    joint = best_of_n_distributions(seqs.prompt, proxy_returns, ref_probs, P)

    def policy(n: int):
        return world.weighted_policy(seqs, joint(n))

    curve = []
    if cfg.path:  # n from 1 to agent.n, log-spaced; step = n
        c = Curve(ctx, cfg.n, cfg.checkpoints)
        for n in c.points:
            c.due(int(n))
            c.record(int(n), policy(int(n)), n=float(n), kl_bound=best_of_n_kl_bound(int(n)))
        curve = c.rows
    return AgentResult(policy(cfg.n), curve, extra={"kl_bound": best_of_n_kl_bound(cfg.n)})


def _unique_sequences(pool, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pool rows of the distinct sequences named by ``idx``, and each entry's position among them."""
    if pool.ids is not None:
        _, first, inverse = np.unique(pool.ids[idx], return_index=True, return_inverse=True)
    else:
        keys = np.column_stack([pool.prompt[idx.ravel()], pool.tokens[idx.ravel()]])
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return idx.ravel()[first], inverse.reshape(idx.shape)


class PreferenceObjective:
    """The DPO (or, with ``loss='ipo'``, the IPO) objective over a tabular or log-linear policy."""

    def __init__(self, ctx: AgentContext, cfg, loss: str = "dpo"):
        data = ctx.feedback
        if data is None or data.kind != "preferences" or data.n == 0:
            raise ConfigError(
                "agent.name", loss, f"pipeline=rlhf with feedback.kind=preferences ({loss} needs preferences)"
            )
        world = self.world = ctx.world
        self.beta, self.loss = cfg.beta, loss
        self.y = data.labels
        used, self.local = _unique_sequences(data.pool, data.items)
        states, self.pa, self.pm = world.paths(data.pool.take(used))
        self.loglinear = cfg.policy == "loglinear"
        self.fm = FeatureMap(world, cfg.templates, field="agent.templates") if self.loglinear else None
        A = world.n_actions
        self.full = world.n_states * A <= DENSE_DPO_ENTRIES
        self.rows = np.arange(world.n_states) if self.full else np.unique(states[self.pm])
        self.pr = np.searchsorted(self.rows, states)  # row of each path state among the parameter rows
        with np.errstate(divide="ignore"):
            log_ref_full = np.log(world.table(world.ref)) if self.full else None
        self.log_ref = (
            log_ref_full
            if self.full
            else np.concatenate(
                [
                    world.log_ref(t)[self.rows[world.depth[self.rows] == t] - world.level(t)[0]]
                    for t in range(world.horizon)
                ]
            )  # fmt: skip
        )
        self.dim = self.fm.dim if self.loglinear else self.rows.size * A
        # The loss reads log pi only on the states of the labelled sequences, and its gradient is 0 elsewhere: a
        # log-linear objective forms the rows of those states alone (the same numbers, bit for bit: the rows left
        # out would add exact zeros to the gathered gradient).
        self.obj_rows = np.unique(states[self.pm]) if self.loglinear else self.rows
        self.obj_pr = np.searchsorted(self.obj_rows, states) if self.loglinear else self.pr
        self.obj_log_ref = (
            (log_ref_full[self.obj_rows] if self.full else self.log_ref[np.searchsorted(self.rows, self.obj_rows)])
            if self.loglinear
            else self.log_ref
        )
        self.obj_cell = self.obj_pr[self.pm] * world.n_actions + self.pa[self.pm]  # (row, action) of each path step
        # each template's global feature index (dim where inactive) on the objective's rows: formed once, not per call
        self.obj_cols = self.fm.global_rows(self.obj_rows) if self.loglinear else []

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of the parameter rows."""
        if self.loglinear:
            return self.log_ref + (self.fm.table_values(x) if self.full else self.fm.values(x, self.rows))
        return x.reshape(self.log_ref.shape)

    def policy(self, x: np.ndarray):
        if self.full:
            return Table(self.world, softmax_rows(self.logits(x)))
        world, rows = self.world, self.rows
        patched = self.logits(x)

        def level(t: int) -> np.ndarray:
            lo, hi = world.level(t)
            if self.loglinear:
                z = world.log_ref(t) + self.fm.values(x, np.arange(lo, hi))
            else:
                z = world.log_ref(t).copy()
                mine = (rows >= lo) & (rows < hi)
                z[rows[mine] - lo] = patched[mine]
            return softmax_rows(z)

        return LevelPolicy(world, level)

    def objective(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        if self.loglinear:  # the rows of the labelled sequences' states only: fm.values(x, obj_rows), term by term
            ext = np.append(x, 0.0)  # index dim (an inactive template) reads 0
            values = ext[self.obj_cols[0]]
            for cols in self.obj_cols[1:]:
                values = values + ext[cols]
            logits = self.obj_log_ref + values
        else:
            logits = self.logits(x)
        log_pi = _log_softmax_rows(logits)  # stable where pi underflows
        pi = np.exp(log_pi)
        logratio = log_pi - self.obj_log_ref
        seq_lr = np.where(self.pm, logratio[self.obj_pr, self.pa], 0.0).sum(axis=1)  # log pi/pi_ref of each sequence
        h = seq_lr[self.local[:, 0]] - seq_lr[self.local[:, 1]]
        m = h.size
        if self.loss == "ipo":  # y (h - c)^2 + (1 - y) (h + c)^2 = (h - (2y - 1) c)^2 + const, c = 1/(2 beta)
            c = 1.0 / (2.0 * self.beta)
            resid = h - (2.0 * self.y - 1.0) * c
            loss = (resid @ resid + (1.0 - (2.0 * self.y - 1.0) ** 2) @ np.full(m, c * c)) / m
            du = 2.0 * resid / m  # d loss / d h
        else:
            u = self.beta * h
            loss = -(self.y @ log_expit(u) + (1 - self.y) @ log_expit(-u)) / m
            du = (expit(u) - self.y) * self.beta / m  # d loss / d h
        per_seq = np.bincount(self.local[:, 0], weights=du, minlength=seq_lr.size)
        per_seq -= np.bincount(self.local[:, 1], weights=du, minlength=seq_lr.size)
        # d loss / d log pi(a|s), then through the softmax: g_logits = C - pi * rowsum(C)
        weights = np.broadcast_to(per_seq[:, None], self.pm.shape)[self.pm]
        C = np.bincount(self.obj_cell, weights=weights, minlength=pi.size).reshape(pi.shape)  # in order, as add.at
        g_logits = C - pi * C.sum(axis=1, keepdims=True)
        if not self.loglinear:
            return float(loss), g_logits.ravel()
        w = g_logits.ravel()  # fm.gather(g_logits, obj_rows): the templates' blocks do not overlap
        grad = sum(np.bincount(cols.ravel(), weights=w, minlength=self.dim + 1) for cols in self.obj_cols)
        return float(loss), grad[: self.dim]

    def start(self) -> np.ndarray:
        return np.zeros(self.dim) if self.loglinear else self.log_ref.ravel().copy()


def _log_softmax_rows(z: np.ndarray) -> np.ndarray:
    """scipy.special.log_softmax(z, axis=1), the same operations without its array-API dispatch (a third of a DPO
    objective's time on small worlds)."""
    m = z.max(axis=1, keepdims=True)
    m[~np.isfinite(m)] = 0.0
    tmp = z - m
    with np.errstate(divide="ignore"):
        return tmp - np.log(np.exp(tmp).sum(axis=1, keepdims=True))


def _preference_optimisation(ctx: AgentContext, cfg, loss: str) -> AgentResult:
    """DPO or IPO on the preference data (``agent.path``: one fit per beta of the path)."""
    from scipy import optimize  # here, not at the top: it adds ~0.2 s to every process's start

    options = {"maxiter": cfg.steps, "gtol": 1e-9, "ftol": 1e-14}
    if cfg.path:

        def at(beta: float):
            problem = PreferenceObjective(ctx, replace(cfg, beta=beta), loss)
            res = optimize.minimize(problem.objective, problem.start(), jac=True, method="L-BFGS-B", options=options)
            return problem.policy(res.x)

        return pressure_path(ctx, cfg, at)
    problem = PreferenceObjective(ctx, cfg, loss)
    curve = Curve(ctx, cfg.steps, cfg.checkpoints)
    step = [0]

    def callback(x: np.ndarray) -> None:
        step[0] += 1
        if curve.due(step[0]):
            curve.record(step[0], problem.policy(x))

    res = optimize.minimize(
        problem.objective, problem.start(), jac=True, method="L-BFGS-B", callback=callback, options=options
    )
    pi = problem.policy(res.x)
    if not curve.rows or curve.rows[-1]["step"] != step[0]:
        curve.record(max(step[0], 1), pi)
    return AgentResult(pi, curve.rows, {f"{loss}_loss": float(res.fun)})


def _dpo_templates(cfg):
    return list(cfg.templates) if cfg.policy == "loglinear" else []


_PREFERENCE_KEYS = ("beta", "steps", "policy", "templates", "path", "path_max_beta", "checkpoints")


@register("dpo", learns_from="preferences", kl=True, keys=_PREFERENCE_KEYS, templates=_dpo_templates)
def dpo(ctx: AgentContext, cfg) -> AgentResult:
    """Direct preference optimisation on the preference data (``agent.path``: one fit per beta of the path)."""
    return _preference_optimisation(ctx, cfg, "dpo")


@register("ipo", learns_from="preferences", kl=True, keys=_PREFERENCE_KEYS, templates=_dpo_templates)
def ipo(ctx: AgentContext, cfg) -> AgentResult:
    """Identity preference optimisation (Azar et al. 2023): DPO's log-ratio difference regressed onto +-1/(2 beta)."""
    return _preference_optimisation(ctx, cfg, "ipo")
