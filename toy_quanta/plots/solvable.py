"""The solvable model beside the network: each skill's measured strength over training with the
closed form calibrated on skill 1 (analysis.solvable), and predicted against measured emergence
steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from toy_quanta.analysis.solvable import EMERGED, Calibration
from toy_quanta.analysis.solvable import loss as solvable_loss
from toy_quanta.plots.curves import save_figure


def plot_solvable(steps_L: np.ndarray, R_MxLxK: np.ndarray, p_MxK: np.ndarray, S: float,
                  members: Sequence[dict[str, Any] | None], path: Path, title: str = "",
                  loss_MxL: np.ndarray | None = None) -> str:
    """members[m]: analysis.solvable.compare_member's result for member m (None: not calibrated);
    loss_MxL: the measured test loss, drawn beside the model's."""
    M, L, K = R_MxLxK.shape
    colors = plt.cm.viridis(np.linspace(0, 0.9, K))
    fig, (ax_r, ax_t, ax_l) = plt.subplots(1, 3, figsize=(17, 4.8), constrained_layout=True,
                                           gridspec_kw={"width_ratios": [1.6, 1, 1]})
    x = np.maximum(np.asarray(steps_L, np.float64), 1)
    dense = np.geomspace(x[0], x[-1], 400)
    for m in range(M):
        for k in range(K):
            ax_r.plot(x, R_MxLxK[m, :, k] / S, "o", ms=2.5, color=colors[k], alpha=0.6,
                      label=f"skill {k + 1} (p={p_MxK[m, k]:.3f})" if m == 0 else None)
            result = members[m]
            if result is not None:
                c = result["calibration"]
                cal = Calibration(c["rate"], c["midpoint"], c["rate_se"], c["midpoint_se"], S, float(p_MxK[m, 0]))
                ax_r.plot(dense, cal.predict(dense, float(p_MxK[m, k])) / S, "-", lw=1, color=colors[k], alpha=0.8)
    ax_r.axhline(EMERGED, color="0.6", lw=0.8, ls=":")
    ax_r.set(xscale="log", xlabel="step", ylabel="skill strength R_k / S", ylim=(-0.05, 1.1),
             title="measured (dots, every seed) and the closed form calibrated on skill 1 (lines)")
    ax_r.legend(fontsize=8, loc="center right")

    measured = [(s["predicted_step"], s["measured_step"], s["skill"]) for r in members if r is not None
                for s in r["skills"] if s["measured_step"] is not None]
    if measured:
        pred, meas, skill = (np.array(v, np.float64) for v in zip(*measured))
        ax_t.scatter(pred, meas, c=[colors[int(k) - 1] for k in skill], s=25, zorder=3)
        lo, hi = min(pred.min(), meas.min()) / 1.5, max(pred.max(), meas.max()) * 1.5
        ax_t.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--", label="measured = predicted")
        ax_t.set(xlim=(lo, hi), ylim=(lo, hi))
        ax_t.legend(fontsize=8, loc="upper left")
    ax_t.set(xscale="log", yscale="log", xlabel="predicted emergence step (from skill 1)",
             ylabel=f"measured step to R_k = {EMERGED:g} S", title="emergence: predicted against measured")
    for m in range(M if loss_MxL is not None else 0):
        ax_l.plot(x, loss_MxL[m], color="k", lw=1.2, alpha=0.7, label="measured (test)" if m == 0 else None)
        if members[m] is not None:
            c = members[m]["calibration"]
            ax_l.plot(dense, solvable_loss(dense, p_MxK[m], S, c["R0"], c["eta"]), "--", color="tab:red", lw=1,
                      label="solvable model" if m == 0 else None)
    ax_l.set(xscale="log", yscale="log", xlabel="step", ylabel="squared error / 2",
             title="loss: the network and the model")
    ax_l.legend(fontsize=8, loc="lower left")
    for axis in (ax_t.xaxis, ax_t.yaxis):
        axis.set_minor_formatter(NullFormatter())  # a decade or less: minor labels would overlap
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_calibrations(result: dict[str, Any], steps_L: np.ndarray, R_MxLxK: np.ndarray, path: Path,
                      title: str = "") -> str:
    """Both calibrations of analysis.solvable.calibrations: each skill's measured strength (every
    member) with the closed form from their calibration (dashed), and measured over predicted
    emergence step per skill for theirs and ours (geometric mean over members, 95% interval)."""
    from toy_quanta.analysis.solvable import their_calibration

    S, p_K = result["S"], np.asarray(result["p"])
    K = len(p_K)
    colors = plt.cm.viridis(np.linspace(0, 0.9, K))
    fig, (ax_r, ax_q) = plt.subplots(1, 2, figsize=(14, 4.8), constrained_layout=True,
                                     gridspec_kw={"width_ratios": [1.5, 1]})
    x = np.maximum(np.asarray(steps_L, np.float64), 1)
    cal = their_calibration(result["rate_single"], result["R0"], S, p_K[0])
    for k in range(K):
        for m in range(R_MxLxK.shape[0]):
            ax_r.plot(x, R_MxLxK[m, :, k] / S, color=colors[k], lw=1, alpha=0.7,
                      label=f"skill {k + 1} (p={p_K[k]:.3f})" if m == 0 else None)
        ax_r.plot(x, cal.predict(x, p_K[k]) / S, color=colors[k], ls="--", lw=1.5)
    ax_r.axhline(EMERGED, color="k", lw=0.6, ls=":")
    ax_r.set(xlabel="step", ylabel="skill strength R_k / S",
             title="measured (solid), their calibration's closed form (dashed)")
    ax_r.text(0.99, 0.03, f"R_0 = {result['R0']:.2g} (from the init)\none-skill rate {result['rate_single']:.3g} per step",
              transform=ax_r.transAxes, ha="right", va="bottom", fontsize=8)
    ax_r.legend(fontsize=8, loc="center right")
    for shift, (name, marker) in zip((-0.1, 0.1), (("theirs", "o"), ("ours", "s"))):
        rows = result[name]["skills"]
        for r in rows:
            ratio = r["ratio"]
            if ratio["value"] is None:
                continue
            low, high = ratio["interval"] or (ratio["value"], ratio["value"])
            ax_q.errorbar([r["skill"] + shift], [ratio["value"]], yerr=[[ratio["value"] - low], [high - ratio["value"]]],
                          fmt=marker, color="C0" if name == "theirs" else "C1", capsize=3,
                          label=(f"their calibration (R_0 from the init, rate from a one-skill network)" if name == "theirs"
                                 else "ours (skill 1 of the same network)") if r["skill"] == 1 else None)
    ax_q.axhline(1.0, color="k", lw=0.8)
    ax_q.set(xlabel="skill", ylabel="measured / predicted emergence step", xticks=list(range(1, K + 1)),
             title="measured / predicted (geometric mean, 95% CI)")
    ax_q.legend(fontsize=8)
    fig.suptitle(title or "the solvable model's two calibrations")
    return save_figure(fig, path)
