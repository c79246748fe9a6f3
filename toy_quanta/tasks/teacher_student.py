"""Regression on a random teacher MLP (Omnigrok's cheapest non-algorithmic demo)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from toy_quanta import checks
from toy_quanta.data import teacher_student
from toy_quanta.registry import register_task
from toy_quanta.tasks.mnist import DatasetTask

TEACHER_ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "sigmoid", "identity", "square")


@dataclass
class TeacherStudentConfig:
    """Regression on a random teacher MLP (Omnigrok's cheapest non-algorithmic demo): inputs
    x ~ N(0, I_d_in), targets the teacher's outputs, standardised to mean 0 and variance 1 over
    the training set. A prediction counts as correct when every output is within `tolerance`
    of its target (so accuracy thresholds and the phase rule apply to regression)."""

    name: str = "teacher_student"
    d_in: int = 10
    d_out: int = 1
    teacher_width: int = 20
    teacher_depth: int = 1
    teacher_activation: str = "tanh"
    teacher_seed: int = 0  # the teacher and the data (separate from the students' seeds)
    n_train: int = 100
    n_test: int = 2000
    tolerance: float = 0.5  # absolute, in units of the targets' standard deviation
    full_batch: bool = True  # every step on the whole training set; else train.batch_size samples drawn from it
    # > 0: log the NTK's alignment with the targets on this many training samples (Kumar et al.)
    ntk_samples: int = 0


class TeacherStudent(DatasetTask):
    name = "teacher_student"
    config = TeacherStudentConfig
    headline = ("steps_to_train_100", "steps_to_val_60", "steps_to_val_80", "test_loss", "test_acc", "param_norm")

    def validate(self, cfg: Any) -> None:
        for key in ("task.d_in", "task.d_out", "task.teacher_width", "task.n_train", "task.n_test"):
            checks.positive_int(cfg, key)
        checks.nonneg_int(cfg, "task.teacher_depth")
        checks.choice(cfg, "task.teacher_activation", TEACHER_ACTIVATIONS)
        checks.nonneg_int(cfg, "task.teacher_seed")
        checks.finite(cfg, "task.tolerance", positive=True)
        checks.nonneg_int(cfg, "task.ntk_samples")

    def model_io(self, cfg: Any) -> dict[str, int]:
        return {"d_in": cfg.task.d_in, "n_out": cfg.task.d_out}

    def load(self, cfg: Any):
        return teacher_student.make(cfg.task)

    def loss_kind(self, cfg: Any) -> str:
        return "regression"

    def targets(self, cfg: Any, y_BxO: jax.Array) -> jax.Array:
        return y_BxO

    def correct(self, cfg: Any, out_BxO: jax.Array, y_B: jax.Array) -> jax.Array:
        """Every output within task.tolerance of its target."""
        return jnp.all(jnp.abs(out_BxO - y_B) <= cfg.task.tolerance, axis=-1)

    def describe(self, cfg: Any) -> str:
        t, m = cfg.task, cfg.model
        return (f"teacher MLP {t.d_in}-{t.teacher_width}x{t.teacher_depth}-{t.d_out} {t.teacher_activation}, "
                f"{t.n_train} training samples; student width {m.width}, depth {m.depth}; "
                f"{cfg.optim.name} lr={cfg.optim.lr:g} wd={cfg.optim.weight_decay:g}")

    def loss_label(self, cfg: Any) -> str:
        return "MSE (targets standardised)"


register_task(TeacherStudent())
