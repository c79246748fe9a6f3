"""The grokking phase diagram: one coloured cell per (x, y) grid point, its majority phase."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from toy_quanta.plots.curves import save_figure

# The Goldilocks zone (comprehension, grokking) in blue and green; memorisation warm; confusion grey.
COLORS = {"comprehension": "#2c7fb8", "grokking": "#41ab5d", "memorisation": "#fdae61", "confusion": "#bdbdbd"}
# toy_quanta.analysis.phase.PHASES in its order (this module does not import the analysis, which imports it)
PHASES = tuple(COLORS)
DARK = {"comprehension", "grokking"}  # cells that want white annotations


def compact(v: float) -> str:
    """A tick label: 0, 0.5, 30, 1e-2, 2.5e-4, 1e5."""
    v = float(v)
    if not np.isfinite(v):
        return str(v)
    if v == 0 or 0.1 <= abs(v) < 1e4:
        return f"{v:g}"
    mantissa, exponent = f"{v:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def steps_label(v: float) -> str:
    """A step count in a cell: 800, 1.2k, 15k, 2M."""
    if abs(v) < 1e3:
        return f"{v:.0f}"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.2g}{suffix}" if abs(v) < 10 * scale else f"{v / scale:.0f}{suffix}"
    return f"{v:.0f}"



def phase_image(grid_df: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x values (X,), y values (Y,), phase index (Y, X) with -1 where no member ran, median steps
    to the validation threshold (Y, X)): categorical axes, so a weight decay of 0 sits beside
    log-spaced values."""
    grid_df = grid_df.dropna(subset=[x, y])  # a key that does not apply (NaN) has no place on an axis
    xs_X, ys_Y = np.sort(grid_df[x].unique()), np.sort(grid_df[y].unique())
    phase_YxX = np.full((len(ys_Y), len(xs_X)), -1)
    steps_YxX = np.full((len(ys_Y), len(xs_X)), np.nan)
    col = {v: i for i, v in enumerate(xs_X)}
    row = {v: i for i, v in enumerate(ys_Y)}
    for xv, yv, phase, steps in zip(grid_df[x], grid_df[y], grid_df["phase"], grid_df["median_steps_val"]):
        phase_YxX[row[yv], col[xv]] = PHASES.index(phase)
        steps_YxX[row[yv], col[xv]] = steps
    return xs_X, ys_Y, phase_YxX, steps_YxX


def plot_phase(grid_df: pd.DataFrame, x: str, y: str, path: Path, title: str = "") -> str:
    """Majority phase per (x, y) cell, annotated with the median steps to the validation threshold
    where its members reached it; axis labels are the config keys."""
    xs_X, ys_Y, phase_YxX, steps_YxX = phase_image(grid_df, x, y)
    fig, ax = plt.subplots(figsize=(1.0 + 0.85 * len(xs_X) + 2.6, 1.2 + 0.6 * len(ys_Y)), constrained_layout=True)
    cmap = ListedColormap([COLORS[p] for p in PHASES]).with_extremes(bad="white")  # white: no member ran there
    ax.imshow(np.ma.masked_less(phase_YxX, 0), cmap=cmap, vmin=-0.5, vmax=len(PHASES) - 0.5, origin="lower",
              aspect="auto", interpolation="nearest")
    for r, c in zip(*np.nonzero(~np.isnan(steps_YxX))):
        color = "white" if PHASES[phase_YxX[r, c]] in DARK else "black"
        ax.text(c, r, steps_label(steps_YxX[r, c]), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(xs_X)), [compact(v) for v in xs_X])
    ax.set_yticks(range(len(ys_Y)), [compact(v) for v in ys_Y])
    ax.set_xticks(np.arange(len(xs_X) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(ys_Y) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set(xlabel=x, ylabel=y)
    handles = [Patch(color=COLORS[p], label=p) for p in PHASES]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False,
              title="Goldilocks zone:\ncomprehension + grokking", title_fontsize=8)
    ax.set_title(title + ("\n" if title else "") + "cell: median steps to the validation threshold", fontsize=9)
    return save_figure(fig, path)
