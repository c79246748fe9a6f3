"""The sparse parity MLP: Linear(n_tasks + n -> width), activation, ..., Linear(width -> 2).

The input is [one-hot control code | n bits]. The first layer never builds the one-hot vector:
it gathers the control row of its kernel, so the cost is that of an n-input layer
(about 6x fewer FLOPs at n_tasks=500, n=100). `control_gather=False` computes the dense product
with the same parameters, for tests and benchmarks.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
}


def _uniform_fan_in(fan_in: int):
    """PyTorch's nn.Linear default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the paper used."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    init = _uniform_fan_in(d_in)
    return nnx.Linear(d_in, d_out, kernel_init=init, bias_init=init, rngs=rngs)


class MLP(nnx.Module):
    def __init__(
        self,
        n_control: int,
        n_bits: int,
        width: int,
        depth: int = 1,
        n_out: int = 2,
        activation: str = "relu",
        control_gather: bool = True,
        *,
        rngs: nnx.Rngs,
    ):
        self.n_control = n_control
        self.control_gather = control_gather
        self.act = ACTIVATIONS[activation]
        self.inp = _linear(n_control + n_bits, width, rngs)
        self.hidden = nnx.List([_linear(width, width, rngs) for _ in range(depth - 1)])
        self.out = _linear(width, n_out, rngs)

    def first_layer(self, task_B: jax.Array, bits_BxN: jax.Array) -> jax.Array:
        kernel_IxW, bias_W = self.inp.kernel[...], self.inp.bias[...]
        bits_BxN = bits_BxN.astype(kernel_IxW.dtype)
        if self.control_gather:
            # The rows of the one-hot part. Subtask indices are < n_control by construction, so
            # skip the bounds handling that plain indexing adds to the gather and its scatter-add.
            control_BxW = kernel_IxW.at[task_B].get(mode="promise_in_bounds")
            return control_BxW + bits_BxN @ kernel_IxW[self.n_control :] + bias_W
        x_BxI = jnp.concatenate([jax.nn.one_hot(task_B, self.n_control, dtype=bits_BxN.dtype), bits_BxN], axis=1)
        return x_BxI @ kernel_IxW + bias_W

    def __call__(self, task_B: jax.Array, bits_BxN: jax.Array) -> jax.Array:
        h_BxW = self.act(self.first_layer(task_B, bits_BxN))
        for layer in self.hidden:
            h_BxW = self.act(layer(h_BxW))
        return self.out(h_BxW)


def n_params(n_control: int, n_bits: int, width: int, depth: int, n_out: int = 2) -> int:
    """Parameter count; 603 * width + 2 at the paper's setting (500 + 100 inputs, depth 1)."""
    return (n_control + n_bits + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * n_out


def train_flops_per_sample(n_control: int, n_bits: int, width: int, depth: int, n_out: int = 2, gather: bool = True) -> int:
    """Matrix-product FLOPs of one forward and backward pass (3x the forward) for one sample."""
    first_in = n_bits if gather else n_control + n_bits
    forward = 2 * (first_in * width + (depth - 1) * width * width + width * n_out)
    return 3 * forward
