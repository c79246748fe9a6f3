"""The LU figure (Omnigrok): final train and test loss and accuracy against the fixed weight norm w,
the critical norm w_c with the grid's resolution around it, the knee of the L, and an ordinary
run's weight-norm trajectory overlaid on the same axes."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd

from toy_quanta.plots.curves import save_figure

COLORS = {"train": "tab:orange", "test": "tab:blue"}
NAMES = {"train": "training", "test": "test"}



def _errorbars(ax, table: pd.DataFrame, metric: str, log_y: bool) -> None:
    """Mean over seeds with std error bars, for train and test; on a log axis the lower bar stops
    short of zero (a bar below zero has no place there)."""
    for split in ("train", "test"):
        mean_G = table[f"{split}_{metric}_mean"].to_numpy()
        std_G = np.nan_to_num(table[f"{split}_{metric}_std"].to_numpy())  # one seed: no bar
        lower_G = np.minimum(std_G, 0.9 * mean_G) if log_y else std_G
        ax.errorbar(table["w"], mean_G, yerr=[lower_G, std_G], color=COLORS[split], marker="o", ms=4, lw=1.6,
                    capsize=3, label=f"fixed norm w, final {NAMES[split]} (mean ± std over seeds)")


def _critical(ax, crit: dict, knee: float | None, with_labels: bool) -> None:
    """w_c as a dashed line, its grid interval shaded (to the axis edge on an open side), the knee
    of the L as a dotted line."""
    x_lo, x_hi = ax.get_xlim()
    lo = crit["w_lo"] if crit["w_lo"] > 0 else x_lo
    hi = crit["w_hi"] if np.isfinite(crit["w_hi"]) else x_hi
    edge = " (grid edge)" if crit["at_edge"] else ""
    ax.axvspan(lo, hi, color="tab:green", alpha=0.12,
               label=f"w_c's grid interval [{crit['w_lo']:.3g}, {crit['w_hi']:.3g}]" if with_labels else None)
    ax.axvline(crit["w_c"], color="tab:green", ls="--", lw=1.2,
               label=f"w_c = {crit['w_c']:.3g}{edge}" if with_labels else None)
    if knee is not None and np.isfinite(knee):
        ax.axvline(knee, color="tab:orange", ls=":", lw=1.2,
                   label=f"knee of the L: w = {knee:.3g}" if with_labels else None)
    ax.set_xlim(x_lo, x_hi)


def _trajectory(ax, traj: pd.DataFrame, metric: str, label: str) -> None:
    """Thin lines of the run's train and test `metric` against its weight norm, start (circle)
    and end (square) marked and labelled with their steps."""
    norm_L = traj["param_norm"].to_numpy()
    for split in ("train", "test"):
        y_L = traj[f"{split}_{metric}"].to_numpy()
        ok = np.isfinite(norm_L) & np.isfinite(y_L)
        if not ok.any():
            continue
        x, y, steps = norm_L[ok], y_L[ok], traj["step"].to_numpy()[ok]
        ax.plot(x, y, color=COLORS[split], lw=0.8, alpha=0.7,
                label=f"{label}, {NAMES[split]} over training (start ○, end □)")
        # train labels below and test labels above their markers: the two often start together
        offset = (5, -11) if split == "train" else (5, 4)
        for i, marker in ((0, "o"), (-1, "s")):
            ax.plot(x[i], y[i], marker=marker, ms=6, mfc="white", mec=COLORS[split], mew=1.4, ls="none")
            ax.annotate(f"step {int(steps[i])}", (x[i], y[i]), textcoords="offset points", xytext=offset,
                        fontsize=7, color=COLORS[split])


def _diverged(ax, table: pd.DataFrame) -> None:
    """Name the w's where members diverged, at the top of the panel."""
    at_top = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    for w, k in zip(table["w"], table["n_diverged"]):
        if k:
            ax.text(w, 0.98, f"{k} diverged", transform=at_top, fontsize=7, color="tab:red", ha="center",
                    va="top", bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})


def _all_positive(*arrays: np.ndarray) -> bool:
    values = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    return values.size > 0 and bool(np.all(values > 0))


def plot_lu(table: pd.DataFrame, crit: dict, path: Path, title: str, trajectory: pd.DataFrame | None = None,
            trajectory_label: str | None = None, knee: float | None = None, loss_label: str = "loss") -> str:
    """Two panels against the weight norm w (log x): (a) final train and test loss (log y when all
    losses are positive), (b) final train and test accuracy; each with w_c, its grid interval,
    the L's knee (toy_quanta.analysis.lu.l_knee; not drawn when None) and, if given, an ordinary
    run's trajectory."""
    label = trajectory_label or "ordinary run"
    losses = [table["train_loss_mean"], table["test_loss_mean"]]
    if trajectory is not None:
        losses += [trajectory["train_loss"], trajectory["test_loss"]]
    log_y = _all_positive(*losses)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(14, 6.2), layout="constrained")
    _errorbars(ax_loss, table, "loss", log_y)
    _errorbars(ax_acc, table, "acc", log_y=False)
    if trajectory is not None:
        _trajectory(ax_loss, trajectory, "loss", label)
        _trajectory(ax_acc, trajectory, "acc", label)
    for ax in (ax_loss, ax_acc):
        ax.set_xscale("log")
        ax.set_xlabel("L2 norm of all parameters, w")
        ax.grid(alpha=0.3)
        _critical(ax, crit, knee, with_labels=ax is ax_loss)
    _diverged(ax_loss, table)
    ax_loss.set(ylabel=loss_label, yscale="log" if log_y else "linear",
                title="(a) loss: L-shaped for training, U-shaped for test")
    ax_acc.set(ylabel="accuracy", ylim=(-0.02, 1.02), title="(b) accuracy")
    # one legend for both panels, below them: inside, it would hide the curves
    handles, labels = ax_loss.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: (not labels[i].startswith("fixed norm"), "w_c" in labels[i]))
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside lower center", ncol=2,
               fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)
