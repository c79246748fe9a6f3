"""MLP on dense inputs (pixels): Omnigrok's MNIST model (Liu, Michaud, Tegmark 2023), 784-200-200-10
with ReLU. Initialised as PyTorch's nn.Linear (kernels and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
as the paper's code did), then every parameter times `init_scale` (the paper's alpha)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
from flax import nnx

from toy_quanta import checks
from toy_quanta.models.base import Model
from toy_quanta.models.mlp import ACTIVATIONS, _linear
from toy_quanta.models.transformer import check_choice, scale_params
from toy_quanta.registry import register_model


class DenseMLP(nnx.Module):
    def __init__(self, d_in: int, n_out: int, width: int, depth: int = 2, activation: str = "relu",
                 init_scale: float = 1.0, *, rngs: nnx.Rngs):
        check_choice("activation", activation, ACTIVATIONS)
        if depth < 1:
            raise ValueError(f"depth={depth} must be >= 1")
        self.act = ACTIVATIONS[activation]
        dims = [d_in] + [width] * depth
        self.hidden = nnx.List([_linear(i, o, rngs) for i, o in zip(dims[:-1], dims[1:])])
        self.out = _linear(dims[-1], n_out, rngs)
        scale_params(self, init_scale)

    def __call__(self, x_BxI: jax.Array) -> jax.Array:
        """Outputs (B, n_out): logits for cross-entropy, or the predicted one-hot vector for MSE."""
        h_BxW = x_BxI
        for layer in self.hidden:
            h_BxW = self.act(layer(h_BxW))
        return self.out(h_BxW)

    def logits(self, x_BxI: jax.Array) -> jax.Array:
        """The trainer's common entry point (same as __call__)."""
        return self(x_BxI)


@dataclass
class DenseMLPConfig:
    """MLP on dense inputs (pixels): depth hidden layers of `width`. Omnigrok: 784-200-200-10 ReLU.
    Initialised like PyTorch's nn.Linear, then every parameter times init_scale (Omnigrok's alpha)."""

    name: str = "dense_mlp"
    width: int = 200
    depth: int = 2
    activation: str = "relu"
    init_scale: float = 1.0
    output_scale: float = 1.0  # outputs times this (lazy training: larger is lazier); per member: ensemble.output_scale
    centred: bool = False  # outputs minus the initial model's (Kumar et al.'s centred model)


def _validate(cfg: Any) -> None:
    checks.choice(cfg, "model.activation", tuple(ACTIVATIONS))
    for key in ("model.width", "model.depth"):
        checks.positive_int(cfg, key)


def _build(m: DenseMLPConfig, io: dict[str, int], key: jax.Array) -> DenseMLP:
    """io: d_in (features), n_out."""
    return DenseMLP(d_in=io["d_in"], n_out=io["n_out"], width=m.width, depth=m.depth, activation=m.activation,
                    init_scale=1.0, rngs=nnx.Rngs(key))


register_model(Model("dense_mlp", DenseMLPConfig, _build, _validate))
