"""Fourier progress measures (toy_quanta.analysis.fourier): norms per frequency against explicit cos/sin projections, planted
key frequencies found, Gini, restricted and excluded logits."""

from __future__ import annotations

import numpy as np
import optax
import pytest

from toy_quanta.analysis import fourier

NANDA_KEYS = [14, 35, 41, 42, 52]


def planted(p: int, keys: list[int], d: int, noise: float, seed: int = 0) -> np.ndarray:
    """Residue embeddings made of cos/sin(2 pi k a / p) for the keys, mapped into d dimensions."""
    rng = np.random.default_rng(seed)
    a = np.arange(p)
    waves = np.concatenate([np.stack([np.cos(2 * np.pi * k * a / p), np.sin(2 * np.pi * k * a / p)], 1) for k in keys], 1)
    return waves @ rng.normal(size=(2 * len(keys), d)) + noise * rng.normal(size=(p, d))


@pytest.mark.parametrize("p", [113, 12])
def test_frequency_norms_are_projections_on_the_orthonormal_cos_sin_basis(p):
    embed = np.random.default_rng(1).normal(size=(p, 7))
    a = np.arange(p)
    expected = []
    for k in range(1, p // 2 + 1):
        basis = [np.cos(2 * np.pi * k * a / p), np.sin(2 * np.pi * k * a / p)]
        basis = [v / np.linalg.norm(v) for v in basis if np.linalg.norm(v) > 1e-9]  # an even p's Nyquist sine is 0
        expected.append(np.sqrt(sum(np.sum((v @ embed) ** 2) for v in basis)))
    norms = fourier.frequency_norms(embed)
    np.testing.assert_allclose(norms, expected, rtol=1e-10)
    # Parseval: the frequencies and the constant hold the whole squared norm
    assert np.sum(norms**2) + p * np.sum(embed.mean(0) ** 2) == pytest.approx(np.sum(embed**2), rel=1e-10)


def test_planted_key_frequencies_are_found_and_a_random_embedding_has_none():
    embed = planted(113, NANDA_KEYS, d=128, noise=0.1)
    keys = fourier.key_frequencies(fourier.frequency_norms(embed))
    assert sorted(keys) == NANDA_KEYS
    random_norms = fourier.frequency_norms(np.random.default_rng(2).normal(size=(113, 128)))
    assert len(fourier.key_frequencies(random_norms)) == 0
    assert fourier.gini(fourier.frequency_norms(embed)) > 0.7 > 0.2 > fourier.gini(random_norms)


def test_key_frequencies_come_largest_first():
    embed = planted(53, [3, 20], d=32, noise=0.01)
    embed += 3 * planted(53, [20], d=32, noise=0.0, seed=5)
    assert list(fourier.key_frequencies(fourier.frequency_norms(embed))) == [20, 3]


def test_gini_against_the_mean_absolute_difference():
    x = np.random.default_rng(3).exponential(size=40)
    mad = np.abs(x[:, None] - x[None, :]).mean()
    assert fourier.gini(x) == pytest.approx(mad / (2 * x.mean()), rel=1e-12)
    assert fourier.gini(np.ones(10)) == 0.0
    assert fourier.gini(np.eye(10)[0]) == pytest.approx(0.9)


def _grid(p):
    a, b = np.divmod(np.arange(p * p), p)
    return a, b, (a + b) % p


def test_logits_of_key_directions_are_kept_by_restriction_and_removed_by_exclusion():
    p, keys = 13, np.array([2, 5])
    a, b, s = _grid(p)
    rng = np.random.default_rng(4)
    const_C = rng.normal(size=p)
    key_part = fourier.key_directions(s, p, keys) @ rng.normal(size=(4, p))
    other_part = fourier.key_directions(s, p, np.array([1, 6])) @ rng.normal(size=(4, p))
    restricted, excluded = fourier.restricted_excluded(const_C + key_part + other_part, s, p, keys)
    np.testing.assert_allclose(restricted, const_C + key_part, atol=1e-9)
    np.testing.assert_allclose(excluded, const_C + other_part, atol=1e-9)


def test_a_mechanism_of_key_frequencies_has_low_restricted_and_high_excluded_loss():
    """The logits of Nanda's algorithm, sum_k cos(w_k (a + b - c)): restricting them to the keys
    keeps the answer; excluding the keys leaves chance."""
    p, keys = 31, np.array([4, 9, 11])
    a, b, c = _grid(p)
    out = np.arange(p)
    logits = 8 * sum(np.cos(2 * np.pi * k * ((a + b)[:, None] - out[None, :]) / p) for k in keys)
    restricted, excluded = fourier.restricted_excluded(logits, c, p, keys)
    assert fourier.cross_entropy(logits, c).mean() < 0.01
    assert fourier.cross_entropy(restricted, c).mean() == pytest.approx(fourier.cross_entropy(logits, c).mean(), abs=1e-6)
    assert fourier.cross_entropy(excluded, c).mean() == pytest.approx(np.log(p), rel=1e-6)


def test_cross_entropy_matches_optax():
    logits = np.random.default_rng(5).normal(size=(20, 7)) * 30
    labels = np.arange(20) % 7
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(fourier.cross_entropy(logits, labels), expected, rtol=1e-5, atol=1e-4)  # optax in float32
