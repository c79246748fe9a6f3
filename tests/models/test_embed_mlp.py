"""The embedding + MLP decoder (toy_quanta.models.embed_mlp): combine modes, the token entry point,
init_scale, and that it can fit a tiny table."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import full_batch_train
from toy_quanta.models.embed_mlp import EmbedMLP

P = 7


def _model(seed=0, **kw) -> EmbedMLP:
    return EmbedMLP(**{**dict(n_symbols=P, n_out=P, d_embed=8, width=32, depth=1), **kw}, rngs=nnx.Rngs(seed))


def _pairs(p=P):
    a, b = np.divmod(np.arange(p * p), p)
    return jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32), jnp.asarray((a + b) % p)


def _params(model) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.mark.parametrize("combine,d_in", [("sum", 8), ("concat", 16)])
@pytest.mark.parametrize("depth", [0, 1, 2])
def test_combine_shapes(combine, d_in, depth):
    model = _model(combine=combine, depth=depth)
    params = _params(model)
    assert params["embed"]["embedding"].shape == (P, 8)
    first = params["hidden"][0]["kernel"] if depth else params["out"]["kernel"]
    assert first.shape[0] == d_in
    assert len(params.get("hidden", {})) == depth  # an empty nnx.List leaves no entry
    a, b, _ = _pairs()
    assert model(a, b).shape == (P * P, P)


def test_sum_is_symmetric_concat_is_not():
    a, b, _ = _pairs()
    summed, concat = _model(combine="sum"), _model(combine="concat")
    np.testing.assert_allclose(summed(a, b), summed(b, a), rtol=1e-6, atol=1e-6)
    assert not np.allclose(concat(a, b), concat(b, a))


def test_logits_from_tokens_equals_call():
    model = _model(combine="concat", depth=2, activation="gelu")
    a, b, _ = _pairs()
    tokens = jnp.stack([a, jnp.full_like(a, P), b, jnp.full_like(a, P + 1)], axis=1)
    got_a, got_b = EmbedMLP.from_tokens(tokens)
    np.testing.assert_array_equal(got_a, a)
    np.testing.assert_array_equal(got_b, b)
    np.testing.assert_array_equal(model.logits(tokens), model(a, b))
    assert model.embed_matrix.shape == (P, 8)


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_init_scale_multiplies_every_parameter(combine):
    base = _params(_model(combine=combine, depth=2, init_scale=1.0))
    scaled = _params(_model(combine=combine, depth=2, init_scale=3.0))
    leaves_b, tree_b = jax.tree.flatten(base)
    leaves_s, tree_s = jax.tree.flatten(scaled)
    assert tree_b == tree_s
    for b, s in zip(leaves_b, leaves_s):
        assert np.abs(b).max() > 0  # biases are non-zero here, so the check is not vacuous
        np.testing.assert_allclose(s, 3.0 * np.asarray(b), rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"combine='product'.*\['concat', 'sum'\]"):
        _model(combine="product")
    with pytest.raises(ValueError, match=r"activation='swish'.*'relu'"):
        _model(activation="swish")
    with pytest.raises(ValueError, match="depth=-1"):
        _model(depth=-1)


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_fits_tiny_addition_table(combine):
    """Full-batch AdamW (lr 1e-2) on all 49 pairs of addition mod 7 reaches 100% training accuracy."""
    graphdef, params = nnx.split(_model(combine=combine, depth=2), nnx.Param)
    a, b, labels = _pairs()
    opt = optax.adamw(1e-2)

    def loss(params):
        logits = nnx.merge(graphdef, params)(a, b)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    params = full_batch_train(loss, opt, params, 300)
    assert (nnx.merge(graphdef, params)(a, b).argmax(-1) == labels).mean() == 1.0
