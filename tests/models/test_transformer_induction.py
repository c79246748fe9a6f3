"""What the induction task needs of the transformer (toy_quanta.models.transformer): the batched
attention path against the pair-by-pair one (values and gradients), attention-only blocks, long
contexts against a NumPy float64 reference, attention_patterns (causal, rows summing to 1, the
reference's), and FLOP counts against the traced program."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import dot_flops
from toy_quanta.models.transformer import (PAIRWISE_MAX_S, Transformer, attention_flops_per_sequence,
                                           batched_causal_attention, causal_attention, train_flops_per_sequence)

V = 20
LONG = dict(n_layers=2, d_model=16, n_heads=4, d_mlp=24, activation="relu", positions="learned", layer_norm=False,
            tied=False, attn_only=True)


def _model(seq_len=12, seed=0, **kw) -> Transformer:
    return Transformer(V, V, seq_len, **{**LONG, **kw}, rngs=nnx.Rngs(seed))


def _tokens(B, S, seed=0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).integers(0, V, (B, S)), jnp.int32)


def _params(model) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _run(model, method: str, tokens) -> np.ndarray:
    """model.method(tokens), compiled once (eager dispatch of the pairwise loop is slow)."""
    graphdef, state = nnx.split(model)
    return np.asarray(jax.jit(lambda s, t: getattr(nnx.merge(graphdef, s), method)(t))(state, jnp.asarray(tokens)))


@pytest.mark.parametrize("n_query,seq_len", [(2, 4), pytest.param(1, 6, marks=pytest.mark.slow),
                                             pytest.param(8, 8, marks=pytest.mark.slow)])
def test_batched_attention_equals_pairwise(n_query, seq_len):
    """The two paths are one function: same outputs and same gradients for queries, keys, values."""
    keys = jax.random.split(jax.random.key(1), 4)
    q = jax.random.normal(keys[0], (5, n_query, 2, 6))
    k, v = (jax.random.normal(key, (5, seq_len, 2, 6)) for key in keys[1:3])
    dz = jax.random.normal(keys[3], q.shape)

    @jax.jit
    def both(q, k, v, dz):
        (out, vjp), (batched, batched_vjp) = jax.vjp(causal_attention, q, k, v), jax.vjp(batched_causal_attention, q, k, v)
        return out, batched, vjp(dz), batched_vjp(dz)

    out, batched, grads, batched_grads = both(q, k, v, dz)
    np.testing.assert_allclose(batched, out, rtol=1e-5, atol=1e-6)
    for g, g_ref in zip(batched_grads, grads):
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_model_over_the_threshold_equals_the_same_model_under_it():
    """The same parameters, once through the pairwise path (S = PAIRWISE_MAX_S) and once through the
    batched one (the first S positions of a longer model): the same logits."""
    short = _model(seq_len=PAIRWISE_MAX_S, attn_only=False, layer_norm=True)
    long = _model(seq_len=PAIRWISE_MAX_S + 4, attn_only=False, layer_norm=True)
    params = _params(short)
    params["pos"] = _params(long)["pos"][:PAIRWISE_MAX_S]
    nnx.update(short, nnx.State(params))
    nnx.update(long, nnx.State({**params, "pos": _params(long)["pos"].at[:PAIRWISE_MAX_S].set(params["pos"])}))
    tokens = _tokens(6, PAIRWISE_MAX_S + 4)
    np.testing.assert_allclose(_run(long, "all_logits", tokens)[:, :PAIRWISE_MAX_S],
                               _run(short, "all_logits", tokens[:, :PAIRWISE_MAX_S]), rtol=1e-4, atol=1e-5)


def test_attention_only_blocks_have_no_mlp():
    full, attn_only = (nnx.eval_shape(lambda a=a: _model(attn_only=a, layer_norm=True)) for a in (False, True))
    block = _params(attn_only)["blocks"][0]
    assert set(block) == {"ln_attn", "q", "k", "v", "o"}
    assert {"mlp_in", "mlp_out", "ln_mlp"} <= set(_params(full)["blocks"][0])
    count = lambda m: sum(x.size for x in jax.tree.leaves(_params(m)))  # noqa: E731
    D, M = 16, 24
    assert count(full) - count(attn_only) == 2 * (D * M + M + M * D + D + 2 * D)


def _reference(params: dict, tokens_BxS: np.ndarray, layer_norm: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """(logits (B, S, V), attention per layer (B, H, S, S)) of the attention-only model in float64,
    written the textbook way from the parameters alone."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    D, H = 16, 4
    B, S = tokens_BxS.shape

    def ln(x, w):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6) * w["scale"] + w["bias"]

    x = p["embed"]["embedding"][tokens_BxS] + p["pos"][:S]
    patterns = []
    for w in p["blocks"].values():
        h = ln(x, w["ln_attn"]) if layer_norm else x
        q, k, v = ((h @ w[n]["kernel"]).reshape(B, S, H, D // H) for n in "qkv")
        scores = np.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(D // H)
        scores = np.where(np.tril(np.ones((S, S), bool)), scores, -np.inf)
        attn = np.exp(scores - scores.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        patterns.append(attn)
        x = x + np.einsum("bhqk,bkhe->bqhe", attn, v).reshape(B, S, D) @ w["o"]["kernel"]
    if layer_norm:
        x = ln(x, p["ln_final"])
    return x @ p["unembed"]["kernel"], patterns


@pytest.mark.parametrize("seq_len,layer_norm", [(24, True), (4, False)])
def test_logits_and_patterns_equal_the_numpy_reference(seq_len, layer_norm):
    """Past the threshold (24) and under it (4: the pairwise forward; the patterns are batched)."""
    model = _model(seq_len=seq_len, layer_norm=layer_norm)
    tokens = np.asarray(_tokens(8, seq_len, seed=seq_len))
    logits, patterns = _reference(_params(model), tokens, layer_norm)
    graphdef, state = nnx.split(model)
    every, last, got = jax.jit(lambda s, t: (lambda m: (m.all_logits(t), m(t), m.attention_patterns(t)))(
        nnx.merge(graphdef, s)))(state, jnp.asarray(tokens))
    np.testing.assert_allclose(every, logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(last, logits[:, -1], rtol=1e-4, atol=1e-4)
    got = np.asarray(got)
    assert got.shape == (2, 8, 4, seq_len, seq_len)
    np.testing.assert_allclose(got, np.stack(patterns), rtol=1e-4, atol=1e-6)


def test_attention_patterns_are_causal_and_rows_sum_to_one():
    got = _run(_model(seq_len=16, attn_only=False, layer_norm=True), "attention_patterns", _tokens(4, 16))
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)
    assert np.all(got[..., np.triu_indices(16, 1)[0], np.triu_indices(16, 1)[1]] == 0.0)
    assert np.all(got >= 0.0)


def test_long_context_is_causal():
    """Changing token t leaves the logits before t unchanged and changes those from t on."""
    model = _model(seq_len=20)
    tokens = np.asarray(_tokens(4, 20, seed=5))
    base = _run(model, "all_logits", tokens)
    for t in (0, 9, 19):
        changed = tokens.copy()
        changed[:, t] = (changed[:, t] + 1) % V
        out = _run(model, "all_logits", changed)
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert np.all(np.abs(out[:, t:] - base[:, t:]).max(-1) > 1e-6)


def _equations(seq_len: int) -> int:
    model = _model(seq_len=seq_len)
    graphdef, params = nnx.split(model, nnx.Param)
    tokens = jnp.zeros((2, seq_len), jnp.int32)
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: nnx.merge(graphdef, p).all_logits(tokens).sum()))(params)
    return len(jaxpr.jaxpr.eqns)


def test_the_program_does_not_grow_with_the_context():
    """Past the threshold the traced program has the same size at 16 and 256 positions (the pairwise
    loop would trace 32,896 score pairs per layer at 256: the compile-time explosion)."""
    assert _equations(256) == _equations(16)


def test_flops_of_an_attention_only_long_context_model():
    """d_mlp=0 counts an attention-only model; past the threshold the attention's products are
    batched dot_generals over every (query, key) pair, so all of it is in the traced products."""
    B, S = 4, 16
    graphdef, params = nnx.split(_model(seq_len=S), nnx.Param)
    tokens = jnp.zeros((B, S), jnp.int32)
    forward = jax.make_jaxpr(lambda p: nnx.merge(graphdef, p).all_logits(tokens))(params).jaxpr
    assert 3 * dot_flops(forward) == B * train_flops_per_sequence(S, 2, 16, 0, V, last_only=False)
    assert attention_flops_per_sequence(S, 2, 16, last_only=False) == 2 * 2 * 16 * S * S * 2
