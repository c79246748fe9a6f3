"""Predictions of the quantization model (Michaud et al. 2023) for multitask sparse parity."""

from __future__ import annotations

import numpy as np

from toy_quanta.data.sparse_parity import LN2, zipf_probs


def predicted_exponents(alpha: float) -> dict[str, float]:
    """alpha_N = alpha; alpha_D = alpha_S = alpha / (alpha + 1) (the paper's alpha)."""
    return {"N": alpha, "D": alpha / (alpha + 1.0), "S": alpha / (alpha + 1.0)}


def finite_size_loss(n_learned, n_tasks: int, alpha: float, unlearned_loss: float = LN2) -> np.ndarray:
    """Mean loss when the n most frequent subtasks are learned (loss 0) and the rest are not.

    L(n) = unlearned_loss * sum_{k > n} p_k for the actual n_tasks (the tail of a finite Zipf law);
    n may be fractional (interpolated linearly) or an array.
    """
    p = zipf_probs(n_tasks, alpha)
    tail = np.concatenate([np.cumsum(p[::-1])[::-1], [0.0]])  # tail[n] = sum_{k >= n} p (0-based)
    n = np.clip(np.asarray(n_learned, np.float64), 0, n_tasks)
    return unlearned_loss * np.interp(n, np.arange(n_tasks + 1), tail)


def subtasks_learned_for_data(D, alpha: float, n_tasks: int, tau: float) -> np.ndarray:
    """n(D): subtask k is learned once seen tau times, D p_k >= tau, so n ~ D^(1/(alpha+1))."""
    p = zipf_probs(n_tasks, alpha)
    return np.array([int(np.sum(d * p >= tau)) for d in np.atleast_1d(D)])
