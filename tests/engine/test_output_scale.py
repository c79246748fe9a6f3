"""model.output_scale: every output times alpha, per member (the lazy regime's knob)."""

from __future__ import annotations

import jax
import numpy as np

from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig
from toy_quanta.data import teacher_student
from toy_quanta.engine.loop import fit
from toy_quanta.engine.members import expand
from toy_quanta.engine.train import make_model
from toy_quanta.models.dense_mlp import DenseMLPConfig
from toy_quanta.tasks.teacher_student import TeacherStudentConfig


def _cfg(output_scale=1.0, scales=None, ntk=0, centred=False) -> Config:
    return Config(task=TeacherStudentConfig(d_in=4, d_out=2, teacher_width=6, n_train=24, n_test=40, ntk_samples=ntk),
                  model=DenseMLPConfig(width=8, depth=1, output_scale=output_scale, centred=centred),
                  optim=OptimConfig(name="sgd", lr=1e-2), train=TrainConfig(steps=6, log_every=3, progress=False),
                  ensemble=EnsembleConfig(output_scale=scales))


def test_step_zero_loss_is_the_mse_of_scaled_outputs():
    """The logged step-0 training loss of alpha = 3 against NumPy: mean over samples and outputs of
    (3 f(x) - y)^2, f the unscaled model at the member's initial parameters."""
    cfg = _cfg(3.0)
    result = fit(cfg, expand(cfg))
    model = make_model(cfg, jax.random.fold_in(jax.random.key(0), 0))  # member 0's initial parameters
    x, y = (np.asarray(a, np.float64) for a in teacher_student.make(cfg.task)[:2])
    want = np.mean((3.0 * np.asarray(model(x.astype(np.float32)), np.float64) - y) ** 2)
    np.testing.assert_allclose(result.log_array("train_loss")[0, 0], want, rtol=1e-5)


def test_a_member_of_a_mixed_output_scale_ensemble_equals_it_trained_alone():
    together = fit(_cfg(scales=[1.0, 4.0]), expand(_cfg(scales=[1.0, 4.0])))
    for i, alpha in enumerate((1.0, 4.0)):
        alone = fit(_cfg(alpha), expand(_cfg(alpha)))
        np.testing.assert_allclose(together.log_array("train_loss")[:, i], alone.log_array("train_loss")[:, 0], rtol=1e-5)
        np.testing.assert_allclose(together.log_array("param_norm")[:, i], alone.log_array("param_norm")[:, 0], rtol=1e-5)
    assert not np.allclose(together.log_array("train_loss")[:, 0], together.log_array("train_loss")[:, 1])


def test_ntk_alignment_is_logged_in_zero_one():
    result = fit(_cfg(ntk=10), expand(_cfg(ntk=10)))
    a = result.log_array("ntk_alignment")
    assert a.shape == (3, 1) and np.all((a > 0) & (a <= 1))


def test_centred_outputs_start_at_zero_and_then_move():
    """Centred (f = alpha (g - g_0)): at step 0 every output is 0, so the loss is the targets' mean
    square; training then lowers it."""
    cfg = _cfg(5.0, centred=True)
    result = fit(cfg, expand(cfg))
    x, y = teacher_student.make(cfg.task)[:2]
    np.testing.assert_allclose(result.log_array("train_loss")[0, 0], np.mean(np.asarray(y, np.float64) ** 2), rtol=1e-5)
    assert result.log_array("train_loss")[-1, 0] < result.log_array("train_loss")[0, 0]
