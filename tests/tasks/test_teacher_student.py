"""task=teacher_student through the engine (toy_quanta.tasks.teacher_student): the trainer sees the
teacher's data whatever the students' seed, and its step-0 metrics (squared error, all-outputs-within-
tolerance accuracy) equal NumPy's from the initial parameters."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig
from toy_quanta.data import teacher_student as ts
from toy_quanta.engine.loop import make_trainer, trainer_inputs
from toy_quanta.engine.members import expand
from toy_quanta.models.dense_mlp import DenseMLPConfig
from toy_quanta.tasks.teacher_student import TeacherStudentConfig

TASK = TeacherStudentConfig(d_in=5, d_out=2, teacher_width=7, teacher_depth=2, teacher_activation="tanh",
                            teacher_seed=3, n_train=40, n_test=60, tolerance=0.6)


def _numpy_mlp(layers, x):
    """A ReLU MLP by hand: ReLU after every layer but the last."""
    h = np.asarray(x, np.float64)
    for k, (w, b) in enumerate(layers):
        h = h @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        if k < len(layers) - 1:
            h = np.where(h > 0, h, 0.0)
    return h


def _cfg(seed: int = 0) -> Config:
    return Config(task=TASK, model=DenseMLPConfig(width=8, depth=2, activation="relu"),
                  optim=OptimConfig(name="adamw", lr=1e-2, weight_decay=0.0),
                  train=TrainConfig(steps=3, log_every=3, progress=False),
                  ensemble=EnsembleConfig(init_scale=[0.5, 3.0]), seed=seed)


def _numpy_student(pure: dict, x) -> np.ndarray:
    layers = [(pure["hidden"][k]["kernel"], pure["hidden"][k]["bias"]) for k in sorted(pure["hidden"])]
    layers.append((pure["out"]["kernel"], pure["out"]["bias"]))
    return _numpy_mlp(layers, x)


def test_step_zero_metrics_equal_numpy_from_the_initial_parameters():
    """Loss: mean over samples and outputs of (output - target)^2; accuracy: the fraction of samples
    whose outputs are all within task.tolerance of their targets."""
    cfg = _cfg(seed=9)  # the students' seed: not the teacher's
    members = expand(cfg)
    assert [m["seed"] for m in members] == [9, 9]
    trainer = make_trainer(cfg, members)
    assert list(trainer.log_steps) == [0, 3]
    hyper, index = trainer_inputs(cfg, trainer, members)
    # as engine.loop.fit logs step 0: the initial state, then a chunk of 0 steps
    state, consts = jax.jit(jax.vmap(trainer.init))(hyper, index)
    _, logs = jax.jit(jax.vmap(trainer.chunk, (0, 0, None)))(state, consts, np.int32(0))
    data = ts.make(TASK)  # the trainer must see these very data, whatever the students' seed
    for m in range(len(members)):
        pure = jax.tree.map(lambda a: np.asarray(a[m]), nnx.to_pure_dict(state.params))
        for split, x, y in (("train", data.train_x_NxI, data.train_y_NxO), ("test", data.test_x_NxI, data.test_y_NxO)):
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
