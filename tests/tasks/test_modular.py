"""task=modular through the engine (toy_quanta.tasks.modular + engine/train.py): ensembles, masks, summaries."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig
from toy_quanta.models.embed_mlp import EmbedMLPConfig
from toy_quanta.tasks.modular import ModularConfig
from toy_quanta.models.transformer import TransformerConfig
from toy_quanta.data import modular
from toy_quanta.analysis.milestones import grokking_summary, steps_to
from toy_quanta.engine.members import expand
from toy_quanta.engine.train import make_train
from toy_quanta.tasks.modular import Modular


def make_modular_train(cfg: Config):
    members = expand(cfg)
    return make_train(cfg, Modular().program(cfg, members), members)


def _cfg(model=None, full_batch=False, p=11, steps=40, op="add") -> Config:
    return Config(task=ModularConfig(p=p, op=op, train_fraction=0.5, full_batch=full_batch),
                  model=model or EmbedMLPConfig(d_embed=16, width=32),
                  optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=1.0, b1=0.9, b2=0.98, warmup_steps=5),
                  train=TrainConfig(steps=steps, batch_size=32, log_every=10, progress=False),
                  ensemble=EnsembleConfig(lists={"train_fraction": [0.3, 0.5, 0.7, 0.9]}))  # the members' fractions


def _hyper(rows):
    cols = list(zip(*rows))
    return {"seed": jnp.asarray(cols[0], jnp.int32), "task.train_fraction": jnp.asarray(cols[1], jnp.float32),
            "model.init_scale": jnp.asarray(cols[2], jnp.float32), "optim.lr": jnp.asarray(cols[3], jnp.float32),
            "optim.weight_decay": jnp.asarray(cols[4], jnp.float32), "optim.fixed_norm": jnp.zeros(len(rows), jnp.float32),
            "optim.eps": jnp.full(len(rows), 1e-8, jnp.float32), "model.output_scale": jnp.ones(len(rows), jnp.float32),
            "optim.grokfast": jnp.zeros(len(rows), jnp.int32), "optim.grokfast_alpha": jnp.zeros(len(rows), jnp.float32),
            "optim.grokfast_lambda": jnp.zeros(len(rows), jnp.float32)}


MEMBERS = [(0, 0.5, 1.0, 3e-3, 1.0), (1, 0.3, 2.0, 1e-3, 0.1), (2, 0.7, 0.5, 1e-2, 0.0)]


@pytest.mark.parametrize("full_batch", [pytest.param(False, marks=pytest.mark.slow), True])
def test_each_ensemble_member_equals_the_member_trained_alone(full_batch):
    cfg = _cfg(full_batch=full_batch)
    trainer = make_modular_train(cfg)
    rank = modular.split_rank(cfg.task.p ** 2, 0)
    run = jax.jit(jax.vmap(trainer.train))
    _, together = run(_hyper(MEMBERS), jnp.asarray(np.stack([rank] * len(MEMBERS))))
    for i, member in enumerate(MEMBERS):
        _, alone = run(_hyper([member]), jnp.asarray(rank[None]))
        for name in ("train_loss", "test_acc", "param_norm"):
            np.testing.assert_allclose(np.asarray(together[name])[i], np.asarray(alone[name])[0], rtol=2e-5, atol=1e-6)


def _one(member) -> dict:
    """One member's scalars, as trainer.init sees them inside vmap."""
    return jax.tree.map(lambda x: x[0], _hyper([member]))


def test_the_training_set_is_the_mask_of_the_split():
    cfg = _cfg()
    trainer = make_modular_train(cfg)
    n = cfg.task.p ** 2
    rank = jnp.asarray(modular.split_rank(n, 3))
    for fraction in (0.2, 0.5, 0.9):
        _, data = trainer.init(_one((0, fraction, 1.0, 1e-3, 1.0)), rank)
        data = data.task
        assert int(data.n_train) == modular.n_train(n, fraction) == int(np.sum(np.asarray(data.train_mask)))
        # order lists the training pairs first
        np.testing.assert_array_equal(np.sort(np.asarray(data.order)[: int(data.n_train)]),
                                      np.flatnonzero(np.asarray(data.train_mask)))


def test_init_scale_multiplies_the_initial_parameters():
    cfg = _cfg()
    trainer = make_modular_train(cfg)
    rank = jnp.asarray(modular.split_rank(cfg.task.p ** 2, 0))
    one = trainer.init(_one((0, 0.5, 1.0, 1e-3, 1.0)), rank)[0]
    three = trainer.init(_one((0, 0.5, 3.0, 1e-3, 1.0)), rank)[0]
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(three.params)):
        np.testing.assert_allclose(np.asarray(b), 3 * np.asarray(a), rtol=1e-6)


def test_a_transformer_trains_through_the_same_engine():
    cfg = _cfg(model=TransformerConfig(n_layers=1, d_model=32, n_heads=4, d_mlp=64, layer_norm=False), p=7,
               steps=300, full_batch=True)
    trainer = make_modular_train(cfg)
    rank = modular.split_rank(cfg.task.p ** 2, 0)
    _, logs = jax.jit(jax.vmap(trainer.train))(_hyper([(0, 0.9, 1.0, 1e-2, 0.0)]), jnp.asarray(rank[None]))
    assert float(np.asarray(logs["train_acc"])[0, -1]) == 1.0  # the training table is memorised


@pytest.mark.slow
def test_modular_addition_groks_with_weight_decay():
    """The grok_modadd setting, shortened: training accuracy first, validation much later."""
    cfg = _cfg(p=53, steps=2500, full_batch=True)
    cfg.model = EmbedMLPConfig(d_embed=64, width=128)
    cfg.train.log_every = 50
    trainer = make_modular_train(cfg)
    rank = modular.split_rank(cfg.task.p ** 2, 0)
    _, logs = jax.jit(jax.vmap(trainer.train))(_hyper([(0, 0.4, 1.0, 2e-3, 1.0)]), jnp.asarray(rank[None]))
    s = grokking_summary(trainer.log_steps, np.asarray(logs["train_acc"]).T, np.asarray(logs["test_acc"]).T)
    assert s["grokked"][0] and s["train_99"][0] < 400 and s["val_99"][0] > 4 * s["train_99"][0]


def test_steps_to_and_the_grokking_summary_on_planted_curves():
    steps = np.array([0, 10, 20, 40, 80, 160])
    train = np.array([[0.1, 0.5], [0.95, 0.6], [1.0, 0.7], [1.0, 0.8], [1.0, 0.85], [1.0, 0.89]])
    val = np.array([[0.0, 0.1], [0.1, 0.1], [0.2, 0.1], [0.5, 0.2], [0.92, 0.3], [0.995, 0.3]])
    np.testing.assert_array_equal(steps_to(train, steps, 0.9), [10, np.nan])
    s = grokking_summary(steps, train, val)
    assert s["train_99"][0] == 20 and s["val_90"][0] == 80 and s["val_99"][0] == 160 and s["gap_99"][0] == 140
    assert s["grokked"].tolist() == [True, False] and np.isnan(s["gap_99"][1])
