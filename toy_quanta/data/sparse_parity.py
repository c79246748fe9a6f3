"""Multitask sparse parity (Michaud et al. 2023), generated on the device.

A sample is (task_B, bits_BxI): the subtask index (the one-hot control code, kept as an index)
and n uniform bits. Its label is the parity of the bits at that subtask's subset.
Subtask i (0-based here, rank i+1) is drawn with probability ∝ (i+1)^-(alpha+1).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from toy_quanta.data import prng

# Subsets are drawn on the host from their own stream, so they never share draws with the
# device-side streams (init, data) that derive from the same seed.
_SUBSET_STREAM = 0x5B5E7

LN2 = math.log(2.0)  # nats per bit: the loss of an unlearned subtask (a coin flip)


SUBSETS = ("distinct", "disjoint")
# zero_one: the bits as they are (Michaud et al.'s and Nam et al.'s inputs); plus_minus: 2 b - 1,
# the hypercube {-1, +1}^n of Barak et al. (the label, parity of the bits, is then the product of
# the subset's coordinates up to the sign (-1)^k)
ENCODINGS = ("zero_one", "plus_minus")


def draw_subsets(n_tasks: int, n: int, k: int, seed: int, kind: str = "distinct") -> np.ndarray:
    """n_tasks sorted k-subsets of range(n), as an int32 array (n_tasks, k): all distinct, or
    (kind "disjoint") sharing no bit, n_tasks * k distinct bits split in turn, as Nam et al.'s
    data generator draws them."""
    rng = np.random.default_rng([seed, _SUBSET_STREAM])
    if kind == "disjoint":
        if not 1 <= k or not 1 <= n_tasks * k <= n:
            raise ValueError(f"disjoint subsets need 1 <= n_tasks * k <= n; got n_tasks={n_tasks}, n={n}, k={k}")
        return np.sort(rng.choice(n, size=n_tasks * k, replace=False).reshape(n_tasks, k), axis=1).astype(np.int32)
    if kind != "distinct":
        raise ValueError(f"subsets {kind!r}: one of {SUBSETS}")
    n_subsets = math.comb(n, k)
    if not 1 <= k <= n or not 1 <= n_tasks <= n_subsets:
        raise ValueError(f"need 1 <= k <= n and 1 <= n_tasks <= C(n, k); got n_tasks={n_tasks}, n={n}, k={k}")
    if n_tasks > n_subsets // 2:
        # Dense regime: rejection would stall, so choose from the full list of subsets.
        every = np.array(list(itertools.combinations(range(n), k)), dtype=np.int32)
        return every[rng.choice(n_subsets, size=n_tasks, replace=False)]
    seen: set[tuple[int, ...]] = set()
    subsets = []
    while len(subsets) < n_tasks:
        subset = tuple(sorted(rng.choice(n, size=k, replace=False).tolist()))
        if subset not in seen:
            seen.add(subset)
            subsets.append(subset)
    return np.array(subsets, dtype=np.int32)


def encode(bits_BxI: jax.Array, encoding: str) -> jax.Array:
    """The model's input from the {0, 1} bits: the bits themselves (zero_one), or 2 b - 1 as int8
    (plus_minus). Integers either way: the first layer takes no gradient with respect to them."""
    if encoding == "zero_one":
        return bits_BxI
    return (2 * bits_BxI.astype(jnp.int8) - 1).astype(jnp.int8)


def zipf_probs(n_tasks: int, alpha: float) -> np.ndarray:
    """p_i ∝ i^-(alpha+1) for ranks i = 1..n_tasks (the paper's alpha)."""
    p = np.arange(1, n_tasks + 1, dtype=np.float64) ** -(alpha + 1.0)
    return p / p.sum()


def zipf_logits(n_tasks: int, alpha: jax.Array | float) -> jax.Array:
    """Unnormalised log-probabilities of the subtasks; alpha may be traced (ensembles over alpha)."""
    return -(alpha + 1.0) * jnp.log(jnp.arange(1, n_tasks + 1, dtype=jnp.float32))


def random_bits(key: jax.Array, batch: int, n: int) -> jax.Array:
    """Uniform bits (batch, n) as uint8, unpacked from 32-bit words: 32x fewer PRNG calls."""
    words = -(-n // 32)
    w_BxU = prng.bits(key, (batch, words))
    bits_BxUx32 = (w_BxU[:, :, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    return bits_BxUx32.reshape(batch, words * 32)[:, :n].astype(jnp.uint8)


def parity(bits_BxI: jax.Array, subsets_TxK: jax.Array, task_B: jax.Array) -> jax.Array:
    """Label: sum mod 2 of the bits at the sample's subtask subset, int32 (batch,)."""
    idx_BxK = subsets_TxK[task_B]
    return (jnp.take_along_axis(bits_BxI, idx_BxK, axis=1).astype(jnp.int32).sum(-1) % 2).astype(jnp.int32)


def sample(key: jax.Array, subsets_TxK: jax.Array, alpha: jax.Array | float, batch: int, n: int):
    """A batch from the task distribution: (task_B, bits_BxI, label_B)."""
    k_task, k_bits = jax.random.split(key)
    return with_tasks(k_bits, subsets_TxK, zipf_tasks(k_task, subsets_TxK.shape[0], alpha, batch), n)


def zipf_tasks(key: jax.Array, n_tasks: int, alpha: jax.Array | float, batch: int) -> jax.Array:
    """Subtask indices (batch,) with P(i) ∝ (i+1)^-(alpha+1), by inverting the CDF.

    One uniform and a binary search per sample; jax.random.categorical would draw
    n_tasks Gumbels per sample (10M per step at the paper's batch and 500 subtasks).
    """
    logits_T = zipf_logits(n_tasks, alpha)
    cdf_T = jnp.cumsum(jax.nn.softmax(logits_T))
    u_B = prng.uniform(key, (batch,))
    task_B = jnp.searchsorted(cdf_T, u_B * cdf_T[-1], side="right")
    return jnp.minimum(task_B, n_tasks - 1).astype(jnp.int32)


def with_tasks(key: jax.Array, subsets_TxK: jax.Array, task_B: jax.Array, n: int):
    """A batch with the given subtask of each sample: (task_B, bits_BxI, label_B)."""
    bits_BxI = random_bits(key, task_B.shape[0], n)
    return task_B, bits_BxI, parity(bits_BxI, subsets_TxK, task_B)


def per_task_set(key: jax.Array, subsets_TxK: jax.Array, per_task: int, n: int):
    """An equal number of points per subtask, laid out (per_task * n_tasks,) subtask-major in blocks
    of n_tasks: sample j has subtask j % n_tasks."""
    n_tasks = subsets_TxK.shape[0]
    task_B = jnp.tile(jnp.arange(n_tasks, dtype=jnp.int32), per_task)
    return with_tasks(key, subsets_TxK, task_B, n)
