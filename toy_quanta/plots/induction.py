"""The induction-head phase change at a glance: the loss (whole sequence, the repeated part, the
rest) falling from chance, and each head's induction and previous-token scores rising at the same
step, one line per seed, the phase-change steps marked."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from toy_quanta.analysis.induction import head_name, phase_change_step
from toy_quanta.engine.loop import FitResult
from toy_quanta.plots.curves import save_figure


def plot_induction(result: FitResult, path: Path, vocab: int, n_heads: int, title: str = "") -> str:
    """Left: test loss per seed (solid: whole sequence; dashed: the repeated part; dotted: the rest),
    ln(vocab) marked. Right: one panel per head (rows: layers), its induction score (solid) and
    previous-token score (dotted) per seed. Vertical lines: each seed's phase-change step."""
    steps = np.asarray(result.steps)
    loss_LxM = result.log_array("test_loss")
    induction_LxMxT = result.log_array("induction_score")
    previous_LxMxT = result.log_array("previous_token_score")
    n_members, n_total = loss_LxM.shape[1], induction_LxMxT.shape[2]
    n_layers = n_total // n_heads
    colors = plt.cm.viridis(np.linspace(0, 0.85, max(n_members, 1)))
    found = [phase_change_step(steps, loss_LxM[:, i]) for i in range(n_members)]

    fig = plt.figure(figsize=(6 + 2.6 * n_heads, 1.2 + 2.5 * max(n_layers, 2)), constrained_layout=True)
    grid = fig.add_gridspec(n_layers, 1 + n_heads, width_ratios=[2.2] + [1] * n_heads)
    ax_loss = fig.add_subplot(grid[:, 0])
    for i in range(n_members):
        seed = result.members[i].get("seed", i)
        step = "" if found[i] is None else f", phase change at {found[i]}"
        ax_loss.plot(steps, loss_LxM[:, i], color=colors[i], lw=1.6, label=f"seed {seed}{step}")
        ax_loss.plot(steps, result.log_array("repeated_loss")[:, i], color=colors[i], lw=1, ls="--")
        ax_loss.plot(steps, result.log_array("other_loss")[:, i], color=colors[i], lw=1, ls=":")
    ax_loss.axhline(math.log(vocab), color="k", lw=0.8, ls="-.")
    ax_loss.annotate(f"chance: ln {vocab} = {math.log(vocab):.2f}", (steps[len(steps) // 2], math.log(vocab)),
                     ha="center", va="top", fontsize=8)
    ax_loss.set(xlabel="step", ylabel="next-token cross-entropy (nats)", ylim=(0, math.log(vocab) * 1.12),
                title="test loss: whole sequence (solid),\nrepeated part (dashed), first copy (dotted)")
    ax_loss.legend(fontsize=7, loc="lower left")
    axes = [ax_loss]
    for h in range(n_total):
        ax = fig.add_subplot(grid[h // n_heads, 1 + h % n_heads])
        for i in range(n_members):
            ax.plot(steps, induction_LxMxT[:, i, h], color=colors[i], lw=1.4)
            ax.plot(steps, previous_LxMxT[:, i, h], color=colors[i], lw=1, ls=":")
        ax.set(ylim=(-0.02, 1.02), title=f"head {head_name(h, n_heads)}")
        ax.title.set_fontsize(9)
        if h % n_heads == 0:
            ax.set_ylabel("attention score")
        if h // n_heads == n_layers - 1:
            ax.set_xlabel("step")
        axes.append(ax)
    for ax in axes:
        for i, step in enumerate(found):
            if step is not None:
                ax.axvline(step, color=colors[i], lw=0.7, ls="--", alpha=0.7)
        ax.grid(alpha=0.3)
    axes[1].text(0.02, 0.97, "induction (solid)\nprevious token (dotted)", transform=axes[1].transAxes,
                 fontsize=7, va="top")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
