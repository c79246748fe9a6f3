"""Waiting on SLURM jobs, bounded; and what a SLURM job leaves behind when SLURM stops it.

submitit decides that a job is done when its result file exists, or when `sacct` says it ended.
That leaves two holes, both closed here:
- Without accounting (`sacct`: "accounting storage is disabled"), a job killed outright writes no
  result and sacct never says it ended: submitit waits for ever. `wait` asks `squeue` (which
  knows every job until MinJobAge after its end, with or without accounting; one call for all the
  sweep's jobs), then sacct; a job that ended without a result, or that neither knows any more,
  fails its grid points within RESULT_GRACE_S with one line (errors.ClusterJobLost); so does a
  scheduler that has not answered for SILENT_LIMIT_S. While it waits, it says which jobs it waits
  on and why (their states and SLURM's reasons) at every change, and again every REPORT_EVERY_S.
- A job stopped by SIGTERM (SLURM's preemption, `scontrol requeue`, its time limit, `scancel`)
  that then returned its interrupted summaries would write a result file, and the submitter would
  take the interrupted run for the answer, though SLURM requeues the job and the rerun finishes it.
  `leave_to_scheduler` ends such a job without a result instead, so the submitter goes by what
  SLURM says: a requeued job is waited on until its rerun writes the result; a cancelled or
  timed-out one fails with its state. So does a job whose own `scontrol requeue` (submitit's, on
  USR2) is killed by the SIGTERM that very requeue sends to the job's every process: submitit
  would otherwise write that CalledProcessError as the job's result, while SLURM runs it again.

The module's name starts with "_" so that Hydra's plugin scanner skips it.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any, Callable, Optional, Sequence, Union

from toy_quanta.errors import ClusterJobLost

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often the result file is looked for
STATE_EVERY_S = 5.0  # how often the scheduler is asked
RESULT_GRACE_S = 15.0  # an ended job's result file may reach a shared filesystem late (submitit's own wait)
SILENT_LIMIT_S = 600.0  # the scheduler not answering this long ends the wait
REPORT_EVERY_S = 600.0  # a long wait says again what it waits on
SHOWN = 5  # jobs named in a waiting line; the others are counted by state
# SLURM job states in which a job may still write its result (squeue(1), "JOB STATE CODES")
ALIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "PREEMPTED",
                   "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "SPECIAL_EXIT",
                   "STAGE_OUT", "RESV_DEL_HOLD"})
GONE = "unknown to the scheduler"  # neither squeue nor sacct has a record of it


def _run(command: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return proc.returncode, proc.stdout if proc.returncode == 0 else (proc.stderr or proc.stdout)


def states(job_ids: Sequence[str]) -> Union[dict[str, tuple[str, str]], str]:
    """SLURM's (state, reason) of each job or array task (`12`, `12_3`): squeue's, which knows every
    job until MinJobAge after its end, with or without accounting; then sacct's for the ones squeue
    has forgotten; GONE for those neither knows. A str instead: why the scheduler could not be asked."""
    rc, out = _run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r"])
    if rc != 0 and "Invalid job id" not in out:  # (all of them forgotten: asked of sacct below)
        return out.strip().splitlines()[-1] if out.strip() else f"squeue exit status {rc}"
    known: dict[str, tuple[str, str]] = {}
    for line in out.splitlines() if rc == 0 else []:
        job_id, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        known[job_id.strip()] = (state.strip(), "" if reason.strip() == "None" else reason.strip())
    forgotten = [i for i in job_ids if i not in known]
    if forgotten:
        rc, out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(forgotten)])
        for line in out.splitlines() if rc == 0 else []:  # no accounting: "accounting storage is disabled"
            job_id, _, state = line.partition("|")
            if job_id in forgotten and state.split():
                known[job_id] = (state.split()[0], "")  # "CANCELLED by 0" -> CANCELLED
    return {i: known.get(i, (GONE, "")) for i in job_ids}


class _Waiting:
    """The jobs not yet ended, what SLURM says of each, and since when it has said they ended."""

    def __init__(self, jobs: Sequence[Any], whats: Sequence[str], clock: Callable[[], float]):
        self.jobs, self.whats, self.clock = jobs, whats, clock
        self.seen: dict[int, tuple[str, str]] = {}
        self.ended_at: dict[int, float] = {}
        self.asked = self.reported = self.silent_since = None  # type: Optional[float]
        self.silence = ""  # what the scheduler's commands said when they could not answer
        self.started = clock()

    def lost(self, pending: Sequence[int]) -> dict[int, ClusterJobLost]:
        """The pending jobs to give up on now (asking SLURM every STATE_EVERY_S)."""
        now = self.clock()
        if self.asked is None or now - self.asked >= STATE_EVERY_S:
            self.asked = now
            self._ask(pending, now)
        lost = {}
        for i in pending:
            if i in self.ended_at and now - self.ended_at[i] >= RESULT_GRACE_S:
                state = self.seen[i][0]
                how = f"is {GONE}" if state == GONE else f"ended {state}"
                lost[i] = ClusterJobLost(str(self.jobs[i].job_id), self.whats[i], f"{how} without writing a result",
                                         self.jobs[i].paths.stderr)
            elif self.silent_since is not None and now - self.silent_since >= SILENT_LIMIT_S:
                lost[i] = ClusterJobLost(str(self.jobs[i].job_id), self.whats[i],
                                         f"could not be asked about: SLURM has not answered for {SILENT_LIMIT_S:.0f} s "
                                         f"({self.silence})", self.jobs[i].paths.stderr)
        return lost

    def _ask(self, pending: Sequence[int], now: float) -> None:
        answer = states([str(self.jobs[i].job_id) for i in pending])
        if isinstance(answer, str):
            self.silent_since, self.silence = self.silent_since or now, answer
            return
        self.silent_since = None
        changed = False
        for i in pending:
            current = answer[str(self.jobs[i].job_id)]
            changed |= self.seen.get(i) != current
            self.seen[i] = current
            if current[0] in ALIVE:
                self.ended_at.pop(i, None)
            else:
                self.ended_at.setdefault(i, now)
        if changed or (self.reported is not None and now - self.reported >= REPORT_EVERY_S):
            self.reported = now
            log.info(self._report(pending, now))

    def _report(self, pending: Sequence[int], now: float) -> str:
        """Which jobs the sweep waits on, and why: the first few by name, the rest counted by state."""
        def one(i: int) -> str:
            state, reason = self.seen[i]
            return f"{self.jobs[i].job_id} ({self.whats[i]}) {state}" + (f" ({reason})" if reason else "")

        waited = f" after {(now - self.started) / 60:.0f} min" if now - self.started >= 60 else ""
        shown = [one(i) for i in pending[:SHOWN]]
        rest = Counter(self.seen[i][0] for i in pending[SHOWN:])
        more = f"; and {len(pending) - SHOWN} more: " + ", ".join(f"{n} {s}" for s, n in rest.items()) if rest else ""
        return f"waiting on {len(pending)} SLURM job{'s' * (len(pending) != 1)}{waited}: " + "; ".join(shown) + more


def wait(jobs: Sequence[Any], whats: Sequence[str], should_stop: Callable[[], Optional[int]],
         clock: Callable[[], float] = time.monotonic) -> list[Any]:
    """For each job: its results() once it has written them (or the exception they raise); a
    ClusterJobLost once SLURM has said for RESULT_GRACE_S that it ended without them, or has not
    answered for SILENT_LIMIT_S; None if should_stop() first (this process was asked to stop: the
    jobs go on)."""
    outcomes: list[Any] = [None] * len(jobs)
    pending = list(range(len(jobs)))
    waiting = _Waiting(jobs, whats, clock)
    while pending:
        for i in [i for i in pending if jobs[i].paths.result_pickle.exists()]:
            try:
                outcomes[i] = jobs[i].results()
            except Exception as exc:  # noqa: BLE001  the job raised: its grid points fail with it
                outcomes[i] = exc
            pending.remove(i)
        if not pending or should_stop():
            break
        for i, exc in waiting.lost(pending).items():
            outcomes[i] = exc
            pending.remove(i)
        if pending:
            time.sleep(POLL_S)
    return outcomes


def leave_to_scheduler(interrupted: bool, signum: Optional[int]) -> None:
    """In a SLURM job that SIGTERM stopped (its checkpoint and interrupted summaries written):
    exit without a result file, so the submitter waits on what SLURM does next (module doc)."""
    if interrupted and signum == signal.SIGTERM:
        exit_without_result("stopped by SIGTERM (a preemption, a requeue, the time limit or scancel)")


def exit_without_result(why: str) -> None:
    """End this SLURM job with no result file (status 143): the submitter follows SLURM's state."""
    log.info(f"{why}: leaving no result, so the submitter follows SLURM (a requeued job resumes from its checkpoint)")
    sys.exit(128 + signal.SIGTERM)
