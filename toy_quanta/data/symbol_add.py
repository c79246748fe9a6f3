"""The effective theory's toy task (Liu et al. 2022): addition of p symbols over the integers.

Inputs are the unordered pairs (i, j), i <= j (p(p+1)/2 of them: 55 for p = 10); the answer
i + j in 0..2p-2 is a class. Rows use the modular task's token layout [i, OP, j, EQ], so the
grokking trainer and its split (a rank per pair, training set = the lowest ranks) serve both.

A representation that has understood addition satisfies the parallelograms
E_i + E_j = E_m + E_n whenever i + j = m + n: `parallelogram_pairs` lists them as pairs of rows.
"""

from __future__ import annotations

import numpy as np

from toy_quanta.data import modular


def table(p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The unordered pairs row-major (i, then j >= i): int32 (i_N, j_N, sum_N)."""
    i_N, j_N = np.triu_indices(p)
    return i_N.astype(np.int32), j_N.astype(np.int32), (i_N + j_N).astype(np.int32)


def n_classes(p: int) -> int:
    """Sums 0..2p-2."""
    return 2 * p - 1


def sequences(p: int) -> np.ndarray:
    """(N, 4) int32 token rows [i, OP, j, EQ] of the table."""
    i_N, j_N, _ = table(p)
    return modular.sequences(i_N, j_N, p)


def parallelogram_pairs(p: int) -> np.ndarray:
    """(A, 2) int32: the table rows (r, s) of every unordered pair of distinct rows with equal sums,
    i.e. the parallelograms i + j = m + n."""
    _, _, sum_N = table(p)
    r, s = np.triu_indices(len(sum_N), k=1)
    same = sum_N[r] == sum_N[s]
    return np.stack([r[same], s[same]], axis=1).astype(np.int32)
