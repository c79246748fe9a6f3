"""When a member's accuracy curves cross given levels: grokking milestones."""

from __future__ import annotations

import numpy as np


def steps_to(acc_LxM: np.ndarray, steps_L: np.ndarray, level: float) -> np.ndarray:
    """(M,) the first logged step at which accuracy reached `level`; NaN where it never did."""
    reached = acc_LxM >= level
    first = np.argmax(reached, axis=0)
    return np.where(reached.any(axis=0), steps_L[first].astype(np.float64), np.nan)


def crossings(acc_LxM: np.ndarray, steps_L: np.ndarray, level: float, scale: str = "linear") -> np.ndarray:
    """(M,) the step at which each column first reached `level`, interpolated between that log step
    and the one before it, linearly in the step (scale "linear") or in log(1 + step) ("log"); the
    first log step itself if it was already there; NaN where it never did."""
    acc_LxM = np.asarray(acc_LxM, np.float64)
    x_L = np.asarray(steps_L, np.float64)
    if scale == "log":
        x_L = np.log1p(x_L)
    reached_LxM = acc_LxM >= level
    first_M = np.argmax(reached_LxM, axis=0)
    before_M = np.maximum(first_M - 1, 0)
    cols = np.arange(acc_LxM.shape[1])
    a0_M, a1_M = acc_LxM[before_M, cols], acc_LxM[first_M, cols]
    x0_M, x1_M = x_L[before_M], x_L[first_M]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_M = np.where(a1_M > a0_M, (level - a0_M) / (a1_M - a0_M), 1.0)
    at_M = np.where(first_M == 0, x1_M, x0_M + np.clip(frac_M, 0.0, 1.0) * (x1_M - x0_M))
    if scale == "log":
        at_M = np.expm1(at_M)
    return np.where(reached_LxM.any(axis=0), at_M, np.nan)


def grokking_summary(steps_L: np.ndarray, train_acc_LxM: np.ndarray, val_acc_LxM: np.ndarray) -> dict[str, np.ndarray]:
    """Per member: steps to 90% and 99% training and validation accuracy, the grokking gap at
    99% (validation step - training step) and whether validation reached 99% within the budget."""
    out = {}
    for level in (0.9, 0.99):
        tag = f"{round(level * 100)}"
        out[f"train_{tag}"] = steps_to(train_acc_LxM, steps_L, level)
        out[f"val_{tag}"] = steps_to(val_acc_LxM, steps_L, level)
    out["gap_99"] = out["val_99"] - out["train_99"]
    out["grokked"] = ~np.isnan(out["val_99"])
    return out


def final_milestones(steps_L: np.ndarray, train_acc_L: np.ndarray, val_acc_L: np.ndarray) -> dict[str, float | bool | None]:
    """One member's grokking_summary as summary.json keys (steps_to_*, gap_99, grokked); None: never."""
    summary = grokking_summary(steps_L, train_acc_L[:, None], val_acc_L[:, None])
    out = {}
    for key, (value,) in summary.items():
        if key == "grokked":
            out[key] = bool(value)
        else:
            out[key if key == "gap_99" else f"steps_to_{key}"] = None if np.isnan(value) else float(value)
    return out


def step_or_never(f: dict, key: str) -> str:
    return "never" if f.get(key) is None else f"step {f[key]:.0f}"
