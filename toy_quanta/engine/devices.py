"""The members' axis over devices: an ensemble is sharded along its first axis across the visible
devices (jax.sharding), so eight GPUs train eight times the members in the time of one. A member
count that does not divide evenly is padded with copies of the last member, whose results are
dropped."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def plan(n_members: int, devices: int | None = None) -> tuple[NamedSharding | None, int]:
    """(the sharding of arrays with a leading member axis, the padded member count). No sharding
    for one member or one device. devices: how many to use (None: every visible one)."""
    available = jax.devices()
    n_dev = min(len(available) if devices is None else devices, len(available), n_members)
    if n_dev <= 1:
        return None, n_members
    mesh = Mesh(np.array(available[:n_dev]), ("members",))
    return NamedSharding(mesh, PartitionSpec("members")), -(-n_members // n_dev) * n_dev


def devices_used(sharding: NamedSharding | None) -> int:
    return 1 if sharding is None else sharding.mesh.size


def pad(tree: Any, total: int) -> Any:
    """Every leaf's first axis extended to `total` rows with copies of its last row."""
    def grow(x):
        x = np.asarray(x)
        extra = total - x.shape[0]
        return x if extra <= 0 else np.concatenate([x, np.repeat(x[-1:], extra, axis=0)])
    return jax.tree.map(grow, tree)


def place(tree: Any, sharding: NamedSharding | None) -> Any:
    return tree if sharding is None else jax.device_put(tree, sharding)
