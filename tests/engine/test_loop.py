"""toy_quanta.engine.loop.over_members: the members' map, with a lone member run unbatched."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from toy_quanta.engine.loop import over_members


def _fn(calls):
    def fn(x, y, n):
        calls.append(x.shape)  # the shapes fn is traced with
        return {"sum": x.sum() * y + n, "x": x * n}
    return fn


def test_many_members_are_vmapped_and_a_lone_member_runs_unbatched():
    """Two members: fn sees per-member shapes under vmap; one member: fn sees the member itself
    (no size-1 axis), and both give what vmap gives, with the member axis in front."""
    calls: list = []
    f = over_members(_fn(calls), in_axes=(0, 0, None))
    x_MxN = jnp.arange(6.0).reshape(2, 3)
    y_M = jnp.array([2.0, -1.0])
    many = jax.jit(f)(x_MxN, y_M, 3.0)
    ref = jax.vmap(_fn([]), in_axes=(0, 0, None))(x_MxN, y_M, 3.0)
    for k in ref:
        np.testing.assert_array_equal(many[k], ref[k])
    lone = jax.jit(f)(x_MxN[:1], y_M[:1], 3.0)
    assert lone["sum"].shape == (1,) and lone["x"].shape == (1, 3)
    np.testing.assert_array_equal(lone["sum"], ref["sum"][:1])
    np.testing.assert_array_equal(lone["x"], ref["x"][:1])
    assert calls == [(3,), (3,)]  # traced once per call, each time with one member's shape


def test_default_in_axes_maps_every_argument():
    f = over_members(lambda a, b: a + b)
    np.testing.assert_array_equal(f(jnp.ones((1, 2)), jnp.ones((1, 2))), 2 * np.ones((1, 2)))
    np.testing.assert_array_equal(f(jnp.ones((3, 2)), jnp.ones((3, 2))), 2 * np.ones((3, 2)))
