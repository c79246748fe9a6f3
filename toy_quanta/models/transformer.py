"""A decoder-only transformer: modular arithmetic's tokens [a, OP, b, EQ] -> logits over residues,
and the induction task's long sequences -> next-token logits at every position.

Presets follow Power et al. 2022 (2 layers; pre-LN here, their code post-LN) and Nanda et al. 2023
(1 layer, no LN); docs/references.md has both. Initialisation: linear kernels N(0, 1/fan_in) (std
1/sqrt(fan_in)), token and learned position embeddings N(0, 1/d_model), biases 0, LayerNorm scale 1
and bias 0; then every parameter times `init_scale` (Omnigrok's alpha). Attention has no biases;
the MLP has; the untied unembedding has none.

`__call__` returns only the last position's logits and skips the work the others need: the last
layer computes one query (keys and values for all positions), and its MLP, the final LN and the
unembedding run on the last position only. `all_logits` runs every position with the same
parameters.

Laid out for XLA's CPU backend, where Power et al.'s setting (batch 512, 4 tokens) is bound by
how fast its many small products run: the blocks work on (batch x positions, width) rows, so every
projection and its two gradients are plain 2-D matrix products (autodiff through 3-D inputs
contracts two axes for the weight gradient, which XLA answered with transposed copies and slower
products), and attention over the 4 positions is written out one query and key pair at a time
(`causal_attention`) instead of as batched 4 x 4 products per head. Same function; together they
took a training step at that setting from about 38 to 27 ms on the 2-core CPU, side by side
(README, Benchmark).

Longer contexts (S > PAIRWISE_MAX_S, the induction task) take the batched path instead
(`batched_causal_attention`: per-head score matrices, masked above the diagonal), since the
written-out loop makes S^2 / 2 pairs of graph nodes. `attn_only` drops the MLPs (Olsson et al.'s
attention-only models); `attention_patterns` returns every layer's post-softmax attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from toy_quanta import checks
from toy_quanta.errors import ConfigError
from toy_quanta.models.base import Model
from toy_quanta.models.mlp import ACTIVATIONS
from toy_quanta.registry import register_model

POSITIONS = ("learned", "sinusoidal")

PRESETS: dict[str, dict] = {
    "power": dict(n_layers=2, d_model=128, n_heads=4, d_mlp=512, activation="relu", positions="learned",
                  layer_norm=True, tied=False),
    "nanda": dict(n_layers=1, d_model=128, n_heads=4, d_mlp=512, activation="relu", positions="learned",
                  layer_norm=False, tied=False),
}


def _normal(std: float):
    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.normal(key, shape, dtype)

    return init


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs, bias: bool = True) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, use_bias=bias, kernel_init=_normal(1.0 / math.sqrt(d_in)),
                      bias_init=nnx.initializers.zeros, rngs=rngs)


def scale_params(module: nnx.Module, init_scale) -> None:
    """Multiply every nnx.Param of `module` in place (also LN scales, so the whole vector is alpha x)."""
    params = nnx.state(module, nnx.Param)
    nnx.update(module, jax.tree.map(lambda x: x * init_scale, params))


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {sorted(allowed)}")


def sinusoidal_positions(seq_len: int, d_model: int) -> np.ndarray:
    """Vaswani et al.'s fixed encoding, (seq_len, d_model): sin on even, cos on odd features.
    NumPy, so it is a constant under jit and never a parameter."""
    pos_Sx1 = np.arange(seq_len, dtype=np.float64)[:, None]
    freq = np.exp(-math.log(10000.0) * np.arange(0, d_model, 2) / d_model)
    pe_SxD = np.zeros((seq_len, d_model))
    pe_SxD[:, 0::2] = np.sin(pos_Sx1 * freq)
    pe_SxD[:, 1::2] = np.cos(pos_Sx1 * freq[: d_model // 2])
    return pe_SxD.astype(np.float32)


# Up to this many positions attention is written out pair by pair (`causal_attention`: modular
# arithmetic's S = 4, bit for bit what it was); beyond it, batched products with a mask. At S = 16
# the loop already traces 136 score pairs per layer, and compile time grows as S^2.
PAIRWISE_MAX_S = 8


def causal_attention(q_BxQxHxE: jax.Array, k_BxSxHxE: jax.Array, v_BxSxHxE: jax.Array) -> jax.Array:
    """Softmax attention of queries at the last Q of S positions, each on the keys at or before its
    own position, every head at once: (B, Q, H, E).

    Written out one (query, key) position pair at a time, elementwise products summed over each
    head's E features, because S is 4 here: as batched products the per-head blocks are 4 x 4 (and
    4 x 32), which XLA's CPU backend runs, with their transposes in the backward pass, at a small
    fraction of its matrix-product speed, while these pairs fuse into a few passes over the batch.
    The causal mask is the loop bound: pairs past a query's position are never formed."""
    Q, S = q_BxQxHxE.shape[1], k_BxSxHxE.shape[1]
    scale = 1.0 / math.sqrt(q_BxQxHxE.shape[-1])
    out = []
    for i in range(Q):
        seen = S - Q + i + 1  # keys at positions 0 .. S - Q + i
        scores_BxHxS = jnp.stack([jnp.sum(q_BxQxHxE[:, i] * k_BxSxHxE[:, t], -1) * scale for t in range(seen)], -1)
        attn_BxHxS = jax.nn.softmax(scores_BxHxS, axis=-1)
        out.append(sum(attn_BxHxS[..., t, None] * v_BxSxHxE[:, t] for t in range(seen)))
    return jnp.stack(out, 1)


