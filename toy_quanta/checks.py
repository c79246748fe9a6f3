"""The value checks that configs share: each raises ConfigError naming the key, the value and
what is allowed. `cfg` is a config object or its dict; keys are dotted paths into it."""

from __future__ import annotations

import math
from typing import Any

from toy_quanta.errors import ConfigError


def get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def positive_int(cfg: Any, key: str) -> None:
    value = get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, value, "an integer >= 1")


def nonneg_int(cfg: Any, key: str) -> None:
    value = get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(key, value, "an integer >= 0")


def finite(cfg: Any, key: str, *, positive: bool = False, nonneg: bool = False) -> None:
    value = get(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
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
    if len(values) == 0:
        raise ConfigError(key, list(values), "a non-empty list, or null")
    for v in values:
        ok = isinstance(v, int if integer else (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > 0 if positive else v >= 0 if nonneg else True)
        if not ok:
            what = "positive finite numbers" if positive else "finite numbers >= 0"
            raise ConfigError(key, list(values), f"a list of {'integers >= 1' if integer else what}")
