"""Classification losses the tasks share, and the numerics of softmax collapse (Prieto et al. 2025,
"Grokking at the edge of numerical stability").

- cross_entropy: softmax cross-entropy, computed in float32 or float64 (the result is float32).
- stablemax: cross-entropy of s(x) / sum_j s(x_j), s(x) = x + 1 for x >= 0 and 1 / (1 - x) below:
  probabilities that grow linearly, not exponentially, in the logits.
- collapsed: a sample's float32 softmax has rounded to exactly one-hot (sum_j exp(z_j - max z) == 1),
  so its cross-entropy is 0 or its gradient is exactly zero for the predicted class.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

LOSSES = ("cross_entropy", "stablemax")
DTYPES = ("float32", "float64")


def stablemax_s(x: jax.Array) -> jax.Array:
    """s(x): x + 1 for x >= 0, 1 / (1 - x) below (continuous, with slope 1, at 0)."""
    # 1 / (1 - min(x, 0)): the branch not taken stays finite, so its gradient is not NaN
    return jnp.where(x >= 0, x + 1, 1 / (1 - jnp.minimum(x, 0)))


def log_stablemax(logits_BxO: jax.Array) -> jax.Array:
    s_BxO = stablemax_s(logits_BxO)
    return jnp.log(s_BxO) - jnp.log(jnp.sum(s_BxO, axis=-1, keepdims=True))


def _log_p(z_BxO: jax.Array, kind: str) -> jax.Array:
    return log_stablemax(z_BxO) if kind == "stablemax" else jax.nn.log_softmax(z_BxO, axis=-1)


def _nll(z_BxO: jax.Array, labels_B: jax.Array, kind: str) -> jax.Array:
    return -jnp.take_along_axis(_log_p(z_BxO, kind), labels_B[:, None], axis=-1)[:, 0]


@functools.cache
def _float64_nll(kind: str):
    """_nll computed in float64, float32 in and out. Its backward pass runs in float64 too: the
    transpose JAX derives runs outside enable_x64, where float64 zeros cannot be made."""
    @jax.custom_vjp
    def nll(z_BxO, labels_B):
        with jax.enable_x64(True):
            return _nll(z_BxO.astype(jnp.float64), labels_B, kind).astype(jnp.float32)

    def fwd(z_BxO, labels_B):
        return nll(z_BxO, labels_B), (z_BxO, labels_B)

    def bwd(res, d_loss_B):
        z_BxO, labels_B = res
        with jax.enable_x64(True):
            _, vjp = jax.vjp(lambda z: _nll(z, labels_B, kind), z_BxO.astype(jnp.float64))
            (d_z_BxO,) = vjp(d_loss_B.astype(jnp.float64))
        return d_z_BxO.astype(jnp.float32), None

    nll.defvjp(fwd, bwd)
    return nll


def classification_loss(logits_BxO: jax.Array, labels_B: jax.Array, kind: str = "cross_entropy",
                        dtype: str = "float32", with_zero: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """(B,) per-sample loss in nats, float32, computed (forward and backward) in `dtype`; with
    `with_zero`, also whether each loss is exactly 0 in that dtype (a float64 loss of 1e-50 is not,
    though it rounds to 0 in float32)."""
    if dtype == "float64":
        loss_B = _float64_nll(kind)(logits_BxO.astype(jnp.float32), labels_B)
        if not with_zero:
            return loss_B
        with jax.enable_x64(True):
            zero_B = _nll(jax.lax.stop_gradient(logits_BxO).astype(jnp.float64), labels_B, kind) == 0
        return loss_B, zero_B
    if kind == "cross_entropy":  # optax's, as before these options: runs stay bit for bit what they were
        loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxO.astype(jnp.float32), labels_B)
    else:
        loss_B = _nll(logits_BxO.astype(jnp.float32), labels_B, kind)
    return (loss_B, loss_B == 0) if with_zero else loss_B


def collapsed(logits_BxO: jax.Array) -> jax.Array:
    """(B,) bool: the float32 softmax is exactly one-hot (every other class underflows relative to
    the largest: sum_j exp(z_j - max z) rounds to 1)."""
    z_BxO = logits_BxO.astype(jnp.float32)
    return jnp.sum(jnp.exp(z_BxO - jnp.max(z_BxO, axis=-1, keepdims=True)), axis=-1) == 1.0