def attention_weights(q_BxQxHxE: jax.Array, k_BxSxHxE: jax.Array) -> jax.Array:
    """Post-softmax attention of queries at the last Q of S positions on the keys at or before
    their own position, as batched per-head score matrices: (B, H, Q, S), zero above the diagonal."""
    Q, S = q_BxQxHxE.shape[1], k_BxSxHxE.shape[1]
    scores_BxHxQxS = jnp.einsum("bqhe,bshe->bhqs", q_BxQxHxE, k_BxSxHxE) / math.sqrt(q_BxQxHxE.shape[-1])
    causal_QxS = np.arange(S)[None, :] <= np.arange(S - Q, S)[:, None]
    # a large negative, not -inf: a masked score then has an exact zero weight and a zero gradient
    return jax.nn.softmax(jnp.where(causal_QxS, scores_BxHxQxS, -1e30), axis=-1)


def batched_causal_attention(q_BxQxHxE: jax.Array, k_BxSxHxE: jax.Array, v_BxSxHxE: jax.Array) -> jax.Array:
    """The same function as `causal_attention`, (B, Q, H, E), as two batched products per head: for
    long sequences, where the pair-by-pair loop's graph (S^2 / 2 pairs) would take minutes to compile."""
    return jnp.einsum("bhqs,bshe->bqhe", attention_weights(q_BxQxHxE, k_BxSxHxE), v_BxSxHxE)


def attention(q_BxQxHxE: jax.Array, k_BxSxHxE: jax.Array, v_BxSxHxE: jax.Array) -> jax.Array:
    """Causal attention by the path that suits S: pair by pair up to PAIRWISE_MAX_S, else batched."""
    if k_BxSxHxE.shape[1] <= PAIRWISE_MAX_S:
        return causal_attention(q_BxQxHxE, k_BxSxHxE, v_BxSxHxE)
    return batched_causal_attention(q_BxQxHxE, k_BxSxHxE, v_BxSxHxE)


