"""QDG similarities (toy_quanta.analysis.qdg) against per-sample gradients computed directly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from toy_quanta.analysis.qdg import affinity, cosine_similarity, layer_factors
from toy_quanta.data.sparse_parity import draw_subsets, sample
from toy_quanta.models.mlp import MLP


def direct_gradients(model: MLP, task, bits, label, include_control: bool) -> np.ndarray:
    """(S, P): every sample's loss gradient, one vmapped jax.grad, flattened; control rows of the
    first kernel dropped unless included."""
    graphdef, params = nnx.split(model)

    def loss_one(p, t, b, y):
        logits = nnx.merge(graphdef, p)(t[None], b[None])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y[None]).sum()

    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0, 0))(params, task, bits, label)
    pure = nnx.to_pure_dict(grads)
    if not include_control:
        pure["inp"]["kernel"] = pure["inp"]["kernel"][:, model.n_control:]
    leaves = jax.tree.leaves(pure)
    return np.concatenate([np.asarray(x).reshape(x.shape[0], -1) for x in leaves], axis=1)


@pytest.mark.parametrize("depth,include_control", [(1, False), (2, False), (2, True)])
def test_blocked_similarity_equals_the_direct_computation(depth, include_control):
    n_tasks, n, S = 5, 7, 23
    model = MLP(n_tasks, n, 12, depth, 2, "relu", True, rngs=nnx.Rngs(0))
    subsets = jnp.asarray(draw_subsets(n_tasks, n, 3, 0))
    task, bits, label = sample(jax.random.key(1), subsets, 0.4, S, n)
    G = direct_gradients(model, task, bits, label, include_control)
    unit = G / np.linalg.norm(G, axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    direct = np.clip(unit @ unit.T, -1, 1)
    factors = layer_factors(model, task, bits, label, include_control=include_control)
    got = cosine_similarity(factors, block=7)  # 23 rows in blocks of 7: the last block is short
    np.testing.assert_allclose(got, direct, atol=2e-5)
    np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-5)


def test_control_rows_make_same_subtask_samples_alike():
    """Why they are left out by default: with them, same-subtask pairs gain similarity."""
    n_tasks, n, S = 4, 8, 200
    model = MLP(n_tasks, n, 16, 1, 2, "relu", True, rngs=nnx.Rngs(2))
    subsets = jnp.asarray(draw_subsets(n_tasks, n, 3, 0))
    task, bits, label = sample(jax.random.key(3), subsets, 0.0, S, n)
    same = np.asarray(task)[:, None] == np.asarray(task)[None, :]
    off = ~np.eye(S, dtype=bool)
    gain = []
    for include in (False, True):
        c = cosine_similarity(layer_factors(model, task, bits, label, include_control=include))
        gain.append(c[same & off].mean() - c[~same].mean())
    assert gain[1] > gain[0]


def test_affinity_maps_cosines_to_angles():
    np.testing.assert_allclose(affinity(np.array([1.0, 0.0, -1.0, 1.0000001])), [1.0, 0.5, 0.0, 1.0])
