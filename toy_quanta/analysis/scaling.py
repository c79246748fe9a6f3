"""Scaling analyses of a sweep: loss against N, D or S, per-subtask emergence, convergence times.

Which scale a member belongs to follows from what it is:
- finite-data members (task.D set): data scaling, x = D; the loss is the lowest test loss seen
  during training (early stopping, as the paper did), with the per-subtask losses at that step;
- online members, when the sweep has several widths: parameter scaling, x = N (parameter
  count); the loss and per-subtask losses at the end of training;
- online members of one width: step scaling, x = S, every logged step > 0 of each member.
Each alpha gets its own analysis (quanta_alpha sweeps several at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from toy_quanta.analysis.emergence import learned_at, order_correlation
from toy_quanta.analysis.powerlaw import PowerLawFit, fit_power_law
from toy_quanta.analysis.quanta_theory import finite_size_loss, predicted_exponents
from toy_quanta.analysis.sweep import Sweep
from toy_quanta.data.sparse_parity import LN2, zipf_probs

LEARNED_BITS = 0.1  # a subtask is learned below this loss (the paper's threshold)
PAPER_CONVERGENCE_EXPONENT = 0.81  # the paper's measured t_k ∝ p_k^-0.81 (theory: 1)
QUANTITY_LABEL = {"N": "parameters N", "D": "training samples D", "S": "steps S"}


@dataclass
class ScalePoints:
    """Rows of (scale, loss) for one quantity and one alpha; several seeds per scale."""

    quantity: str  # "N", "D" or "S"
    alpha: float
    n_tasks: int
    x: np.ndarray  # (N,)
    loss: np.ndarray  # (N,) mean test loss, nats
    subtask_loss: np.ndarray  # (N, T) nats, subtasks in frequency order
    seed: np.ndarray  # (N,)
    description: str = ""


@dataclass
class ScaleAnalysis:
    points: ScalePoints
    fit: PowerLawFit
    predicted: float  # the theory's exponent
    xs: np.ndarray  # distinct scales
    mean_loss: np.ndarray  # (G,) nats, mean over seeds
    std_loss: np.ndarray  # (G,)
    subtask_bits_TxG: np.ndarray  # per-subtask loss in bits, mean over seeds
    learned_scale: np.ndarray  # (T,) scale from which each subtask stays learned, NaN if never
    spearman: float  # learning order against frequency rank
    n_learned: np.ndarray  # (G,) subtasks learned, mean over seeds
    finite_size: np.ndarray  # (G,) the model's loss when exactly n_learned subtasks are learned
    finite_size_slope: float  # its log-log slope over the fit range (NaN if it is 0 somewhere there)
    learned_fit: PowerLawFit | None  # n_learned ∝ x^growth
    growth_predicted: float  # 1 for N, 1/(alpha+1) for D and S
    notes: list[str] = field(default_factory=list)

    @property
    def growth(self) -> tuple[float, float, float] | None:
        """(exponent, low, high) of n_learned ∝ x^exponent."""
        f = self.learned_fit
        return None if f is None else (-f.exponent, -f.ci_high, -f.ci_low)


@dataclass
class ConvergenceAnalysis:
    """t_k ∝ p_k^-gamma: the step at which subtask k is learned, against its frequency."""

    alpha: float
    p: np.ndarray  # (N,) frequency of each learned (member, subtask)
    steps: np.ndarray  # (N,)
    fit: PowerLawFit | None
    n_members: int
    description: str


def _one_point_per_run(sweep: Sweep, quantity: str, alpha: float, runs: pd.DataFrame, x_column: str, best: bool,
                       description: str) -> ScalePoints:
    """One row per member: its test and per-subtask losses at its last step, or (best) at the step
    of its lowest test loss."""
    x, loss, sub = [], [], []
    for r in runs.itertuples():
        steps, test_L = sweep.curve(r.run, "test_loss")
        i = int(np.nanargmin(test_L)) if best else len(steps) - 1
        sub_steps, sub_LxT = sweep.subtask_curve(r.run)
        x.append(getattr(r, x_column)), loss.append(test_L[i]), sub.append(sub_LxT[np.searchsorted(sub_steps, steps[i])])
    return ScalePoints(quantity, alpha, int(runs["n_tasks"].iloc[0]), np.array(x, float), np.array(loss), np.stack(sub),
                       runs["seed"].to_numpy(), description)


def scale_points(sweep: Sweep) -> list[ScalePoints]:
    """The sweep's members arranged by quantity and alpha (see the module docstring)."""
    out = []
    for alpha, by_alpha in sweep.runs.groupby("alpha", sort=True):
        alpha, n_tasks = float(alpha), int(by_alpha["n_tasks"].iloc[0])
        finite, online = by_alpha[by_alpha["D"].notna()], by_alpha[by_alpha["D"].isna()]
        if len(finite):
            widths = ", ".join(map(str, sorted(set(finite["width"]))))
            out.append(_one_point_per_run(sweep, "D", alpha, finite, "D", True,
                                          f"width {widths}; lowest test loss during training"))
        if online["width"].nunique() > 1:
            out.append(_one_point_per_run(sweep, "N", alpha, online, "n_params", False,
                                          f"widths {online['width'].min()} to {online['width'].max()}; test loss at the last step"))
        elif len(online):
            xs, losses, subs, seeds = [], [], [], []
            for r in online.itertuples():
                steps, loss = sweep.curve(r.run, "test_loss")
                sub_steps, sub = sweep.subtask_curve(r.run)
                keep = steps > 0
                xs.append(steps[keep]), losses.append(loss[keep]), subs.append(sub[np.isin(sub_steps, steps[keep])])
                seeds.append(np.full(keep.sum(), r.seed))
            out.append(ScalePoints("S", alpha, n_tasks, np.concatenate(xs).astype(float), np.concatenate(losses),
                                   np.concatenate(subs), np.concatenate(seeds),
                                   f"width {online['width'].iloc[0]}, batch {online['batch_size'].iloc[0]}, online data"))
    return out


