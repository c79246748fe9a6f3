"""Figures of a grokking job: accuracy and loss against steps (log axis), weight norm, and the
embedding ring (the first two principal components of the residue embeddings)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import jax
import numpy as np
from flax import nnx

from toy_quanta.analysis.milestones import grokking_summary
from toy_quanta.engine.loop import FitResult
from toy_quanta.plots.curves import member_label, save_figure

if TYPE_CHECKING:
    from toy_quanta.analysis.progress import Progress


def plot_grokking(result: FitResult, path: Path, title: str = "", loss_label: str | None = None) -> str:
    """Train (dotted) and validation (solid) accuracy and loss, and the weight norm, per member."""
    steps = np.maximum(np.asarray(result.steps), 1)
    varying = [k for k in result.members[0] if len({m[k] for m in result.members}) > 1]
    n = len(result.members)
    colors = plt.cm.plasma(np.linspace(0, 0.85, max(n, 1)))
    collapse = "softmax_collapse" in result.logs
    fig, axes = plt.subplots(1, 4 if collapse else 3, figsize=(20 if collapse else 15, 4.6), constrained_layout=True)
    ax_acc, ax_loss, ax_norm = axes[:3]
    readout = "readout_norm" in result.logs
    for i in range(n):
        label = member_label(result.members[i], varying) if n <= 12 else None
        ax_acc.plot(steps, result.log_array("test_acc")[:, i], color=colors[i], label=label)
        ax_acc.plot(steps, result.log_array("train_acc")[:, i], color=colors[i], ls=":")
        ax_loss.plot(steps, result.log_array("test_loss")[:, i], color=colors[i])
        ax_loss.plot(steps, result.log_array("train_loss")[:, i], color=colors[i], ls=":")
        ax_norm.plot(steps, result.log_array("param_norm")[:, i], color=colors[i])
        if readout:
            ax_norm.plot(steps, result.log_array("readout_norm")[:, i], color=colors[i], ls="--")
        if collapse:
            axes[3].plot(steps, result.log_array("softmax_collapse")[:, i], color=colors[i])
            axes[3].plot(steps, result.log_array("zero_loss")[:, i], color=colors[i], ls=":")
    ax_acc.axhline(0.99, color="k", lw=0.6, ls="--")
    ax_acc.set(ylabel="accuracy", title="validation (solid) and training (dotted) accuracy", ylim=(-0.02, 1.02))
    ax_loss.set(ylabel=loss_label or "cross-entropy (nats)", yscale="log",
                title="validation (solid) and training (dotted) loss")
    ax_norm.set(ylabel="L2 norm", title="weight norm: all parameters" + (" (solid), last layer (dashed)" if readout else ""))
    if collapse:
        axes[3].set(ylabel="fraction of training samples", ylim=(-0.02, 1.02),
                    title="softmax collapse: float32 softmax one-hot (solid), loss exactly 0 (dotted)")
        axes[3].title.set_fontsize(9)
    for ax in axes:
        ax.set(xscale="log", xlabel="step")
        ax.grid(alpha=0.3)
    if n <= 12 and varying:
        ax_acc.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def embedding_pca(embed_PxD: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(the residues' coordinates on the first k principal components (P, k), the fraction of
    variance each explains (k,))."""
    centred = embed_PxD - embed_PxD.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:k].T, (s[:k] ** 2) / np.sum(s**2)


def plot_embedding_ring(embed_PxD: np.ndarray, path: Path, title: str = "") -> str:
    """The residues' embeddings on their first two principal components, coloured and numbered by
    residue: a generalising model lays them out as a ring, in order of some multiple of a."""
    xy, var = embedding_pca(np.asarray(embed_PxD, np.float64))
    p = len(xy)
    fig, ax = plt.subplots(figsize=(5.6, 5.4), constrained_layout=True)
    ax.scatter(xy[:, 0], xy[:, 1], c=np.arange(p), cmap="hsv", s=28)
    for r in range(p):
        ax.annotate(str(r), xy[r], fontsize=6, ha="center", va="bottom")
    ax.set(xlabel=f"PC 1 ({var[0]:.0%} of variance)", ylabel=f"PC 2 ({var[1]:.0%})",
           title=title or "residue embeddings, first two principal components")
    ax.set_aspect("equal", adjustable="datalim")
    return save_figure(fig, path)


