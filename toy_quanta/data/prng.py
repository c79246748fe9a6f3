"""Random bits for the data streams: the numbers jax.random.bits and jax.random.uniform give (JAX's
default Threefry-2x32, partitionable), computed with the hash's five rounds unrolled.

JAX lowers Threefry on CPU as a five-iteration loop, one pass over the counters per round; unrolled,
XLA fuses the whole hash into one pass (about 6x faster for the 80,000 words of a paper-setting
batch). A key of another implementation, or JAX's non-partitionable mode, goes to jax.random.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _unrolled(key: jax.Array, shape: tuple[int, ...]) -> bool:
    return (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and str(jax.random.key_impl(key)) == "threefry2x32"
            and jax.config.jax_threefry_partitionable and math.prod(shape) < 2**32)


def _rotate_left(x: jax.Array, r: int) -> jax.Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 words of `shape`: jax.random.bits(key, shape, jnp.uint32)."""
    if not _unrolled(key, shape):
        return jax.random.bits(key, shape, jnp.uint32)
    return _computed_once(_threefry(key, shape))


def _threefry(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    k_2 = jax.random.key_data(key)
    ks = (k_2[0], k_2[1], k_2[0] ^ k_2[1] ^ _PARITY)
    # Counter of element i: the 64-bit i as (high word 0, low word i), as jax.random.bits numbers them.
    x0 = jnp.zeros(shape, jnp.uint32) + ks[0]
    x1 = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape) + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0 ^ x1


def _computed_once(words: jax.Array) -> jax.Array:
    """The words, divided by a 1 that XLA cannot prove is 1. XLA fuses a cheap integer producer
    into every consumer, so unpacking 32 bits per word would recompute the hash 32 times (slower
    than JAX's own loop); it does not repeat a producer that divides by a variable, so the hash
    runs once into a buffer. Only speed depends on this; the values are the words. (`uniform`
    reads each word once, so it skips this.)"""
    w = words.reshape(-1)[0] | np.uint32(1)
    return words // (w // w)


def uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """float32 in [0, 1) of `shape`: jax.random.uniform(key, shape, jnp.float32)."""
    if not _unrolled(key, shape):
        return jax.random.uniform(key, shape, jnp.float32)
    # 23 random mantissa bits under the exponent of 1.0 give [1, 2); subtract 1.
    mantissa = (_threefry(key, shape) >> np.uint32(9)) | np.float32(1.0).view(np.uint32)
    return jnp.maximum(0.0, jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0)
