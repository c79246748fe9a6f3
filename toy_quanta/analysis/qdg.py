"""Quanta discovery from gradients, the similarity part: cosine similarities between per-sample
loss gradients of the sparse parity MLP, without materialising the gradients.

A dense layer's per-sample gradient is an outer product: dL/dW = a ⊗ δ (input activation, gradient
at the layer's output) and dL/db = δ. So the inner product of two samples' gradients is, summed
over layers, (a_i · a_j + 1)(δ_i · δ_j). For 10,000 samples of a width-500 MLP the gradients
would take 12 GB (300k parameters each); the Gram matrix takes 400 MB, built in row blocks.
`per_sample_gradients` is the direct vmap(grad) computation, for checks and small models.

Parameter groups (which gradients count):
- "control": the first layer's control rows. They play the part of embeddings (the paper left
  those out): their gradient is nonzero only in the sample's own subtask row, so including them
  makes samples of one subtask similar by construction.
- "bits": the first layer's rows for the n bits, and its bias.
- "hidden": the hidden-to-hidden layers (depth > 1).
- "out": the output layer.
"""

from __future__ import annotations

from functools import partial

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from toy_quanta.config import QDG_PARAMS as PARAM_GROUPS
from toy_quanta.models.mlp import MLP

DEFAULT_GROUPS = ("bits", "hidden", "out")


class Factor(NamedTuple):
    """One dense layer's part of the per-sample gradients: a_NxI ⊗ δ_NxO, plus δ itself when the
    layer's bias counts."""

    a_NxI: jax.Array
    d_NxO: jax.Array
    bias: bool


def check_groups(groups: Sequence[str]) -> None:
    bad = [g for g in groups if g not in PARAM_GROUPS]
    if bad or not groups or len(set(groups)) != len(groups):
        raise ValueError(f"parameter groups {list(groups)}: need a non-empty list of distinct names from {list(PARAM_GROUPS)}")


def output_cotangent(logits_BxO: jax.Array, label_B: jax.Array) -> jax.Array:
    """dL/dz of the cross-entropy, up to a positive factor per sample: (p - onehot(y)) / (1 - p_y)
    = softmax of the other classes' logits - onehot(y). Each gradient is normalised, so the factor
    does not matter; dividing it out keeps the direction exact in float32. Computed as p - onehot,
    the direction is lost for confident samples: past a margin of about 17 p_y rounds to 1 and
    the true class's component (p_y - 1) to 0, and past about 100 every component underflows."""
    onehot_BxO = jax.nn.one_hot(label_B, logits_BxO.shape[-1], dtype=logits_BxO.dtype)
    others_BxO = jax.nn.softmax(jnp.where(onehot_BxO > 0, -jnp.inf, logits_BxO), axis=-1)
    return others_BxO - onehot_BxO


def layer_factors(model: MLP, task_B: jax.Array, bits_BxI: jax.Array, label_B: jax.Array,
                  groups: Sequence[str] = DEFAULT_GROUPS, margin: bool = False) -> list[Factor]:
    """The selected parameter groups' factors. Each sample's δ is the gradient of its own loss (a
    sample's loss depends on no other sample's), up to a positive factor per sample (see
    output_cotangent). margin=True flips the sign of label-1 samples' gradients: for two classes
    that is the gradient of the logit margin z_1 - z_0, the same direction whichever the label (a
    loss gradient points opposite ways for the two labels)."""
    check_groups(groups)
    batch = task_B.shape[0]
    n_out = [layer.kernel.shape[1] for layer in [model.inp, *model.hidden, model.out]]

    def forward(eps):
        z_BxW = model.first_layer(task_B, bits_BxI) + eps[0]
        inputs = []
        h_BxW = model.act(z_BxW)
        for i, layer in enumerate(model.hidden, start=1):
            inputs.append(h_BxW)
            h_BxW = model.act(layer(h_BxW) + eps[i])
        inputs.append(h_BxW)
        return model.out(h_BxW) + eps[-1], inputs

    eps = [jnp.zeros((batch, w), jnp.float32) for w in n_out]
    logits_BxO, backward, inputs = jax.vjp(forward, eps, has_aux=True)
    cotangent_BxO = output_cotangent(logits_BxO, label_B)
    if margin:
        cotangent_BxO = cotangent_BxO * jnp.where(label_B == 1, -1.0, 1.0)[:, None]  # label 1: dL/dz ∝ -d(z_1 - z_0)/dz
    (deltas,) = backward(cotangent_BxO)
    factors = []
    first = []
    if "control" in groups:
        first.append(jax.nn.one_hot(task_B, model.n_control, dtype=jnp.float32))
    if "bits" in groups:
        first.append(bits_BxI.astype(jnp.float32))
    if first:
        factors.append(Factor(jnp.concatenate(first, axis=1), deltas[0], "bits" in groups))
    if "hidden" in groups:
        factors += [Factor(a, d, True) for a, d in zip(inputs[:-1], deltas[1:-1])]
    if "out" in groups:
        factors.append(Factor(inputs[-1], deltas[-1], True))
    if not factors:
        raise ValueError(f"parameter groups {list(groups)} select no parameters of a depth-{len(model.hidden) + 1} MLP")
    return factors


