"""Classification losses and softmax collapse (toy_quanta.engine.losses) against NumPy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toy_quanta.engine import losses


def _np_log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _np_log_stablemax(z):
    z = np.asarray(z, np.float64)
    s = np.where(z >= 0, z + 1, 1 / (1 - np.minimum(z, 0)))
    return np.log(s / s.sum(-1, keepdims=True))


RNG = np.random.default_rng(0)
LOGITS = (RNG.normal(size=(16, 7)) * 3).astype(np.float32)
LABELS = RNG.integers(0, 7, 16).astype(np.int32)


@pytest.mark.parametrize("kind, reference", [("cross_entropy", _np_log_softmax), ("stablemax", _np_log_stablemax)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_losses_match_numpy(kind, reference, dtype):
    got = np.asarray(jax.jit(lambda z, y: losses.classification_loss(z, y, kind, dtype))(LOGITS, LABELS))
    want = -reference(LOGITS)[np.arange(16), LABELS]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-6, atol=1e-6)


def test_stablemax_s_is_continuous_with_finite_gradients_everywhere():
    x = jnp.array([-1e6, -3.0, -1e-7, 0.0, 1e-7, 1.0, 3.0, 1e6])
    np.testing.assert_allclose(losses.stablemax_s(x), np.where(x >= 0, x + 1, 1 / (1 - x)), rtol=1e-6)
    grads = jax.vmap(jax.grad(losses.stablemax_s))(x)
    assert np.all(np.isfinite(grads))  # the untaken branch 1/(1 - x) at x = 1 must not poison it
    np.testing.assert_allclose(grads[3:5], [1.0, 1.0], rtol=1e-6)


def test_float64_loss_stays_positive_where_float32_rounds_to_zero():
    """A margin of 20 nats: float32 cross-entropy is exactly 0 (1 + 2 e^-20 rounds to 1), float64
    keeps log(1 + 2 e^-20) ~ 4.1e-9 (it rounds to 0 only past a margin of about 37); stablemax
    stays far from 0."""
    z = jnp.array([[20.0, 0.0, 0.0]])
    y = jnp.array([0])
    f32, zero32 = losses.classification_loss(z, y, "cross_entropy", "float32", with_zero=True)
    f64, zero64 = losses.classification_loss(z, y, "cross_entropy", "float64", with_zero=True)
    assert float(f32[0]) == 0.0 and bool(zero32[0])
    np.testing.assert_allclose(float(f64[0]), np.log1p(2 * np.exp(-20.0)), rtol=1e-6)
    assert not bool(zero64[0])
    assert float(losses.classification_loss(z, y, "stablemax")[0]) > 1e-3
    # and the float64 loss has a gradient that float32's lacks for the true class
    g32 = jax.grad(lambda z: losses.classification_loss(z, y, "cross_entropy", "float32").sum())(z)
    g64 = jax.grad(lambda z: losses.classification_loss(z, y, "cross_entropy", "float64").sum())(z)
    assert float(g32[0, 0]) == 0.0 and float(g64[0, 0]) < 0


def test_collapsed_is_float32_sum_of_exponentials_equal_to_one():
    margins = np.array([5.0, 10.0, 16.0, 17.0, 20.0, 100.0], np.float32)
    z = np.stack([margins, np.zeros_like(margins), -np.ones_like(margins)], 1).astype(np.float32)
    shifted = z - z.max(1, keepdims=True)
    want = np.exp(shifted).astype(np.float32).sum(1, dtype=np.float32) == np.float32(1)
    got = np.asarray(losses.collapsed(jnp.asarray(z)))
    np.testing.assert_array_equal(got, want)
    assert not got[0] and not got[1] and got[-1]  # e^-10 ~ 4.5e-5 survives; e^-100 does not


@pytest.mark.parametrize("kind", ["cross_entropy", "stablemax"])
def test_float64_gradients_equal_float32_ones_at_moderate_logits_under_vmap(kind):
    """The float64 loss's hand-made backward pass (it runs in float64) against autodiff in float32,
    vmapped over members as the engine calls it."""
    z_MxBxO = jnp.asarray(LOGITS.reshape(2, 8, 7))
    y_MxB = jnp.asarray(LABELS.reshape(2, 8))
    grad = lambda dtype: jax.jit(jax.vmap(jax.grad(  # noqa: E731
        lambda z, y: losses.classification_loss(z, y, kind, dtype).mean())))(z_MxBxO, y_MxB)
    np.testing.assert_allclose(grad("float64"), grad("float32"), rtol=1e-4, atol=1e-7)
