"""task=mnist through the engine (toy_quanta.tasks.mnist on a synthetic dataset, engine/train.py): losses against NumPy, an ensemble member against the member
trained alone, the init scale in the weight norm, full batch."""

from __future__ import annotations

from dataclasses import replace

import jax
import numpy as np
import pytest

from conftest import member
from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig
from toy_quanta.models.dense_mlp import DenseMLPConfig
from toy_quanta.tasks.mnist import MNISTConfig
from toy_quanta.data.mnist import MNISTData
from toy_quanta.engine.members import expand, stack
from toy_quanta.engine.train import make_train
from toy_quanta.tasks.mnist import MNIST, per_example_loss


class Synthetic(MNIST):
    """MNIST's task on data made in the test."""

    def __init__(self, data: MNISTData):
        self.data = data

    def load(self, cfg):
        return self.data


def make_dataset_train(cfg, data):
    members = expand(cfg)
    return make_train(cfg, Synthetic(data).program(cfg, members), members)


def _data(n_train=64, n_test=48, d=20, seed=0) -> MNISTData:
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(d, 10))
    x = rng.uniform(size=(n_train + n_test, d)).astype(np.float32)
    y = np.argmax(x @ teacher, axis=1).astype(np.int32)
    return MNISTData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], source="synthetic", image_shape=(4, 5))


def _cfg(**train) -> Config:
    return Config(task=MNISTConfig(), model=DenseMLPConfig(width=16, depth=2),
                  optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=0.01),
                  train=TrainConfig(**{"steps": 60, "batch_size": 16, "log_every": 20, "progress": False, **train}),
                  ensemble=EnsembleConfig())


def _members(*scales):
    return [{**member(init_scale=s, lr=3e-3, weight_decay=0.01), "task.alpha": None} for s in scales]


def _run(cfg, members, data):
    trainer = make_dataset_train(cfg, data)
    return jax.jit(jax.vmap(trainer.train))(stack(members, "mnist"), np.arange(len(members), dtype=np.int32))


def test_losses_against_numpy():
    rng = np.random.default_rng(1)
    out, y = rng.normal(size=(7, 10)).astype(np.float32), rng.integers(0, 10, 7)
    onehot = np.eye(10)[y]
    np.testing.assert_allclose(per_example_loss("mse", out, y), ((out - onehot) ** 2).mean(1), rtol=1e-6)
    log_softmax = out - np.log(np.exp(out).sum(1, keepdims=True))
    np.testing.assert_allclose(per_example_loss("cross_entropy", out, y), -log_softmax[np.arange(7), y], rtol=1e-5)


def test_an_ensemble_member_equals_the_member_trained_alone():
    data = _data()
    _, logs_both = _run(_cfg(), _members(1.0, 8.0), data)
    _, logs_alone = _run(_cfg(), _members(8.0), data)
    for key in ("train_loss", "test_acc", "param_norm"):
        np.testing.assert_allclose(logs_both[key][1], logs_alone[key][0], rtol=2e-5, err_msg=key)


def test_init_scale_multiplies_the_initial_norm_and_training_fits():
    _, logs = _run(_cfg(steps=300, log_every=300), _members(1.0, 8.0), _data())
    assert logs["param_norm"][1, 0] / logs["param_norm"][0, 0] == pytest.approx(8.0, rel=1e-6)  # at step 0
    assert logs["train_acc"][0, -1] >= 0.8 and logs["train_loss"][0, -1] < 0.5 * logs["train_loss"][0, 0]


def test_full_batch_ignores_the_batch_size():
    """Full batch: every step uses the whole training set, so train.batch_size changes nothing."""
    cfg = _cfg(steps=20, log_every=10)
    cfg = replace(cfg, task=replace(cfg.task, full_batch=True))
    data = _data()
    _, a = _run(cfg, _members(1.0), data)
    _, b = _run(replace(cfg, train=replace(cfg.train, batch_size=3)), _members(1.0), data)
    np.testing.assert_array_equal(a["train_loss"], b["train_loss"])
    assert a["train_loss"][0, -1] < a["train_loss"][0, 0]
