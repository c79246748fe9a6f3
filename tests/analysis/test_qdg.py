"""QDG (toy_quanta.analysis.qdg): the similarities against per-sample gradients computed directly, and
the samples and losses against the task's own (its Program) and an independent NumPy computation."""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import tiny_config
from toy_quanta import registry
from toy_quanta.analysis.qdg import (affinity, cosine_similarity, gradient_factors, layer_factors, loss_cotangent,
                                     per_sample_gradients, select_samples)
from toy_quanta.config import QDGConfig
from toy_quanta.data.sparse_parity import draw_subsets, encode, sample
from toy_quanta.engine.members import expand
from toy_quanta.models.mlp import MLP
from toy_quanta.tasks.sparse_parity import Batch

N_TASKS, N = 5, 7


@lru_cache(maxsize=None)
def _program(encoding: str = "zero_one"):
    """Sparse parity's Program for N_TASKS subtasks of N bits: the loss and sampler QDG uses."""
    cfg = tiny_config(task={"n_tasks": N_TASKS, "n": N, "encoding": encoding})
    return registry.task("sparse_parity").program(cfg, expand(cfg))


def _setup(depth: int, S: int = 23, width: int = 12, seed: int = 0):
    """A model and S samples. The tests share S (and the model's shapes) where their checks do not
    depend on it: the analysis runs op by op, and every new shape compiles each op anew."""
    model = MLP(N_TASKS, N, width, depth, 2, "relu", True, rngs=nnx.Rngs(seed))
    subsets = jnp.asarray(draw_subsets(N_TASKS, N, 3, seed))
    return model, Batch(*sample(jax.random.key(seed + 1), subsets, 0.4, S, N))


