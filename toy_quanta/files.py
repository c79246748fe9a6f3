"""Writing files so that readers never see half of one, and reading them with a clear error when
one is unreadable. A leaf module (no JAX: `toy-quanta-collect` reads a thousand jobs with it)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from toy_quanta.errors import RunFileError

METRICS_FILE = "metrics.parquet"
SUMMARY_FILE = "summary.json"

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None], durable: bool = False) -> None:
    """write(tmp) then rename over `path`: readers never see a half-written file, and the previous
    version stays until the new one is complete. durable: fsync before the rename, so the new
    file also survives a machine that dies (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are shared like any other file
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read(path: Path, load: Callable[[Path], Any], what: str) -> Any:
    """load(path), with any failure to parse the file (truncated, corrupt, another format) as a
    RunFileError naming it. A missing file stays a FileNotFoundError."""
    path = Path(path)
    try:
        return load(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001  (msgpack, Parquet, YAML, zip: each has its own errors)
        raise RunFileError(path, f"not a readable {what} ({type(exc).__name__}: {exc})",
                           "the file may be truncated (a run killed while writing it with an older version, or a "
                           "copy cut short); re-run the job to write it again") from None


def read_metrics(path: Path) -> pd.DataFrame:
    """A job's metrics table (metrics.parquet)."""
    import pandas as pd  # only the readers of tables pay for it

    return read(path, pd.read_parquet, "metrics table")
