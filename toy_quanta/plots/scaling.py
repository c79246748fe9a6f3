"""Figures of a scaling analysis: loss against scale with its fit and the theory, per-subtask
emergence, subtasks learned, convergence times, exponents against alpha, other studies."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from toy_quanta.analysis.references import OTHER_STUDIES
from toy_quanta.analysis.scaling import (
    LEARNED_BITS, PAPER_CONVERGENCE_EXPONENT, QUANTITY_LABEL, ConvergenceAnalysis, ScaleAnalysis)
from toy_quanta.data.sparse_parity import LN2
from toy_quanta.plots.curves import save_figure



def _fit_lines(ax, f, fit_label: str, references: list[tuple[float, str, dict]], unit: float = 1.0) -> None:
    """The fitted law over its range, and reference slopes [(exponent, label, style)] drawn
    through the fit at the middle of the range (log scale); y is divided by `unit`."""
    x = np.geomspace(f.x_min, f.x_max, 50)
    ax.plot(x, f.prefactor * x ** -f.exponent / unit, color="C3", lw=2, label=fit_label)
    x_mid = np.sqrt(f.x_min * f.x_max)
    y_mid = f.prefactor * x_mid ** -f.exponent / unit
    for exponent, label, style in references:
        ax.plot(x, y_mid * (x / x_mid) ** -exponent, label=label, **style)


def plot_loss(a: ScaleAnalysis, path: Path) -> None:
    """Mean test loss (bits, nats on the right axis) against scale: seeds, means, fit, theory slope
    anchored at the middle of the fit range, and the finite-size prediction from n_learned."""
    p, f = a.points, a.fit
    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    ax.scatter(p.x, p.loss / LN2, s=10, color="0.6", label="each seed", zorder=2)
    ax.errorbar(a.xs, a.mean_loss / LN2, yerr=a.std_loss / LN2, fmt="o-", color="C0", ms=4, label="mean over seeds", zorder=3)
    _fit_lines(ax, f, f"fit: exponent {f.exponent:.3f} [{f.ci_low:.3f}, {f.ci_high:.3f}]",
               [(a.predicted, f"theory slope {a.predicted:.3f}", {"color": "k", "ls": "--"})], unit=LN2)
    ax.plot(a.xs, a.finite_size / LN2, "s:", color="C2", ms=4,
            label="quantization model: tail loss of the subtasks not learned")
    ax.axvspan(f.x_min, f.x_max, color="C3", alpha=0.06)
    ax.set(xscale="log", yscale="log", xlabel=QUANTITY_LABEL[p.quantity], ylabel="mean test loss (bits)",
           title=f"loss against {QUANTITY_LABEL[p.quantity]}, alpha={p.alpha:g}\n{p.description}")
    nats = ax.secondary_yaxis("right", functions=(lambda b: b * LN2, lambda n: n / LN2))
    nats.set_ylabel("nats")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    save_figure(fig, path, dpi=120)


def plot_emergence(a: ScaleAnalysis, path: Path) -> None:
    """Heatmap of per-subtask loss (bits) against scale, subtasks in frequency order, with the
    scale at which each is learned; beside it, subtasks learned against scale."""
    p = a.points
    fig, (ax_h, ax_n) = plt.subplots(1, 2, figsize=(13, 5.5), constrained_layout=True,
                                     gridspec_kw={"width_ratios": [1.4, 1]})
    T = a.subtask_bits_TxG.shape[0]
    edges = np.sqrt(a.xs[1:] * a.xs[:-1])
    x_edges = np.concatenate([[a.xs[0] ** 2 / edges[0]], edges, [a.xs[-1] ** 2 / edges[-1]]]) if len(a.xs) > 1 else \
        np.array([a.xs[0] / 1.2, a.xs[0] * 1.2])
    mesh = ax_h.pcolormesh(x_edges, np.arange(T + 1) + 0.5, a.subtask_bits_TxG, cmap="viridis", vmin=0, vmax=1.05)
    fig.colorbar(mesh, ax=ax_h, label="subtask test loss (bits)")
    learned = np.isfinite(a.learned_scale)
    ax_h.plot(a.learned_scale[learned], np.arange(1, T + 1)[learned], "rx", ms=5,
              label=f"learned (< {LEARNED_BITS:g} bits from here on)")
    ax_h.set(xscale="log", xlabel=QUANTITY_LABEL[p.quantity], ylabel="subtask rank (1 = most frequent)",
             title=f"per-subtask loss, alpha={p.alpha:g}: Spearman(order, rank) = {a.spearman:.2f}")
    ax_h.invert_yaxis()
    ax_h.legend(fontsize=8, loc="lower left")
    n_row = (p.subtask_loss / LN2 < LEARNED_BITS).sum(1)
    ax_n.scatter(p.x, np.maximum(n_row, 0.5), s=10, color="0.6", label="each seed (0 drawn at 0.5)")
    some = a.n_learned > 0  # a log axis: means of 0 are left out
    ax_n.plot(a.xs[some], a.n_learned[some], "o-", ms=4, label="mean over seeds")
    growth = a.growth
    if growth is not None:
        f = a.learned_fit
        _fit_lines(ax_n, f, f"fit: exponent {growth[0]:.3f} [{growth[1]:.3f}, {growth[2]:.3f}]",
                   [(-a.growth_predicted, f"theory exponent {a.growth_predicted:.3f}", {"color": "k", "ls": "--"})])
    ax_n.set(xscale="log", yscale="log", xlabel=QUANTITY_LABEL[p.quantity], ylabel="subtasks learned",
             title="subtasks learned")
    ax_n.legend(fontsize=8)
    ax_n.grid(alpha=0.3, which="both")
    save_figure(fig, path, dpi=120)


def plot_convergence(c: ConvergenceAnalysis, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 5), constrained_layout=True)
    ax.scatter(c.p, c.steps, s=12, label="subtask learned (each member)")
    if c.fit is not None:
        f = c.fit
        _fit_lines(ax, f, f"fit: t ∝ p^-{f.exponent:.3f} [{f.ci_low:.3f}, {f.ci_high:.3f}]",
                   [(1.0, "theory: t ∝ p^-1", {"color": "k", "ls": "--"}),
                    (PAPER_CONVERGENCE_EXPONENT, f"paper's measurement: p^-{PAPER_CONVERGENCE_EXPONENT}",
                     {"color": "0.5", "ls": ":"})])
    ax.set(xscale="log", yscale="log", xlabel="subtask frequency p_k", ylabel=f"step at which loss < {LEARNED_BITS:g} bits",
           title=f"convergence time against frequency, alpha={c.alpha:g}\n{c.description}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    save_figure(fig, path, dpi=120)


def plot_exponents_vs_alpha(analyses: list[ScaleAnalysis], path: Path) -> None:
    """Measured alpha_N and alpha_D against alpha, with both theory lines."""
    fig, ax = plt.subplots(figsize=(6.5, 5), constrained_layout=True)
    grid = np.linspace(0, max(a.points.alpha for a in analyses) * 1.1 + 0.05, 100)
    ax.plot(grid, grid, "C0--", label="theory alpha_N = alpha")
    ax.plot(grid, grid / (grid + 1), "C1--", label="theory alpha_D = alpha / (alpha + 1)")
    for quantity, color in (("N", "C0"), ("D", "C1"), ("S", "C2")):
        sel = [a for a in analyses if a.points.quantity == quantity]
        if not sel:
            continue
        x = np.array([a.points.alpha for a in sel])
        y = np.array([a.fit.exponent for a in sel])
        err = np.array([[a.fit.exponent - a.fit.ci_low, a.fit.ci_high - a.fit.exponent] for a in sel]).T
        ax.errorbar(x, y, yerr=err, fmt="o", color=color, capsize=3, label=f"measured alpha_{quantity}")
    ax.set(xlabel="alpha (subtask i drawn ∝ i^-(alpha+1))", ylabel="scaling exponent",
           title="measured exponents against alpha")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=120)


def plot_other_studies(own: list[tuple[float, float, float]], path: Path) -> None:
    """(alpha_N, alpha_D) of other studies, both reference lines, and this project's points
    `own` = [(alpha, alpha_N, alpha_D)]."""
    fig, ax = plt.subplots(figsize=(10, 5.5), constrained_layout=True)
    for i, (study, points) in enumerate(OTHER_STUDIES.items()):
        pts = np.array(points)
        ax.scatter(pts[:, 0], pts[:, 1], color=f"C{i}", s=25, label=study)
    top = max(1.3, *(max(n, d) for _, n, d in own)) if own else 1.3
    grid = np.linspace(0, top, 100)
    ax.plot(grid, grid / (grid + 1), "k--", label="alpha_D = alpha_N / (alpha_N + 1) (quantization model)")
    ax.plot(grid, grid, "k:", label="alpha_D = alpha_N")
    for alpha, n, d in own:
        ax.scatter([n], [d], marker="*", s=160, color="crimson", edgecolor="k", zorder=5)
        ax.annotate(f"toy_quanta alpha={alpha:g}", (n, d), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set(xlabel="alpha_N", ylabel="alpha_D", xlim=(0, top), ylim=(0, top),
           title="parameter against data exponents")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=120)
