"""The sparse parity MLP: Linear(n_tasks + n -> width), activation, ..., Linear(width -> 2).

The input is [one-hot control code | n bits]. The first layer never builds the one-hot vector:
it gathers the control row of its kernel, so the cost is that of an n-input layer
(about 6x fewer FLOPs at n_tasks=500, n=100). `control_gather=False` computes the dense product
with the same parameters, for tests and benchmarks.

With two outputs, `margin` gives logit 1 - logit 0 from one difference vector of the output
kernel: the cross-entropy of two classes depends on nothing else, and it spares the training step
the two skinny (batch x width by width x 2) matrix products that dominate after the big one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from toy_quanta import checks
from toy_quanta.models.base import Model
from toy_quanta.registry import register_model

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


@jax.custom_vjp
def control_linear(control_TxW: jax.Array, bits_kernel_IxW: jax.Array, bias_W: jax.Array, task_B: jax.Array,
                   bits_BxI: jax.Array) -> jax.Array:
    """[one_hot(task_B) | bits_BxI] @ [control_TxW; bits_kernel_IxW] + bias_W, with integer bits.

    A hand-written backward pass: autodiff's would scatter-add the rows for the control gradient,
    then reduce the batch again for the bias. Here the bias gradient is the sum of the control
    rows' gradients (every sample has exactly one subtask), one pass over the batch fewer."""
    return _control_linear_fwd(control_TxW, bits_kernel_IxW, bias_W, task_B, bits_BxI)[0]


def _gathered_linear(control_TxW, bits_kernel_IxW, bias_W, task_B, x_BxI):
    # The rows of the one-hot part. Subtask indices are < n_control by construction, so skip the
    # bounds handling that plain indexing adds to the gather (and to autodiff's scatter-add).
    control_BxW = control_TxW.at[task_B].get(mode="promise_in_bounds")
    return control_BxW + x_BxI @ bits_kernel_IxW + bias_W


def _control_linear_fwd(control_TxW, bits_kernel_IxW, bias_W, task_B, bits_BxI):
    x_BxI = bits_BxI.astype(bits_kernel_IxW.dtype)
    return (_gathered_linear(control_TxW, bits_kernel_IxW, bias_W, task_B, x_BxI),
            (control_TxW.shape[0], task_B, x_BxI))


def _control_linear_bwd(res, d_out_BxW):
    n_tasks, task_B, x_BxI = res
    d_control_TxW = jax.ops.segment_sum(d_out_BxW, task_B, n_tasks)
    d_bits_kernel_IxW = x_BxI.T @ d_out_BxW
    # Integer inputs: no cotangent (None), as autodiff gives them none either.
    return d_control_TxW, d_bits_kernel_IxW, d_control_TxW.sum(0), None, None


