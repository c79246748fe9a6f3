"""The NTK alignment (toy_quanta.engine.ntk) against an explicit NumPy Jacobian by finite differences
and against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from toy_quanta.engine import ntk
from toy_quanta.models.dense_mlp import DenseMLP


def _model(n_out=2):
    return DenseMLP(d_in=3, n_out=n_out, width=5, depth=1, activation="tanh", rngs=nnx.Rngs(0))


def _numpy_kernel(model, x):
    """The trace kernel from a central-difference Jacobian in float64, parameter by parameter."""
    graphdef, params = nnx.split(model)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    flat = np.asarray(flat, np.float64)

    def out(v):
        return np.asarray(nnx.merge(graphdef, unravel(jnp.asarray(v, jnp.float32)))(x), np.float64)

    eps = 1e-3
    cols = [(out(flat + eps * e) - out(flat - eps * e)) / (2 * eps) for e in np.eye(len(flat))]
    jac = np.stack(cols, -1)  # (N, O, P)
    return np.einsum("nop,mop->nm", jac, jac)


def test_kernel_matches_a_finite_difference_jacobian():
    import jax.flatten_util  # noqa: F401

    model, x = _model(), jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)
    graphdef, params = nnx.split(model)
    got = np.asarray(jax.jit(lambda p: ntk.kernel(lambda q: nnx.merge(graphdef, q)(x), p))(params))
    np.testing.assert_allclose(got, _numpy_kernel(model, x), rtol=2e-2, atol=2e-3)
    np.testing.assert_allclose(got, got.T, rtol=1e-5)


def test_alignment_is_one_for_targets_along_the_kernels_top_eigenvector_and_scale_free():
    model, x = _model(n_out=1), jnp.asarray(np.random.default_rng(1).normal(size=(8, 3)), jnp.float32)
    graphdef, params = nnx.split(model)
    apply = lambda q: nnx.merge(graphdef, q)(x)  # noqa: E731
    k = np.asarray(ntk.kernel(apply, params), np.float64)
    w, v = np.linalg.eigh(k)
    top = v[:, -1]
    want = top @ k @ top / (np.linalg.norm(k) * (top @ top))  # y^T K y / (||K||_F ||y||^2)
    got = float(ntk.alignment(apply, params, jnp.asarray(top, jnp.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-4)
    np.testing.assert_allclose(got, w[-1] / np.linalg.norm(w), rtol=1e-4)
    y = np.random.default_rng(2).normal(size=8)
    a = float(ntk.alignment(apply, params, jnp.asarray(y, jnp.float32)))
    b = float(ntk.alignment(apply, params, jnp.asarray(3 * y, jnp.float32)))
    np.testing.assert_allclose(a, y @ k @ y / (np.linalg.norm(k) * (y @ y)), rtol=1e-4)
    np.testing.assert_allclose(a, b, rtol=1e-5)
