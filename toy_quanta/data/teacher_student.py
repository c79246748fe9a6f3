"""Teacher-student regression (Omnigrok's cheapest non-algorithmic grokking demo): a random
teacher MLP labels Gaussian inputs; a student learns it from a few hundred samples.

Everything is drawn on the host with NumPy from `teacher_seed`, so the data do not depend on
the students' seeds: every member of an ensemble sees the same teacher and the same samples.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # here: importing scipy.special costs every job's start-up 0.2 s

    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


# The teacher's activations, in NumPy (the teacher lives on the host)
_ACT = {"relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh, "gelu": _gelu, "silu": lambda x: x / (1 + np.exp(-x)),
        "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "identity": lambda x: x,
        "square": np.square}  # square: a polynomial target (Kumar et al.'s lazy-to-rich toy); a teacher only


class RegressionData(NamedTuple):
    """Train and test inputs (float32) and targets (float32, standardised on the training set)."""

    train_x_NxI: np.ndarray
    train_y_NxO: np.ndarray
    test_x_NxI: np.ndarray
    test_y_NxO: np.ndarray


def teacher(d_in: int, d_out: int, width: int, depth: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Layers (W, b) of a random MLP: weights N(0, 1/fan_in), so pre-activations stay O(1);
    biases N(0, 0.1^2)."""
    dims = [d_in] + [width] * depth + [d_out]
    return [(rng.normal(0.0, 1.0 / np.sqrt(i), (i, o)), rng.normal(0.0, 0.1, o)) for i, o in zip(dims[:-1], dims[1:])]


def forward(layers: list[tuple[np.ndarray, np.ndarray]], activation: str, x_NxI: np.ndarray) -> np.ndarray:
    h = x_NxI
    for w, b in layers[:-1]:
        h = _ACT[activation](h @ w + b)
    w, b = layers[-1]
    return h @ w + b


def make(task: Any) -> RegressionData:
    """The data of a TeacherStudentConfig: n_train and n_test samples from one teacher."""
    rng = np.random.default_rng([task.teacher_seed, 0x7EAC])
    layers = teacher(task.d_in, task.d_out, task.teacher_width, task.teacher_depth, rng)
    x = rng.normal(size=(task.n_train + task.n_test, task.d_in))
    y = forward(layers, task.teacher_activation, x)
    mean, std = y[: task.n_train].mean(0), y[: task.n_train].std(0)
    y = (y - mean) / np.where(std > 0, std, 1.0)
    x, y = x.astype(np.float32), y.astype(np.float32)
    return RegressionData(x[: task.n_train], y[: task.n_train], x[task.n_train:], y[task.n_train:])
