"""toy_quanta.stopping: SIGTERM and SIGINT as stop requests inside watching() blocks."""

from __future__ import annotations

import os
import signal
import time

from toy_quanta import stopping


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    for _ in range(100):  # Python runs the handler in the main thread at its next check
        if stopping.requested() == signum:
            return
        time.sleep(0.001)


def test_a_signal_is_a_request_shared_by_nested_blocks_and_handlers_come_back():
    before = {s: signal.getsignal(s) for s in stopping.SIGNALS}
    with stopping.watching():
        assert stopping.requested() is None
        _deliver(signal.SIGTERM)
        assert stopping.requested() == signal.SIGTERM
        with stopping.watching():  # a job of a sweep that was asked to stop sees the request
            assert stopping.requested() == signal.SIGTERM
    assert {s: signal.getsignal(s) for s in stopping.SIGNALS} == before
    with stopping.watching():  # the next run (a notebook's next cell) starts without a request
        assert stopping.requested() is None
        _deliver(signal.SIGINT)
        assert stopping.requested() == signal.SIGINT
    assert {s: signal.getsignal(s) for s in stopping.SIGNALS} == before