class Block(nnx.Module):
    """Attention then MLP (none when attn_only), each added to the residual stream (pre-LN when
    layer_norm)."""

    def __init__(self, d_model: int, n_heads: int, d_mlp: int, activation: str, layer_norm: bool, *, rngs: nnx.Rngs,
                 attn_only: bool = False):
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.act = ACTIVATIONS[activation]
        self.ln_attn = nnx.LayerNorm(d_model, rngs=rngs) if layer_norm else None
        self.ln_mlp = nnx.LayerNorm(d_model, rngs=rngs) if layer_norm and not attn_only else None
        self.q = _linear(d_model, d_model, rngs, bias=False)
        self.k = _linear(d_model, d_model, rngs, bias=False)
        self.v = _linear(d_model, d_model, rngs, bias=False)
        self.o = _linear(d_model, d_model, rngs, bias=False)
        self.mlp_in = None if attn_only else _linear(d_model, d_mlp, rngs)
        self.mlp_out = None if attn_only else _linear(d_mlp, d_model, rngs)

    def _heads(self, x_BxSxD: jax.Array, last_only: bool):
        """(xq_RxD, Q, q_BxQxHxE, k_BxSxHxE, v_BxSxHxE): the Q positions that get outputs (the last
        one, or all S) as residual rows (R = B * Q), their queries, and keys and values at every
        position, split into heads."""
        B, S, D = x_BxSxD.shape
        heads = lambda x_RxD, n: x_RxD.reshape(B, n, self.n_heads, self.d_head)  # noqa: E731
        x_RxD = x_BxSxD.reshape(B * S, D)  # R = B * S rows: 2-D products (module docstring)
        h_RxD = self.ln_attn(x_RxD) if self.ln_attn is not None else x_RxD
        k_BxSxHxE, v_BxSxHxE = heads(self.k(h_RxD), S), heads(self.v(h_RxD), S)
        # Queries only where outputs are wanted (xq and hq: R = B * Q rows); keys and values always
        # for every position.
        if last_only:
            Q, xq_RxD, hq_RxD = 1, x_BxSxD[:, -1], h_RxD.reshape(B, S, D)[:, -1]
        else:
            Q, xq_RxD, hq_RxD = S, x_RxD, h_RxD
        return xq_RxD, Q, heads(self.q(hq_RxD), Q), k_BxSxHxE, v_BxSxHxE

    def __call__(self, x_BxSxD: jax.Array, last_only: bool = False, head_mask_H: jax.Array | None = None) -> jax.Array:
        """Returns (B, S, D), or (B, 1, D) for the last position when last_only. head_mask_H
        multiplies each head's output before the output projection (0: the head ablated)."""
        B, S, D = x_BxSxD.shape
        xq_RxD, Q, q_BxQxHxE, k_BxSxHxE, v_BxSxHxE = self._heads(x_BxSxD, last_only)
        z_BxQxHxE = attention(q_BxQxHxE, k_BxSxHxE, v_BxSxHxE)
        if head_mask_H is not None:
            z_BxQxHxE = z_BxQxHxE * head_mask_H[:, None].astype(z_BxQxHxE.dtype)
        xq_RxD = xq_RxD + self.o(z_BxQxHxE.reshape(B * Q, D))
        if self.mlp_in is not None:
            hm_RxD = self.ln_mlp(xq_RxD) if self.ln_mlp is not None else xq_RxD
            xq_RxD = xq_RxD + self.mlp_out(self.act(self.mlp_in(hm_RxD)))
        return xq_RxD.reshape(B, Q, D)

    def pattern(self, x_BxSxD: jax.Array) -> jax.Array:
        """Post-softmax attention of every position, (B, H, S, S): row q is position q's weights
        on positions 0..S-1 (zero after q)."""
        _, _, q_BxSxHxE, k_BxSxHxE, _ = self._heads(x_BxSxD, last_only=False)
        return attention_weights(q_BxSxHxE, k_BxSxHxE)


