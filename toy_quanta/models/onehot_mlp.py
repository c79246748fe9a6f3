"""MLP on the one-hot pair: Prieto et al. (2025)'s model for modular arithmetic, an MLP on the
concatenated one-hot vectors of a and b (2p inputs), hidden layers of `width`, ReLU, no biases by
default.

A linear layer on [one_hot(a) | one_hot(b)] is a sum of two kernel rows, so the first layer is held
as an embedding of the 2p input units (`embed`, rows 0..p-1 read a, rows p..2p-1 read b): the same
function and parameters as the dense product, without building the one-hot vectors, and the
embedding analyses (Fourier, progress) read the operands' rows. Initialised as PyTorch's nn.Linear
(U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 2p for the first layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
from flax import nnx

from toy_quanta import checks
from toy_quanta.models.base import Model
from toy_quanta.models.dense_mlp import _validate as validate_dense_mlp
from toy_quanta.models.mlp import ACTIVATIONS, _uniform_fan_in
from toy_quanta.models.transformer import check_choice
from toy_quanta.registry import register_model


class OneHotMLP(nnx.Module):
    def __init__(self, n_symbols: int, n_out: int, width: int, depth: int = 2, activation: str = "relu",
                 bias: bool = False, *, rngs: nnx.Rngs):
        check_choice("activation", activation, ACTIVATIONS)
        if depth < 1:
            raise ValueError(f"depth={depth} must be >= 1")
        self.n_symbols = n_symbols
        self.act = ACTIVATIONS[activation]
        first = _uniform_fan_in(2 * n_symbols)
        self.embed = nnx.Embed(2 * n_symbols, width, embedding_init=first, rngs=rngs)
        self.bias = nnx.Param(first(rngs.params(), (width,))) if bias else None
        self.hidden = nnx.List([_dense(width, width, bias, rngs) for _ in range(depth - 1)])
        self.out = _dense(width, n_out, bias, rngs)

    @property
    def embed_matrix(self) -> jax.Array:
        """How the first layer reads operand a: (n_symbols, width)."""
        return self.embed.embedding[: self.n_symbols]

    def __call__(self, a_B: jax.Array, b_B: jax.Array) -> jax.Array:
        """Logits (B, n_out) for the pairs (a, b)."""
        h_BxW = self.embed(a_B) + self.embed(b_B + self.n_symbols)
        if self.bias is not None:
            h_BxW = h_BxW + self.bias[...]
        h_BxW = self.act(h_BxW)
        for layer in self.hidden:
            h_BxW = self.act(layer(h_BxW))
        return self.out(h_BxW)

    def logits(self, tokens_BxS: jax.Array) -> jax.Array:
        """The trainer's common entry point: logits (B, n_out) from [a, OP, b, EQ] sequences."""
        return self(tokens_BxS[:, 0], tokens_BxS[:, 2])


def _dense(d_in: int, d_out: int, bias: bool, rngs: nnx.Rngs) -> nnx.Linear:
    init = _uniform_fan_in(d_in)
    return nnx.Linear(d_in, d_out, use_bias=bias, kernel_init=init, bias_init=init, rngs=rngs)


@dataclass
class OneHotMLPConfig:
    """MLP on [one_hot(a) | one_hot(b)]: `depth` hidden layers of `width` (Prieto et al.: 2 of 200,
    ReLU, no biases)."""

    name: str = "onehot_mlp"
    width: int = 200
    depth: int = 2
    activation: str = "relu"
    bias: bool = False
    init_scale: float = 1.0
    output_scale: float = 1.0  # outputs times this (lazy training: larger is lazier); per member: ensemble.output_scale
    centred: bool = False  # outputs minus the initial model's (Kumar et al.'s centred model)


def _validate(cfg: Any) -> None:
    validate_dense_mlp(cfg)  # width, depth, activation: the same rules
    checks.boolean(cfg, "model.bias")


def _build(m: OneHotMLPConfig, io: dict[str, int], key: jax.Array) -> OneHotMLP:
    """io: n_symbols (operands), n_out."""
    return OneHotMLP(n_symbols=io["n_symbols"], n_out=io["n_out"], width=m.width, depth=m.depth,
                     activation=m.activation, bias=m.bias, rngs=nnx.Rngs(key))


register_model(Model("onehot_mlp", OneHotMLPConfig, _build, _validate, embedding=True,
                     describe=lambda m: f"MLP on the one-hot pair ({m.depth} x {m.width}"
                                       f"{'' if m.bias else ', no biases'})"))
