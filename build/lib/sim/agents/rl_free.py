"""RL-free optimisers: best-of-n sampling, direct preference optimisation (DPO) and IPO.

``best_of_n``: draw ``n`` responses from pi_ref for the prompt and keep the one the proxy scores highest. Its
sequence distribution is exact over the enumerated sequences: with ``F`` the reference CDF of proxy returns
within a prompt, a tie group ``g`` of equal proxy return is chosen with probability ``F_<=(g)^n - F_<(g)^n``,
shared within the group in proportion to pi_ref. The policy table reproducing that distribution is evaluated
exactly; ``kl_bound = log n - (n - 1)/n`` (Beirami et al. 2024) is reported beside its exact KL.

``dpo`` (Rafailov et al. 2023) on the preference data of the rlhf pipeline: minimise
``-mean[y log s(u) + (1 - y) log s(-u)]``, ``u = beta [log pi/pi_ref (y_1) - log pi/pi_ref (y_2)]`` over a tabular
(a logit per state and token) or a reference-anchored log-linear policy, both starting at pi_ref, by L-BFGS for
at most ``agent.steps`` iterations. With labels equal to the Bradley-Terry probabilities of a reward ``R`` on
all pairs, its optimum is the soft optimum ``pi ∝ pi_ref exp(R / beta)``; with deterministic labels the
dispreferred responses are driven towards probability 0 whatever beta (Azar et al. 2023).

``ipo`` (Azar et al. 2023) regresses the same log-ratio difference ``h = log pi/pi_ref (y_1) - log pi/pi_ref (y_2)``
onto a finite target instead: minimise ``mean[y (h - 1/(2 beta))^2 + (1 - y) (h + 1/(2 beta))^2]``. Its optimum
keeps ``|h| <= 1/(2 beta)`` however deterministic the labels, so beta keeps the policy near pi_ref.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize
from scipy.special import expit, log_expit, log_softmax

from sim.agents.base import AgentContext, AgentResult, Curve, pressure_path, register, softmax_rows
from sim.agents.linear import LinearQ
from sim.errors import ConfigError
from sim.feedback.sequences import Sequences


def best_of_n_distribution(seqs: Sequences, proxy_returns: np.ndarray, ref_probs: np.ndarray, n: int) -> np.ndarray:
    """Joint (prompt, sequence) probabilities (n_seq,) of best-of-n under the proxy.

    Args:
        seqs: the sequences.
        proxy_returns: (n_seq,) the proxy's return of each sequence.
        ref_probs: (n_seq,) joint probabilities under pi_ref.
        n: samples per prompt.
    """
    prompt_mass = np.bincount(seqs.prompt, weights=ref_probs, minlength=seqs.mdp.n_prompts)
    cond = ref_probs / prompt_mass[seqs.prompt]
    order = np.lexsort((proxy_returns, seqs.prompt))
    p, r, c = seqs.prompt[order], proxy_returns[order], cond[order]
    new_group = np.ones(order.size, dtype=bool)
    new_group[1:] = (p[1:] != p[:-1]) | (r[1:] != r[:-1])
    group = np.cumsum(new_group) - 1
    mass = np.bincount(group, weights=c)
    group_prompt = p[new_group]
    cum = np.cumsum(mass)
    prompt_start = np.concatenate([[0.0], cum])[np.searchsorted(group_prompt, group_prompt)]  # mass before prompt
    upper = np.clip(cum - prompt_start, 0.0, 1.0)
    lower = np.clip(upper - mass, 0.0, 1.0)
    chosen = upper**n - lower**n
    out = np.empty_like(ref_probs)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(mass[group] > 0, c / mass[group], 0.0)
    out[order] = chosen[group] * share * prompt_mass[p]
    return out


def best_of_n_kl_bound(n: int) -> float:
    """``log n - (n - 1) / n``: an upper bound on KL(best-of-n || pi_ref) (Beirami et al. 2024)."""
    return float(np.log(n) - (n - 1) / n)


@register("best_of_n")
def best_of_n(ctx: AgentContext, cfg) -> AgentResult:
    """The exact best-of-n policy under the expected proxy."""
    seqs = Sequences.of(ctx.mdp)
    proxy_returns, ref_probs = seqs.returns(ctx.proxy), seqs.probs(ctx.ref_policy)

    def policy(n: int) -> np.ndarray:
        return seqs.policy(best_of_n_distribution(seqs, proxy_returns, ref_probs, n), ctx.ref_policy)

    curve = []
    if cfg.path:  # n from 1 to agent.n, log-spaced; step = n
        c = Curve(ctx, cfg.n, cfg.checkpoints)
        for n in c.points:
            c.due(int(n))
            c.record(int(n), policy(int(n)), n=float(n), kl_bound=best_of_n_kl_bound(int(n)))
        curve = c.rows
    return AgentResult(policy(cfg.n), curve, extra={"kl_bound": best_of_n_kl_bound(cfg.n)})


class _DPO:
    """The DPO (or, with ``loss='ipo'``, the IPO) objective over a tabular or log-linear policy."""

    def __init__(self, ctx: AgentContext, cfg, loss: str = "dpo"):
        data = ctx.feedback
        if data is None or data.kind != "preferences" or data.n == 0:
            raise ConfigError(
                "agent.name", loss, f"pipeline=rlhf with feedback.kind=preferences ({loss} needs preferences)"
            )
        self.mdp, self.beta, self.loss = ctx.mdp, cfg.beta, loss
        with np.errstate(divide="ignore"):
            self.log_ref = np.log(ctx.ref_policy)
        seqs = Sequences.of(self.mdp)
        states, actions, mask = seqs.paths()
        self.items, self.y = data.items, data.labels
        used, self.local = np.unique(self.items, return_inverse=True)  # only the sequences in the data matter
        self.local = self.local.reshape(self.items.shape)
        self.ps, self.pa, self.pm = states[used], actions[used], mask[used]
        self.loglinear = cfg.policy == "loglinear"
        self.lin = LinearQ(self.mdp, cfg.templates) if self.loglinear else None
        self.dim = self.lin.D if self.loglinear else self.mdp.n_states * self.mdp.n_actions

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.log_ref + self.lin.values(x) if self.loglinear else x.reshape(self.log_ref.shape)

    def policy(self, x: np.ndarray) -> np.ndarray:
        return softmax_rows(self.logits(x))

    def objective(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        log_pi = log_softmax(self.logits(x), axis=1)  # stable where pi underflows
        pi = np.exp(log_pi)
        logratio = log_pi - self.log_ref
        seq_lr = np.where(self.pm, logratio[self.ps, self.pa], 0.0).sum(axis=1)  # log pi/pi_ref of each sequence
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
        C = np.zeros(pi.shape)
        weights = np.where(self.pm, per_seq[:, None], 0.0)
        np.add.at(C, (self.ps[self.pm], self.pa[self.pm]), weights[self.pm])
        g_logits = C - pi * C.sum(axis=1, keepdims=True)
        grad = self.lin.gather(g_logits) if self.loglinear else g_logits.ravel()
        return float(loss), grad

    def start(self) -> np.ndarray:
        return np.zeros(self.dim) if self.loglinear else self.log_ref.ravel().copy()


def _preference_optimisation(ctx: AgentContext, cfg, loss: str) -> AgentResult:
    """DPO or IPO on the preference data (``agent.path``: one fit per beta of the path)."""
    options = {"maxiter": cfg.steps, "gtol": 1e-9, "ftol": 1e-14}
    if cfg.path:
        from dataclasses import replace

        def at(beta: float) -> np.ndarray:
            problem = _DPO(ctx, replace(cfg, beta=beta), loss)
            res = optimize.minimize(problem.objective, problem.start(), jac=True, method="L-BFGS-B", options=options)
            return problem.policy(res.x)

        return pressure_path(ctx, cfg, at)
    problem = _DPO(ctx, cfg, loss)
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


@register("dpo")
def dpo(ctx: AgentContext, cfg) -> AgentResult:
    """Direct preference optimisation on the preference data (``agent.path``: one fit per beta of the path)."""
    return _preference_optimisation(ctx, cfg, "dpo")


@register("ipo")
def ipo(ctx: AgentContext, cfg) -> AgentResult:
    """Identity preference optimisation (Azar et al. 2023): DPO's log-ratios regressed onto +-1/(2 beta)."""
    return _preference_optimisation(ctx, cfg, "ipo")