class Transformer(nnx.Module):
    def __init__(
        self,
        vocab: int,
        n_out: int,
        seq_len: int,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_mlp: int,
        activation: str = "relu",
        positions: str = "learned",
        layer_norm: bool = False,
        tied: bool = False,
        init_scale: float = 1.0,
        *,
        rngs: nnx.Rngs,
        attn_only: bool = False,
    ):
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("positions", positions, POSITIONS)
        if n_heads < 1 or d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads} (d_head = d_model / n_heads)")
        if n_layers < 1:
            raise ValueError(f"n_layers={n_layers} must be >= 1")
        if tied and n_out > vocab:
            raise ValueError(f"tied=True needs n_out={n_out} <= vocab={vocab} (unembedding = first n_out embedding rows)")
        self.seq_len = seq_len
        self.n_out = n_out
        self.tied = tied
        self.positions = positions
        self.embed = nnx.Embed(vocab, d_model, embedding_init=_normal(1.0 / math.sqrt(d_model)), rngs=rngs)
        if positions == "learned":
            self.pos = nnx.Param(_normal(1.0 / math.sqrt(d_model))(rngs.params(), (seq_len, d_model)))
        else:
            self.pos = None
        self.blocks = nnx.List([Block(d_model, n_heads, d_mlp, activation, layer_norm, rngs=rngs, attn_only=attn_only)
                                for _ in range(n_layers)])
        self.ln_final = nnx.LayerNorm(d_model, rngs=rngs) if layer_norm else None
        self.unembed = None if tied else _linear(d_model, n_out, rngs, bias=False)
        scale_params(self, init_scale)

    @property
    def embed_matrix(self) -> jax.Array:
        """The token embedding, (vocab, d_model)."""
        return self.embed.embedding[...]

    def _positions(self, S: int) -> jax.Array:
        if S > self.seq_len:
            raise ValueError(f"sequence length {S} exceeds seq_len={self.seq_len}")
        if self.pos is None:
            return jnp.asarray(sinusoidal_positions(self.seq_len, self.embed_matrix.shape[1])[:S])
        return self.pos[...][:S]

    def _forward(self, tokens_BxS: jax.Array, last_only: bool, head_mask_LxH: jax.Array | None = None) -> jax.Array:
        x_BxSxD = self.embed(tokens_BxS) + self._positions(tokens_BxS.shape[1])
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            x_BxSxD = block(x_BxSxD, last_only=last_only and i == n - 1,
                            head_mask_H=None if head_mask_LxH is None else head_mask_LxH[i])
        if self.ln_final is not None:
            x_BxSxD = self.ln_final(x_BxSxD)
        if self.tied:
            return x_BxSxD @ self.embed_matrix[: self.n_out].T
        return self.unembed(x_BxSxD)

    @property
    def readout(self) -> nnx.Module:
        """The last layer (the engine logs its norm): the unembedding, or tied, the embedding."""
        return self.embed if self.unembed is None else self.unembed

    def __call__(self, tokens_BxS: jax.Array) -> jax.Array:
        """Logits at the last position, (B, n_out)."""
        return self._forward(tokens_BxS, last_only=True)[:, 0]

    def logits(self, tokens_BxS: jax.Array) -> jax.Array:
        """The trainer's common entry point (same as __call__)."""
        return self(tokens_BxS)

    def all_logits(self, tokens_BxS: jax.Array, head_mask_LxH: jax.Array | None = None) -> jax.Array:
        """Logits at every position, (B, S, n_out): what next-token training uses. head_mask_LxH
        (n_layers, n_heads) scales each head's output (0: ablated; None: every head as it is)."""
        return self._forward(tokens_BxS, last_only=False, head_mask_LxH=head_mask_LxH)

    def attention_patterns(self, tokens_BxS: jax.Array) -> jax.Array:
        """Every layer's post-softmax causal attention, (n_layers, B, H, S, S): [l, b, h, q, k] is
        how much head h of layer l attends from position q to k (rows sum to 1, zero for k > q)."""
        x_BxSxD = self.embed(tokens_BxS) + self._positions(tokens_BxS.shape[1])
        patterns = []
        for block in self.blocks:
            patterns.append(block.pattern(x_BxSxD))
            x_BxSxD = block(x_BxSxD)
        return jnp.stack(patterns)


def attention_flops_per_sequence(seq_len: int, n_layers: int, d_model: int, last_only: bool = True) -> int:
    """Forward FLOPs of the attention's score and value products (QK^T and AV, all heads), as
    `attention` computes them, d_model multiply-adds per (query, key) pair, 2 FLOPs each: up to
    PAIRWISE_MAX_S positions (`causal_attention`) elementwise over the causal pairs only; beyond it
    (`batched_causal_attention`) batched products over every pair, masked after."""
    S = seq_len

    def pairs(n_query: int) -> int:
        if S > PAIRWISE_MAX_S:
            return n_query * S
        return sum(S - n_query + i + 1 for i in range(n_query))

    last = 1 if last_only else S
    return 2 * 2 * d_model * ((n_layers - 1) * pairs(S) + pairs(last))


