"""Ensemble members: which scalar hyperparameters each member of one compiled program gets.

Scalars that may differ between members of one ensemble (one compiled program) are the engine's
(seed, model.init_scale, optim.lr, optim.weight_decay, optim.fixed_norm) and the ones a task
declares (`Task.member_keys`, e.g. task.alpha). Everything else changes array shapes or the
program itself, so it splits a sweep into groups.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Sequence

import numpy as np

from toy_quanta import registry
from toy_quanta.config import ENGINE_KEYS


def vector_keys() -> tuple[str, ...]:
    """Every per-member key of every registered task, in table-column order: seed, the tasks'
    keys, the engine's."""
    task_keys = [key for task in registry.tasks().values() for key in task.member_keys]
    return ("seed", *dict.fromkeys(task_keys), *ENGINE_KEYS)


def member_keys(task_name: str) -> dict[str, tuple[str, type]]:
    """The per-member keys of one task's members: its own, then the engine's."""
    return {**registry.task(task_name).member_keys, **ENGINE_KEYS}


def expand(cfg: Any) -> list[dict[str, float | int]]:
    """The members of one job: the product of the ensemble lists (in the order EnsembleConfig
    declares them), times `ensemble.seeds` seeds.

    Each member is a dict keyed by vector_keys() (e.g. {"seed": 0, "optim.lr": 1e-3, ...}); a key
    that does not apply to the task, a free norm and an online task.D are None.
    """
    keys = member_keys(cfg.task.name)
    base = {}
    for key, (_, kind) in keys.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        base[key] = None if value is None else kind(value)
    by_list = {list_name: (key, kind) for key, (list_name, kind) in keys.items()}
    axes = {}
    for f in dataclasses.fields(cfg.ensemble):
        values = getattr(cfg.ensemble, f.name)
        if f.name in by_list and values is not None:
            key, kind = by_list[f.name]
            axes[key] = [kind(v) for v in values]
    members = []
    for values in itertools.product(*axes.values()):
        point = {**base, **dict(zip(axes, values))}
        for s in range(cfg.ensemble.seeds):
            members.append({"seed": int(cfg.seed) + s, **point})
    every = vector_keys()
    return [{key: m.get(key) for key in every} for m in members]


def stack(members: Sequence[dict[str, Any]], task_name: str) -> dict[str, np.ndarray]:
    """(M,) arrays of the members' scalars by key, as the engine's Hyper: int32 seeds and integer
    keys, float32 for the rest; None (online D, free norm) is 0."""
    out = {"seed": np.array([m["seed"] for m in members], np.int32)}
    for key, (_, kind) in member_keys(task_name).items():
        dtype = np.int32 if kind is int else np.float32
        out[key] = np.array([m[key] or 0 for m in members], dtype)
    return out
