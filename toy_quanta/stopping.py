"""SIGTERM (what SLURM sends before it preempts or times out a job) and SIGINT (Ctrl-C) ask a run
to stop at its next chunk boundary, with a checkpoint, instead of killing it mid-step. A second
signal of the same kind kills at once. A leaf module."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested: int | None = None
_previous: dict[int, Any] = {}
_depth = 0  # how many watching() blocks are open


def _handle(signum: int, frame: Any) -> None:
    global _requested
    if _requested is None:
        _requested = signum
        print(f"toy-quanta: {signal.Signals(signum).name} received: stopping at the next chunk boundary with a "
              f"checkpoint (send it again to stop now)", file=sys.stderr, flush=True)
    # The next signal takes its usual course: Ctrl-C twice raises KeyboardInterrupt, SIGTERM twice ends the process.
    signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)


def _install() -> None:
    """Route SIGTERM and SIGINT to a stop request (main thread only; idempotent)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        if signal.getsignal(signum) is not _handle:
            _previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, _handle)


@contextmanager
def watching() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT are stop requests (requested()). The outermost block
    starts with no request and gives the signals their former handlers back at its end, so in a
    notebook Ctrl-C stops the run it was pressed in and works as usual between runs. Nested blocks
    (the jobs of one sweep) share the outer request: a sweep asked to stop starts no new job."""
    global _depth, _requested
    outermost = _depth == 0 and threading.current_thread() is threading.main_thread()
    if outermost:
        _requested = None
        _install()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if outermost:
            _restore()


def _restore() -> None:
    for signum, handler in _previous.items():
        signal.signal(signum, handler)
    _previous.clear()


def requested() -> int | None:
    """The signal that asked to stop, or None."""
    return _requested


def request(signum: int) -> None:
    """Ask the run to stop at its next chunk boundary as if `signum` had come, for a signal another
    handler owns (submitit's preemption signal, USR2). The first request stands."""
    global _requested
    if _requested is None:
        _requested = signum
