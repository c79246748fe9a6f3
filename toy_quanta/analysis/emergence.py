"""When each subtask is learned, along a scale (width, D, or steps)."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def learned_at(loss_GxT: np.ndarray, scales: np.ndarray, threshold: float) -> np.ndarray:
    """(T,) the smallest scale from which a subtask's loss stays below threshold; NaN if never.

    `loss_GxT` is per-subtask loss at increasing scales (rows). "Stays below" makes one lucky dip
    at a small scale not count as learning.
    """
    below_GxT = np.asarray(loss_GxT) < threshold
    stays_GxT = np.flip(np.logical_and.accumulate(np.flip(below_GxT, 0), axis=0), 0)
    first = np.argmax(stays_GxT, axis=0)
    scales = np.asarray(scales, np.float64)
    return np.where(stays_GxT.any(axis=0), scales[first], np.nan)


def order_correlation(learned_scale_T: np.ndarray) -> float:
    """Spearman correlation between frequency rank (column order) and the scale of learning,
    over the subtasks that were learned; +1 means learned exactly in frequency order."""
    learned = ~np.isnan(learned_scale_T)
    if learned.sum() < 3:
        return float("nan")
    return float(spearmanr(np.arange(len(learned_scale_T))[learned], learned_scale_T[learned]).statistic)
