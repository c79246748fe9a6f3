"""Representation quality (Liu et al. 2022): how well embeddings satisfy the parallelograms of
addition, E_a + E_b = E_c + E_d whenever a + b = c + d.

`rqi` is their measure on the normalised embeddings. Modular addition has no exact solution of
it (a map Z_p -> R^d that respects addition is constant), so a network that groks a + b mod p
lays the residues on rings instead; `ring_rqi` asks the same question of the angles on the ring
(the first two principal components): theta_a + theta_b = theta_c + theta_d modulo 2 pi.
"""

from __future__ import annotations

import numpy as np

SIGNS = {"add": 1, "sub": -1}  # a + b, or a - b: the combination that parallelograms hold equal


def parallelograms(p: int, op: str = "add", modulus: int | None = None) -> np.ndarray:
    """(A, 4) int32 rows (a, b, c, d), each unordered pair of distinct operand pairs with
    a op b = c op d: over the integers (modulus None) or mod `modulus`. For addition the operand
    pairs are unordered (a <= b), since a + b and b + a are the same sum; for subtraction the
    pairs (a, a), (c, c) are left out."""
    if op not in SIGNS:
        raise ValueError(f"op={op!r}: parallelograms are defined for {sorted(SIGNS)}")
    a_N, b_N = np.divmod(np.arange(p * p), p)
    if op == "add":
        keep = a_N <= b_N
        a_N, b_N = a_N[keep], b_N[keep]
    value_N = a_N + SIGNS[op] * b_N
    if modulus is not None:
        value_N = value_N % modulus
    order = np.argsort(value_N, kind="stable")
    a_N, b_N, value_N = a_N[order], b_N[order], value_N[order]
    starts = np.flatnonzero(np.r_[True, value_N[1:] != value_N[:-1]])
    blocks = []
    for lo, hi in zip(starts, np.r_[starts[1:], len(value_N)]):
        i, j = np.triu_indices(hi - lo, k=1)
        blocks.append(np.stack([a_N[lo + i], b_N[lo + i], a_N[lo + j], b_N[lo + j]], axis=1))
    quads = np.concatenate(blocks).astype(np.int32) if blocks else np.zeros((0, 4), np.int32)
    # a - a = c - c holds for any embedding: not a parallelogram (as a + b = b + a is not one for add)
    if op == "sub":
        quads = quads[(quads[:, 0] != quads[:, 1]) | (quads[:, 2] != quads[:, 3])]
    return quads


def normalise(embed_PxD: np.ndarray) -> np.ndarray:
    """Centred, and scaled so the mean squared length of a row is 1: RQI's tolerance is then
    relative to the embedding's own size."""
    centred = np.asarray(embed_PxD, np.float64) - np.mean(embed_PxD, axis=0)
    return centred / np.sqrt(np.mean(np.sum(centred**2, axis=1)))


def rqi(embed_PxD: np.ndarray, quads_Ax4: np.ndarray, op: str = "add", tol: float = 0.01) -> float:
    """The fraction of parallelograms with |E_a +- E_b - (E_c +- E_d)|^2 <= tol on the normalised
    embeddings (Liu et al.'s tolerance: 0.01 on the squared distance)."""
    e = normalise(embed_PxD)
    a, b, c, d = quads_Ax4.T
    s = SIGNS[op]
    return float(np.mean(np.sum((e[a] + s * e[b] - e[c] - s * e[d]) ** 2, axis=1) <= tol)) if len(quads_Ax4) else float("nan")


def ring_angles(embed_PxD: np.ndarray) -> np.ndarray:
    """(P,) each residue's angle on the first two principal components, each scaled to unit
    variance (an elliptical ring becomes a circle)."""
    centred = np.asarray(embed_PxD, np.float64) - np.mean(embed_PxD, axis=0)
    u, _, _ = np.linalg.svd(centred, full_matrices=False)
    return np.arctan2(u[:, 1], u[:, 0])


def ring_rqi(embed_PxD: np.ndarray, quads_Ax4: np.ndarray, op: str = "add", tol: float = 0.01) -> float:
    """The fraction of parallelograms whose ring angles satisfy them: |e^{i(t_a +- t_b)} -
    e^{i(t_c +- t_d)}|^2 <= tol. A ring in the order of k * a mod p scores 1 whatever k is;
    random angles score about sqrt(tol) / pi."""
    t = ring_angles(embed_PxD)
    a, b, c, d = quads_Ax4.T
    s = SIGNS[op]
    gap = (t[a] + s * t[b]) - (t[c] + s * t[d])
    return float(np.mean(2 - 2 * np.cos(gap) <= tol)) if len(quads_Ax4) else float("nan")
