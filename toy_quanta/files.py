"""Writing files so that readers never see half of one, and reading them with a clear error when
one is unreadable. A leaf module (no JAX: `toy-quanta-collect` reads a thousand jobs with it)."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from toy_quanta.errors import DiskFull, RunDirBusy, RunFileError

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
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if _full(exc):
            raise DiskFull(path, _free(path.parent), exc.errno) from None
        raise
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are shared like any other file
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if _full(exc):  # a full disk or a quota: one clear error naming the file (the writer's own may be chained deep)
            raise DiskFull(path, _free(path.parent), exc.errno) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _full(exc: BaseException) -> bool:
    """Whether an error (or one it was raised from: numpy's savez re-raises) is a full disk or quota."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _free(folder: Path) -> int | None:
    try:
        stat = os.statvfs(folder)
        return stat.f_bavail * stat.f_frsize
    except OSError:
        return None


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


LOCK_FILE = ".toy_quanta.lock"  # in a job's directory while a process runs the job there


@contextmanager
def job_lock(folder: Path, key: str = "hydra.run.dir") -> Iterator[None]:
    """Hold an exclusive lock on `folder` for as long as this process runs a job there. It is the
    operating system's (a POSIX record lock on LOCK_FILE, which NFS honours too), so a killed
    process leaves none behind; the file itself is never written, so a directory's files keep their
    times. Another process already holding it: RunDirBusy naming it, before anything is written (a
    requeued attempt started while the old one is still dying, a job resubmitted); `key` is the
    setting that named the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _lock_holder(fd)
        os.close(fd)
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        raise RunDirBusy(folder, holder, key) from None
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock_holder(fd: int) -> str:
    """Who holds the lock on fd's file: `process PID on HOST` from Linux's /proc/locks (a holder on
    another machine of a shared filesystem is not listed there)."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "POSIX" and fields[5] == device:
                return f"process {fields[4]} on {socket.gethostname()}"
    except OSError:
        pass
    return "another process (on another machine, or one this system does not list)"
