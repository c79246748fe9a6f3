"""The MLP (toy_quanta.models.mlp): the one-hot gather equals the dense product; counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from toy_quanta.models.mlp import MLP, binary_cross_entropy, n_params, train_flops_per_sample

N_CONTROL, N_BITS, WIDTH = 7, 11, 16


def _gather_and_dense(depth: int, activation: str = "relu"):
    """(gather graphdef, dense graphdef, shared state): the same parameters in both variants."""
    gather = MLP(N_CONTROL, N_BITS, WIDTH, depth=depth, activation=activation, control_gather=True, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(gather)
    # a different seed, so equal outputs can only come from sharing `state`
    dense_graphdef, dense_state = nnx.split(
        MLP(N_CONTROL, N_BITS, WIDTH, depth=depth, activation=activation, control_gather=False, rngs=nnx.Rngs(1)))
    assert not np.allclose(nnx.to_pure_dict(dense_state)["inp"]["kernel"], nnx.to_pure_dict(state)["inp"]["kernel"])
    return graphdef, dense_graphdef, state


def _batch(size=64):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    task = jax.random.randint(k1, (size,), 0, N_CONTROL)
    bits = jax.random.bernoulli(k2, 0.5, (size, N_BITS)).astype(jnp.uint8)
    label = jax.random.randint(k3, (size,), 0, 2)
    return task, bits, label


@pytest.mark.parametrize("depth,activation", [(1, "relu"), (2, "relu"), (2, "gelu"), (3, "tanh")])
def test_gather_equals_dense_outputs_and_gradients(depth, activation):
    """control_gather=True and False with the same parameters: equal logits (1e-5) and equal
    gradients of a loss w.r.t. every parameter."""
    graphdef, dense_graphdef, state = _gather_and_dense(depth, activation)
    task, bits, label = _batch()

    def loss(g, s):
        logits = nnx.merge(g, s)(task, bits)
        return optax.softmax_cross_entropy_with_integer_labels(logits, label).mean(), logits

    (l_g, out_g), grad_g = jax.value_and_grad(lambda s: loss(graphdef, s), has_aux=True)(state)
    (l_d, out_d), grad_d = jax.value_and_grad(lambda s: loss(dense_graphdef, s), has_aux=True)(state)
    assert out_g.shape == (64, 2)
    np.testing.assert_allclose(out_g, out_d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l_g, l_d, rtol=1e-5)
    flat_g, flat_d = nnx.to_flat_state(grad_g), nnx.to_flat_state(grad_d)
    assert [p for p, _ in flat_g] == [p for p, _ in flat_d]
    assert len(flat_g) == 2 * (depth + 1)  # kernel and bias of every layer
    for (path, a), (_, b) in zip(flat_g, flat_d):
        np.testing.assert_allclose(np.asarray(a[...]), np.asarray(b[...]), rtol=1e-5, atol=1e-6, err_msg=str(path))
    # the control rows really receive gradient (only those of subtasks present in the batch)
    control_grad = np.abs(np.asarray(grad_g["inp"]["kernel"][...])[:N_CONTROL]).sum(1)
    present = np.isin(np.arange(N_CONTROL), np.asarray(task))
    assert np.all(control_grad[present] > 0) and np.all(control_grad[~present] == 0)


def test_gather_equals_dense_when_jitted_with_an_absent_subtask():
    """Under jit too, and with a batch that never uses some control rows."""
    graphdef, dense_graphdef, state = _gather_and_dense(1)
    _, bits, _ = _batch(32)
    task = jnp.zeros(32, jnp.int32).at[::3].set(N_CONTROL - 1)
    f = jax.jit(lambda g, s: nnx.merge(g, s)(task, bits), static_argnums=0)
    np.testing.assert_allclose(f(graphdef, state), f(dense_graphdef, state), rtol=1e-5, atol=1e-5)


def _grads(graphdef, state, task, bits, label):
    def loss(s):
        return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, s)(task, bits), label).mean()
    return jax.grad(loss)(state)


def test_gather_gradients_under_vmap_equal_each_members_own():
    """The gathered layer's hand-written backward pass, vmapped over three members (as the engine's
    ensembles run it), gives each member the gradients it gets alone."""
    graphdef, _, _ = _gather_and_dense(1)
    states = [nnx.split(MLP(N_CONTROL, N_BITS, WIDTH, rngs=nnx.Rngs(s)))[1] for s in range(3)]
    task, bits, label = _batch(32)
    batches = [(jnp.roll(task, s), jnp.roll(bits, s, axis=0), label) for s in range(3)]  # a batch each
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *states)
    data = jax.tree.map(lambda *x: jnp.stack(x), *batches)
    vmapped = jax.vmap(lambda s, t, b, l: _grads(graphdef, s, t, b, l))(stacked, *data)
    for m in range(3):
        alone = _grads(graphdef, states[m], *batches[m])
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(vmapped)):
            np.testing.assert_allclose(np.asarray(b[m]), np.asarray(a), rtol=1e-5, atol=1e-7)


def test_float_bits_are_differentiable_and_match_the_dense_product():
    """Float bits take the plain autodiff path: the gradient w.r.t. the bits is that of the dense
    product (the hand-written pass, for integer bits only, gives them none)."""
    graphdef, dense_graphdef, state = _gather_and_dense(2)
    task, bits, label = _batch()

    def bits_grad(g):
        def loss(x):
            return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(g, state)(task, x), label).mean()
        return jax.grad(loss)(bits.astype(jnp.float32))

    g_gather, g_dense = bits_grad(graphdef), bits_grad(dense_graphdef)
    assert np.abs(np.asarray(g_gather)).max() > 0
    np.testing.assert_allclose(g_gather, g_dense, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("depth,activation", [(1, "relu"), (3, "tanh")])
def test_margin_cross_entropy_equals_softmax_cross_entropy_and_its_gradients(depth, activation):
    """margin = logit 1 - logit 0, and binary_cross_entropy(margin) is the two-class softmax
    cross-entropy, in value and in every parameter's gradient (the engine trains on it)."""
    graphdef, _, state = _gather_and_dense(depth, activation)
    task, bits, label = _batch()
    model = nnx.merge(graphdef, state)
    logits = model(task, bits)
    np.testing.assert_allclose(model.margin(task, bits), logits[:, 1] - logits[:, 0], rtol=1e-5, atol=1e-6)

    def loss(s, via_margin):
        m = nnx.merge(graphdef, s)
        if via_margin:
            return binary_cross_entropy(m.margin(task, bits), label).mean()
        return optax.softmax_cross_entropy_with_integer_labels(m(task, bits), label).mean()

    (l_m, g_m), (l_s, g_s) = (jax.value_and_grad(loss)(state, v) for v in (True, False))
    np.testing.assert_allclose(l_m, l_s, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_m), jax.tree.leaves(g_s)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # a large margin of the wrong sign costs its size, without overflow
    np.testing.assert_allclose(binary_cross_entropy(jnp.array([-200.0, 200.0]), jnp.array([1, 0])), [200.0, 200.0])


