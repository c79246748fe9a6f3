"""Power-law fits L = c * x^-exponent, with a bootstrap interval and a stated fit-range rule."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLawFit:
    exponent: float  # L ∝ x^-exponent (positive when the loss falls)
    ci_low: float  # bootstrap interval of the exponent
    ci_high: float
    prefactor: float  # c
    x_min: float  # the fit range
    x_max: float
    n_points: int  # (x, y) rows inside the range, seeds counted separately
    rule: str  # how the range was chosen

    def as_dict(self) -> dict:
        return asdict(self)


def _slope_intercept(log_x: np.ndarray, log_y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(log_x, log_y, 1)
    return float(slope), float(intercept)


def fit_range(x: np.ndarray, y: np.ndarray, top: float = 0.9, bottom: float = 0.05) -> tuple[float, float, str]:
    """The fit range by a stated rule: between the start and the end of the fall.

    With y averaged over seeds at each distinct x, y0 = the largest mean and floor = the smallest,
    keep the x whose mean lies below top * y0 (off the initial plateau) and above
    floor * (y0 / floor)^bottom, i.e. more than a fraction `bottom` of the fall, on a log scale,
    above the floor (so a curve that has flattened onto its floor is left out, while one still
    falling at the end keeps all but its last point or two). Falls back to every x when fewer
    than 3 points qualify.
    """
    xs = np.unique(x)
    mean = np.array([np.mean(y[x == v]) for v in xs])
    y0, floor = mean.max(), mean.min()
    keep = (mean < top * y0) & (mean > floor * (y0 / floor) ** bottom)
    rule = (f"mean loss below {top:g} x its maximum and more than {bottom:g} of the fall (on a log scale) "
            "above its minimum")
    if keep.sum() < 3:
        return float(xs.min()), float(xs.max()), "every point (fewer than 3 inside the rule: " + rule + ")"
    return float(xs[keep].min()), float(xs[keep].max()), rule


def fit_power_law(x, y, x_range: tuple[float, float] | None = None, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> PowerLawFit:
    """Least squares in log-log space over the range, bootstrap over (x, y) rows.

    Rows are points and seeds alike (pass every seed's value at every x), so the interval covers
    both the scatter between seeds and the choice of points.
    """
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("a power-law fit needs positive x and y")
    if x_range is None:
        lo, hi, rule = fit_range(x, y)
    else:
        (lo, hi), rule = x_range, "given"
    inside = (x >= lo) & (x <= hi)
    lx, ly = np.log(x[inside]), np.log(y[inside])
    if len(np.unique(lx)) < 2:
        raise ValueError(f"need at least 2 distinct x in the fit range [{lo:g}, {hi:g}]")
    slope, intercept = _slope_intercept(lx, ly)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(lx), len(lx))
        if len(np.unique(lx[idx])) >= 2:
            boot.append(_slope_intercept(lx[idx], ly[idx])[0])
    q = (1 - level) / 2
    lo_s, hi_s = np.quantile(boot, [q, 1 - q])
    return PowerLawFit(exponent=-slope, ci_low=float(-hi_s), ci_high=float(-lo_s), prefactor=float(np.exp(intercept)),
                       x_min=float(lo), x_max=float(hi), n_points=int(inside.sum()), rule=rule)
