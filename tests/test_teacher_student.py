"""Teacher-student regression, task=teacher_student (data/teacher_student.py, the dataset trainer's
"regression" kind): deterministic data from teacher_seed alone, targets standardised on the
training set, the teacher's forward pass and the trainer's step-0 metrics against NumPy."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest
from flax import nnx

from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig
from toy_quanta.models.dense_mlp import DenseMLPConfig
from toy_quanta.tasks.teacher_student import TeacherStudentConfig
from toy_quanta.data import teacher_student as ts
from toy_quanta.engine.loop import make_trainer, trainer_inputs
from toy_quanta.engine.members import expand

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
    assert not np.allclose(other.train_x_NxD, a.train_x_NxD) and not np.allclose(other.train_y_NxO, a.train_y_NxO)
    # train and test inputs are different samples
    assert not np.isin(a.test_x_MxD[:, 0], a.train_x_NxD[:, 0]).any()


def test_targets_are_standardised_on_the_training_set():
    data = ts.make(TASK)
    np.testing.assert_allclose(data.train_y_NxO.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.train_y_NxO.std(0), 1.0, rtol=1e-5)
    # the test targets use the training set's mean and std, so they are not standardised themselves
    assert np.abs(data.test_y_MxO.mean(0)).max() > 1e-3


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
    np.testing.assert_allclose(data.train_x_NxD, x[: TASK.n_train], rtol=1e-6)
    np.testing.assert_allclose(data.test_x_MxD, x[TASK.n_train:], rtol=1e-6)
    raw = _numpy_mlp(layers, TASK.teacher_activation, x)
    mean, std = raw[: TASK.n_train].mean(0), raw[: TASK.n_train].std(0)
    np.testing.assert_allclose(data.train_y_NxO, (raw[: TASK.n_train] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.test_y_MxO, (raw[TASK.n_train:] - mean) / std, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# The trainer

def _cfg(seed: int = 0) -> Config:
    return Config(task=TASK, model=DenseMLPConfig(width=8, depth=2, activation="relu"),
                  optim=OptimConfig(name="adamw", lr=1e-2, weight_decay=0.0),
                  train=TrainConfig(steps=3, log_every=3, progress=False),
                  ensemble=EnsembleConfig(init_scale=[0.5, 3.0]), seed=seed)


def _numpy_student(pure: dict, x) -> np.ndarray:
    layers = [(pure["hidden"][k]["kernel"], pure["hidden"][k]["bias"]) for k in sorted(pure["hidden"])]
    layers.append((pure["out"]["kernel"], pure["out"]["bias"]))
    return _numpy_mlp(layers, "relu", x)


def test_step_zero_metrics_equal_numpy_from_the_initial_parameters():
    """Loss: mean over samples and outputs of (output - target)^2; accuracy: the fraction of samples
    whose outputs are all within task.tolerance of their targets."""
    cfg = _cfg(seed=9)  # the students' seed: not the teacher's
    members = expand(cfg)
    assert [m["seed"] for m in members] == [9, 9]
    cfg, trainer = make_trainer(cfg, members)
    assert list(trainer.log_steps) == [0, 3]
    hyper, index = trainer_inputs(cfg, trainer, members)
    # as engine.loop.fit logs step 0: the initial state, then a chunk of 0 steps
    state, consts = jax.jit(jax.vmap(trainer.init))(hyper, index)
    _, logs = jax.jit(jax.vmap(trainer.chunk, (0, 0, None)))(state, consts, np.int32(0))
    data = ts.make(TASK)  # the trainer must see these very data, whatever the students' seed
    for m in range(len(members)):
        pure = jax.tree.map(lambda a: np.asarray(a[m]), nnx.to_pure_dict(state.params))
        for split, x, y in (("train", data.train_x_NxD, data.train_y_NxO), ("test", data.test_x_MxD, data.test_y_MxO)):
            out = _numpy_student(pure, x)
            loss = np.mean((out - y) ** 2)
            within = np.abs(out - y) <= TASK.tolerance
            acc = np.mean(within.all(axis=1))
            assert float(logs[f"{split}_loss"][m]) == pytest.approx(loss, rel=1e-4), (split, m)
            assert float(logs[f"{split}_acc"][m]) == pytest.approx(acc, abs=1e-6), (split, m)
            if split == "train" and m == 0:
                # "every output" matters here: requiring one output only would count more samples
                assert 0 < acc < np.mean(within.any(axis=1))
    # the two members differ only in init scale: at step 0 their outputs differ
    assert logs["train_loss"][0] != logs["train_loss"][1]
    assert np.all(np.asarray(logs["alive"]) == 1)
