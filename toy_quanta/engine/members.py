"""Ensemble members: which scalar hyperparameters each member of one compiled program gets."""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple, Sequence

import numpy as np

from toy_quanta.config import VECTOR_KEYS


class Hyper(NamedTuple):
    """Per-member scalars; inside the trainer each field is a traced scalar, outside an (M,) array."""

    seed: Any
    alpha: Any
    D: Any  # training-set size (finite mode); 0 for online members
    init_scale: Any
    lr: Any
    weight_decay: Any


class ModularHyper(NamedTuple):
    """The same for modular arithmetic: per-member scalars of the grokking trainer."""

    seed: Any
    train_fraction: Any
    init_scale: Any
    lr: Any
    weight_decay: Any
    fixed_norm: Any  # 0: free norm


class DatasetHyper(NamedTuple):
    """The same for a fixed dataset (MNIST, teacher-student): per-member scalars of its trainer."""

    seed: Any
    init_scale: Any
    lr: Any
    weight_decay: Any
    fixed_norm: Any  # 0: free norm


# ensemble.<name> list -> the config key it varies
_ENSEMBLE_LISTS = {"alpha": "task.alpha", "init_scale": "model.init_scale", "lr": "optim.lr", "weight_decay": "optim.weight_decay",
                   "train_fraction": "task.train_fraction", "fixed_norm": "optim.fixed_norm"}


def expand(cfg: Any) -> list[dict[str, float | int]]:
    """The members of one job: the product of the ensemble lists, times `ensemble.seeds` seeds.

    Each member is a dict keyed by VECTOR_KEYS (e.g. {"seed": 0, "optim.lr": 1e-3, ...}).
    """
    # A key that does not apply to the task (alpha and D outside sparse parity, the training
    # fraction outside modular arithmetic and the toy's addition) is None; so is a free norm.
    modular, parity = cfg.task.name in ("modular", "symbol_add"), cfg.task.name == "sparse_parity"
    base = {
        "task.alpha": float(cfg.task.alpha) if parity else None,
        "task.D": int(cfg.task.D) if parity and cfg.task.D is not None else None,
        "task.train_fraction": float(cfg.task.train_fraction) if modular else None,
        "model.init_scale": float(cfg.model.init_scale),
        "optim.lr": float(cfg.optim.lr),
        "optim.weight_decay": float(cfg.optim.weight_decay),
        "optim.fixed_norm": None if cfg.optim.fixed_norm is None else float(cfg.optim.fixed_norm),
    }
    axes = {key: [float(v) for v in getattr(cfg.ensemble, name)] for name, key in _ENSEMBLE_LISTS.items()
            if getattr(cfg.ensemble, name) is not None}
    if cfg.ensemble.D is not None:
        axes["task.D"] = [int(v) for v in cfg.ensemble.D]
    members = []
    for values in itertools.product(*axes.values()):
        point = {**base, **dict(zip(axes, values))}
        for s in range(cfg.ensemble.seeds):
            members.append({"seed": int(cfg.seed) + s, **point})
    return [{key: m[key] for key in VECTOR_KEYS} for m in members]


def train_capacity(members: Sequence[dict[str, Any]]) -> int | None:
    """Length of the shared training-set array: the largest member's D; None when online.
    Members must be all finite or all online (one program cannot hold both)."""
    sizes = [m["task.D"] for m in members]
    if all(d is None for d in sizes):
        return None
    if any(d is None for d in sizes):
        raise ValueError("one program cannot train online (task.D=null) and finite-data members together")
    return int(max(sizes))


def _column(members: Sequence[dict[str, Any]], key: str, dtype) -> np.ndarray:
    return np.array([m[key] for m in members], dtype=dtype)


def _fixed_norm(members: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([m["optim.fixed_norm"] or 0.0 for m in members], np.float32)


def stack_modular(members: Sequence[dict[str, Any]]) -> ModularHyper:
    """(M,) arrays of the members' scalars, for the modular-arithmetic trainer."""
    return ModularHyper(seed=_column(members, "seed", np.int32),
                        train_fraction=_column(members, "task.train_fraction", np.float32),
                        init_scale=_column(members, "model.init_scale", np.float32),
                        lr=_column(members, "optim.lr", np.float32),
                        weight_decay=_column(members, "optim.weight_decay", np.float32),
                        fixed_norm=_fixed_norm(members))


def stack_dataset(members: Sequence[dict[str, Any]]) -> DatasetHyper:
    """(M,) arrays of the members' scalars, for the fixed-dataset trainer."""
    return DatasetHyper(seed=_column(members, "seed", np.int32),
                        init_scale=_column(members, "model.init_scale", np.float32),
                        lr=_column(members, "optim.lr", np.float32),
                        weight_decay=_column(members, "optim.weight_decay", np.float32),
                        fixed_norm=_fixed_norm(members))


def stack(members: Sequence[dict[str, float | int]]) -> Hyper:
    col = lambda key, dtype: _column(members, key, dtype)  # noqa: E731
    return Hyper(
        seed=col("seed", np.int32),
        alpha=col("task.alpha", np.float32),
        D=np.array([m["task.D"] or 0 for m in members], np.int32),
        init_scale=col("model.init_scale", np.float32),
        lr=col("optim.lr", np.float32),
        weight_decay=col("optim.weight_decay", np.float32),
    )
