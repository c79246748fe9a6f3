"""Separate embedding / decoder optimisation (toy_quanta.engine.optim: optim.embed_lr, optim.embed_weight_decay):
each group moves as its own optax optimiser would move it, weight decay stays in its group, gradient
clipping stays global."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from toy_quanta.config import OptimConfig
from toy_quanta.engine.optim import embed_labels, make_optimizer
from toy_quanta.models.embed_mlp import EmbedMLP
from toy_quanta.models.transformer import Transformer


def _params() -> dict:
    """An EmbedMLP's parameters as a plain nested dict (embed / hidden / out), filled with N(0, 1)
    values (the structure is what matters; eval_shape skips the slow eager initialisation)."""
    model = nnx.eval_shape(lambda: EmbedMLP(n_symbols=7, n_out=13, d_embed=3, width=8, depth=2, activation="tanh",
                                            rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), nnx.to_pure_dict(nnx.split(model)[1]))


def _grads(params: dict, seed: int, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(scale * rng.normal(size=p.shape), p.dtype), params)


def _split(tree: dict) -> tuple[dict, dict]:
    """(the embedding subtree, everything else)."""
    return {"embed": tree["embed"]}, {k: v for k, v in tree.items() if k != "embed"}


def _run(tx: optax.GradientTransformation, params, grads_list) -> list:
    """The updates of successive steps of tx on params (compiled: eager dispatch is slow on CPU)."""
    @jax.jit
    def steps(params, grads_list):
        state, out = tx.init(params), []
        for g in grads_list:
            updates, state = tx.update(g, state, params)
            out.append(updates)
            params = optax.apply_updates(params, updates)
        return out

    return steps(params, grads_list)


def _close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def test_the_labels_pick_exactly_the_embedding():
    labels = embed_labels(_params())
    assert labels["embed"]["embedding"] == "embed"
    assert {v for k, sub in labels.items() if k != "embed" for v in jax.tree.leaves(sub)} == {"decoder"}
    # the trainer's nnx.State, and the transformer (its token embedding only; positions are decoder)
    t = nnx.eval_shape(lambda: Transformer(vocab=9, n_out=7, seq_len=4, n_layers=1, d_model=8, n_heads=2, d_mlp=16,
                                           activation="relu", positions="learned", layer_norm=False, tied=False,
                                           init_scale=1.0, rngs=nnx.Rngs(0)))
    flat = jax.tree_util.tree_leaves_with_path(embed_labels(nnx.split(t)[1]))
    embed_paths = [path for path, label in flat if label == "embed"]
    assert len(embed_paths) == 1 and "embed" in jax.tree_util.keystr(embed_paths[0])
    assert sum(label == "decoder" for _, label in flat) == len(flat) - 1


def test_two_steps_move_each_group_as_its_own_adamw():
    """Embedding at embed_lr = 1e-2 and embed_weight_decay 0.1, decoder at lr 1e-9 and weight decay 0.5:
    each part's updates equal an independent optax.adamw on that part alone."""
    cfg = OptimConfig(name="adamw", lr=1e-3, b1=0.9, b2=0.98, embed_lr=1e-2, embed_weight_decay=0.1)
    params = _params()
    grads = [_grads(params, 1), _grads(params, 2)]
    updates = _run(make_optimizer(cfg, 1e-9, 0.5, total_steps=10), params, grads)

    embed_p, dec_p = _split(params)
    adamw = lambda lr, wd: optax.adamw(lr, b1=0.9, b2=0.98, eps=1e-8, weight_decay=wd)  # noqa: E731
    ref_embed = _run(adamw(1e-2, 0.1), embed_p, [_split(g)[0] for g in grads])
    ref_dec = _run(adamw(1e-9, 0.5), dec_p, [_split(g)[1] for g in grads])
    for step in range(2):
        got_embed, got_dec = _split(updates[step])
        _close(got_embed, ref_embed[step], rtol=1e-5, atol=1e-9)
        _close(got_dec, ref_dec[step], rtol=1e-4, atol=1e-15)
    # Adam's first step is about -lr * sign(g): the embedding moves by ~1e-2, the decoder barely
    first_embed, first_dec = _split(updates[0])
    moved = np.abs(np.asarray(first_embed["embed"]["embedding"]))
    assert 4e-3 < moved.min() and moved.max() < 2e-2  # lr * |sign(g) + 0.1 * E|
    assert max(np.abs(np.asarray(u)).max() for u in jax.tree.leaves(first_dec)) < 1e-8


def test_without_embed_settings_every_parameter_shares_one_rule():
    cfg = OptimConfig(name="adamw", lr=3e-3)
    params = _params()
    grads = [_grads(params, 3)]
    got = _run(make_optimizer(cfg, 3e-3, 0.2, total_steps=10), params, grads)
    ref = _run(optax.adamw(3e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.2), params, grads)
    _close(got[0], ref[0], rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("embed_wd,wd", [(0.5, 0.0), (0.0, 0.3), (None, 0.3)])
def test_weight_decay_stays_in_its_group(embed_wd, wd):
    """Zero gradients: Adam's step is 0, so each update is -lr_group * decay_group * parameter.
    embed_weight_decay null falls back to weight_decay for the embedding."""
    lr, embed_lr = 1e-2, 1e-1
    cfg = OptimConfig(name="adamw", lr=lr, embed_lr=embed_lr, embed_weight_decay=embed_wd)
    params = _params()
    zero = jax.tree.map(jnp.zeros_like, params)
    (updates,) = _run(make_optimizer(cfg, lr, wd, total_steps=10), params, [zero])
    got_embed, got_dec = _split(updates)
    embed_decay = wd if embed_wd is None else embed_wd
    np.testing.assert_allclose(np.asarray(got_embed["embed"]["embedding"]),
                               -embed_lr * embed_decay * np.asarray(params["embed"]["embedding"]), rtol=1e-6, atol=0)
    _, dec_p = _split(params)
    for u, p in zip(jax.tree.leaves(got_dec), jax.tree.leaves(dec_p), strict=True):
        np.testing.assert_allclose(np.asarray(u), -lr * wd * np.asarray(p), rtol=1e-6, atol=0)


def test_gradient_clipping_is_global_over_both_groups():
    """SGD (the update is proportional to the clipped gradient): both groups are scaled by
    clip / |g| with |g| the norm over all parameters, not each group's own norm."""
    lr, embed_lr, clip = 1e-2, 1e-1, 0.5
    cfg = OptimConfig(name="sgd", lr=lr, embed_lr=embed_lr, grad_clip=clip)
    params = _params()
    grads = _grads(params, 4, scale=3.0)
    (updates,) = _run(make_optimizer(cfg, lr, 0.0, total_steps=10), params, [grads])
    leaves = [np.asarray(g, np.float64) for g in jax.tree.leaves(grads)]
    total = np.sqrt(sum(np.sum(g**2) for g in leaves))
    embed_norm = np.linalg.norm(np.asarray(grads["embed"]["embedding"], np.float64))
    assert total > 2 * clip and abs(embed_norm - total) > 0.1 * total  # the test tells global from per-group
    factor = clip / total
    got_embed, got_dec = _split(updates)
    g_embed, g_dec = _split(grads)
    np.testing.assert_allclose(np.asarray(got_embed["embed"]["embedding"]),
                               -embed_lr * factor * np.asarray(g_embed["embed"]["embedding"]), rtol=1e-5)
    for u, g in zip(jax.tree.leaves(got_dec), jax.tree.leaves(g_dec), strict=True):
        np.testing.assert_allclose(np.asarray(u), -lr * factor * np.asarray(g), rtol=1e-5)
