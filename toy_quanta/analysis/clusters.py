"""Spectral clustering of a precomputed affinity at many cluster counts, cluster-size
rank-frequency envelopes and their power-law slope, and scores against true labels.

Spectral clustering (as scikit-learn's SpectralClustering with affinity="precomputed" and
assign_labels="kmeans" does it): embed every sample by the leading eigenvectors of the
normalised affinity D^-1/2 A D^-1/2, divided by sqrt(degree), then k-means on the first k of
them. The embedding is computed once, for the largest count, and every count uses its leading
columns: one eigendecomposition for the whole envelope instead of one per count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.sparse.linalg import LinearOperator, eigsh
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def spectral_embedding(affinity_NxN: np.ndarray, n_components: int, seed: int = 0) -> np.ndarray:
    """(N, n_components): leading eigenvectors of D^-1/2 A D^-1/2, over sqrt(degree), in
    decreasing eigenvalue order. The affinity is scaled in place (no second N x N matrix), so pass
    one you no longer need, or a copy."""
    n = affinity_NxN.shape[0]
    if not 1 <= n_components < n:
        raise ValueError(f"n_components={n_components}: need 1 <= n_components < {n} samples")
    degree_N = affinity_NxN.sum(axis=1, dtype=np.float64)
    if np.any(degree_N <= 0):
        raise ValueError("a sample has zero affinity to every sample (including itself)")
    inv_sqrt_N = (1.0 / np.sqrt(degree_N)).astype(affinity_NxN.dtype)
    affinity_NxN *= inv_sqrt_N[:, None]
    affinity_NxN *= inv_sqrt_N[None, :]
    v0 = np.random.default_rng(seed).uniform(-1, 1, n)
    # Products in the matrix's own precision (a float32 matrix is never copied to float64); the
    # Lanczos vectors in float64.
    op = LinearOperator((n, n), matvec=lambda x: (affinity_NxN @ x.astype(affinity_NxN.dtype)).astype(np.float64),
                        dtype=np.float64)
    values, vectors = eigsh(op, k=n_components, which="LA", v0=v0, tol=1e-6)
    order = np.argsort(values)[::-1]
    embedding_NxC = vectors[:, order] * inv_sqrt_N[:, None]
    # A fixed sign per eigenvector (largest entry positive): the same clustering every run.
    signs = np.sign(embedding_NxC[np.argmax(np.abs(embedding_NxC), axis=0), np.arange(n_components)])
    return (embedding_NxC * signs).astype(np.float64)


def kmeans_labels(embedding_NxC: np.ndarray, n_clusters: int, n_init: int = 30, seed: int = 0) -> np.ndarray:
    """k-means on the first n_clusters embedding columns: the cluster of every sample."""
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed)
    return km.fit_predict(embedding_NxC[:, :n_clusters]).astype(np.int32)


def cluster_many(affinity_NxN: np.ndarray, counts: list[int], n_init: int = 30, seed: int = 0) -> dict[int, np.ndarray]:
    """{count: labels_N} for every cluster count, from one spectral embedding."""
    embedding = spectral_embedding(affinity_NxN, max(counts), seed)
    return {k: kmeans_labels(embedding, k, n_init, seed) for k in sorted(set(counts))}


def rank_frequency(labels_N: np.ndarray) -> np.ndarray:
    """Cluster sizes, largest first (the size at rank 1, 2, ...)."""
    return np.sort(np.bincount(labels_N))[::-1]


def envelope(sizes: list[np.ndarray]) -> np.ndarray:
    """The largest size at each rank across clusterings (the paper's envelope)."""
    out = np.zeros(max(len(s) for s in sizes), np.int64)
    for s in sizes:
        out[: len(s)] = np.maximum(out[: len(s)], s)
    return out


@dataclass(frozen=True)
class SlopeFit:
    slope: float  # size ∝ rank^slope
    ci_low: float
    ci_high: float
    rank_min: int  # the fit range, inclusive
    rank_max: int
    rule: str

    def as_dict(self) -> dict:
        return {"slope": self.slope, "interval": [self.ci_low, self.ci_high], "ranks": [self.rank_min, self.rank_max],
                "rule": self.rule}


def _loglog(sizes: np.ndarray, lo: int, hi: int):
    ranks = np.arange(lo, hi + 1)
    return stats.linregress(np.log(ranks), np.log(sizes[lo - 1: hi]))


def fit_envelope(sizes: np.ndarray, min_size: int = 10, first_rank: int = 2) -> SlopeFit:
    """Power law over the middle ranks: from `first_rank` (the largest cluster often swallows the
    unresolved rest) to the last rank whose size is at least `min_size` (below that, sizes are
    counting noise). The interval covers the regression's 95% interval and the slopes of nearby
    ranges (first rank 1 to 3, last rank halved), since the range choice moves the slope most."""
    hi = int(np.max(np.flatnonzero(sizes >= min_size), initial=-1)) + 1
    rule = (f"ranks {first_rank} to the last rank with at least {min_size} samples; interval: 95% regression "
            "interval joined with the slopes of first rank 1-3 and of the last rank halved")
    if hi - first_rank + 1 < 3:
        return SlopeFit(float("nan"), float("nan"), float("nan"), first_rank, hi, rule + " (fewer than 3 ranks: no fit)")
    main = _loglog(sizes, first_rank, hi)
    t = stats.t.ppf(0.975, hi - first_rank - 1) if hi - first_rank + 1 > 2 else np.inf
    candidates = [main.slope - t * main.stderr, main.slope + t * main.stderr]
    for lo in (1, 2, 3):
        for top in (hi, max(lo + 2, hi // 2)):
            if top - lo + 1 >= 3 and top <= hi:
                candidates.append(_loglog(sizes, lo, top).slope)
    return SlopeFit(float(main.slope), float(min(candidates)), float(max(candidates)), first_rank, hi, rule)


def purity(labels_N: np.ndarray, truth_N: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cluster (ordered by cluster id): size, majority true label and the fraction it makes up."""
    clusters = np.unique(labels_N)
    size, major, frac = [], [], []
    for c in clusters:
        counts = np.bincount(truth_N[labels_N == c])
        size.append(counts.sum())
        major.append(int(np.argmax(counts)))
        frac.append(counts.max() / counts.sum())
    return np.array(size), np.array(major), np.array(frac)


def scores(labels_N: np.ndarray, truth_N: np.ndarray) -> dict[str, float]:
    """Adjusted Rand index, normalised mutual information and size-weighted purity."""
    size, _, frac = purity(labels_N, truth_N)
    return {"ari": float(adjusted_rand_score(truth_N, labels_N)),
            "nmi": float(normalized_mutual_info_score(truth_N, labels_N)),
            "purity": float(np.sum(size * frac) / np.sum(size))}
