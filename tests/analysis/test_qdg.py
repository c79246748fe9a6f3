"""QDG similarities (toy_quanta.analysis.qdg) against per-sample gradients computed directly."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from toy_quanta.analysis.qdg import affinity, cosine_similarity, layer_factors, per_sample_gradients
from toy_quanta.data.sparse_parity import draw_subsets, sample
from toy_quanta.models.mlp import MLP


def _setup(depth: int, S: int = 23, n_tasks: int = 5, n: int = 7, width: int = 12, seed: int = 0):
    """A model and S samples. The tests share S (and the model's shapes) where their checks do not
    depend on it: the analysis runs op by op, and every new shape compiles each op anew."""
    model = MLP(n_tasks, n, width, depth, 2, "relu", True, rngs=nnx.Rngs(seed))
    subsets = jax.numpy.asarray(draw_subsets(n_tasks, n, 3, seed))
    return model, sample(jax.random.key(seed + 1), subsets, 0.4, S, n)


def _direct_cosine(G: np.ndarray) -> np.ndarray:
    unit = G / np.linalg.norm(G, axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    return np.clip(unit @ unit.T, -1, 1)


@pytest.mark.parametrize("depth,groups", [pytest.param(1, ("bits", "hidden", "out"), marks=pytest.mark.slow),
                                          pytest.param(2, ("bits", "hidden", "out"), marks=pytest.mark.slow),
                                          (2, ("control", "bits", "hidden", "out")), (3, ("hidden",)),
                                          (2, ("control", "out")), (1, ("control",))])
def test_blocked_similarity_equals_the_direct_computation(depth, groups):
    model, (task, bits, label) = _setup(depth)
    direct = _direct_cosine(per_sample_gradients(model, task, bits, label, groups))
    factors = layer_factors(model, task, bits, label, groups)
    got = cosine_similarity(factors, block=7)  # 23 rows in blocks of 7: the last block wraps around
    np.testing.assert_allclose(got, direct, atol=2e-5)
    np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-5)
    np.testing.assert_allclose(cosine_similarity(factors, block=1000), got, atol=1e-6)


@pytest.mark.slow
def test_direct_gradients_match_one_sample_at_a_time():
    model, (task, bits, label) = _setup(2, S=3)
    G = per_sample_gradients(model, task, bits, label, ("control", "bits", "hidden", "out"))
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert G.shape == (3, n_params)
    graphdef, params = nnx.split(model)
    import optax

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(task[1:2], bits[1:2]), label[1:2]).sum()

    g = jax.grad(loss)(params)
    assert np.isclose(np.linalg.norm(G[1]), np.sqrt(sum(float(np.sum(np.square(x))) for x in jax.tree.leaves(g))), rtol=1e-5)


def test_confident_samples_keep_their_gradient_direction():
    """A huge output bias makes every sample confident (margin about 60) without changing any
    hidden activation or, for two classes, the direction of dL/dz: the similarities must not move.
    Computed naively as p - onehot in float32, they do (the direct vmap(grad) here)."""
    model, (task, bits, label) = _setup(2)
    graphdef, state = nnx.split(model)
    pure = nnx.to_pure_dict(state)
    pure["out"]["bias"] = pure["out"]["bias"] + np.array([0.0, 60.0], np.float32)
    nnx.replace_by_pure_dict(state, pure)
    confident = nnx.merge(graphdef, state)
    groups = ("control", "bits", "hidden", "out")
    before = cosine_similarity(layer_factors(model, task, bits, label, groups))
    after = cosine_similarity(layer_factors(confident, task, bits, label, groups))
    np.testing.assert_allclose(after, before, atol=2e-5)
    G = per_sample_gradients(confident, task, bits, label, groups).astype(np.float64)  # norms near 1e-26
    unit = G / np.linalg.norm(G, axis=1, keepdims=True)
    assert np.abs(unit @ unit.T - before).max() > 0.1


def test_margin_gradients_flip_the_sign_of_opposite_labels():
    model, (task, bits, label) = _setup(1)
    loss_cos = cosine_similarity(layer_factors(model, task, bits, label))
    margin_cos = cosine_similarity(layer_factors(model, task, bits, label, margin=True))
    s = np.where(np.asarray(label) == 1, 1.0, -1.0)
    np.testing.assert_allclose(margin_cos, loss_cos * s[:, None] * s[None, :], atol=1e-5)


def test_control_rows_alone_make_different_subtasks_orthogonal():
    """Why they are left out by default: their gradient lives in the sample's own subtask row."""
    model, (task, bits, label) = _setup(1)
    c = cosine_similarity(layer_factors(model, task, bits, label, ("control",)))
    different = np.asarray(task)[:, None] != np.asarray(task)[None, :]
    assert different.any()
    np.testing.assert_array_equal(c[different], 0.0)


def test_bad_parameter_groups_are_rejected():
    model, (task, bits, label) = _setup(1)
    for groups in [(), ("embedding",), ("out", "out")]:
        with pytest.raises(ValueError, match="parameter groups"):
            layer_factors(model, task, bits, label, groups)
    with pytest.raises(ValueError, match="select no parameters"):
        layer_factors(model, task, bits, label, ("hidden",))  # depth 1 has no hidden-to-hidden layer


def test_affinity_kinds():
    c = np.array([1.0, 0.0, -1.0, 1.0000001, 0.5], np.float32)
    np.testing.assert_allclose(affinity(c), [1.0, 0.5, 0.0, 1.0, 1 - np.arccos(0.5) / np.pi], atol=1e-6)
    np.testing.assert_allclose(affinity(c, "cosine"), [1.0, 0.0, 0.0, 1.0000001, 0.5])
    with pytest.raises(ValueError, match="'angular' or 'cosine'"):
        affinity(c, "gaussian")
