"""Spectral clustering at many counts, rank-frequency envelopes and scores (toy_quanta.analysis.clusters)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import SpectralClustering

from toy_quanta.analysis.clusters import (cluster_many, envelope, fit_envelope, purity, rank_frequency, scores,
                                          spectral_embedding)


def planted(n: int = 600, k: int = 8, noise: float = 0.7, seed: int = 0):
    """Zipf-sized groups of noisy copies of k random directions: (truth_S, angular affinity)."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, k + 1) ** -1.4
    truth = rng.choice(k, size=n, p=p / p.sum())
    x = rng.normal(size=(k, 20))[truth] + noise * rng.normal(size=(n, 20))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    aff = (1 - np.arccos(np.clip(x @ x.T, -1, 1)) / np.pi).astype(np.float32)
    return truth, aff


def test_one_embedding_for_many_counts_matches_scikit_learn():
    truth, aff = planted()
    reference = SpectralClustering(8, affinity="precomputed", assign_labels="kmeans", n_init=30,
                                   random_state=0).fit_predict(aff.astype(np.float64))
    labels = cluster_many(aff.copy(), [4, 8, 16])
    assert set(labels) == {4, 8, 16}
    assert scores(labels[8], reference)["ari"] == pytest.approx(1.0)
    assert scores(labels[8], truth)["ari"] == pytest.approx(1.0)
    assert len(np.unique(labels[16])) == 16
    assert scores(labels[16], truth)["purity"] > 0.99  # splitting keeps clusters pure


def test_embedding_is_deterministic_and_checks_its_input():
    _, aff = planted(n=200)
    a, b = spectral_embedding(aff.copy(), 5, seed=3), spectral_embedding(aff.copy(), 5, seed=3)
    np.testing.assert_allclose(a, b)
    with pytest.raises(ValueError, match="n_components"):
        spectral_embedding(aff.copy(), 200)
    zero = aff.copy()
    zero[0, :] = zero[:, 0] = 0
    with pytest.raises(ValueError, match="zero affinity"):
        spectral_embedding(zero, 3)


def test_scores_of_a_planted_perfect_clustering():
    truth = np.repeat(np.arange(5), [50, 30, 10, 5, 5])
    renamed = (truth * 3 + 7) % 11  # the same partition under other names
    s = scores(renamed, truth)
    assert s["ari"] == pytest.approx(1.0) and s["nmi"] == pytest.approx(1.0) and s["purity"] == pytest.approx(1.0)
    shuffled = np.random.default_rng(0).permutation(truth)
    assert abs(scores(shuffled, truth)["ari"]) < 0.05
    merged = np.minimum(truth, 1)  # subtasks 1..4 in one cluster
    size, major, frac = purity(merged, truth)
    np.testing.assert_array_equal(size, [50, 50])
    np.testing.assert_array_equal(major, [0, 1])
    np.testing.assert_allclose(frac, [1.0, 30 / 50])


def test_rank_frequency_and_envelope():
    np.testing.assert_array_equal(rank_frequency(np.array([2, 2, 0, 1, 2, 0])), [3, 2, 1])
    env = envelope([np.array([5, 3]), np.array([4, 4, 2, 1])])
    np.testing.assert_array_equal(env, [5, 4, 2, 1])


def test_envelope_fit_recovers_a_power_law():
    sizes = np.round(5000 * np.arange(1, 101) ** -1.4).astype(int)
    fit = fit_envelope(sizes, min_size=10)
    assert fit.rank_min == 2 and sizes[fit.rank_max - 1] >= 10 and sizes[fit.rank_max] < 10
    assert fit.slope == pytest.approx(-1.4, abs=0.02)
    assert fit.ci_low <= -1.4 <= fit.ci_high
    assert fit.ci_high - fit.ci_low < 0.1
    short = fit_envelope(np.array([100, 50, 5, 1]), min_size=10)
    assert np.isnan(short.slope) and "no fit" in short.rule
