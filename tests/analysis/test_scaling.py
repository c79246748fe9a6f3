"""Scaling analyses (toy_quanta.analysis.scaling) on synthetic quanta-model data with known answers."""

import numpy as np
import pytest

from toy_quanta.analysis.scaling import ScalePoints, agreement, analyse
from toy_quanta.analysis.quanta_theory import finite_size_loss
from toy_quanta.data.sparse_parity import LN2


def quanta_model_points(quantity: str, alpha: float, n_tasks: int = 3000, seeds: int = 3) -> ScalePoints:
    """A planted quantization model: subtask k (1-based) is learned from scale x_k on, with
    x_k ∝ k for N (fixed parameters per quantum) and x_k ∝ k^(alpha+1) for D; learned subtasks
    have loss 0, the others 1 bit; a little noise in each seed's loss."""
    rng = np.random.default_rng(0)
    k = np.arange(1, n_tasks + 1)
    onset = 100.0 * (k if quantity == "N" else k ** (alpha + 1.0))
    xs = np.geomspace(onset[1], onset[300], 14)
    x, loss, sub, seed = [], [], [], []
    for s in range(seeds):
        for v in xs:
            sub_T = np.where(v >= onset, 1e-4, LN2)
            x.append(v), sub.append(sub_T), seed.append(s)
            loss.append(finite_size_loss((v >= onset).sum(), n_tasks, alpha) * np.exp(rng.normal(0, 0.02)))
    return ScalePoints(quantity, alpha, n_tasks, np.array(x), np.array(loss), np.stack(sub), np.array(seed), "planted")


@pytest.mark.parametrize("quantity", ["N", "D"])
def test_recovers_the_planted_exponents(quantity):
    """Loss exponent alpha (N) or alpha/(alpha+1) (D), n_learned growth 1 or 1/(alpha+1), learning in
    exact frequency order, and the finite-size curve equal to the planted loss."""
    alpha = 0.5
    a = analyse(quanta_model_points(quantity, alpha), n_boot=300)
    expected = alpha if quantity == "N" else alpha / (alpha + 1)
    assert a.predicted == pytest.approx(expected)
    # The fit equals the slope of the noise-free planted curve over the chosen range (a finite list
    # of 3000 subtasks bends the law a little), which lies near the infinite-tail value.
    p = a.points
    inside = (a.xs >= a.fit.x_min) & (a.xs <= a.fit.x_max)
    n_x = np.array([(v >= 100.0 * (np.arange(1, p.n_tasks + 1) ** (1 if quantity == "N" else alpha + 1))).sum() for v in a.xs])
    exact = -np.polyfit(np.log(a.xs[inside]), np.log(finite_size_loss(n_x, p.n_tasks, alpha)[inside]), 1)[0]
    assert abs(a.fit.exponent - exact) < 0.02, (a.fit, exact)
    assert abs(a.fit.exponent - expected) < 0.1, a.fit
    growth, lo, hi = a.growth
    assert abs(growth - a.growth_predicted) < 0.05 and lo <= growth <= hi
    assert a.spearman > 0.95  # exact order; below 1 only through ties between subtasks learned at one scale
    np.testing.assert_allclose(a.finite_size, a.mean_loss, rtol=0.05)
    assert np.all(np.diff(a.n_learned) >= 0)


def test_learned_scale_matches_planted_onsets_and_heatmap_is_in_bits():
    a = analyse(quanta_model_points("N", 0.4, n_tasks=400), n_boot=100)
    T = a.subtask_bits_TxG.shape[0]
    assert T == 400 and a.subtask_bits_TxG.max() == pytest.approx(1.0)
    learned = np.isfinite(a.learned_scale)
    onsets = 100.0 * np.arange(1, T + 1)
    # each learned subtask is first seen learned at the first sampled scale at or past its onset
    for t in np.flatnonzero(learned):
        assert a.learned_scale[t] >= onsets[t]
        assert not np.any((a.xs >= onsets[t]) & (a.xs < a.learned_scale[t]))


def test_agreement_words():
    assert agreement(0.4, 0.3, 0.5, 0.45).startswith("agrees")
    assert agreement(0.6, 0.55, 0.65, 0.4) == "disagrees: measured above the prediction by 0.2"
    assert "below" in agreement(0.2, 0.1, 0.3, 0.4)
