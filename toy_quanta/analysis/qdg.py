"""Quanta discovery from gradients, the similarity part: cosine similarities between per-sample
loss gradients of the sparse parity MLP, without materialising the gradients.

A dense layer's per-sample gradient is an outer product: dL/dW = a ⊗ δ (input activation, gradient
at the layer's output) and dL/db = δ. So the inner product of two samples' gradients is, summed
over layers, (a_i · a_j + 1)(δ_i · δ_j). For 10,000 samples of a width-500 MLP the gradients
would take 12 GB (300k parameters each); the Gram matrix takes 400 MB, built in row blocks.

The control rows of the first layer's kernel play the part of embeddings (the paper left those
out): their gradient is nonzero only in the sample's own subtask row, so including them would
make samples of one subtask similar by construction. `include_control=False` (the default)
drops them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toy_quanta.models.mlp import MLP


def layer_factors(model: MLP, task_B: jax.Array, bits_BxN: jax.Array, label_B: jax.Array,
                  include_control: bool = False) -> list[tuple[jax.Array, jax.Array]]:
    """[(a_BxI, δ_BxO)] per dense layer: each sample's input to the layer and the gradient of its
    own loss at the layer's output (a sample's loss depends on no other sample's)."""
    layers = [model.inp, *model.hidden, model.out]
    n_out = [layer.kernel.shape[1] for layer in layers]
    batch = task_B.shape[0]

    def forward(eps):
        z_BxW = model.first_layer(task_B, bits_BxN) + eps[0]
        inputs = []
        h_BxW = model.act(z_BxW)
        for i, layer in enumerate(model.hidden, start=1):
            inputs.append(h_BxW)
            h_BxW = model.act(layer(h_BxW) + eps[i])
        inputs.append(h_BxW)
        logits = model.out(h_BxW) + eps[-1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, label_B).sum(), inputs

    eps = [jnp.zeros((batch, w), jnp.float32) for w in n_out]
    deltas, inputs = jax.grad(forward, has_aux=True)(eps)
    first_in = bits_BxN.astype(jnp.float32)
    if include_control:
        first_in = jnp.concatenate([jax.nn.one_hot(task_B, model.n_control, dtype=jnp.float32), first_in], axis=1)
    return list(zip([first_in, *inputs], deltas))


def gram_rows(factors: list[tuple[jax.Array, jax.Array]], rows: slice) -> jax.Array:
    """Rows `rows` of G G^T (G: the per-sample gradients of the parameters the factors cover)."""
    total = 0.0
    for a_SxI, d_SxO in factors:
        total = total + (a_SxI[rows] @ a_SxI.T + 1.0) * (d_SxO[rows] @ d_SxO.T)
    return total


def cosine_similarity(factors: list[tuple[jax.Array, jax.Array]], block: int = 1024) -> np.ndarray:
    """(S, S) cosine similarity of the per-sample gradients, in blocks of `block` rows."""
    n = factors[0][0].shape[0]
    sq_norm_S = sum((jnp.sum(a * a, 1) + 1.0) * jnp.sum(d * d, 1) for a, d in factors)
    inv_S = 1.0 / jnp.sqrt(jnp.maximum(sq_norm_S, 1e-30))
    out = np.empty((n, n), np.float32)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        out[rows] = np.asarray(gram_rows(factors, rows) * inv_S[rows, None] * inv_S[None, :])
    np.clip(out, -1.0, 1.0, out=out)
    return out


def affinity(cos_SxS: np.ndarray) -> np.ndarray:
    """1 - arccos(C)/pi: the paper's affinity, in [0, 1], 1 for parallel gradients."""
    return 1.0 - np.arccos(np.clip(cos_SxS, -1.0, 1.0)) / np.pi
