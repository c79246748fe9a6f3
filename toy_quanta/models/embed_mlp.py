"""Embedding + MLP decoder for binary operations: the effective theory's toy (Liu et al. 2022) and
Omnigrok's modular addition setting.

Each operand has a learned embedding E (n_symbols, d_embed); the pair is read as E_a + E_b
("sum", the effective theory's parallelogram structure) or [E_a, E_b] ("concat"), then an MLP with
`depth` hidden layers of `width` maps it to n_out logits. Initialisation follows PyTorch defaults as
those papers' code did: embedding N(0, 1), linear kernels and biases U(-1/sqrt(fan_in),
1/sqrt(fan_in)) (toy_quanta.models.mlp._linear); then every parameter times `init_scale`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from toy_quanta import checks
from toy_quanta.errors import ConfigError
from toy_quanta.models.base import Model
from toy_quanta.models.mlp import ACTIVATIONS, _linear
from toy_quanta.models.transformer import check_choice, scale_params
from toy_quanta.registry import register_model

COMBINES = ("sum", "concat")



class EmbedMLP(nnx.Module):
    def __init__(
        self,
        n_symbols: int,
        n_out: int,
        d_embed: int,
        width: int,
        depth: int = 1,
        activation: str = "relu",
        combine: str = "sum",
        init_scale: float = 1.0,
        *,
        rngs: nnx.Rngs,
    ):
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("combine", combine, COMBINES)
        if depth < 0:
            raise ValueError(f"depth={depth} must be >= 0")
        self.combine = combine
        self.act = ACTIVATIONS[activation]
        self.embed = nnx.Embed(n_symbols, d_embed, embedding_init=nnx.initializers.normal(1.0), rngs=rngs)
        d_in = d_embed if combine == "sum" else 2 * d_embed
        dims = [d_in] + [width] * depth
        self.hidden = nnx.List([_linear(i, o, rngs) for i, o in zip(dims[:-1], dims[1:])])
        self.out = _linear(dims[-1], n_out, rngs)
        scale_params(self, init_scale)

    @property
    def embed_matrix(self) -> jax.Array:
        """The operand embedding, (n_symbols, d_embed)."""
        return self.embed.embedding[...]

    def __call__(self, a_B: jax.Array, b_B: jax.Array) -> jax.Array:
        """Logits (B, n_out) for the pairs (a, b)."""
        ea_BxD, eb_BxD = self.embed(a_B), self.embed(b_B)
        if self.combine == "sum":
            h_BxI = ea_BxD + eb_BxD
        else:
            h_BxI = jnp.concatenate([ea_BxD, eb_BxD], axis=1)
        for layer in self.hidden:
            h_BxI = self.act(layer(h_BxI))
        return self.out(h_BxI)

    @staticmethod
    def from_tokens(tokens_BxS: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The operands (a_B, b_B) of [a, OP, b, EQ] sequences."""
        return tokens_BxS[:, 0], tokens_BxS[:, 2]

    def logits(self, tokens_BxS: jax.Array) -> jax.Array:
        """The trainer's common entry point: logits (B, n_out) from token sequences."""
        return self(*self.from_tokens(tokens_BxS))


@dataclass
class EmbedMLPConfig:
    """MLP on the two operands' embeddings (the effective theory's and Omnigrok's setting)."""

    name: str = "embed_mlp"
    d_embed: int = 128
    combine: str = "sum"  # sum (E_a + E_b) or concat
    width: int = 256
    depth: int = 1
    activation: str = "relu"
    init_scale: float = 1.0
    output_scale: float = 1.0  # outputs times this (lazy training: larger is lazier); per member: ensemble.output_scale
    centred: bool = False  # outputs minus the initial model's (Kumar et al.'s centred model)


def _validate(cfg: Any) -> None:
    checks.choice(cfg, "model.activation", tuple(ACTIVATIONS))
    for key in ("model.d_embed", "model.width"):
        checks.positive_int(cfg, key)
    depth = checks.get(cfg, "model.depth")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ConfigError("model.depth", depth, "an integer >= 0 (0: a linear readout of the embeddings)")
    checks.choice(cfg, "model.combine", COMBINES)


def _build(m: EmbedMLPConfig, io: dict[str, int], key: jax.Array) -> EmbedMLP:
    """io: n_symbols (operands), n_out."""
    return EmbedMLP(n_symbols=io["n_symbols"], d_embed=m.d_embed, combine=m.combine, width=m.width, depth=m.depth,
                    activation=m.activation, n_out=io["n_out"], init_scale=1.0, rngs=nnx.Rngs(key))


register_model(Model("embed_mlp", EmbedMLPConfig, _build, _validate, embedding=True,
                     describe=lambda m: f"embedding MLP (d_embed {m.d_embed}, width {m.width}, {m.combine})"))
