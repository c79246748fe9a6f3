"""Errors a user can act on. A leaf module: everything may import it, it imports nothing of ours."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config value that is not allowed. Names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")
