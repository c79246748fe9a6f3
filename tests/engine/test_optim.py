"""Optimisers and schedules (toy_quanta.engine.optim), against hand-computed updates."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import full_batch_train
from toy_quanta.config import OptimConfig
from toy_quanta.data import sparse_parity as sp
from toy_quanta.engine.optim import make_optimizer, schedule
from toy_quanta.models.mlp import MLP


def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree))))


# --- schedules -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["constant", "cosine", "linear"])
def test_warmup_starts_at_zero_then_follows_the_schedule(kind):
    """Linear warmup 0 -> lr over warmup_steps, then constant / cosine / linear decay to
    final_lr_factor * lr at the last step; values against the closed-form formulas."""
    lr, warmup, total, final = 2.0, 10, 110, 0.1
    f = schedule(OptimConfig(warmup_steps=warmup, schedule=kind, final_lr_factor=final), lr, total_steps=total)
    assert float(f(0)) == 0.0
    for t in range(0, warmup + 1):
        np.testing.assert_allclose(float(f(t)), lr * t / warmup, rtol=1e-6, err_msg=f"warmup step {t}")
    T = total - warmup
    for t in (warmup, warmup + 25, warmup + 50, warmup + 99, total):
        s = t - warmup
        if kind == "constant":
            want = lr
        elif kind == "cosine":
            want = lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * s / T)))
        else:
            want = lr + (lr * final - lr) * s / T
        np.testing.assert_allclose(float(f(t)), want, rtol=1e-5, err_msg=f"{kind} step {t}")


def test_no_warmup_starts_at_lr():
    f = schedule(OptimConfig(schedule="constant"), 0.3, total_steps=50)
    np.testing.assert_allclose([float(f(t)) for t in (0, 7, 50)], [0.3, 0.3, 0.3], rtol=1e-6)


def test_make_optimizer_with_warmup_makes_no_update_at_step_0():
    """The actual first update of make_optimizer (adam, warmup 5) is zero; the second is not."""
    cfg = OptimConfig(name="adam", lr=0.1, warmup_steps=5)
    params = {"w": jnp.ones(4)}
    tx = make_optimizer(cfg, cfg.lr, 0.0, 100)
    state = tx.init(params)
    grads = {"w": jnp.array([1.0, -2.0, 3.0, 0.5])}
    u0, state = tx.update(grads, state, params)
    np.testing.assert_array_equal(np.asarray(u0["w"]), 0.0)
    u1, state = tx.update(grads, state, params)
    # step 1: lr 0.1 * 1/5; adam's bias-corrected first step is -sign(g) (up to eps)
    np.testing.assert_allclose(np.asarray(u1["w"]), -0.02 * np.sign(np.asarray(grads["w"])), rtol=1e-4)


# --- update rules ----------------------------------------------------------------------------

def _first_updates(cfg: OptimConfig, params, grads_seq, wd=None):
    tx = make_optimizer(cfg, cfg.lr, cfg.weight_decay if wd is None else wd, 100)
    state = tx.init(params)
    out = []
    for g in grads_seq:
        u, state = tx.update(g, state, params)
        out.append(np.asarray(u["w"], np.float64))
        params = optax.apply_updates(params, u)
    return out


def test_sgd_update_is_minus_lr_times_gradient_plus_l2():
    """sgd: update = -lr * (g + wd * p) (PyTorch's L2 weight decay)."""
    p = np.array([1.0, -2.0, 0.5])
    g = np.array([0.3, 0.1, -0.7])
    (u,) = _first_updates(OptimConfig(name="sgd", lr=0.1, weight_decay=0.01), {"w": jnp.asarray(p)}, [{"w": jnp.asarray(g)}])
    np.testing.assert_allclose(u, -0.1 * (g + 0.01 * p), rtol=1e-6)


def test_sgd_momentum_accumulates():
    """sgd with momentum m: second update = -lr * (g2 + m * g1)."""
    g1, g2 = np.array([1.0, 2.0]), np.array([-0.5, 0.25])
    u1, u2 = _first_updates(OptimConfig(name="sgd", lr=0.1, momentum=0.9), {"w": jnp.zeros(2)},
                            [{"w": jnp.asarray(g1)}, {"w": jnp.asarray(g2)}])
    np.testing.assert_allclose(u1, -0.1 * g1, rtol=1e-6)
    np.testing.assert_allclose(u2, -0.1 * (g2 + 0.9 * g1), rtol=1e-6)


def test_adam_matches_the_textbook_update():
    """adam: two steps against Kingma & Ba with bias correction, computed in NumPy."""
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.01
    gs = [np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.3, -0.2])]
    us = _first_updates(OptimConfig(name="adam", lr=lr, b1=b1, b2=b2, eps=eps), {"w": jnp.zeros(3)},
                        [{"w": jnp.asarray(g)} for g in gs])
    m = v = np.zeros(3)
    for t, (g, u) in enumerate(zip(gs, us), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        want = -lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(u, want, rtol=1e-4)  # float32


def test_grad_clip_caps_the_update_norm():
    """sgd lr 1, grad_clip 1e-3: the update's global norm is <= 1e-3 * lr (gradients far larger),
    and points along -g; a gradient already below the clip passes unchanged."""
    cfg = OptimConfig(name="sgd", lr=1.0, grad_clip=1e-3)
    rng = np.random.default_rng(0)
    params = {"a": jnp.zeros((10, 10)), "b": jnp.zeros(7)}
    grads = {"a": jnp.asarray(rng.normal(size=(10, 10)) * 5, jnp.float32), "b": jnp.asarray(rng.normal(size=7), jnp.float32)}
    tx = make_optimizer(cfg, cfg.lr, 0.0, 10)
    u, _ = tx.update(grads, tx.init(params), params)
    assert _norm(u) <= 1e-3 * 1.0 * (1 + 1e-5)
    assert _norm(u) > 0.99e-3  # clipped to the cap, not to zero
    g_dir = np.concatenate([np.ravel(grads["a"]), np.ravel(grads["b"])]) / _norm(grads)
    u_dir = np.concatenate([np.ravel(u["a"]), np.ravel(u["b"])]) / _norm(u)
    np.testing.assert_allclose(u_dir, -g_dir, atol=1e-5)
    small = jax.tree.map(lambda x: x * 1e-7, grads)
    u_small, _ = tx.update(small, tx.init(params), params)
    for a, b in zip(jax.tree.leaves(u_small), jax.tree.leaves(small)):
        np.testing.assert_allclose(a, -np.asarray(b), rtol=1e-5)


def test_adamw_weight_decay_shrinks_params_with_zero_gradient():
    """adamw: decoupled decay, p <- p * (1 - lr * wd) when the gradient is zero."""
    cfg = OptimConfig(name="adamw", lr=0.1, weight_decay=0.5)
    params = {"w": jnp.array([1.0, -3.0, 0.25])}
    tx = make_optimizer(cfg, cfg.lr, cfg.weight_decay, 10)
    state = tx.init(params)
    for _ in range(3):
        u, state = tx.update({"w": jnp.zeros(3)}, state, params)
        params = optax.apply_updates(params, u)
    np.testing.assert_allclose(params["w"], np.array([1.0, -3.0, 0.25]) * (1 - 0.05) ** 3, rtol=1e-5)


def test_adam_weight_decay_is_l2_inside_the_moments():
    """adam (PyTorch style): wd is added to the gradient before the moments, so with zero gradient
    the first step is -lr * sign(p) (adam normalises the L2 term), not -lr * wd * p."""
    p = np.array([2.0, -0.5])
    (u,) = _first_updates(OptimConfig(name="adam", lr=0.1, weight_decay=0.01), {"w": jnp.asarray(p)}, [{"w": jnp.zeros(2)}])
    np.testing.assert_allclose(u, -0.1 * np.sign(p), rtol=1e-4)


def test_traced_lr_and_weight_decay_vectorise():
    """lr and weight decay may be traced: one vmapped program serves members that differ in them."""
    cfg = OptimConfig(name="sgd")
    params = {"w": jnp.ones(2)}

    def one(lr, wd):
        tx = make_optimizer(cfg, lr, wd, 10)
        u, _ = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
        return optax.apply_updates(params, u)["w"][0]

    out = jax.jit(jax.vmap(one))(jnp.array([0.1, 0.2]), jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(out, [1 - 0.1 * 1, 1 - 0.2 * 2], rtol=1e-6)


# --- each optimiser trains -------------------------------------------------------------------

@pytest.fixture(scope="module")
def parity_problem():
    """A tiny sparse parity batch and a width-32 MLP split into graphdef and parameters."""
    subsets = jnp.asarray(sp.draw_subsets(3, 6, 2, seed=0))
    task, bits, label = sp.sample(jax.random.key(0), subsets, 0.4, 256, 6)
    graphdef, params = nnx.split(MLP(3, 6, 32, rngs=nnx.Rngs(0)))
    return graphdef, params, (task, bits, label)


@pytest.mark.parametrize("name,lr", [("adam", 1e-2), ("adamw", 1e-2), ("sgd", 0.5)])
def test_each_optimiser_reduces_the_loss(parity_problem, name, lr):
    """100 full-batch steps of adam, adamw, sgd on a tiny parity batch: the loss at least halves."""
    graphdef, params, (task, bits, label) = parity_problem
    cfg = OptimConfig(name=name, lr=lr, weight_decay=1e-4, momentum=0.9 if name == "sgd" else 0.0)
    tx = make_optimizer(cfg, cfg.lr, cfg.weight_decay, 100)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(task, bits), label).mean()

    before, after = float(loss(params)), float(loss(full_batch_train(loss, tx, params, 100)))
    assert before > 0.6
    assert after < 0.5 * before, (before, after)


def test_a_member_of_an_eps_ensemble_equals_it_trained_alone():
    """ensemble.eps: Adam's eps per member (traced); each member equals optim.eps set alone."""
    from conftest import tiny_config
    from toy_quanta.engine.loop import fit
    from toy_quanta.engine.members import expand

    cfg = tiny_config(ensemble={"eps": [1e-8, 0.1]})
    together = fit(cfg, expand(cfg))
    alone_cfg = tiny_config(optim={"eps": 0.1})
    alone = fit(alone_cfg, expand(alone_cfg))
    np.testing.assert_allclose(together.log_array("train_loss")[:, 1], alone.log_array("train_loss")[:, 0], rtol=1e-5)
    assert not np.allclose(together.log_array("param_norm")[:, 0], together.log_array("param_norm")[:, 1])
