"""Errors a user can act on. A leaf module: everything may import it, it imports nothing of ours."""

from __future__ import annotations

import signal
from typing import Any


class ConfigError(ValueError):
    """A config value that is not allowed. Names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


class RunDirBusy(ConfigError):
    """Another process is running a job in this output directory (files.job_lock): refused before
    anything is written, naming that process."""

    def __init__(self, folder: Any, holder: str, key: str = "hydra.run.dir"):
        self.holder = holder
        super().__init__(key, str(folder), f"a directory no other process is running a job in ({holder} "
                                           "is: wait for it to end, or give another directory)")


class RunFileError(ValueError):
    """A file of a run that cannot be read (truncated, corrupt, or written by another program).
    Names the file; the file itself is left as it is."""

    def __init__(self, path: Any, reason: str, hint: str = ""):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}" + (f"; {hint}" if hint else ""))


class DiskFull(OSError):
    """A file the run writes did not fit (no space left, or the quota reached). Names the file and
    the space left; nothing half-written is left (files.atomic_write), and what was written before
    (the last good checkpoint, the metrics so far) is kept."""

    def __init__(self, path: Any, free_bytes: int | None, errno_: int):
        self.path, self.free_bytes = path, free_bytes
        free = "unknown space" if free_bytes is None else f"{free_bytes / 1024:,.0f} KiB"
        super().__init__(errno_, f"{path} did not fit: no space left on its filesystem ({free} free); what the run "
                                 "wrote before is kept: free some space, and the same command resumes from the last "
                                 "checkpoint")

    def __str__(self) -> str:
        return self.strerror


class Interrupted(Exception):
    """Training stopped on a signal (SIGTERM, SIGINT) at a chunk boundary, after a checkpoint.
    `result` is the run as far as it got (engine.loop.FitResult)."""

    def __init__(self, signum: int, step: int, result: Any = None):
        self.signum, self.step, self.result = signum, step, result
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}")


class ClusterJobLost(RuntimeError):
    """A job sent to a scheduler ended without a result (killed, cancelled, timed out, its node lost),
    or the scheduler stopped answering about it. One line: the job, its state and where its log is;
    what the job wrote before (its checkpoint, its metrics so far) is kept."""

    def __init__(self, job_id: str, what: str, happened: str, log: Any):
        self.job_id = job_id
        super().__init__(f"SLURM job {job_id} ({what}) {happened}; its log: {log}")
