"""A member's model with its outputs scaled: f = alpha * g(x; theta), or centred,
f = alpha * (g(x; theta) - g(x; theta_0)) (Kumar et al. 2023's lazy-to-rich knob: the larger alpha,
the longer training stays in the lazy, kernel regime; centring keeps the initial outputs at 0).

The engine hands tasks this wrapper instead of the model when a member's model.output_scale is not
1 or model.centred is set; the task calls its usual entry points and never knows. Any model works,
built-in or a user's: only its outputs are touched.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from flax import nnx

ENTRY_POINTS = ("logits", "margin", "all_logits")  # besides __call__: what tasks read outputs from


class Scaled:
    def __init__(self, model: nnx.Module, scale: jax.Array | float, reference: nnx.Module | None = None):
        self.model, self.scale, self.reference = model, scale, reference

    def _outputs(self, name: str) -> Callable[..., jax.Array]:
        def out(*args, **kwargs):
            g = getattr(self.model, name)(*args, **kwargs)
            if self.reference is not None:
                g = g - jax.lax.stop_gradient(getattr(self.reference, name)(*args, **kwargs))
            return self.scale * g

        return out

    def __call__(self, *args, **kwargs) -> jax.Array:
        return self._outputs("__call__")(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ENTRY_POINTS:
            return self._outputs(name)
        return getattr(self.model, name)
