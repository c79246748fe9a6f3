"""The grokking transformer (toy_quanta.models.transformer): the function against a NumPy float64
reference, its written-out attention against masked batched products (values and gradients),
causality, the last-position shortcut, init_scale, tying, parameter counts, and that it can fit a
tiny table."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import full_batch_train
from toy_quanta.models.mlp import ACTIVATIONS
from toy_quanta.models.transformer import PRESETS, Transformer, causal_attention, sinusoidal_positions

P = 7  # residues 0..6, OP = 7, EQ = 8
TINY = dict(n_layers=1, d_model=32, n_heads=4, d_mlp=64, activation="relu", positions="learned",
            layer_norm=False, tied=False)


def _model(p=P, seed=0, **kw) -> Transformer:
    return Transformer(p + 2, p, 4, **{**TINY, **kw}, rngs=nnx.Rngs(seed))


def _tokens(a, b, p=P) -> jax.Array:
    a, b = np.asarray(a), np.asarray(b)
    return jnp.asarray(np.stack([a, np.full_like(a, p), b, np.full_like(a, p + 1)], axis=1), jnp.int32)


def _all_pairs(p=P):
    a, b = np.divmod(np.arange(p * p), p)
    return _tokens(a, b, p), jnp.asarray((a + b) % p)


def _params(model) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _count(model) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


CONFIGS = [
    dict(n_layers=1),
    dict(n_layers=2, layer_norm=True),
    dict(n_layers=2, tied=True, positions="sinusoidal", activation="gelu"),
    dict(n_layers=1, layer_norm=True, tied=True),
    dict(n_layers=2, positions="sinusoidal"),
    dict(n_layers=1, activation="gelu", init_scale=3.0),
]


@pytest.mark.parametrize("kw", CONFIGS)
def test_call_equals_last_of_all_logits(kw):
    model = _model(**kw)
    rng = np.random.default_rng(0)
    tokens = _tokens(rng.integers(0, P, 16), rng.integers(0, P, 16))
    last = model(tokens)
    assert last.shape == (16, P)
    # float32: the two paths multiply matrices of different shapes, so sums round differently
    np.testing.assert_allclose(last, model.all_logits(tokens)[:, -1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.logits(tokens), last)


@pytest.mark.parametrize("kw", [dict(n_layers=1), dict(n_layers=2, layer_norm=True, positions="sinusoidal")])
def test_causal_mask(kw):
    """Changing token t leaves positions < t unchanged and changes positions >= t."""
    model = _model(**kw)
    rng = np.random.default_rng(1)
    tokens = np.asarray(_tokens(rng.integers(0, P, 8), rng.integers(0, P, 8)))
    base = model.all_logits(jnp.asarray(tokens))
    for t in range(4):
        changed = tokens.copy()
        changed[:, t] = (changed[:, t] + 1) % (P + 2)
        out = model.all_logits(jnp.asarray(changed))
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert np.all(np.abs(out[:, t:] - base[:, t:]).max(axis=-1) > 1e-6), f"position {t} did not reach later logits"


@pytest.mark.parametrize("kw", [dict(n_layers=2, layer_norm=True), dict(n_layers=1, tied=True, positions="sinusoidal")])
def test_init_scale_multiplies_every_parameter(kw):
    base = _params(_model(**kw, init_scale=1.0))
    scaled = _params(_model(**kw, init_scale=3.0))
    leaves_b, tree_b = jax.tree.flatten(base)
    leaves_s, tree_s = jax.tree.flatten(scaled)
    assert tree_b == tree_s
    for b, s in zip(leaves_b, leaves_s):
        np.testing.assert_allclose(s, 3.0 * np.asarray(b), rtol=1e-6)
    # LayerNorm scales too (ones -> threes), so the whole parameter vector is scaled
    if kw.get("layer_norm"):
        np.testing.assert_allclose(scaled["ln_final"]["scale"], 3.0)


def test_tied_uses_embedding_and_has_no_unembedding():
    untied, tied = _model(tied=False), _model(tied=True)
    assert "unembed" in _params(untied) and "unembed" not in _params(tied)
    assert _count(untied) - _count(tied) == 32 * P
    # Doubling the embedding rows of the residues changes the tied logits through the unembedding
    tokens, _ = _all_pairs()
    before = tied(tokens)
    tied.embed.embedding[...] = tied.embed.embedding[...].at[:P].multiply(2.0)
    assert not np.allclose(before, tied(tokens))
    # And the tied logits are the final residual stream times E[:P]^T: set E[:P] to zero -> zero logits
    tied.embed.embedding[...] = tied.embed.embedding[...].at[:P].set(0.0)
    np.testing.assert_allclose(tied(tokens), 0.0, atol=1e-6)


def test_sinusoidal_positions_add_no_parameters():
    learned, sinus = _model(positions="learned"), _model(positions="sinusoidal")
    assert "pos" not in _params(sinus)
    assert _count(learned) - _count(sinus) == 4 * 32


def _expected_count(p, n_layers, d_model, d_mlp, layer_norm, tied, positions, **_):
    """vocab*D (token embedding) + T*D (learned positions)
    + L * [4*D*D (Q, K, V, O, no biases) + D*M + M + M*D + D (MLP with biases) + 2 * 2D (two LNs)]
    + 2D (final LN) + D*P (untied unembedding, no bias); LN terms only with layer_norm."""
    D, M, T, V = d_model, d_mlp, 4, p + 2
    ln = 2 * d_model if layer_norm else 0
    block = 4 * D * D + D * M + M + M * D + D + 2 * ln
    return V * D + (T * D if positions == "learned" else 0) + n_layers * block + ln + (0 if tied else D * p)


@pytest.mark.parametrize("name,p", [("nanda", 113), ("power", 97)])
def test_preset_parameter_counts(name, p):
    model = Transformer(p + 2, p, 4, **PRESETS[name], rngs=nnx.Rngs(0))
    assert _count(model) == _expected_count(p, **PRESETS[name])
    if name == "nanda":
        # 115*128 + 4*128 + 4*128*128 + (128*512 + 512 + 512*128 + 128) + 128*113
        assert _count(model) == 226_944
    else:
        # 99*128 + 4*128 + 2*(4*128^2 + 131,712 + 512) + 256 + 128*97; about 4e5 non-embedding
        assert _count(model) == 99 * 128 + 4 * 128 + 2 * (65_536 + 131_712 + 512) + 256 + 128 * 97
        non_embedding = _count(model) - 99 * 128 - 4 * 128 - 128 * 97
        assert 3.5e5 < non_embedding < 4.5e5


def test_bad_arguments():
    with pytest.raises(ValueError, match="d_model=30.*n_heads=4"):
        _model(d_model=30)
    with pytest.raises(ValueError, match=r"activation='swish'.*'gelu'.*'relu'"):
        _model(activation="swish")
    with pytest.raises(ValueError, match=r"positions='rotary'.*\['learned', 'sinusoidal'\]"):
        _model(positions="rotary")


def test_every_parameter_gets_a_gradient():
    """Through the last-position shortcut, every parameter (all positions, both LNs, K/V of the last
    layer) still receives a non-zero gradient."""
    model = _model(n_layers=2, layer_norm=True)
    graphdef, params = nnx.split(model, nnx.Param)
    tokens, labels = _all_pairs()

    def loss(params):
        logits = nnx.merge(graphdef, params).logits(tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.jit(jax.grad(loss))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(grads)):
        assert np.abs(g).max() > 0, jax.tree_util.keystr(path)


@pytest.mark.parametrize("kw", [dict(n_layers=1), dict(n_layers=2, layer_norm=True, tied=True, positions="sinusoidal")])
def test_fits_tiny_addition_table(kw):
    """Full-batch AdamW (lr 1e-2) on all 49 pairs of addition mod 7 reaches 100% training accuracy."""
    model = _model(**kw)
    graphdef, params = nnx.split(model, nnx.Param)
    tokens, labels = _all_pairs()
    opt = optax.adamw(1e-2)

    def loss(params):
        logits = nnx.merge(graphdef, params).logits(tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    params = full_batch_train(loss, opt, params, 300)
    acc = (nnx.merge(graphdef, params).logits(tokens).argmax(-1) == labels).mean()
    assert acc == 1.0


def _reference_attention(q_BxQxHxK, k_BxTxHxK, v_BxTxHxK):
    """Attention as it is usually written: per-head score matrices, -inf above the diagonal."""
    Q, T = q_BxQxHxK.shape[1], k_BxTxHxK.shape[1]
    scores = jnp.einsum("bqhk,bthk->bhqt", q_BxQxHxK, k_BxTxHxK) / np.sqrt(q_BxQxHxK.shape[-1])
    causal_QxT = np.arange(T)[None, :] <= np.arange(T - Q, T)[:, None]
    attn = jax.nn.softmax(jnp.where(causal_QxT, scores, -jnp.inf), axis=-1)
    return jnp.einsum("bhqt,bthk->bqhk", attn, v_BxTxHxK)


@pytest.mark.parametrize("n_query,seq_len", [pytest.param(4, 4, marks=pytest.mark.slow),
                                             pytest.param(1, 4, marks=pytest.mark.slow),
                                             pytest.param(2, 5, marks=pytest.mark.slow), (1, 1)])
def test_causal_attention_equals_masked_batched_products(n_query, seq_len):
    """The pair-by-pair attention gives the masked softmax of batched products, and the same
    gradients for queries, keys and values."""
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (6, n_query, 4, 8))
    k, v = (jax.random.normal(key, (6, seq_len, 4, 8)) for key in keys[1:3])
    dz = jax.random.normal(keys[3], q.shape)
    out, vjp = jax.vjp(causal_attention, q, k, v)
    ref, ref_vjp = jax.vjp(_reference_attention, q, k, v)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(vjp(dz), ref_vjp(dz)):
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)


def _numpy_logits(params: dict, tokens_BxT: np.ndarray, cfg: dict) -> np.ndarray:
    """Every position's logits in float64 from the parameters alone: the transformer written the
    textbook way ((B, T, D) arrays, masked per-head score matrices), independent of the model code."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    D, H = cfg["d_model"], cfg["n_heads"]
    B, T = tokens_BxT.shape

    def ln(x, w):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6) * w["scale"] + w["bias"]

    pos = p["pos"] if cfg["positions"] == "learned" else sinusoidal_positions(T, D).astype(np.float64)
    x = p["embed"]["embedding"][tokens_BxT] + pos[:T]
    act = lambda z: np.asarray(ACTIVATIONS[cfg["activation"]](jnp.asarray(z, jnp.float32)), np.float64)  # noqa: E731
    for i in range(cfg["n_layers"]):
        w = p["blocks"][i]
        h = ln(x, w["ln_attn"]) if cfg["layer_norm"] else x
        q, k, v = ((h @ w[n]["kernel"]).reshape(B, T, H, D // H) for n in "qkv")
        scores = np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(D // H)
        scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
        attn = np.exp(scores - scores.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        x = x + np.einsum("bhqt,bthk->bqhk", attn, v).reshape(B, T, D) @ w["o"]["kernel"]
        h = ln(x, w["ln_mlp"]) if cfg["layer_norm"] else x
        x = x + act(h @ w["mlp_in"]["kernel"] + w["mlp_in"]["bias"]) @ w["mlp_out"]["kernel"] + w["mlp_out"]["bias"]
    if cfg["layer_norm"]:
        x = ln(x, p["ln_final"])
    unembed = p["embed"]["embedding"][:P].T if cfg["tied"] else p["unembed"]["kernel"]
    return x @ unembed


@pytest.mark.parametrize("kw", CONFIGS)
def test_logits_equal_numpy_reference(kw):
    model = _model(**kw)
    rng = np.random.default_rng(2)
    tokens = np.asarray(_tokens(rng.integers(0, P, 32), rng.integers(0, P, 32)))
    expected = _numpy_logits(_params(model), tokens, {**TINY, **kw})
    np.testing.assert_allclose(model.all_logits(jnp.asarray(tokens)), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model(jnp.asarray(tokens)), expected[:, -1], rtol=1e-4, atol=1e-4)
