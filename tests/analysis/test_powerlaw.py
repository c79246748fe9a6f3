"""Power-law fits (toy_quanta.analysis.powerlaw) recover known exponents from noisy synthetic data, with honest intervals."""

import numpy as np
import pytest

from toy_quanta.analysis.powerlaw import fit_power_law, fit_range


@pytest.mark.parametrize("exponent", [0.3, 0.8, 1.5])
def test_recovers_a_known_exponent_with_noise_across_seeds(exponent):
    rng = np.random.default_rng(0)
    x = np.repeat(np.geomspace(10, 1000, 12), 3)  # 12 points, 3 seeds each
    y = 2.0 * x ** -exponent * np.exp(rng.normal(0, 0.1, x.size))
    fit = fit_power_law(x, y, x_range=(10, 1000), n_boot=500)
    assert abs(fit.exponent - exponent) < 0.05
    assert fit.ci_low < exponent < fit.ci_high  # the interval covers the truth ...
    assert fit.ci_high - fit.ci_low < 0.2  # ... and is informative
    assert fit.n_points == 36 and fit.rule == "given"
    np.testing.assert_allclose(fit.prefactor, 2.0, rtol=0.3)


def test_interval_widens_with_noise():
    rng = np.random.default_rng(1)
    x = np.repeat(np.geomspace(1, 100, 10), 2)
    base = x ** -0.5
    quiet = fit_power_law(x, base * np.exp(rng.normal(0, 0.01, x.size)), x_range=(1, 100), n_boot=300)
    noisy = fit_power_law(x, base * np.exp(rng.normal(0, 0.3, x.size)), x_range=(1, 100), n_boot=300)
    assert (noisy.ci_high - noisy.ci_low) > 5 * (quiet.ci_high - quiet.ci_low)


def test_fit_range_rule_drops_the_plateau_and_the_floor():
    x = np.geomspace(1, 1e4, 40)
    # plateau at 1 until x = 10, power law with exponent 0.7 to x = 1000, then a floor
    y = np.minimum(1.0, (x / 10) ** -0.7)
    y = np.maximum(y, (1000 / 10) ** -0.7)
    lo, hi, rule = fit_range(x, y)
    assert 10 < lo < 20 and 300 < hi < 1000  # off the plateau, short of the floor
    fit = fit_power_law(x, y, n_boot=200)
    assert abs(fit.exponent - 0.7) < 0.02
    assert fit.rule == rule
    # fitting everything instead would be biased: the rule matters
    assert abs(fit_power_law(x, y, x_range=(1, 1e4), n_boot=50).exponent - 0.7) > 0.2


def test_rejects_non_positive_values():
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 2, 3], [1, 0, 1])
