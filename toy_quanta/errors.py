"""Errors a user can act on. A leaf module: everything may import it, it imports nothing of ours."""

from __future__ import annotations

import signal
from typing import Any


class ConfigError(ValueError):
    """A config value that is not allowed. Names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


class RunFileError(ValueError):
    """A file of a run that cannot be read (truncated, corrupt, or written by another program).
    Names the file; the file itself is left as it is."""

    def __init__(self, path: Any, reason: str, hint: str = ""):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}" + (f"; {hint}" if hint else ""))


class Interrupted(Exception):
    """Training stopped on a signal (SIGTERM, SIGINT) at a chunk boundary, after a checkpoint.
    `result` is the run as far as it got (engine.loop.FitResult)."""

    def __init__(self, signum: int, step: int, result: Any = None):
        self.signum, self.step, self.result = signum, step, result
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}")
