"""What a model module registers: its config, how to build it for a task, and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
from flax import nnx


@dataclass(frozen=True)
class Model:
    """A model by name. `build(model_cfg, io, key)` makes it with init scale 1 (the engine scales
    each member's parameters), `io` being the sizes its task declares (`Task.model_io`).
    `validate(cfg)` checks the model's keys of a whole config and raises ConfigError."""

    name: str
    config: type
    build: Callable[[Any, dict[str, int], jax.Array], nnx.Module]
    validate: Callable[[Any], None]
    embedding: bool = False  # has an `embed` module (optim.embed_lr and embed_weight_decay apply to it)
    describe: Callable[[Any], str] = lambda m: m.name  # a few words on model_cfg, for figure titles

