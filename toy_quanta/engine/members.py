"""Ensemble members: which scalar hyperparameters each member of one compiled program gets.

Scalars that may differ between members of one ensemble (one compiled program) are the engine's
(seed, model.init_scale, model.output_scale, optim.lr, optim.weight_decay, optim.eps,
optim.fixed_norm, the grokfast filter's kind, alpha and lambda) and the ones a task
declares (`Task.member_keys`, e.g. task.alpha). Everything else changes array shapes or the
program itself, so it splits a sweep into groups.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from toy_quanta import registry
from toy_quanta.config import ENGINE_KEYS, MEMBER_CHOICES, arm_values, ensemble_list


def vector_keys() -> tuple[str, ...]:
    """Every per-member key of every registered task, in table-column order: seed, the tasks'
    keys, the engine's."""
    task_keys = [key for task in registry.tasks().values() for key in task.member_keys]
    return ("seed", *dict.fromkeys(task_keys), *ENGINE_KEYS)


def member_keys(task_name: str) -> dict[str, tuple[str, type]]:
    """The per-member keys of one task's members: its own, then the engine's."""
    return {**registry.task(task_name).member_keys, **ENGINE_KEYS}


def arms(cfg: Any) -> dict[str, dict[str, Any]]:
    """`ensemble.arms` with each arm's values under dotted keys ({} if no arms)."""
    return {name: arm_values(values) for name, values in (cfg.ensemble.arms or {}).items()}


def expand(cfg: Any) -> list[dict[str, Any]]:
    """The members of one job: for each arm of `ensemble.arms` (or once, without arms), the
    product of the ensemble lists (the task's own, then the engine's; the first varying slowest),
    times `ensemble.seeds` seeds.

    Each member is a dict keyed by "seed" and member_keys(task) (e.g. {"seed": 0, "optim.lr": 1e-3,
    ...}: only the keys of its own task, so no other task's key shows in its tables), plus "arm"
    (its arm's name) when there are arms; a free norm, an online task.D and a key the model does
    not have are None.
    """
    keys = member_keys(cfg.task.name)
    base = {}
    for key, (_, kind) in keys.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name, None)  # a user's model may lack output_scale
        base[key] = None if value is None else kind(value)
    # the task's own lists first (in the order it declares them), then the engine's (EnsembleConfig's)
    axes = {}
    for key, (list_name, kind) in keys.items():
        values = ensemble_list(cfg, list_name)
        if values is not None:
            axes[key] = [kind(v) for v in values]
    members = []
    for arm, values_of_arm in (arms(cfg) or {None: {}}).items():
        labelled = {"arm": arm} if arm is not None else {}
        arm_values = {key: None if v is None else keys[key][1](v) for key, v in values_of_arm.items()}
        for values in itertools.product(*axes.values()):
            point = {**base, **arm_values, **dict(zip(axes, values))}
            for s in range(cfg.ensemble.seeds):
                members.append({"seed": int(cfg.seed) + s, **point, **labelled})
    every = ("seed", *keys)
    return [{**{key: m.get(key) for key in every}, **({"arm": m["arm"]} if "arm" in m else {})} for m in members]


def stack(members: Sequence[dict[str, Any]], task_name: str) -> dict[str, np.ndarray]:
    """(M,) arrays of the members' scalars by key, as the engine's Hyper: int32 seeds and integer
    keys, float32 for the rest; None (online D, free norm) is 0; a name (optim.grokfast) is its
    index in config.MEMBER_CHOICES."""
    out = {"seed": np.array([m["seed"] for m in members], np.int32)}
    for key, (_, kind) in member_keys(task_name).items():
        if kind is str:
            out[key] = np.array([MEMBER_CHOICES[key].index(m[key]) for m in members], np.int32)
            continue
        dtype = np.int32 if kind is int else np.float32
        out[key] = np.array([m[key] or 0 for m in members], dtype)
    return out
