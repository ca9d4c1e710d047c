"""Label noise: what flipped and irrational preference labels cost, for a tabular and a linear reward model.

Sweep: the teacher's flip rate epsilon in [0, 0.5] and rationality (Bradley-Terry on standardised returns: 0.5, 2,
perfect), and the reward model; an exact planner optimises the fitted model.

What is checked: the gap rises with epsilon over the *informative* flip rates (epsilon < 0.5; Page's trend test,
blocks = (rationality, seed)), for every reward model in the sweep (the tabular one at paper scale only); and, for
the linear model, it falls as the teacher becomes more rational (blocks = (epsilon, seed)). What holds by
construction and is not checked: at epsilon = 0.5 a label is a fair coin whatever the returns, so the reward
model's held-out accuracy there is chance and its greedy policy is as good as a random reward's. The tabular model,
with one parameter per sequence, cannot generalise beyond the few sequences the labels name, so most of its gap is
coverage, not label noise: its rationality effect is small and not monotone (2 beats perfect), measured, not
checked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.catalog.common import axes, column, line_ci, summarize
from experiments.catalog.rlhf_data_shared import Trend, ordered_trend

TABLE = "runs"
CLAIM = (
    "the gap rises with the flip rate epsilon over the informative range epsilon < 0.5 (linear and tabular reward "
    "models), and with the linear model it falls as the teacher becomes more rational (rationality 0.5, 2, perfect)"
)
CHECKED_MODEL = "linear"
ALPHA = 0.01
MIN_EFFECT = 0.05  # normalised gap (fraction of optimal - reference): smaller differences are not called an effect
PERFECT = 100.0  # where a perfect teacher sits on the log rationality axis


def _prep(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(
        rm=column(table, "reward_model", "linear").astype(str),
        rat=column(table, "feedback.rationality", np.inf).astype(float),
        flip=column(table, "feedback.flip", 0.0).astype(float),
    )


def _rat_label(r: float) -> str:
    return "perfect teacher" if np.isinf(r) else f"rationality {r:g}"


def plot(table, ax=None):
    df = _prep(table)
    axs = axes(3, ax)
    styles = {"linear": "-", "tabular": ":"}
    colours = {}
    for (rm, rat), g in df.groupby(["rm", "rat"]):
        s = summarize(g, "flip", "normalized_gap")
        kw = {"ls": styles.get(rm, "--")}
        if rat in colours:
            kw["color"] = colours[rat]
        line_ci(axs[0], s["flip"], s, f"{rm}, {_rat_label(rat)}", **kw)
        colours.setdefault(rat, axs[0].lines[-1].get_color())
        s = summarize(g, "flip", "rm_accuracy_in_dist")
        line_ci(axs[1], s["flip"], s, f"{rm}, {_rat_label(rat)}", color=colours[rat], ls=kw["ls"])
    axs[0].axvspan(0.45, 0.55, color="grey", alpha=0.12, lw=0)
    axs[0].set(
        xlabel="flip rate epsilon (shaded: labels carry no information)",
        ylabel="normalised gap (fraction of opt - ref)",
        title="gap vs label flips",
    )
    axs[1].axhline(0.5, color="grey", ls=":", lw=1)
    axs[1].set(
        xlabel="flip rate epsilon",
        ylabel="held-out pair accuracy (fraction)",
        title="reward-model accuracy (0.5 = chance)",
    )
    informative = df[df["flip"] < 0.5]
    ends = (informative["flip"].min(), informative["flip"].max())
    flip_colours = dict(zip(ends, ("tab:purple", "tab:brown"), strict=True))
    for (rm, flip), h in informative[informative["flip"].isin(ends)].groupby(["rm", "flip"]):
        s = summarize(h.assign(rat=np.minimum(h["rat"], PERFECT)), "rat", "normalized_gap")
        line_ci(axs[2], s["rat"], s, f"{rm}, epsilon = {flip:g}", ls=styles.get(rm, "--"), color=flip_colours[flip])
    rats = sorted(np.minimum(df["rat"].unique(), PERFECT))
    axs[2].set_xscale("log")
    axs[2].set_xticks(rats, [("perfect" if r >= PERFECT else f"{r:g}") for r in rats])
    axs[2].minorticks_off()
    axs[2].set(
        xlabel="teacher rationality (log scale)",
        ylabel="normalised gap (fraction of opt - ref)",
        title="gap vs teacher rationality",
    )
    axs[0].legend(fontsize=6)
    axs[2].legend(fontsize=6)
    return axs


def flip_trend(df: pd.DataFrame) -> Trend:
    """Informative flips only (epsilon < 0.5): the gap's trend over epsilon, blocks = (rationality, seed)."""
    inf = df[df["flip"] < 0.5]
    wide = inf.pivot_table(index=["rat", "seed"], columns="flip", values="normalized_gap").sort_index(axis=1)
    return ordered_trend(wide, increasing=True)


def rationality_trend(df: pd.DataFrame) -> Trend:
    """Informative flips only: the gap's trend over rationality (falling), blocks = (epsilon, seed)."""
    inf = df[df["flip"] < 0.5]
    wide = inf.pivot_table(index=["flip", "seed"], columns="rat", values="normalized_gap").sort_index(axis=1)
    return ordered_trend(wide, increasing=False)


def check(table) -> None:
    df = _prep(table)
    assert CHECKED_MODEL in set(df["rm"]), f"the sweep needs the {CHECKED_MODEL} reward model"
    lines = []
    for rm, g in df.groupby("rm"):
        assert g[g["flip"] < 0.5]["flip"].nunique() >= 2, f"{rm}: the sweep needs epsilon = 0 and one in (0, 0.5)"
        t = flip_trend(g)
        assert t.p < ALPHA and t.effect > MIN_EFFECT, (
            f"{rm} reward model: the gap does not rise with epsilon < 0.5 ({t}; the rise must exceed {MIN_EFFECT})"
        )
        lines.append(f"{rm} reward model, gap over epsilon < 0.5: {t}")
    t = rationality_trend(df[df["rm"] == CHECKED_MODEL])
    assert t.p < ALPHA and -t.effect > MIN_EFFECT, (
        f"{CHECKED_MODEL} reward model: the gap does not fall as the teacher becomes more rational ({t}; the fall "
        f"must exceed {MIN_EFFECT})"
    )
    lines.append(f"{CHECKED_MODEL} reward model, gap over rationality (falling): {t}")
    print("\n".join(lines))
