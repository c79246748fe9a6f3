"""Hidden progress on a sparse parity, one row per k: (a) the test loss over steps, one colour per n
and a thin line per seed: flat, then an abrupt drop; (b) the relevant-weight ratio over the same
steps, rising while the loss is flat (dots: where each member's plateau ends); (c) steps to learn
against n on log-log axes, the seeds, their geometric means, the fitted line and its exponent with
its interval, beside the predicted slopes (analysis.hidden_progress)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd

from toy_quanta.analysis.hidden_progress import LOSS, RATIO
from toy_quanta.plots.curves import save_figure


def plot_hidden_progress(curves: pd.DataFrame, members: pd.DataFrame, result: dict[str, Any], path: Path,
                         title: str = "") -> str:
    """curves: analysis.hidden_progress.sweep_curves; members: member_table; result: analyse (or write)."""
    loss_label = f"test loss ({result['loss']})" if result.get("loss") else "test loss"
    ks = list(result["k"])
    fig, axes = plt.subplots(len(ks), 3, figsize=(16, 4.6 * len(ks)), squeeze=False, constrained_layout=True)
    all_n = sorted(members["n"].unique())
    colors = dict(zip(all_n, plt.cm.viridis(np.linspace(0, 0.9, len(all_n)))))
    for row, k in zip(axes, ks):
        ax_loss, ax_ratio, ax_steps = row
        mine = curves[curves["k"] == int(k)]
        ends = members[members["k"] == int(k)].set_index(["job", "member"])
        labelled = set()
        for (job, member), c in mine.groupby(["job", "member"], sort=False):
            n = c["n"].iloc[0]
            x = np.maximum(c["step"].to_numpy(), 1)
            ax_loss.plot(x, c[LOSS], color=colors[n], lw=0.8, alpha=0.6, label=None if n in labelled else f"n={n:g}")
            labelled.add(n)
            if RATIO in c:
                # solid while the loss is on its plateau, faint after: the rise the loss does not show
                end = ends.loc[(job, member), "plateau_end_step"]
                ratio_L = c[RATIO].to_numpy()
                on = c["step"].to_numpy() <= end
                after = ~on
                after[np.flatnonzero(on)[-1]] = True  # the faint part starts where the solid one ends
                ax_ratio.plot(x[on], ratio_L[on], color=colors[n], lw=1.1, alpha=0.9)
                ax_ratio.plot(x[after], ratio_L[after], color=colors[n], lw=0.7, alpha=0.3)
                ax_ratio.plot(max(end, 1), ratio_L[on][-1], "o", color=colors[n], ms=4, mec="k", mew=0.4)
        ax_loss.set(xscale="log", xlabel="step", ylabel=loss_label,
                    title=f"k={k}: {loss_label}: flat at chance, then an abrupt drop")
        ax_loss.legend(fontsize=8, loc="lower left")
        ax_ratio.axhline(1.0, color="0.5", lw=0.8, ls=":")
        ax_ratio.set(xscale="log", yscale="log", xlabel="step",
                     ylabel="relevant-weight ratio (1 = random)",
                     title=f"k={k}: weight on the k relevant bits / mean over all n; solid: on the plateau\n"
                           f"(dots: its end, the last log step before the loss is {result['plateau_drop']:.0%} "
                           "below its start)")
        ax_ratio.title.set_fontsize(10)
        if RATIO not in mine:
            ax_ratio.text(0.5, 0.5, "not logged (run with task.progress=true)", ha="center", transform=ax_ratio.transAxes)
        _steps_panel(ax_steps, members[members["k"] == int(k)], result["k"][k], colors, result["level"], k)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def _steps_panel(ax, mine: pd.DataFrame, entry: dict[str, Any], colors: dict, level: float, k: str) -> None:
    learned, censored = mine[~mine["censored"]], mine[mine["censored"]]
    ax.scatter(learned["n"], learned["steps_to_learn"], s=12, color=[colors[n] for n in learned["n"]],
               alpha=0.7, lw=0, label="seeds")
    if len(censored):
        ax.scatter(censored["n"], censored["budget"], marker="^", s=30, facecolor="none", edgecolor="r",
                   label="never learned (at the budget)")
    geo = [(int(n), e["geomean"]) for n, e in entry["n"].items() if e["geomean"] is not None]
    if geo:
        n_G, g_G = np.array(geo, np.float64).T
        ax.plot(n_G, g_G, "s", color="k", ms=5, mfc="none", label="geometric mean")
    fit = entry["fit"]
    n_lo, n_hi = mine["n"].min(), mine["n"].max()
    grid = np.geomspace(n_lo, n_hi, 50)
    if fit is not None:
        ax.plot(grid, fit["prefactor"] * grid ** fit["exponent"], "k-", lw=1.5,
                label=f"fit: $n^{{{fit['exponent']:.2f}}}$, 95% CI [{fit['ci_low']:.2f}, {fit['ci_high']:.2f}]")
        anchor = fit["prefactor"] * n_lo ** fit["exponent"]  # the predicted slopes start where the fit does
        p = entry["predicted"]
        for name, style, what in (("fixed_batch_steps", "--", "samples"), ("sq_queries", ":", "SQ queries")):
            slope = p[name]
            ax.plot(grid, anchor * (grid / n_lo) ** slope, style, color="0.45", lw=1,
                    label=f"$n^{{{slope:g}}}$ ({what}), from the fit's start")
    seen = np.concatenate([learned["steps_to_learn"].to_numpy(), censored["budget"].to_numpy()])
    if len(seen):  # the data's range: the steeper predicted slopes may run off it
        ax.set_ylim(seen.min() / 2, seen.max() * 2)
    ax.set(xscale="log", yscale="log", xlabel="n (bits)", ylabel=f"steps to {level:g} test accuracy",
           title=f"k={k}: steps to learn against n")
    ax.set_xticks(sorted(mine["n"].unique()), [f"{n:g}" for n in sorted(mine["n"].unique())])
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.legend(fontsize=8, loc="upper left")
