"""Fourier progress measures of modular addition (Nanda et al. 2023).

A generalising network embeds residue a as cos/sin(2 pi k a / p) for a few key frequencies k and
reads the answer out of cos(2 pi k (a + b - c) / p). These functions measure that: the norm of
the embedding per frequency, which frequencies are key, how sparse the norms are (Gini), and the
logits with only (restricted) or without (excluded) the key frequencies' directions.
"""

from __future__ import annotations

import numpy as np


def n_frequencies(p: int) -> int:
    """Frequencies k = 1 .. p // 2 (k and p - k are the same real frequency)."""
    return p // 2


def frequency_norms(embed_PxD: np.ndarray) -> np.ndarray:
    """(F,) the norm of the embedding's component at each frequency k = 1 .. p // 2: the length of
    its projection on the orthonormal cos_k and sin_k vectors over residues (the constant, k = 0,
    is left out). The squared norms and the constant's sum to the squared Frobenius norm."""
    embed_PxD = np.asarray(embed_PxD, np.float64)
    p = embed_PxD.shape[0]
    coef_FxD = np.fft.rfft(embed_PxD, axis=0)[1:]
    # |rfft_k| * sqrt(2/p) is the length of the projection on unit cos_k, sin_k vectors; the Nyquist
    # frequency of an even p has only a cosine, of norm sqrt(p).
    scale_F = np.full(len(coef_FxD), np.sqrt(2.0 / p))
    if p % 2 == 0:
        scale_F[-1] = np.sqrt(1.0 / p)
    return scale_F * np.linalg.norm(coef_FxD, axis=1)


def key_frequencies(norms_F: np.ndarray, factor: float = 4.0) -> np.ndarray:
    """The key frequencies (1-based k, largest norm first): those whose squared norm is at least
    `factor` times the median squared norm. The median stands for the frequencies a generalising
    network has let decay, however many it kept (Nanda's model keeps 5 of 56; an MLP may keep 10)."""
    power_F = np.asarray(norms_F, np.float64) ** 2
    keys = np.flatnonzero(power_F >= factor * np.median(power_F))
    return keys[np.argsort(-power_F[keys], kind="stable")] + 1


def gini(x: np.ndarray) -> float:
    """The Gini coefficient of non-negative values: 0 when all are equal, (n - 1)/n when one holds
    everything."""
    x = np.sort(np.asarray(x, np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    rank = np.arange(1, n + 1)
    return float(np.sum((2 * rank - n - 1) * x) / (n * x.sum()))


def key_directions(s_N: np.ndarray, p: int, keys: np.ndarray) -> np.ndarray:
    """(N, 2 * len(keys)): cos and sin(2 pi k s / p) over the pairs, for each key frequency k;
    s = a + b for addition (a - b for subtraction)."""
    angle_NxF = 2 * np.pi * np.outer(np.asarray(s_N, np.float64), np.asarray(keys, np.float64)) / p
    return np.concatenate([np.cos(angle_NxF), np.sin(angle_NxF)], axis=1)


def restricted_excluded(logits_NxO: np.ndarray, s_N: np.ndarray, p: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(restricted, excluded) logits over the pairs. Each output's logits, as a function of the pair,
    are projected on the key directions cos/sin(2 pi k s / p): the restricted logits keep only
    that projection and the constant (each output's mean, which only shifts its logit); the
    excluded logits are the logits with that projection removed."""
    logits_NxO = np.asarray(logits_NxO, np.float64)
    n = len(logits_NxO)
    const_Nx1 = np.ones((n, 1))
    q_all, _ = np.linalg.qr(np.concatenate([const_Nx1, key_directions(s_N, p, keys)], axis=1))
    q_const = const_Nx1 / np.sqrt(n)
    on_all = q_all @ (q_all.T @ logits_NxO)
    on_const = q_const @ (q_const.T @ logits_NxO)
    return on_all, logits_NxO - (on_all - on_const)


def cross_entropy(logits_NxO: np.ndarray, labels_N: np.ndarray) -> np.ndarray:
    """(N,) softmax cross-entropy in nats, computed stably in float64."""
    z = np.asarray(logits_NxO, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm_N = np.log(np.exp(z).sum(axis=1))
    return log_norm_N - z[np.arange(len(z)), labels_N]
