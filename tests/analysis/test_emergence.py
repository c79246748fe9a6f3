"""Emergence detection (toy_quanta.analysis.emergence) finds planted learning scales."""

import numpy as np

from toy_quanta.analysis.emergence import learned_at, order_correlation


def test_finds_planted_steps():
    scales = np.array([10, 20, 40, 80, 160, 320])
    planted = np.array([1, 2, 2, 4, 5])  # scale index at which each subtask drops
    loss = np.ones((len(scales), len(planted)))
    for t, s in enumerate(planted):
        loss[s:, t] = 0.01
    np.testing.assert_array_equal(learned_at(loss, scales, 0.1), scales[planted])
    assert order_correlation(learned_at(loss, scales, 0.1)) > 0.9


def test_a_dip_that_does_not_stay_is_not_learning_and_never_is_nan():
    scales = np.array([1, 2, 3, 4])
    loss = np.array([[0.05, 1.0], [1.0, 1.0], [0.05, 1.0], [0.05, 1.0]])
    out = learned_at(loss, scales, 0.1)
    assert out[0] == 3 and np.isnan(out[1])


def test_order_correlation_sign():
    assert order_correlation(np.array([5.0, 4.0, 3.0, 2.0, 1.0])) < -0.99
    assert np.isnan(order_correlation(np.array([1.0, np.nan, np.nan])))
