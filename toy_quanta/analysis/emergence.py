"""When each subtask is learned, along a scale (width, D, or steps)."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def learned_at(loss_SxT: np.ndarray, scales: np.ndarray, threshold: float) -> np.ndarray:
    """(T,) the smallest scale from which a subtask's loss stays below threshold; NaN if never.

    `loss_SxT` is per-subtask loss at increasing scales (rows). "Stays below" makes one lucky dip
    at a small scale not count as learning.
    """
    below_SxT = np.asarray(loss_SxT) < threshold
    stays_SxT = np.flip(np.logical_and.accumulate(np.flip(below_SxT, 0), axis=0), 0)
    first = np.argmax(stays_SxT, axis=0)
    scales = np.asarray(scales, np.float64)
    return np.where(stays_SxT.any(axis=0), scales[first], np.nan)


def order_correlation(learned_scale_T: np.ndarray) -> float:
    """Spearman correlation between frequency rank (column order) and the scale of learning,
    over the subtasks that were learned; +1 means learned exactly in frequency order."""
    learned = ~np.isnan(learned_scale_T)
    if learned.sum() < 3:
        return float("nan")
    return float(spearmanr(np.arange(len(learned_scale_T))[learned], learned_scale_T[learned]).statistic)
