"""The quantization model's predictions (toy_quanta.analysis.quanta_theory) against direct computation."""

import math

import numpy as np

from toy_quanta.analysis.quanta_theory import finite_size_loss, predicted_exponents, subtasks_learned_for_data


def test_predicted_exponents():
    e = predicted_exponents(0.4)
    assert e["N"] == 0.4 and math.isclose(e["D"], 0.4 / 1.4) and e["S"] == e["D"]


def test_finite_size_loss_equals_a_direct_sum():
    n_tasks, alpha = 50, 0.4
    p = np.array([k ** -(alpha + 1) for k in range(1, n_tasks + 1)])
    p /= p.sum()
    for n in (0, 1, 7, 49, 50):
        direct = math.log(2) * sum(p[k] for k in range(n, n_tasks))  # subtasks n+1..n_tasks unlearned
        np.testing.assert_allclose(finite_size_loss(n, n_tasks, alpha), direct, rtol=1e-12, atol=1e-15)
    assert finite_size_loss(0, n_tasks, alpha) == math.log(2)  # nothing learned: 1 bit
    np.testing.assert_allclose(finite_size_loss(np.array([2, 3]), n_tasks, alpha, unlearned_loss=1.0),
                               [p[2:].sum(), p[3:].sum()])


def test_finite_size_loss_approaches_n_to_the_minus_alpha():
    """Far from the end of the list, L(n) falls as n^-alpha (the infinite-tail law)."""
    n = np.array([100, 1000])
    loss = finite_size_loss(n, 10**6, 0.5)
    slope = np.log(loss[1] / loss[0]) / np.log(10)
    assert abs(slope + 0.5) < 0.02


def test_subtasks_learned_for_data_scales_as_d_to_one_over_alpha_plus_one():
    D = np.array([1e5, 1e7])
    n = subtasks_learned_for_data(D, 0.4, 10**6, tau=50)
    exponent = np.log(n[1] / n[0]) / np.log(100)
    assert abs(exponent - 1 / 1.4) < 0.02
