"""Gradient transformations from the grokking literature, as optax transformations applied to the
raw gradients before the optimiser's rule.

- Grokfast (Lee et al. 2024): amplify each parameter's slow gradient. EMA: ema <- alpha * ema +
  (1 - alpha) * g (ema starts at the first gradient), the update sees g + lambda * ema. MA: the
  mean of the last `window` gradients, times lambda, added to g; with warm-up, nothing is added
  until the window is full. The filter kind, alpha and lambda are per member (traced), so one
  program trains baselines (kind "none" or lambda 0) beside filtered members.
- Orthogonal gradient (Prieto et al. 2025, "perpendicular grad"): each tensor's gradient minus its
  component along the weights, rescaled to the gradient's norm.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from toy_quanta.config import GRAD_FILTERS

NONE, EMA, MA = (GRAD_FILTERS.index(k) for k in ("none", "ema", "ma"))  # a member's kind: an int32 code


class GrokfastState(NamedTuple):
    count: jax.Array  # () int32: gradients seen
    ema: Any  # params-shaped; () when no member filters by EMA
    window: Any  # (W, *param) per leaf: the last W gradients, a ring; () when no member filters by MA
    total: Any  # params-shaped: the ring's sum, kept running
    comp: Any  # params-shaped: the running sum's compensation (Kahan)
    evict: Any  # params-shaped: the gradient the next step pushes out of the ring


def grokfast(kind: jax.Array | int, alpha: jax.Array | float, lamb: jax.Array | float, *,
             kinds: frozenset[int], window: int = 100, warmup: bool = True) -> optax.GradientTransformation:
    """g -> g + lamb * slow(g), slow the EMA or the window's mean as `kind` says (NONE: g as is).

    `kinds` is the static set of kinds any member of the program uses: only those states are kept
    (the MA ring costs `window` copies of the gradients per member)."""
    use_ema, use_ma = EMA in kinds, MA in kinds

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return GrokfastState(
            count=jnp.zeros((), jnp.int32),
            ema=zeros if use_ema else (),
            window=jax.tree.map(lambda p: jnp.zeros((window, *p.shape), p.dtype), params) if use_ma else (),
            total=zeros if use_ma else (),
            comp=zeros if use_ma else (),
            evict=zeros if use_ma else ())

    def update(grads, state, params=None):
        del params
        count = state.count
        slow = jax.tree.map(jnp.zeros_like, grads)
        ema, ring, total, comp, evict = state.ema, state.window, state.total, state.comp, state.evict
        if use_ema:
            ema = jax.tree.map(lambda e, g: jnp.where(count == 0, g, alpha * e + (1 - alpha) * g), ema, grads)
            slow = jax.tree.map(lambda s, e: jnp.where(kind == EMA, e, s), slow, ema)
        if use_ma:
            slot = count % window
            # A running sum costs O(params) a step instead of O(window x params) for the mean;
            # compensated (Kahan) adds keep float32 rounding from piling up over a long run. The
            # gradient leaving the window was read at the end of the last step: XLA's CPU backend
            # copies the whole ring when a slot is read and then written in one step.
            total, comp = _kahan_add(*_kahan_add(total, comp, grads), jax.tree.map(jnp.negative, evict))
            ring = jax.tree.map(lambda r, g: r.at[slot].set(g), ring, grads)
            evict = jax.tree.map(lambda r: r[(slot + 1) % window], ring)
            filled = jnp.minimum(count + 1, window)
            on = (kind == MA) & ((count + 1 >= window) | (not warmup))
            slow = jax.tree.map(lambda s, t: jnp.where(on, t / filled.astype(t.dtype), s), slow, total)
        out = jax.tree.map(lambda g, s: g + lamb * s, grads, slow)
        return out, GrokfastState(count + 1, ema, ring, total, comp, evict)

    return optax.GradientTransformation(init, update)


def keep_if(ok: jax.Array, new: GrokfastState, old: GrokfastState) -> GrokfastState:
    """where(ok, new, old) for all but the ring, which keeps the step's write: a select over the
    whole ring would cost O(window x params) every step, and a member that fails the step has
    diverged for good (it never updates again), so its ring is never read."""
    keep = lambda n, o: jax.tree.map(lambda a, b: jnp.where(ok, a, b), n, o)  # noqa: E731
    return new._replace(count=keep(new.count, old.count), ema=keep(new.ema, old.ema), total=keep(new.total, old.total),
                        comp=keep(new.comp, old.comp), evict=keep(new.evict, old.evict))


def _kahan_add(total: Any, comp: Any, x: Any) -> tuple[Any, Any]:
    """total + x with Kahan's compensation term `comp` (the low-order bits lost so far)."""
    y = jax.tree.map(jnp.subtract, x, comp)
    new = jax.tree.map(jnp.add, total, y)
    return new, jax.tree.map(lambda n, t, y_: (n - t) - y_, new, total, y)


def orthogonal() -> optax.GradientTransformation:
    """Each tensor's gradient with its component along the weights removed, rescaled to the
    gradient's norm: g_perp = g - (w.g / w.w) w, then g_perp * |g| / |g_perp| (0 stays 0)."""
    tiny = 1e-30  # as their code: a zero tensor (w = 0 or g parallel to w) gives 0, not NaN

    def update(grads, state, params):
        def one(g, w):
            g_perp = g - jnp.vdot(w, g) / (jnp.vdot(w, w) + tiny) * w
            return g_perp * (jnp.linalg.norm(g) / (jnp.linalg.norm(g_perp) + tiny))

        return jax.tree.map(one, grads, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
