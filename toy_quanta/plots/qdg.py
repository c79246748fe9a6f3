"""Figures of a QDG run: cluster-size rank-frequency with its envelope, and the similarity matrix
sorted by cluster and by true subtask."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from toy_quanta.analysis.clusters import SlopeFit
from toy_quanta.plots.curves import save_figure

MAX_SHOWN = 1500  # samples drawn in the similarity figure (a 10k x 10k image would be all noise)



def plot_rank_frequency(path: Path, sizes: dict[int, np.ndarray], env: np.ndarray, fit: SlopeFit,
                        true_sizes: np.ndarray, expected_slope: float) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 4.6), constrained_layout=True)
    cmap = plt.get_cmap("viridis")
    for i, (k, s) in enumerate(sorted(sizes.items())):
        ax.plot(np.arange(1, len(s) + 1), s, color=cmap(i / max(1, len(sizes) - 1)), lw=0.9, alpha=0.7,
                label=f"{k} clusters")
    ranks = np.arange(1, len(env) + 1)
    ax.plot(ranks, env, color="black", lw=2.2, label="envelope")
    ax.plot(np.arange(1, len(true_sizes) + 1), true_sizes, "o", color="tab:red", ms=4, label="true subtasks")
    if np.isfinite(fit.slope):
        r = np.arange(fit.rank_min, fit.rank_max + 1)
        anchor = env[fit.rank_min - 1]
        ax.plot(r, anchor * (r / fit.rank_min) ** fit.slope, "--", color="tab:orange", lw=2,
                label=f"fit {fit.slope:.2f} [{fit.ci_low:.2f}, {fit.ci_high:.2f}]")
        ax.plot(r, anchor * (r / fit.rank_min) ** expected_slope, ":", color="tab:blue", lw=2,
                label=f"expected {expected_slope:.2f}")
    ax.set(xscale="log", yscale="log", xlabel="cluster rank", ylabel="cluster size (samples)",
           title="QDG: cluster sizes against rank")
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path, dpi=120)


def _order(primary_N: np.ndarray, secondary_N: np.ndarray) -> np.ndarray:
    """Samples grouped by primary label (largest group first), then by secondary label."""
    counts = np.bincount(primary_N)
    rank = np.argsort(np.argsort(-counts, kind="stable"), kind="stable")
    return np.lexsort((secondary_N, rank[primary_N]))


def plot_similarity(path: Path, cos_NxN: np.ndarray, cluster_N: np.ndarray, task_N: np.ndarray, seed: int = 0) -> str:
    shown = np.sort(np.random.default_rng(seed).permutation(len(task_N))[:MAX_SHOWN])
    c, t = cluster_N[shown], task_N[shown]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), constrained_layout=True)
    for ax, order, title in [(axes[0], _order(c, t), "sorted by cluster"), (axes[1], _order(t, c), "sorted by true subtask")]:
        idx = shown[order]
        im = ax.imshow(cos_NxN[np.ix_(idx, idx)], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        groups = (c if "cluster" in title else t)[order]
        edges = np.flatnonzero(np.diff(groups)) + 0.5
        for e in edges[:60]:  # boundaries of the first groups only; more would hide the matrix
            ax.axhline(e, color="black", lw=0.3)
            ax.axvline(e, color="black", lw=0.3)
        ax.set(title=title, xticks=[], yticks=[])
    fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
    fig.suptitle(f"Per-sample gradient cosine similarity ({len(shown)} of {len(task_N)} samples; lines: group boundaries)")
    return save_figure(fig, path, dpi=120)
