"""The dense MLP (toy_quanta.models.dense_mlp): PyTorch-style initialisation, init scale, shapes."""

import jax
import numpy as np
import pytest
from flax import nnx

from toy_quanta.models.dense_mlp import DenseMLP


def _params(init_scale):
    model = DenseMLP(d_in=784, n_out=10, width=200, depth=2, init_scale=init_scale, rngs=nnx.Rngs(0))
    return model, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_omnigrok_shape_and_pytorch_initialisation():
    model, params = _params(1.0)
    assert model(np.zeros((3, 784), np.float32)).shape == (3, 10)
    shapes = [x.shape for x in jax.tree.leaves(params)]
    assert sum(int(np.prod(s)) for s in shapes) == 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10
    for layer, fan_in in ((params["hidden"][0], 784), (params["hidden"][1], 200), (params["out"], 200)):
        bound = 1 / np.sqrt(fan_in)
        assert bound * 0.99 < np.abs(layer["kernel"]).max() <= bound  # U(-bound, bound), thousands of draws
        assert np.abs(layer["bias"]).max() <= bound


def test_init_scale_multiplies_every_parameter():
    _, one = _params(1.0)
    _, eight = _params(8.0)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
        np.testing.assert_allclose(b, 8 * a, rtol=1e-6)


def test_bad_depth_and_activation():
    with pytest.raises(ValueError, match="depth=0"):
        DenseMLP(d_in=4, n_out=2, width=3, depth=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="activation"):
        DenseMLP(d_in=4, n_out=2, width=3, activation="swish", rngs=nnx.Rngs(0))
