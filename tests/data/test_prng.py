"""toy_quanta.data.prng: the unrolled Threefry gives exactly jax.random's numbers, or falls back to them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toy_quanta.data import prng, sparse_parity as sp


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (20_000, 4), (2, 3, 4)])
@pytest.mark.parametrize("seed", [0, 12345])
def test_bits_and_uniform_equal_jax_random(shape, seed):
    key = jax.random.fold_in(jax.random.key(seed), 3)
    np.testing.assert_array_equal(jax.jit(prng.bits, static_argnums=1)(key, shape),
                                  jax.random.bits(key, shape, jnp.uint32))
    np.testing.assert_array_equal(jax.jit(prng.uniform, static_argnums=1)(key, shape),
                                  jax.random.uniform(key, shape, jnp.float32))


def test_under_vmap_each_key_gets_its_own_numbers():
    keys = jax.random.split(jax.random.key(1), 4)
    got = jax.vmap(lambda k: prng.bits(k, (6, 2)))(keys)
    for i in range(4):
        np.testing.assert_array_equal(got[i], jax.random.bits(keys[i], (6, 2), jnp.uint32))
    assert len({bytes(np.asarray(g)) for g in got}) == 4


def test_other_key_implementations_and_modes_fall_back_to_jax_random():
    rbg = jax.random.key(5, impl="rbg")
    np.testing.assert_array_equal(prng.bits(rbg, (4, 3)), jax.random.bits(rbg, (4, 3), jnp.uint32))
    key = jax.random.key(5)
    with jax.threefry_partitionable(False):
        np.testing.assert_array_equal(prng.bits(key, (4, 3)), jax.random.bits(key, (4, 3), jnp.uint32))
        np.testing.assert_array_equal(prng.uniform(key, (9,)), jax.random.uniform(key, (9,)))


def test_sparse_parity_stream_is_jax_randoms():
    """The data generator's bits are jax.random's words unpacked, bit j of word w at position
    32 w + j: the stream did not change when the generator moved to the unrolled hash."""
    key = jax.random.key(9)
    words = jax.random.bits(key, (50, 4), jnp.uint32)
    expected = ((np.asarray(words)[:, :, None] >> np.arange(32, dtype=np.uint32)) & 1).reshape(50, 128)[:, :100]
    np.testing.assert_array_equal(sp.random_bits(key, 50, 100), expected.astype(np.uint8))
