"""Teacher-student regression data (toy_quanta.data.teacher_student): deterministic data from
teacher_seed alone, targets standardised on the training set, the teacher's forward pass against NumPy."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from toy_quanta.data import teacher_student as ts
from toy_quanta.tasks.teacher_student import TeacherStudentConfig


TASK = TeacherStudentConfig(d_in=5, d_out=2, teacher_width=7, teacher_depth=2, teacher_activation="tanh",
                            teacher_seed=3, n_train=40, n_test=60, tolerance=0.6)

_NP_ACT = {
    "relu": lambda x: np.where(x > 0, x, 0.0),
    "tanh": lambda x: (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x)),
    "gelu": np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "identity": lambda x: x,
}


def _numpy_mlp(layers, activation: str, x):
    """An MLP by hand: activation after every layer but the last."""
    h = np.asarray(x, np.float64)
    for k, (w, b) in enumerate(layers):
        h = h @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        if k < len(layers) - 1:
            h = _NP_ACT[activation](h)
    return h


def test_the_data_are_deterministic_in_the_teacher_seed():
    a, b = ts.make(TASK), ts.make(dataclasses.replace(TASK))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert [x.shape for x in a] == [(40, 5), (40, 2), (60, 5), (60, 2)]
    assert all(x.dtype == np.float32 for x in a)
    other = ts.make(dataclasses.replace(TASK, teacher_seed=4))
    assert not np.allclose(other.train_x_NxI, a.train_x_NxI) and not np.allclose(other.train_y_NxO, a.train_y_NxO)
    # train and test inputs are different samples
    assert not np.isin(a.test_x_NxI[:, 0], a.train_x_NxI[:, 0]).any()


def test_targets_are_standardised_on_the_training_set():
    data = ts.make(TASK)
    np.testing.assert_allclose(data.train_y_NxO.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.train_y_NxO.std(0), 1.0, rtol=1e-5)
    # the test targets use the training set's mean and std, so they are not standardised themselves
    assert np.abs(data.test_y_NxO.mean(0)).max() > 1e-3


@pytest.mark.parametrize("activation", sorted(_NP_ACT))
def test_the_teacher_forward_pass_against_numpy(activation):
    rng = np.random.default_rng(7)
    layers = ts.teacher(4, 3, 6, 2, rng)
    assert [w.shape for w, _ in layers] == [(4, 6), (6, 6), (6, 3)]
    assert [b.shape for _, b in layers] == [(6,), (6,), (3,)]
    x = rng.normal(size=(9, 4)) * 2
    np.testing.assert_allclose(ts.forward(layers, activation, x), _numpy_mlp(layers, activation, x), rtol=1e-10,
                               atol=1e-12)
    # depth 0: a linear teacher
    linear = ts.teacher(4, 3, 6, 0, rng)
    assert len(linear) == 1
    np.testing.assert_allclose(ts.forward(linear, activation, x), x @ linear[0][0] + linear[0][1], rtol=1e-12)


def test_the_targets_are_the_standardised_teacher_outputs():
    """Re-draw the teacher and inputs as the module documents (one NumPy stream from teacher_seed:
    the teacher's layers, then the inputs), run the teacher by hand and standardise by the
    training rows' mean and std."""
    data = ts.make(TASK)
    rng = np.random.default_rng([TASK.teacher_seed, 0x7EAC])
    layers = ts.teacher(TASK.d_in, TASK.d_out, TASK.teacher_width, TASK.teacher_depth, rng)
    x = rng.normal(size=(TASK.n_train + TASK.n_test, TASK.d_in))
    np.testing.assert_allclose(data.train_x_NxI, x[: TASK.n_train], rtol=1e-6)
    np.testing.assert_allclose(data.test_x_NxI, x[TASK.n_train:], rtol=1e-6)
    raw = _numpy_mlp(layers, TASK.teacher_activation, x)
    mean, std = raw[: TASK.n_train].mean(0), raw[: TASK.n_train].std(0)
    np.testing.assert_allclose(data.train_y_NxO, (raw[: TASK.n_train] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.test_y_NxO, (raw[TASK.n_train:] - mean) / std, rtol=1e-5, atol=1e-5)