def plot_representation(result: FitResult, path: Path, title: str = "", max_members: int = 8) -> str:
    """The effective theory's view (Liu et al. 2022): validation accuracy, RQI and effective loss
    over training per member, and the final embeddings of member 0 and of the best-RQI member (1-D:
    E_i against i, a line when it has understood addition; else the first two principal components)."""
    steps = np.maximum(np.asarray(result.steps), 1)
    n = min(len(result.members), max_members)
    varying = [k for k in result.members[0] if len({m[k] for m in result.members}) > 1]
    colors = plt.cm.viridis(np.linspace(0, 0.85, max(n, 1)))
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4), constrained_layout=True)
    for i in range(n):
        label = member_label(result.members[i], varying) if varying else f"member {i}"
        axes[0].plot(steps, result.log_array("test_acc")[:, i], color=colors[i], label=label)
        axes[0].plot(steps, result.log_array("train_acc")[:, i], color=colors[i], ls=":")
        axes[1].plot(steps, result.log_array("rqi")[:, i], color=colors[i])
        axes[2].plot(steps, np.maximum(result.log_array("eff_loss")[:, i], 1e-12), color=colors[i])
    axes[0].set(ylabel="accuracy", title="validation (solid) and training (dotted) accuracy", ylim=(-0.02, 1.02))
    axes[1].set(ylabel="RQI", title="representation quality index", ylim=(-0.02, 1.02))
    axes[2].set(ylabel="effective loss", yscale="log", title="effective loss (training parallelograms)")
    for ax in axes[:3]:
        ax.set(xscale="log", xlabel="step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    # member 0 and the member with the best final RQI: a disordered and an ordered embedding
    best = int(np.nanargmax(result.log_array("rqi")[-1]))
    params = result.params if isinstance(result.params, dict) else nnx.to_pure_dict(result.params)
    embeds = params["embed"]["embedding"]
    for i, marker in sorted({0: "o", best: "s"}.items()):
        e_PxD = np.asarray(embeds[i], np.float64)
        rqi = result.log_array("rqi")[-1, i]
        if e_PxD.shape[1] == 1:
            z_P = (e_PxD[:, 0] - e_PxD[:, 0].mean()) / (e_PxD[:, 0].std() or 1.0)
            axes[3].plot(np.arange(len(z_P)), z_P, marker=marker, label=f"member {i} (RQI {rqi:.2f})")
        else:
            xy, _ = embedding_pca(e_PxD)
            axes[3].plot(xy[:, 0], xy[:, 1], marker=marker, ls=":", label=f"member {i} (RQI {rqi:.2f})")
            for r in range(len(xy)):
                axes[3].annotate(str(r), xy[r], fontsize=7, ha="center", va="bottom")
    one_d = np.asarray(embeds[0]).shape[1] == 1
    axes[3].set(xlabel="symbol i" if one_d else "PC 1", ylabel="E_i (standardised)" if one_d else "PC 2",
                title="final embeddings" + (" (a line: addition understood)" if one_d else ""))
    axes[3].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_steps_against(result: FitResult, key: str, path: Path, title: str = "") -> str:
    """Steps to 99% validation (and training) accuracy against a per-member value (training
    fraction, weight decay, ...): every member a point, the median over members with the same
    value a line; members that never reached 99% sit on the budget line, as open markers."""
    steps = np.asarray(result.steps)
    s = grokking_summary(steps, result.log_array("train_acc"), result.log_array("test_acc"))
    x = np.array([m[key] for m in result.members], np.float64)
    budget = float(steps[-1])
    fig, ax = plt.subplots(figsize=(6.4, 4.6), constrained_layout=True)
    for name, color in (("val_99", "tab:blue"), ("train_99", "tab:orange")):
        y = s[name]
        done = ~np.isnan(y)
        ax.scatter(x[done], y[done], color=color, s=22, label=f"{'validation' if name == 'val_99' else 'training'} 99%")
        ax.scatter(x[~done], np.full((~done).sum(), budget), facecolors="none", edgecolors=color, s=40,
                   label="not reached within the budget" if name == "val_99" and (~done).any() else None)
        values = np.unique(x)
        med = [np.median(np.where(np.isnan(y[x == v]), budget, y[x == v])) for v in values]
        ax.plot(values, med, color=color, lw=1.2)
    ax.axhline(budget, color="k", ls=":", lw=0.8)
    ax.set(yscale="log", xlabel=key, ylabel="steps", title=title or f"steps to 99% accuracy against {key}")
    if key in ("optim.lr", "model.init_scale") or (key == "optim.weight_decay" and np.all(x > 0)):
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_progress(pr: "Progress", path: Path, title: str = "") -> str:
    """The progress measures against step: accuracy; train, test, restricted and excluded loss;
    Gini of the embedding's Fourier norms, RQI and ring RQI; weight norm."""
    steps = np.maximum(pr.steps_L, 1)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    ax_acc, ax_loss, ax_struct, ax_norm = axes.ravel()
    ax_acc.plot(steps, pr.train_acc_L, ls=":", color="tab:orange", label="training")
    ax_acc.plot(steps, pr.test_acc_L, color="tab:blue", label="validation")
    ax_acc.set(ylabel="accuracy", ylim=(-0.02, 1.02), title="accuracy")
    ax_loss.plot(steps, pr.train_loss_L, ls=":", color="tab:orange", label="training")
    ax_loss.plot(steps, pr.test_loss_L, color="tab:blue", label="validation")
    if pr.restricted_loss_L is not None:
        keys = ", ".join(map(str, pr.keys)) or "none"
        ax_loss.plot(steps, pr.restricted_loss_L, color="tab:green", label=f"restricted to key frequencies ({keys})")
        ax_loss.plot(steps, pr.excluded_loss_L, color="tab:red", label="excluded: key frequencies removed (training pairs)")
    ax_loss.axhline(np.log(pr.p), color="k", lw=0.6, ls="--", label=f"chance, ln {pr.p}")
    ax_loss.set(ylabel="cross-entropy (nats)", yscale="log", title="loss (key frequencies from the final embedding)")
    ax_struct.plot(steps, pr.gini_L, color="tab:purple", label="Gini of the embedding's Fourier norms")
    if pr.rqi_L is not None:
        ax_struct.plot(steps, pr.ring_rqi_L, color="tab:cyan", label=f"ring RQI (PC 1-2 angles, tol {pr.tol:g})")
        ax_struct.plot(steps, pr.rqi_L, color="tab:gray", label=f"RQI (E_a + E_b = E_c + E_d, tol {pr.tol:g})")
    ax_struct.set(ylim=(-0.02, 1.02), title="structure of the residue embeddings")
    ax_norm.plot(steps, pr.weight_norm_L, color="k")
    ax_norm.set(ylabel="L2 norm of all parameters", title="weight norm")
    for ax in axes.ravel():
        ax.set(xscale="log", xlabel="step")
        ax.grid(alpha=0.3)
    for ax in (ax_acc, ax_loss, ax_struct):
        ax.legend(fontsize=8)
    fig.suptitle(title or "progress measures")
    return save_figure(fig, path)


def plot_fourier(pr: "Progress", path: Path, title: str = "") -> str:
    """The residue embeddings' norm per frequency at the end (key frequencies marked) and, if
    there are snapshots, over training."""
    k_F = np.arange(1, pr.norms_LxF.shape[1] + 1)
    over_time = len(pr.steps_L) > 1
    fig, axes = plt.subplots(1, 2 if over_time else 1, figsize=(14 if over_time else 7, 4.6),
                             constrained_layout=True, squeeze=False)
    ax = axes[0, 0]
    is_key = np.isin(k_F, pr.keys)
    ax.bar(k_F, pr.norms_LxF[-1], color=np.where(is_key, "tab:red", "tab:gray"))
    for k in pr.keys:
        ax.annotate(str(k), (k, pr.norms_LxF[-1, k - 1]), ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="frequency k (cos/sin of 2 pi k a / p)", ylabel="norm of the embedding's component",
           title=f"step {pr.steps_L[-1]}: Gini {pr.gini_L[-1]:.2f}; key frequencies in red")
    if over_time:
        ax = axes[0, 1]
        image = ax.imshow(pr.norms_LxF.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                          extent=(-0.5, len(pr.steps_L) - 0.5, 0.5, len(k_F) + 0.5))
        ticks = np.unique(np.linspace(0, len(pr.steps_L) - 1, 7).astype(int))
        ax.set_xticks(ticks, [str(int(pr.steps_L[i])) for i in ticks])
        ax.set(xlabel="step (log steps, evenly placed)", ylabel="frequency k", title="Fourier norms over training")
        fig.colorbar(image, ax=ax, label="norm")
    fig.suptitle(title or "Fourier norms of the residue embeddings")
    return save_figure(fig, path)


SWEPT_KEYS = ("task.train_fraction", "optim.weight_decay", "optim.lr", "model.init_scale")


def job_figures(result: FitResult, p: int, out_dir: Path, name: str, title: str) -> list[str]:
    """A grokking job's figures: curves.png, embedding_ring.png (member 0's residues; a
    transformer's op and = tokens left out), and steps_vs_<key>.png for each swept key."""
    paths = [plot_grokking(result, out_dir / "curves.png", title=title)]
    embed_VxD = np.asarray(jax.tree.map(lambda x: x[0], nnx.to_pure_dict(result.params))["embed"]["embedding"])
    paths.append(plot_embedding_ring(embed_VxD[:p], out_dir / "embedding_ring.png",
                                     title=f"{name}: residue embeddings (member 0), first two principal components"))
    for key in SWEPT_KEYS:
        if len({m[key] for m in result.members}) > 1:
            short = key.split(".")[-1]
            paths.append(plot_steps_against(result, key, out_dir / f"steps_vs_{short}.png",
                                            title=f"{name}: steps to 99% accuracy against {short}"))
    return paths
