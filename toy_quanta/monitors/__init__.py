"""Monitors: live views of a job's training, registered with toy_quanta.hooks. The built-in
ones (monitors/builtin.py) are TensorBoard (train.tensorboard; monitors/tensorboard.py) and
Weights & Biases (train.wandb; monitors/wandb.py). What they share, here: a run name per member,
and a member's metrics at a log step as named scalars."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

MAX_PER_METRIC = 64  # beyond this many subtasks a dashboard's scalar page is unreadable anyway


def run_names(members: Sequence[dict[str, Any]]) -> list[str]:
    """A run name per member: its index and the values that tell it from the others."""
    keys = [k for k in (members[0] if members else {}) if len({repr(m.get(k)) for m in members}) > 1]
    width = len(str(max(len(members) - 1, 0)))
    return ["_".join([f"m{i:0{width}d}", *(f"{k}={_short(m[k])}" for k in keys)]) for i, m in enumerate(members)]


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def member_scalars(result: Any, j: int, i: int) -> dict[str, float]:
    """Every metric of member `i` at log step `j` of `result` (engine.loop.FitResult); a
    per-subtask (or per-head) metric as one scalar per index, `subtask_test_loss/07`, up to
    MAX_PER_METRIC of them (the full table is metrics.parquet)."""
    scalars = {}
    for name, logged in result.logs.items():
        value = np.asarray(logged[j][i], np.float64)
        if value.ndim == 0:
            scalars[name] = float(value)
        else:
            scalars.update((f"{name}/{k:02d}", float(v)) for k, v in enumerate(value.reshape(-1)[:MAX_PER_METRIC]))
    return scalars