def test_margin_needs_two_outputs():
    model = MLP(N_CONTROL, N_BITS, WIDTH, n_out=3, rngs=nnx.Rngs(0))
    task, bits, _ = _batch()
    with pytest.raises(ValueError, match="2 outputs"):
        model.margin(task, bits)


@pytest.mark.parametrize("depth,activation", [(1, "relu"), (2, "tanh"), (2, "sigmoid"), (1, "identity")])
def test_forward_equals_numpy_mlp_on_one_hot_input(depth, activation):
    """The model is Linear(n_tasks + n -> width), activation, hidden layers, Linear(width -> 2) on
    [one-hot control | bits], computed by hand in NumPy."""
    graphdef, _, state = _gather_and_dense(depth, activation)
    task, bits, _ = _batch()
    p = nnx.to_pure_dict(state)
    act = {"relu": lambda x: np.maximum(x, 0), "tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
           "identity": lambda x: x}[activation]
    x = np.concatenate([np.eye(N_CONTROL)[np.asarray(task)], np.asarray(bits, np.float64)], axis=1)
    h = act(x @ np.asarray(p["inp"]["kernel"], np.float64) + np.asarray(p["inp"]["bias"], np.float64))
    for i in range(depth - 1):
        h = act(h @ np.asarray(p["hidden"][i]["kernel"], np.float64) + np.asarray(p["hidden"][i]["bias"], np.float64))
    expected = h @ np.asarray(p["out"]["kernel"], np.float64) + np.asarray(p["out"]["bias"], np.float64)
    np.testing.assert_allclose(np.asarray(nnx.merge(graphdef, state)(task, bits)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_control,n_bits,width,depth", [(9, 13, 24, 1), (9, 13, 24, 2), (4, 5, 3, 4), (500, 100, 10, 1)])
def test_n_params_counts_the_built_model(n_control, n_bits, width, depth):
    """n_params equals the number of parameters of the model actually built."""
    model = MLP(n_control, n_bits, width, depth=depth, rngs=nnx.Rngs(0))
    actual = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n_params(n_control, n_bits, width, depth) == actual


@pytest.mark.parametrize("width", [10, 128, 500])
def test_paper_parameter_count(width):
    """603 * width + 2 at the paper's setting (500 subtasks, n=100, one hidden layer)."""
    assert n_params(500, 100, width, 1) == 603 * width + 2


def test_train_flops_match_the_kernels_and_gather_saves_about_6x():
    """train_flops_per_sample = 3 x forward matmul FLOPs (2 per multiply-add) of the built model's
    kernels; the gather skips the one-hot rows; the dense/gather ratio is ~6 at 600/100 inputs."""
    for depth in (1, 2):
        model = MLP(500, 100, 32, depth=depth, rngs=nnx.Rngs(0))
        kernels = [np.asarray(model.inp.kernel[...]).shape] + [np.asarray(l.kernel[...]).shape for l in model.hidden] \
            + [np.asarray(model.out.kernel[...]).shape]
        dense = 3 * 2 * sum(i * o for i, o in kernels)
        gather = dense - 3 * 2 * 500 * 32
        assert train_flops_per_sample(500, 100, 32, depth, gather=False) == dense
        assert train_flops_per_sample(500, 100, 32, depth, gather=True) == gather
    ratio = train_flops_per_sample(500, 100, 128, 1, gather=False) / train_flops_per_sample(500, 100, 128, 1)
    assert 5.5 < ratio < 6.5


def test_initialisation_is_pytorch_uniform():
    """Every parameter ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's nn.Linear default, as the paper)."""
    model = MLP(500, 100, 64, depth=2, rngs=nnx.Rngs(0))
    for layer, fan_in in [(model.inp, 600), (model.hidden[0], 64), (model.out, 64)]:
        bound = 1 / np.sqrt(fan_in)
        kernel = np.asarray(layer.kernel[...])
        bias = np.asarray(layer.bias[...])
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert np.abs(kernel).max() > 0.9 * bound
        if kernel.size > 1000:  # U(-b, b) has std b / sqrt(3)
            assert abs(kernel.std() - bound / np.sqrt(3)) < 0.02 * bound


def test_rngs_seed_determines_the_parameters():
    a = nnx.to_pure_dict(nnx.state(MLP(3, 4, 5, rngs=nnx.Rngs(0))))
    b = nnx.to_pure_dict(nnx.state(MLP(3, 4, 5, rngs=nnx.Rngs(0))))
    c = nnx.to_pure_dict(nnx.state(MLP(3, 4, 5, rngs=nnx.Rngs(1))))
    np.testing.assert_array_equal(a["inp"]["kernel"], b["inp"]["kernel"])
    assert not np.allclose(a["inp"]["kernel"], c["inp"]["kernel"])


def test_init_std_draws_every_weight_and_bias_from_a_normal():
    """model.init_std (Nam et al.'s initialisation): every kernel and bias ~ N(0, init_std^2),
    whatever the fan-in; the default stays PyTorch's uniform."""
    from scipy import stats

    model = MLP(5, 32, 1000, n_out=1, init_std=0.01, rngs=nnx.Rngs(0))
    for layer in (model.inp, model.out):
        for values in (np.asarray(layer.kernel[...]).ravel(), np.asarray(layer.bias[...]).ravel()):
            assert abs(values.mean()) < 4 * 0.01 / np.sqrt(values.size)
            if values.size >= 1000:
                assert abs(values.std() - 0.01) < 0.001
                assert stats.kstest(values / 0.01, "norm").pvalue > 1e-3
    default = MLP(5, 32, 1000, n_out=1, rngs=nnx.Rngs(0))
    assert np.abs(np.asarray(default.inp.kernel[...])).max() <= 1 / np.sqrt(37)
