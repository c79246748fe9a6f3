"""Optimisers through optax. lr and weight decay may be traced, so ensembles can vary them."""

from __future__ import annotations

import jax
import optax

from toy_quanta.config import OptimConfig


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


def make_optimizer(
    cfg: OptimConfig, lr: jax.Array | float, weight_decay: jax.Array | float, total_steps: int
) -> optax.GradientTransformation:
    """The configured optimiser at (lr, weight_decay). With optim.embed_lr or embed_weight_decay
    set, parameters under an `embed` module get their own rate and decay (the effective theory's
    toy), the rest (lr, weight_decay); gradient clipping stays global."""
    clip = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip is not None else []
    if cfg.embed_lr is None and cfg.embed_weight_decay is None:
        return optax.chain(*clip, _rule(cfg, lr, weight_decay, total_steps))
    embed_lr = lr if cfg.embed_lr is None else cfg.embed_lr
    embed_wd = weight_decay if cfg.embed_weight_decay is None else cfg.embed_weight_decay
    split = optax.partition({"embed": _rule(cfg, embed_lr, embed_wd, total_steps),
                             "decoder": _rule(cfg, lr, weight_decay, total_steps)}, embed_labels)
    return optax.chain(*clip, split)


def embed_labels(params):
    """"embed" for the leaves under a module named embed, "decoder" for the others."""
    def label(path, _):
        return "embed" if any(getattr(k, "key", None) == "embed" for k in path) else "decoder"

    return jax.tree_util.tree_map_with_path(label, params)


def _rule(cfg: OptimConfig, lr: jax.Array | float, weight_decay: jax.Array | float,
          total_steps: int) -> optax.GradientTransformation:
    parts = []
    if cfg.name == "adamw":
        parts += [optax.scale_by_adam(cfg.b1, cfg.b2, cfg.eps), optax.add_decayed_weights(weight_decay)]
    elif cfg.name == "adam":
        # PyTorch's Adam: weight decay is an L2 term added to the gradient before the moments.
        parts += [optax.add_decayed_weights(weight_decay), optax.scale_by_adam(cfg.b1, cfg.b2, cfg.eps)]
    elif cfg.name == "sgd":
        parts.append(optax.add_decayed_weights(weight_decay))
        if cfg.momentum > 0:
            parts.append(optax.trace(decay=cfg.momentum))
    else:
        raise ValueError(f"optim.name={cfg.name!r}: unknown optimiser")
    parts.append(optax.scale_by_learning_rate(schedule(cfg, lr, total_steps)))
    return optax.chain(*parts)