def _direct_cosine(G: np.ndarray) -> np.ndarray:
    unit = G / np.linalg.norm(G, axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    return np.clip(unit @ unit.T, -1, 1)


def _numpy_loss_bits(model: MLP, batch: Batch, encoding: str = "zero_one") -> np.ndarray:
    """The two-logit cross-entropy in bits, in float64 NumPy from the parameters: independent of
    the model's code and of the task's loss."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), nnx.to_pure_dict(nnx.state(model)))
    task, bits, label = (np.asarray(x) for x in batch)
    x = np.concatenate([np.eye(N_TASKS)[task], bits if encoding == "zero_one" else 2.0 * bits - 1], axis=1)
    h = np.maximum(x @ p["inp"]["kernel"] + p["inp"]["bias"], 0)
    for i in sorted(p.get("hidden", {}), key=int):
        h = np.maximum(h @ p["hidden"][i]["kernel"] + p["hidden"][i]["bias"], 0)
    z = h @ p["out"]["kernel"] + p["out"]["bias"]
    margin = np.where(label == 1, 1.0, -1.0) * (z[:, 1] - z[:, 0])
    return np.logaddexp(0.0, -margin) / np.log(2.0)


@pytest.mark.parametrize("depth,groups", [pytest.param(1, ("bits", "hidden", "out"), marks=pytest.mark.slow),
                                          pytest.param(2, ("bits", "hidden", "out"), marks=pytest.mark.slow),
                                          (2, ("control", "bits", "hidden", "out")), (3, ("hidden",)),
                                          (2, ("control", "out")), (1, ("control",))])
def test_blocked_similarity_equals_the_direct_computation(depth, groups):
    """The factorised similarities of the task's loss gradients against vmap(grad) of the task's loss."""
    model, batch = _setup(depth)
    direct = _direct_cosine(per_sample_gradients(model, _program().loss, batch, groups))
    factors = gradient_factors(_program(), model, batch, groups)
    got = cosine_similarity(factors, block=7)  # 23 rows in blocks of 7: the last block wraps around
    np.testing.assert_allclose(got, direct, atol=2e-5)
    np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-5)
    np.testing.assert_allclose(cosine_similarity(factors, block=1000), got, atol=1e-6)


@pytest.mark.slow
def test_direct_gradients_match_one_sample_at_a_time():
    model, batch = _setup(2, S=3)
    loss = _program().loss
    G = per_sample_gradients(model, loss, batch, ("control", "bits", "hidden", "out"))
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert G.shape == (3, n_params)
    graphdef, params = nnx.split(model)
    g = jax.grad(lambda p: loss(nnx.merge(graphdef, p), jax.tree.map(lambda x: x[1:2], batch))[0].sum())(params)
    assert np.isclose(np.linalg.norm(G[1]), np.sqrt(sum(float(np.sum(np.square(x))) for x in jax.tree.leaves(g))), rtol=1e-5)


def _confident(model: MLP, bias: float) -> MLP:
    """The model with `bias` added to logit 1: every hidden activation, and for two classes the
    direction of every loss gradient at the outputs, stay as they were."""
    graphdef, state = nnx.split(model)
    pure = nnx.to_pure_dict(state)
    pure["out"]["bias"] = pure["out"]["bias"] + np.array([0.0, bias], np.float32)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def test_confident_samples_keep_their_gradient_direction():
    """A huge output bias makes every sample confident (margin about 60) without changing any
    hidden activation or, for two classes, the direction of dL/dz: the similarities must not move.
    Computed naively as p - onehot in float32 (optax's softmax cross-entropy, here by vmap(grad)),
    they do."""
    model, batch = _setup(2)
    confident = _confident(model, 60.0)
    groups = ("control", "bits", "hidden", "out")
    before = cosine_similarity(gradient_factors(_program(), model, batch, groups))
    after = cosine_similarity(gradient_factors(_program(), confident, batch, groups))
    np.testing.assert_allclose(after, before, atol=2e-5)

    def naive(m, b):
        return (optax.softmax_cross_entropy_with_integer_labels(m(b.task, b.bits), b.label),)

    G = per_sample_gradients(confident, naive, batch, groups).astype(np.float64)  # norms near 1e-26
    unit = G / np.linalg.norm(G, axis=1, keepdims=True)
    assert np.abs(unit @ unit.T - before).max() > 0.1


def test_the_loss_cotangent_is_exact_past_float32s_range():
    """Margins of about 200: the task's loss and its float32 gradient are 0 for the confident label,
    yet loss_cotangent (autodiff of the task's loss in float64) gives the exact direction, ±(1, -1)."""
    model, batch = _setup(1)
    confident = _confident(model, 200.0)
    loss_B = np.asarray(_program().loss(confident, batch)[0])
    label = np.asarray(batch.label)
    assert (loss_B[label == 1] == 0).all() and (label == 1).any() and (label == 0).any()
    want = np.where(label[:, None] == 1, [[1.0, -1.0]], [[-1.0, 1.0]])
    np.testing.assert_array_equal(np.asarray(loss_cotangent(confident, _program().loss, batch)), want)
    np.testing.assert_array_equal(np.asarray(loss_cotangent(model, _program().loss, batch)), want)


def test_margin_gradients_flip_the_sign_of_opposite_labels():
    model, batch = _setup(1)
    loss_cos = cosine_similarity(gradient_factors(_program(), model, batch))
    margin_cos = cosine_similarity(gradient_factors(_program(), model, batch, gradient="margin"))
    s = np.where(np.asarray(batch.label) == 1, 1.0, -1.0)
    np.testing.assert_allclose(margin_cos, loss_cos * s[:, None] * s[None, :], atol=1e-5)


def test_control_rows_alone_make_different_subtasks_orthogonal():
    """Why they are left out by default: their gradient lives in the sample's own subtask row."""
    model, batch = _setup(1)
    c = cosine_similarity(gradient_factors(_program(), model, batch, ("control",)))
    different = np.asarray(batch.task)[:, None] != np.asarray(batch.task)[None, :]
    assert different.any()
    np.testing.assert_array_equal(c[different], 0.0)


def test_bad_parameter_groups_are_rejected():
    model, batch = _setup(1)
    cotangent = loss_cotangent(model, _program().loss, batch)
    for groups in [(), ("embedding",), ("out", "out")]:
        with pytest.raises(ValueError, match="parameter groups"):
            layer_factors(model, batch.task, batch.bits, cotangent, groups)
    with pytest.raises(ValueError, match="select no parameters"):
        layer_factors(model, batch.task, batch.bits, cotangent, ("hidden",))  # depth 1 has no hidden-to-hidden layer


@pytest.mark.parametrize("encoding,balanced", [("zero_one", False), ("plus_minus", True)])
def test_the_samples_and_their_losses_are_the_tasks(encoding, balanced):
    """select_samples draws with the task's sampler (reproduced here with the data module's, from the
    same keys) and scores with the task's loss: equal, in bits, to a NumPy cross-entropy of the
    model's parameters; the kept samples are the draws below the threshold, in order."""
    model, _ = _setup(1)
    subsets = draw_subsets(N_TASKS, N, 3, 0)
    cfg = QDGConfig(run_dir="unused", n_samples=40, loss_threshold_bits=0.9, balanced=balanced, seed=3)
    got = select_samples(_program(encoding), model, {"task.alpha": 0.4}, subsets, cfg)

    _, sub = jax.random.split(jax.random.key(3))
    drawn = Batch(*(np.asarray(x) for x in sample(sub, jnp.asarray(subsets), -1.0 if balanced else 0.4, 8192, N)))
    loss = _numpy_loss_bits(model, drawn, encoding)
    keep = np.flatnonzero(loss < 0.9)[:40]
    assert got.n_drawn == 8192 and len(got.loss_bits_N) == 40
    for field in Batch._fields:
        np.testing.assert_array_equal(getattr(got.batch, field), getattr(drawn, field)[keep], err_msg=field)
    np.testing.assert_allclose(got.loss_bits_N, loss[keep], rtol=1e-5, atol=1e-6)
    program_loss = np.asarray(_program(encoding).loss(model, jax.tree.map(jnp.asarray, got.batch))[0]) / np.log(2)
    np.testing.assert_allclose(got.loss_bits_N, program_loss, rtol=1e-6)
    inputs = _program(encoding).inputs(got.batch)  # what gradient_factors feeds the first layer
    np.testing.assert_array_equal(inputs[1], encode(got.batch.bits, encoding))


def test_affinity_kinds():
    c = np.array([1.0, 0.0, -1.0, 1.0000001, 0.5], np.float32)
    np.testing.assert_allclose(affinity(c), [1.0, 0.5, 0.0, 1.0, 1 - np.arccos(0.5) / np.pi], atol=1e-6)
    np.testing.assert_allclose(affinity(c, "cosine"), [1.0, 0.0, 0.0, 1.0000001, 0.5])
    with pytest.raises(ValueError, match="'angular' or 'cosine'"):
        affinity(c, "gaussian")


@pytest.mark.parametrize("analysis", ["qdg", "genic"])
def test_qdg_and_genic_refuse_a_run_not_trained_with_cross_entropy(tmp_path, analysis):
    """They read two-logit cross-entropy losses in bits: a squared-loss run is refused, naming its
    loss, before any checkpoint is read (there is none here)."""
    from omegaconf import OmegaConf

    from toy_quanta.analysis.qdg import trained_run
    from toy_quanta.errors import ConfigError

    OmegaConf.save(OmegaConf.structured(tiny_config(task={"loss": "mse"})), tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="task.loss=mse"):
        trained_run(tmp_path, analysis)
