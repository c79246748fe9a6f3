"""Optimisers through optax. lr, weight decay and the grokfast filter's kind, alpha and lambda
may be traced, so ensembles can vary them."""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax

from toy_quanta.config import GRAD_FILTERS, OptimConfig
from toy_quanta.engine import filters


def schedule(cfg: OptimConfig, lr: jax.Array | float, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 over warmup_steps, then constant, cosine or linear decay to the end."""
    final = lr * cfg.final_lr_factor
    decay_steps = max(total_steps - cfg.warmup_steps, 1)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps, alpha=cfg.final_lr_factor)
    else:
        after = optax.linear_schedule(lr, final, decay_steps)
    if cfg.warmup_steps == 0:
        return after
    warmup = optax.linear_schedule(0.0, lr, cfg.warmup_steps)
    return optax.join_schedules([warmup, after], [cfg.warmup_steps])


class Grokfast(NamedTuple):
    """One member's grokfast filter (engine.filters.grokfast); `kinds`: every member's, static."""

    kind: jax.Array | int
    alpha: jax.Array | float
    lamb: jax.Array | float
    kinds: frozenset[int]


def grokfast_of(cfg: OptimConfig, kinds: set[str] | None = None) -> Grokfast:
    """The configured filter, for the members' kinds (default: optim.grokfast's)."""
    names = kinds if kinds is not None else {cfg.grokfast}
    return Grokfast(GRAD_FILTERS.index(cfg.grokfast), cfg.grokfast_alpha, cfg.grokfast_lambda,
                    frozenset(GRAD_FILTERS.index(k) for k in names))


def make_optimizer(
    cfg: OptimConfig, lr: jax.Array | float, weight_decay: jax.Array | float, total_steps: int,
    grokfast: Grokfast | None = None, eps: jax.Array | float | None = None,
) -> optax.GradientTransformation:
    """The configured optimiser at (lr, weight_decay). With optim.embed_lr or embed_weight_decay
    set, parameters under an `embed` module get their own rate and decay (the effective theory's
    toy), the rest (lr, weight_decay); gradient clipping stays global. The gradients pass through
    the orthogonal projection (optim.orthogonal), then the grokfast filter (default: optim.grokfast's),
    then clipping, then the rule: as the papers' code, which filter the raw gradients before the
    optimiser adds weight decay. `eps` (default optim.eps) is Adam's, per member."""
    grokfast = grokfast if grokfast is not None else grokfast_of(cfg)
    eps = cfg.eps if eps is None else eps
    pre = [filters.orthogonal()] if cfg.orthogonal else []
    if grokfast.kinds - {filters.NONE}:
        pre.append(filters.grokfast(grokfast.kind, grokfast.alpha, grokfast.lamb, kinds=grokfast.kinds,
                                     window=cfg.grokfast_window, warmup=cfg.grokfast_warmup))
    pre += [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip is not None else []
    if cfg.embed_lr is None and cfg.embed_weight_decay is None:
        return optax.chain(*pre, _rule(cfg, lr, weight_decay, total_steps, eps))
    embed_lr = lr if cfg.embed_lr is None else cfg.embed_lr
    embed_wd = weight_decay if cfg.embed_weight_decay is None else cfg.embed_weight_decay
    split = optax.partition({"embed": _rule(cfg, embed_lr, embed_wd, total_steps, eps),
                             "decoder": _rule(cfg, lr, weight_decay, total_steps, eps)}, embed_labels)
    return optax.chain(*pre, split)


def embed_labels(params):
    """"embed" for the leaves under a module named embed, "decoder" for the others."""
    def label(path, _):
        return "embed" if any(getattr(k, "key", None) == "embed" for k in path) else "decoder"

    return jax.tree_util.tree_map_with_path(label, params)


def _rule(cfg: OptimConfig, lr: jax.Array | float, weight_decay: jax.Array | float,
          total_steps: int, eps: jax.Array | float) -> optax.GradientTransformation:
    parts = []
    if cfg.name == "adamw":
        parts += [optax.scale_by_adam(cfg.b1, cfg.b2, eps), optax.add_decayed_weights(weight_decay)]
    elif cfg.name == "adam":
        # PyTorch's Adam: weight decay is an L2 term added to the gradient before the moments.
        parts += [optax.add_decayed_weights(weight_decay), optax.scale_by_adam(cfg.b1, cfg.b2, eps)]
    elif cfg.name == "sgd":
        parts.append(optax.add_decayed_weights(weight_decay))
        if cfg.momentum > 0:
            parts.append(optax.trace(decay=cfg.momentum))
    else:
        raise ValueError(f"optim.name={cfg.name!r}: unknown optimiser")
    parts.append(optax.scale_by_learning_rate(schedule(cfg, lr, total_steps)))
    return optax.chain(*parts)