def analyse(points: ScalePoints, n_boot: int = 2000) -> ScaleAnalysis:
    p = points
    fit = fit_power_law(p.x, p.loss, n_boot=n_boot)
    predicted = predicted_exponents(p.alpha)[p.quantity]
    xs = np.unique(p.x)
    at = [p.x == v for v in xs]
    mean_loss = np.array([p.loss[m].mean() for m in at])
    std_loss = np.array([p.loss[m].std(ddof=1) if m.sum() > 1 else 0.0 for m in at])
    bits_NxT = p.subtask_loss / LN2
    sub_GxT = np.stack([bits_NxT[m].mean(0) for m in at])
    learned_scale = learned_at(sub_GxT, xs, LEARNED_BITS)
    n_row = (bits_NxT < LEARNED_BITS).sum(1).astype(float)
    n_learned = np.array([n_row[m].mean() for m in at])
    growth_predicted = 1.0 if p.quantity == "N" else 1.0 / (p.alpha + 1.0)
    notes = []
    learned_fit = None
    # Fit n_learned ∝ x^growth where it is neither 0 (log undefined) nor saturated.
    ok = (n_row >= 1) & (n_row < p.n_tasks)
    if len(np.unique(p.x[ok])) >= 3:
        learned_fit = fit_power_law(p.x[ok], n_row[ok], x_range=(p.x[ok].min(), p.x[ok].max()), n_boot=n_boot)
    else:
        notes.append("fewer than 3 scales with between 1 and n_tasks - 1 subtasks learned: no fit of n_learned")
    finite_size = finite_size_loss(n_learned, p.n_tasks, p.alpha)
    # The same law bends for a finite list of subtasks: its own slope over the fit range, from the
    # measured n_learned, is what the model predicts for this sweep as run.
    inside = (xs >= fit.x_min) & (xs <= fit.x_max)
    finite_size_slope = float("nan")
    if inside.sum() >= 2 and np.all(finite_size[inside] > 0):
        finite_size_slope = float(-np.polyfit(np.log(xs[inside]), np.log(finite_size[inside]), 1)[0])
    return ScaleAnalysis(points=p, fit=fit, predicted=predicted, xs=xs, mean_loss=mean_loss, std_loss=std_loss,
                         subtask_bits_TxG=sub_GxT.T, learned_scale=learned_scale,
                         spearman=order_correlation(learned_scale), n_learned=n_learned,
                         finite_size=finite_size, finite_size_slope=finite_size_slope, learned_fit=learned_fit,
                         growth_predicted=growth_predicted, notes=notes)


def convergence(sweep: Sweep, n_boot: int = 2000) -> list[ConvergenceAnalysis]:
    """Per alpha, from the online members of the largest width: the step from which each subtask
    stays below 0.1 bits, against its frequency p_k (subtasks never learned are left out)."""
    out = []
    online = sweep.runs[sweep.runs["D"].isna()]
    for alpha, by_alpha in online.groupby("alpha", sort=True):
        widest = by_alpha[by_alpha["width"] == by_alpha["width"].max()]
        p_T = zipf_probs(int(widest["n_tasks"].iloc[0]), float(alpha))
        ps, ts = [], []
        for r in widest.itertuples():
            steps, sub_LxT = sweep.subtask_curve(r.run)
            t_T = learned_at(sub_LxT / LN2, steps, LEARNED_BITS)
            ok = np.isfinite(t_T) & (t_T > 0)
            ps.append(p_T[ok]), ts.append(t_T[ok])
        p, t = np.concatenate(ps), np.concatenate(ts)
        fit = None
        if len(np.unique(p)) >= 3:
            fit = fit_power_law(p, t, x_range=(p.min(), p.max()), n_boot=n_boot)
            fit = PowerLawFit(**{**fit.as_dict(), "rule": "every subtask learned during training"})
        out.append(ConvergenceAnalysis(float(alpha), p, t, fit, len(widest),
                                       f"width {widest['width'].iloc[0]}, {len(widest)} member(s)"))
    return out


def agreement(measured: float, low: float, high: float, predicted: float) -> str:
    """Plain words: does the interval contain the prediction?"""
    if low <= predicted <= high:
        return "agrees (prediction inside the interval)"
    side = "above" if measured > predicted else "below"
    return f"disagrees: measured {side} the prediction by {abs(measured - predicted):.3g}"


def summary_frame(analyses: list[ScaleAnalysis]) -> pd.DataFrame:
    rows = []
    for a in analyses:
        f = a.fit
        rows.append({"quantity": a.points.quantity, "alpha": a.points.alpha, "exponent": f.exponent, "ci_low": f.ci_low,
                     "ci_high": f.ci_high, "predicted": a.predicted, "finite_size_slope": a.finite_size_slope,
                     "fit_from": f.x_min, "fit_to": f.x_max,
                     "loss_fall": a.mean_loss.max() / a.mean_loss.min(), "spearman": a.spearman,
                     "max_learned": a.n_learned.max(), "verdict": agreement(f.exponent, f.ci_low, f.ci_high, a.predicted)})
    return pd.DataFrame(rows)
