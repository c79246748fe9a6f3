"""The value checks that configs share: each raises ConfigError naming the key, the value and
what is allowed. `cfg` is a config object or its dict; keys are dotted paths into it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from toy_quanta.errors import ConfigError

# The engine holds steps, sizes and seeds as int32 (the step counter, the members' seeds and
# training-set sizes, optax's schedule boundaries): from 2^31 on they overflow (an OverflowError
# inside NumPy or JAX, or a counter that wraps). One rule for every integer key: below 2^31.
INT_END = 2**31


def get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def ensemble_list(cfg: Any, name: str) -> Any:
    """ensemble.<name>: a field of EnsembleConfig, or a task's own list (ensemble.lists); None if unset."""
    ensemble = get(cfg, "ensemble")
    if isinstance(ensemble, Mapping):
        field_value, lists = ensemble.get(name), ensemble.get("lists")
    else:
        field_value, lists = getattr(ensemble, name, None), ensemble.lists
    return field_value if field_value is not None else (lists or {}).get(name)


def finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite as a float: an int beyond the float range (10**400)
    counts as infinite (math.isfinite would raise OverflowError on it, and so would float32)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def positive_int(cfg: Any, key: str) -> None:
    value = get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, value, "an integer >= 1")
    if value >= INT_END:
        raise ConfigError(key, value, "an integer >= 1 and < 2^31 (the engine counts in 32-bit integers)")


def boolean(cfg: Any, key: str) -> None:
    if not isinstance(get(cfg, key), bool):
        raise ConfigError(key, get(cfg, key), "true or false")


def nonneg_int(cfg: Any, key: str) -> None:
    value = get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(key, value, "an integer >= 0")
    if value >= INT_END:
        raise ConfigError(key, value, "an integer >= 0 and < 2^31 (the engine counts in 32-bit integers)")


def finite(cfg: Any, key: str, *, positive: bool = False, nonneg: bool = False) -> None:
    value = get(cfg, key)
    ok = finite_number(value)
    if ok and positive:
        ok = value > 0
    if ok and nonneg:
        ok = value >= 0
    if not ok:
        what = "a positive finite number" if positive else "a finite number >= 0" if nonneg else "a finite number"
        raise ConfigError(key, value, what)


def choice(cfg: Any, key: str, allowed: tuple[str, ...]) -> None:
    value = get(cfg, key)
    if value not in allowed:
        raise ConfigError(key, value, "one of " + ", ".join(allowed))


def list_of(cfg: Any, key: str, *, positive: bool = False, nonneg: bool = False, integer: bool = False) -> None:
    values = get(cfg, key)
    if values is None:
        return
    what = "positive finite numbers" if positive else "finite numbers >= 0" if nonneg else "finite numbers"
    what = "integers >= 1 and < 2^31" if integer else what
    # a scalar or a string is not a list (a string would otherwise pass as a list of its characters)
    if isinstance(values, (str, bytes, Mapping)) or not (hasattr(values, "__len__") and hasattr(values, "__iter__")):
        raise ConfigError(key, values, f"a non-empty list of {what}, or null")
    if len(values) == 0:
        raise ConfigError(key, list(values), "a non-empty list, or null")
    for v in values:
        ok = finite_number(v) and (isinstance(v, int) or not integer)
        ok = ok and (v > 0 if positive else v >= 0 if nonneg else True) and not (integer and v >= INT_END)
        if not ok:
            raise ConfigError(key, list(values), f"a list of {what}")
