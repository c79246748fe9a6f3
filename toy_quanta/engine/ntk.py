"""The empirical neural tangent kernel's alignment with the targets (Kumar et al. 2023: it rises
when training leaves the lazy regime for feature learning).

K_ij = sum_o <d f_o(x_i) / d theta, d f_o(x_j) / d theta> over the samples' outputs (the trace
kernel; for one output, the NTK itself), and the alignment <K, Y Y^T>_F / (||K||_F ||Y Y^T||_F),
which for one output is y^T K y / (||K||_F ||y||^2). Costs the Jacobian of N samples' outputs with
respect to every parameter: for small models and a few hundred samples.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def kernel(outputs: Callable[[Any], jax.Array], params: Any) -> jax.Array:
    """(N, N) trace kernel of outputs(params) (N, O) (or (N,)) over every leaf of params (the
    engine's parameters: all trained)."""
    def f(p):
        out = outputs(p)
        return out.reshape(out.shape[0], -1)

    jacobian = jax.jacrev(f)(params)
    leaves = [j.reshape(j.shape[0], j.shape[1], -1) for j in jax.tree.leaves(jacobian)]
    return sum(jnp.einsum("nop,mop->nm", j, j) for j in leaves)


def alignment(outputs: Callable[[Any], jax.Array], params: Any, y: jax.Array) -> jax.Array:
    """<K, Y Y^T>_F / (||K||_F ||Y Y^T||_F) for targets y (N,) or (N, O)."""
    k_NxN = kernel(outputs, params)
    y_NxO = y.reshape(y.shape[0], -1).astype(k_NxN.dtype)
    yy_NxN = y_NxO @ y_NxO.T
    return jnp.sum(k_NxN * yy_NxN) / (jnp.linalg.norm(k_NxN) * jnp.linalg.norm(yy_NxN))