control_linear.defvjp(_control_linear_fwd, _control_linear_bwd)


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs, init_std: float | None = None) -> nnx.Linear:
    init = _uniform_fan_in(d_in) if init_std is None else nnx.initializers.normal(stddev=init_std)
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
        init_std: float | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        self.n_control = n_control
        self.control_gather = control_gather
        self.act = ACTIVATIONS[activation]
        self.inp = _linear(n_control + n_bits, width, rngs, init_std)
        self.hidden = nnx.List([_linear(width, width, rngs, init_std) for _ in range(depth - 1)])
        self.out = _linear(width, n_out, rngs, init_std)

    def first_layer(self, task_B: jax.Array, bits_BxI: jax.Array) -> jax.Array:
        kernel_JxW, bias_W = self.inp.kernel[...], self.inp.bias[...]
        control_TxW, bits_kernel_IxW = kernel_JxW[: self.n_control], kernel_JxW[self.n_control :]
        if not self.control_gather:
            x_BxI = bits_BxI.astype(kernel_JxW.dtype)
            x_BxJ = jnp.concatenate([jax.nn.one_hot(task_B, self.n_control, dtype=x_BxI.dtype), x_BxI], axis=1)
            return x_BxJ @ kernel_JxW + bias_W
        if jnp.issubdtype(bits_BxI.dtype, jnp.floating):  # float bits may be differentiated: plain autodiff
            return _gathered_linear(control_TxW, bits_kernel_IxW, bias_W, task_B, bits_BxI.astype(kernel_JxW.dtype))
        return control_linear(control_TxW, bits_kernel_IxW, bias_W, task_B, bits_BxI)

    def features(self, task_B: jax.Array, bits_BxI: jax.Array) -> jax.Array:
        """The last hidden layer's activations (B, width)."""
        h_BxW = self.act(self.first_layer(task_B, bits_BxI))
        for layer in self.hidden:
            h_BxW = self.act(layer(h_BxW))
        return h_BxW

    def __call__(self, task_B: jax.Array, bits_BxI: jax.Array) -> jax.Array:
        return self.out(self.features(task_B, bits_BxI))

    @property
    def bits_kernel(self) -> jax.Array:
        """The first layer's rows for the n bits, (n, width): where a parity's relevant bits show."""
        return self.inp.kernel[...][self.n_control:]

    def margin(self, task_B: jax.Array, bits_BxI: jax.Array) -> jax.Array:
        """logits[:, 1] - logits[:, 0], (B,), of a two-output model; the output of a one-output model
        (a real-valued f for the hinge and squared losses)."""
        kernel_Wx2, bias_2 = self.out.kernel[...], self.out.bias[...]
        if kernel_Wx2.shape[1] == 1:
            return self.features(task_B, bits_BxI) @ kernel_Wx2[:, 0] + bias_2[0]
        if kernel_Wx2.shape[1] != 2:
            raise ValueError(f"margin needs 1 or 2 outputs, the model has {kernel_Wx2.shape[1]}")
        return self.features(task_B, bits_BxI) @ (kernel_Wx2[:, 1] - kernel_Wx2[:, 0]) + (bias_2[1] - bias_2[0])


def binary_cross_entropy(margin_B: jax.Array, label_B: jax.Array) -> jax.Array:
    """Cross-entropy (nats) of two-class logits from their margin: log(1 + exp(-+margin))."""
    return jax.nn.softplus(jnp.where(label_B == 1, -margin_B, margin_B))


def n_params(n_control: int, n_bits: int, width: int, depth: int, n_out: int = 2) -> int:
    """Parameter count; 603 * width + 2 at the paper's setting (500 + 100 inputs, depth 1)."""
    return (n_control + n_bits + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * n_out


def train_flops_per_sample(n_control: int, n_bits: int, width: int, depth: int, n_out: int = 2, gather: bool = True) -> int:
    """Matrix-product FLOPs of one forward and backward pass (3x the forward) for one sample."""
    first_in = n_bits if gather else n_control + n_bits
    forward = 2 * (first_in * width + (depth - 1) * width * width + width * n_out)
    return 3 * forward


@dataclass
class MLPConfig:
    """MLP on [one-hot control | bits]. depth = number of hidden layers (the paper: 1)."""

    name: str = "mlp"
    width: int = 128
    depth: int = 1
    activation: str = "relu"
    init_scale: float = 1.0  # multiplies every initial parameter (Omnigrok's alpha)
    output_scale: float = 1.0  # outputs times this (lazy training: larger is lazier); per member: ensemble.output_scale
    centred: bool = False  # outputs minus the initial model's (Kumar et al.'s centred model)
    control_gather: bool = True  # gather the control row instead of a one-hot matmul (same function)
    # every weight and bias drawn from N(0, init_std^2), as Nam et al.'s code does; null: PyTorch's
    # nn.Linear default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Michaud et al.'s). init_scale multiplies either.
    init_std: Optional[float] = None


def _validate(cfg: Any) -> None:
    checks.choice(cfg, "model.activation", tuple(ACTIVATIONS))
    for key in ("model.width", "model.depth"):
        checks.positive_int(cfg, key)
    if checks.get(cfg, "model.init_std") is not None:
        checks.finite(cfg, "model.init_std", positive=True)


def _build(m: MLPConfig, io: dict[str, int], key: jax.Array) -> MLP:
    """io: n_control (control codes), n_bits, n_out."""
    return MLP(io["n_control"], io["n_bits"], m.width, m.depth, io["n_out"], m.activation, m.control_gather,
               getattr(m, "init_std", None), rngs=nnx.Rngs(key))


register_model(Model("mlp", MLPConfig, _build, _validate))
