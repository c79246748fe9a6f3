"""Learning-curve figure of one job: mean losses, accuracy, per-subtask losses, parameter norm."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from toy_quanta.data.sparse_parity import LN2
from toy_quanta.engine.loop import FitResult
from toy_quanta.results import atomic_write


def save_figure(fig, path: Path | str, dpi: int = 110) -> str:
    """Write fig as a PNG atomically (a reader never sees half a figure) and close it. Every figure
    is laid out by constrained layout, which fits its labels inside it: the tight bounding box
    would lay it out a second time (a fifth of the cost of a job's figures)."""
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=dpi, format="png"))
    plt.close(fig)
    return str(path)


def member_label(member: dict, varying: list[str]) -> str:
    """The member's values of the varying keys; with arms, its arm's name stands for the values the arms set."""
    if "arm" in varying:
        varying = ["arm", *[k for k in varying if k == "seed"]]
    shown = (member[k] if k == "arm" else f"{k.split('.')[-1]}={_value(member[k])}" for k in varying)
    return ", ".join(shown) or "member 0"


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def plot_curves(result: FitResult, path: Path, title: str = "", log_x: bool = False) -> None:
    steps = np.asarray(result.steps)
    x = np.maximum(steps, 1) if log_x else steps
    varying = [k for k in result.members[0] if len({m[k] for m in result.members}) > 1]
    n_members = len(result.members)
    colors = plt.cm.plasma(np.linspace(0, 0.85, max(n_members, 1)))
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)
    (ax_loss, ax_acc), (ax_sub, ax_norm) = axes

    test_loss = result.log_array("test_loss") / LN2
    train_loss = result.log_array("train_loss") / LN2
    for i in range(n_members):
        label = member_label(result.members[i], varying) if n_members <= 12 else None
        ax_loss.plot(x, test_loss[:, i], color=colors[i], label=label)
        ax_loss.plot(x, train_loss[:, i], color=colors[i], ls=":", alpha=0.7)
        ax_acc.plot(x, result.log_array("test_acc")[:, i], color=colors[i])
        ax_norm.plot(x, result.log_array("param_norm")[:, i], color=colors[i])
    ax_loss.set(yscale="log", ylabel="loss (bits)", title="test loss (solid), train loss (dotted)")
    if n_members <= 12:
        ax_loss.legend(fontsize=8)
    ax_acc.set(ylabel="accuracy", title="test accuracy", ylim=(0.45, 1.01))
    ax_norm.set(ylabel="L2 norm of all parameters", title="parameter norm")

    sub = result.log_array("subtask_loss")[:, 0, :] / LN2  # (L, T), member 0
    n_tasks = sub.shape[1]
    shown = np.unique(np.round(np.geomspace(1, n_tasks, min(n_tasks, 24))).astype(int)) - 1
    sub_colors = plt.cm.viridis(np.linspace(0, 1, len(shown)))
    for c, j in zip(sub_colors, shown):
        ax_sub.plot(x, np.maximum(sub[:, j], 1e-4), color=c, lw=1.2, label=f"rank {j + 1}" if len(shown) <= 12 else None)
    ax_sub.axhline(0.1, color="k", ls="--", lw=0.8)
    ax_sub.set(yscale="log", ylabel="loss (bits)",
               title=f"per-subtask test loss, {member_label(result.members[0], varying)}\n"
                     f"(colour: frequency rank 1 (purple) to {n_tasks} (yellow); dashed: 0.1 bits)")
    if len(shown) <= 12:
        ax_sub.legend(fontsize=7, ncol=2)

    for ax in axes.ravel():
        ax.set_xlabel("step")
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