def sq_norms(factors: list[Factor]) -> jax.Array:
    return sum((jnp.sum(a * a, 1) + float(bias)) * jnp.sum(d * d, 1) for a, d, bias in factors)


def cosine_similarity(factors: list[Factor], block: int = 1024) -> np.ndarray:
    """(N, N) cosine similarity of the per-sample gradients, in blocks of `block` rows."""
    n = factors[0].a_NxI.shape[0]
    block = min(block, n)
    inv_N = 1.0 / jnp.sqrt(jnp.maximum(sq_norms(factors), 1e-30))
    arrays = [(f.a_NxI, f.d_NxO) for f in factors]
    biases = tuple(float(f.bias) for f in factors)
    out = np.empty((n, n), np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        out[start:stop] = np.asarray(_scaled_rows(arrays, biases, inv_N, start, block))[: stop - start]
    np.clip(out, -1.0, 1.0, out=out)
    return out


@partial(jax.jit, static_argnames=("biases", "block"))  # one compile per shape, kept across calls
def _scaled_rows(arrays, biases: tuple[float, ...], inv_N: jax.Array, start: jax.Array, block: int) -> jax.Array:
    """Rows start..start+block of the normalised Gram matrix. One shape for every block (the last
    wraps around to the first rows) so the product compiles once."""
    n = inv_N.shape[0]
    idx = (start + jnp.arange(block)) % n
    total = 0.0
    for (a_NxI, d_NxO), bias in zip(arrays, biases):
        total = total + (a_NxI[idx] @ a_NxI.T + bias) * (d_NxO[idx] @ d_NxO.T)
    return total * inv_N[idx, None] * inv_N[None, :]


def affinity(cos_NxN: np.ndarray, kind: str = "angular", out: np.ndarray | None = None) -> np.ndarray:
    """The clustering affinity of cosine similarities.

    angular: 1 - arccos(C)/pi, the paper's, in [0, 1]: 1 for parallel gradients, 1/2 for orthogonal.
    cosine: max(C, 0): orthogonal and opposite gradients get 0, so unrelated samples do not form
    the dense background of 1/2 that the angular affinity gives them.
    """
    out = np.empty_like(cos_NxN) if out is None else out
    if kind == "angular":
        np.clip(cos_NxN, -1.0, 1.0, out=out)
        np.arccos(out, out=out)
        out *= -1.0 / np.pi
        out += 1.0
    elif kind == "cosine":
        np.maximum(cos_NxN, 0.0, out=out)
    else:
        raise ValueError(f"affinity kind {kind!r}: allowed 'angular' or 'cosine'")
    return out


def per_sample_gradients(model: MLP, task_B: jax.Array, bits_BxI: jax.Array, label_B: jax.Array,
                         groups: Sequence[str] = DEFAULT_GROUPS) -> np.ndarray:
    """(B, n_params): each sample's loss gradient by vmap(grad), flattened over the selected groups. The
    direct computation: n_params floats per sample, so for small models and checks."""
    check_groups(groups)
    graphdef, params = nnx.split(model)

    def loss_one(p, t, b, y):
        logits = nnx.merge(graphdef, p)(t[None], b[None])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y[None]).sum()

    grads = nnx.to_pure_dict(jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0, 0))(params, task_B, bits_BxI, label_B))
    parts = []
    first = grads["inp"]["kernel"]
    if "control" in groups:
        parts.append(first[:, : model.n_control])
    if "bits" in groups:
        parts += [first[:, model.n_control:], grads["inp"]["bias"]]
    if "hidden" in groups:
        for i in sorted(grads.get("hidden", {}), key=int):
            parts += [grads["hidden"][i]["kernel"], grads["hidden"][i]["bias"]]
    if "out" in groups:
        parts += [grads["out"]["kernel"], grads["out"]["bias"]]
    return np.concatenate([np.asarray(x).reshape(x.shape[0], -1) for x in parts], axis=1)
