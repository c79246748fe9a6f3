"""One figure of a whole sweep (sweep.png): every member's test loss (and accuracy) over training,
and each job's final value against the swept key that varies most. A sweep of a thousand jobs
gets this one figure instead of a thousand per-job ones (train.figures)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection

from toy_quanta.plots.curves import save_figure

METRICS = ("test_loss", "test_acc")  # the rows of the figure, those the jobs logged
_NOT_KEYS = {"job", "member", "step", "metric", "subtask", "value", "status", "arm"}


def swept_key(table: pd.DataFrame) -> str | None:
    """The column that varies most between jobs: the x axis of the final values (seed last: it
    only names a repetition)."""
    varying = {c: table[c].nunique() for c in table.columns if c not in _NOT_KEYS and table[c].nunique() > 1}
    named = [c for c in varying if c != "seed"]
    return max(named, key=lambda c: varying[c]) if named else ("seed" if "seed" in varying else None)


def plot_sweep(table: pd.DataFrame, path: Path | str, title: str = "") -> str:
    """`table`: toy-quanta-collect's table of the sweep (analysis.collect.collect)."""
    whole = table[table["subtask"] == -1]
    rows = [m for m in METRICS if m in set(whole["metric"].astype(str))]
    if not rows:
        raise ValueError("the sweep's jobs logged neither test_loss nor test_acc")
    key = swept_key(table)
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.6 * len(rows)), squeeze=False, layout="constrained")
    for row, metric in zip(axes, rows):
        part = whole[whole["metric"].astype(str) == metric].sort_values(["job", "member", "step"])
        _curves(row[0], part, metric)
        _finals(row[1], part, metric, key)
    n_jobs, n_members = table["job"].nunique(), table.groupby("job")["member"].nunique().sum()
    fig.suptitle((f"{title}\n" if title else "") + f"{n_jobs} jobs, {n_members} members")
    return save_figure(fig, path)


def _curves(ax, part: pd.DataFrame, metric: str) -> None:
    """Every member's curve, thin, and the median over them."""
    lines = [g[["step", "value"]].to_numpy() for _, g in part.groupby(["job", "member"], sort=False)]
    ax.add_collection(LineCollection(lines, linewidths=0.6, alpha=max(0.03, min(0.5, 20 / max(len(lines), 1))),
                                     color="tab:blue"))
    median = part.groupby("step")["value"].median()
    ax.plot(median.index, median.to_numpy(), color="black", lw=2, label=f"median of {len(lines)}")
    positive = part["step"].to_numpy()[part["step"].to_numpy() > 0]
    if len(positive) and positive.max() / positive.min() > 100:  # log-spaced steps (train.log_count)
        ax.set_xscale("symlog", linthresh=positive.min())
    ax.autoscale_view()
    if metric.endswith("loss") and (part["value"] > 0).all():
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel=metric, title=f"{metric} over training, every member")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _finals(ax, part: pd.DataFrame, metric: str, key: str | None) -> None:
    """Each member's final value against the swept key (a histogram when nothing but seeds varies)."""
    last = part[part["step"] == part.groupby("job")["step"].transform("max")]
    if key is None or key == "seed" or not pd.api.types.is_numeric_dtype(last[key]):
        ax.hist(last["value"].to_numpy(), bins=min(50, max(5, len(last) // 5)), color="tab:blue")
        ax.set(xlabel=f"final {metric}", ylabel="members", title=f"final {metric} over {len(last)} members")
    else:
        x = last[key].to_numpy(np.float64)
        ax.scatter(x, last["value"], s=8, alpha=0.6)
        means = last.groupby(key)["value"].median()
        ax.plot(means.index, means.to_numpy(), color="black", lw=1.5, label="median")
        if (x > 0).all() and x.max() / x.min() >= 10:
            ax.set_xscale("log")
        if metric.endswith("loss") and (last["value"] > 0).all():
            ax.set_yscale("log")
        ax.set(xlabel=key, ylabel=f"final {metric}", title=f"final {metric} against {key}")
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
