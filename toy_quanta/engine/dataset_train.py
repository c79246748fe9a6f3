"""The training engine for a fixed dataset (MNIST and teacher-student, Omnigrok): `make_dataset_train(cfg, data)`
returns pure functions of one member, as `make_train` does for sparse parity.

    trainer = make_dataset_train(cfg, data)
    state, consts = jax.vmap(trainer.init)(hyper, member_index_M)
    state, logs = jax.vmap(trainer.chunk, (0, 0, None))(state, consts, n_steps)

The training and test sets live on the device, shared by every member; members differ in seed
(initialisation and minibatches), init scale, learning rate, weight decay and fixed norm.
Classification (MNIST) counts argmax hits; regression (teacher-student) counts the samples whose
outputs are all within task.tolerance of their targets.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from toy_quanta.config import Config
from toy_quanta.data.mnist import N_CLASSES, MNISTData
from toy_quanta.data.teacher_student import RegressionData
from toy_quanta.engine.members import DatasetHyper
from toy_quanta.engine.optim import make_optimizer
from toy_quanta.engine.train import StepState, fix_norm, guarded_chunks, has_fixed_norm, log_steps, start_state
from toy_quanta.models.dense_mlp import DenseMLP


class DatasetConsts(NamedTuple):
    hyper: DatasetHyper
    data_key: jax.Array


class DatasetTrainer(NamedTuple):
    init: Callable[[DatasetHyper, jax.Array], tuple[StepState, DatasetConsts]]
    chunk: Callable[[StepState, DatasetConsts, jax.Array], tuple[StepState, dict]]
    train: Callable[[DatasetHyper, jax.Array], tuple[StepState, dict]]
    log_steps: np.ndarray
    graphdef: Any


def make_dataset_model(cfg: Config, key: jax.Array, d_in: int) -> nnx.Module:
    """The configured model with init_scale 1 (the trainer scales per member)."""
    m = cfg.model
    n_out = cfg.task.d_out if cfg.task.name == "teacher_student" else N_CLASSES
    return DenseMLP(d_in=d_in, n_out=n_out, width=m.width, depth=m.depth, activation=m.activation, init_scale=1.0,
                    rngs=nnx.Rngs(key))


def per_example_loss(kind: str, out_BxC: jax.Array, y_B: jax.Array) -> jax.Array:
    """(B,) mse: mean over classes of (output - one-hot)^2 (PyTorch's MSELoss, as Omnigrok used
    it, averages over batch and classes); cross_entropy: softmax cross-entropy in nats;
    regression: mean over outputs of (output - target)^2, y_BxC real targets."""
    if kind == "regression":
        return jnp.mean(jnp.square(out_BxC - y_B), axis=-1)
    if kind == "mse":
        return jnp.mean(jnp.square(out_BxC - jax.nn.one_hot(y_B, out_BxC.shape[-1])), axis=-1)
    return optax.softmax_cross_entropy_with_integer_labels(out_BxC, y_B)


def make_dataset_train(cfg: Config, data: MNISTData | RegressionData) -> DatasetTrainer:
    t, tr = cfg.task, cfg.train
    train_x, train_y, test_x, test_y = (jnp.asarray(x) for x in data[:4])
    n_train, d_in = train_x.shape
    regression = t.name == "teacher_student"
    kind = "regression" if regression else t.loss
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: make_dataset_model(cfg, jax.random.key(0), d_in)))

    def outputs(params, x_BxD):
        return nnx.merge(graphdef, params)(x_BxD)

    def optimizer(hyper: DatasetHyper):
        return make_optimizer(cfg.optim, hyper.lr, hyper.weight_decay, tr.steps)

    def init(hyper: DatasetHyper, member: jax.Array) -> tuple[StepState, DatasetConsts]:
        key = jax.random.key(hyper.seed)
        params = nnx.split(make_dataset_model(cfg, jax.random.fold_in(key, 0), d_in))[1]
        params = fix_norm(jax.tree.map(lambda x: x * hyper.init_scale, params), hyper.fixed_norm)
        consts = DatasetConsts(hyper=hyper, data_key=jax.random.fold_in(key, 1))
        return start_state(params, optimizer(hyper).init(params)), consts

    def batch_loss(params, consts: DatasetConsts, step: jax.Array):
        if t.full_batch:
            x_BxD, y_B = train_x, train_y
        else:
            # Drawn with replacement: one randint per step, no host-side epochs.
            idx_B = jax.random.randint(jax.random.fold_in(consts.data_key, step), (tr.batch_size,), 0, n_train)
            x_BxD, y_B = train_x[idx_B], train_y[idx_B]
        return per_example_loss(kind, outputs(params, x_BxD), y_B).mean()

    def loss_acc(params, x_NxD, y_N):
        out_NxC = outputs(params, x_NxD)
        if regression:
            correct_N = jnp.all(jnp.abs(out_NxC - y_N) <= t.tolerance, axis=-1)
        else:
            correct_N = jnp.argmax(out_NxC, -1) == y_N
        return per_example_loss(kind, out_NxC, y_N).mean(), jnp.mean(correct_N)

    def evaluate(state: StepState, consts: DatasetConsts) -> dict[str, jax.Array]:
        train_loss, train_acc = loss_acc(state.params, train_x, train_y)
        test_loss, test_acc = loss_acc(state.params, test_x, test_y)
        return {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
                "param_norm": optax.tree.norm(state.params), "alive": state.alive.astype(jnp.float32)}

    steps_at = log_steps(tr.steps, tr.log_every, tr.log_count)
    chunk, train = guarded_chunks(init, batch_loss, optimizer, evaluate, steps_at, has_fixed_norm(cfg))

    return DatasetTrainer(init, chunk, train, steps_at, graphdef)
