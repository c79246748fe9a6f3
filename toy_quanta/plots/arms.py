"""Arms side by side: validation accuracy over training per arm (median and range over seeds), and
each arm's steps to the comparison's levels with intervals (analysis.arms.compare)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from toy_quanta.plots.curves import save_figure


def plot_arms(frame: pd.DataFrame, comparison: dict[str, Any], path: Path, title: str = "") -> str:
    arm_names = list(comparison["arms"])
    colors = dict(zip(arm_names, plt.cm.tab10(np.arange(len(arm_names)) % 10)))
    fig, (ax_acc, ax_steps) = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)

    rows = frame[frame["metric"] == comparison["metric"]]
    for name in arm_names:
        acc = rows[rows["arm"] == name].pivot(index="step", columns="member", values="value").sort_index()
        x = np.maximum(acc.index.to_numpy(), 1)
        ax_acc.plot(x, acc.median(axis=1), color=colors[name], lw=2, label=name)
        ax_acc.fill_between(x, acc.min(axis=1), acc.max(axis=1), color=colors[name], alpha=0.2, lw=0)
    for level in comparison["levels"]:
        ax_acc.axhline(level, color="0.6", lw=0.8, ls=":")
    ax_acc.set(xscale="log", xlabel="step", ylabel="validation accuracy", ylim=(0, 1.02),
               title="validation accuracy: median and range over seeds")
    ax_acc.legend(loc="upper left", fontsize=9)

    levels = comparison["levels"]
    height = 0.8 / len(levels)
    for j, level in enumerate(levels):
        key = f"{round(level * 100)}"
        for i, name in enumerate(arm_names):
            e = comparison["arms"][name][key]
            y = i + (j - (len(levels) - 1) / 2) * height
            lo, hi = e["interval"]
            ax_steps.barh(y, e["geomean"], height=height * 0.9, color=colors[name], alpha=0.45 + 0.4 * j,
                          hatch="//" if e["censored"] else None)
            if np.isfinite(lo):
                ax_steps.errorbar(e["geomean"], y, xerr=[[max(e["geomean"] - lo, 0)], [max(hi - e["geomean"], 0)]],
                                  color="k", capsize=3, lw=1)
            seeds = [comparison["budget"] if s is None else s for s in e["steps"]]
            ax_steps.plot(seeds, [y] * len(seeds), "k.", ms=4)
            note = f"{e['reached']}/{len(seeds)}"
            if "speedup" in e:
                bound = e.get("speedup_bound") or ""
                prefix = ">=" if bound.startswith("lower") else "<=" if bound.startswith("upper") else ""
                note += "  (both censored)" if bound.startswith("both") else f"  {prefix}x{e['speedup']:.1f}"
            ax_steps.text(e["geomean"] * 1.05, y, note, va="center", fontsize=8)
    ax_steps.axvline(comparison["budget"], color="0.4", lw=1, ls="--")
    lowest = min([s for e in comparison["arms"].values() for lv in levels for s in e[f"{round(lv * 100)}"]["steps"]
                  if s is not None] + [comparison["budget"]])
    ax_steps.set_xlim(max(1.0, lowest / 3), comparison["budget"] * 3)  # explicit: a log axis of equal bars has no range
    ax_steps.set_yticks(range(len(arm_names)), arm_names)
    ax_steps.invert_yaxis()
    ax_steps.set(xscale="log", xlabel="steps to the validation level (geometric mean, 95% CI; dots: seeds)",
                 title=f"steps to {' / '.join(f'{round(v * 100)}%' for v in levels)} (x: speed-up over "
                       f"{comparison['baseline']}; hatched: some seeds never reached it, dashed: budget)")
    ax_steps.title.set_fontsize(9)
    ax_steps.legend(handles=[Patch(color="0.5", alpha=0.45 + 0.4 * j, label=f"{round(v * 100)}% (upper bar)" if j == 0
                                   else f"{round(v * 100)}%") for j, v in enumerate(levels)],
                    loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