def train_flops_per_sequence(seq_len: int, n_layers: int, d_model: int, d_mlp: int, n_out: int,
                             last_only: bool = True) -> int:
    """FLOPs of one forward and backward pass (3x the forward) for one sequence, as `Transformer`
    computes it: 2 FLOPs per multiply-add of every matrix product and of the attention's products.

    Counted per block: the Q, K, V and output projections, the attention's QK^T and AV over the
    (query, key) pairs it computes (`attention_flops_per_sequence`), and the MLP's two layers; then
    the unembedding (tied or not: d_model x n_out). An attention-only model (`attn_only`) is
    counted with d_mlp=0. With `last_only` (`__call__`, what the trainer uses) the last block
    computes keys and values for all seq_len positions but its query, attention, output projection
    and MLP, and the unembedding, for the last position only; else (`all_logits`) every position
    runs everywhere. Not counted: embedding and position lookups (gathers), layer norms,
    softmax, biases, activations and residual adds, O(d_model) per position against O(d_model^2)
    for the products. The backward pass is 2x the forward (a gradient for each operand of each
    product), so the total is 3x the forward. The head count does not change the count.
    """
    S, D = seq_len, d_model

    def projections(n_query: int) -> int:
        qkv_out = 2 * D * D * (n_query + 2 * S)  # Q for the queries, K and V for every position
        out_proj = 2 * n_query * D * D
        mlp = 2 * n_query * 2 * D * d_mlp
        return qkv_out + out_proj + mlp

    last = 1 if last_only else S
    forward = ((n_layers - 1) * projections(S) + projections(last) + 2 * last * D * n_out
               + attention_flops_per_sequence(S, n_layers, D, last_only))
    return 3 * forward


@dataclass
class TransformerConfig:
    """Decoder-only transformer on "a op b =" (defaults: Power et al.'s 2 layers, width 128)."""

    name: str = "transformer"
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    activation: str = "relu"
    positions: str = "learned"  # learned or sinusoidal
    layer_norm: bool = True
    tied: bool = False  # unembedding = the embedding's residue rows, transposed
    init_scale: float = 1.0
    output_scale: float = 1.0  # outputs times this (lazy training: larger is lazier); per member: ensemble.output_scale
    centred: bool = False  # outputs minus the initial model's (Kumar et al.'s centred model)
    attn_only: bool = False  # no MLPs: attention-only blocks (Olsson et al.'s induction models); d_mlp is then unused


def _validate(cfg: Any) -> None:
    checks.boolean(cfg, "model.attn_only")
    checks.choice(cfg, "model.activation", tuple(ACTIVATIONS))
    for key in ("model.n_layers", "model.d_model", "model.n_heads", "model.d_mlp"):
        checks.positive_int(cfg, key)
    d, h = checks.get(cfg, "model.d_model"), checks.get(cfg, "model.n_heads")
    if d % h:
        raise ConfigError("model.n_heads", h, f"a divisor of model.d_model={d}")
    checks.choice(cfg, "model.positions", POSITIONS)


def _build(m: TransformerConfig, io: dict[str, int], key: jax.Array) -> Transformer:
    """io: vocab, n_out, seq_len (a token task's sizes)."""
    return Transformer(vocab=io["vocab"], n_out=io["n_out"], seq_len=io["seq_len"], n_layers=m.n_layers,
                       d_model=m.d_model, n_heads=m.n_heads, d_mlp=m.d_mlp, activation=m.activation,
                       positions=m.positions, layer_norm=m.layer_norm, tied=m.tied, init_scale=1.0,
                       rngs=nnx.Rngs(key), attn_only=m.attn_only)


def _describe(m: TransformerConfig) -> str:
    heads = f", {m.n_heads} heads, attention only" if m.attn_only else ""
    return f"transformer {m.n_layers} layers, width {m.d_model}{heads}"


register_model(Model("transformer", TransformerConfig, _build, _validate, embedding=True, describe=_describe))
