"""When a member's accuracy curves cross given levels: grokking milestones."""

from __future__ import annotations

import numpy as np


def steps_to(acc_LxM: np.ndarray, steps_L: np.ndarray, level: float) -> np.ndarray:
    """(M,) the first logged step at which accuracy reached `level`; NaN where it never did."""
    reached = acc_LxM >= level
    first = np.argmax(reached, axis=0)
    return np.where(reached.any(axis=0), steps_L[first].astype(np.float64), np.nan)


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
