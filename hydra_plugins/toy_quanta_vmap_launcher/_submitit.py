"""What toy_quanta's submitit launchers add to Hydra's: bounded waits on SLURM, a preemption that
checkpoints before it requeues, and a SIGTERM that leaves the verdict to SLURM (_slurm.py).

`SubmititLaunching` is shared by `hydra/launcher=submitit_slurm` (SubmititSlurmLauncher, below:
Hydra's launcher, one SLURM array task per grid point) and the vmap launchers (_vmap_submitit.py:
one per group). On the submitting side, `_executor` builds submitit's executor from the launcher's
settings exactly as Hydra's launcher does, and `_gather` waits on each job: a job lost on the
cluster (killed, cancelled, timed out) fails only its own grid points, with one line
(errors.ClusterJobLost), and the others' results are kept. In the job, `_in_job` runs the work with
submitit's preemption/timeout signal (USR2) and SIGTERM both turned into a stop at the next chunk
boundary with a checkpoint (toy_quanta.stopping); after USR2, submitit's own handler requeues the
same callable (BaseSubmititLauncher.checkpoint) and the process exits; after SIGTERM under SLURM,
the job exits without a result (_slurm.leave_to_scheduler).

The module's name starts with "_" so that Hydra's plugin scanner skips it (it needs the `cluster`
extra); toy_quanta.cli.app registers the classes when hydra_submitit_launcher is installed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher, SlurmLauncher
from omegaconf import OmegaConf

from hydra_plugins.toy_quanta_vmap_launcher import _slurm
from hydra_plugins.toy_quanta_vmap_launcher._groups import interrupted

log = logging.getLogger(__name__)
R = TypeVar("R")


class Preemption:
    """In a submitit job: submitit's preemption/timeout signal (USR2) asks the run to stop at its
    next chunk boundary (toy_quanta.stopping.request), as SIGTERM does; submitit's own handler
    (checkpoint, requeue, exit) runs only afterwards (`requeue`)."""

    def __init__(self, signum: int):
        self.signum = signum
        self.received: Optional[int] = None
        self.submitit_handler: Any = None

    def __enter__(self) -> "Preemption":
        self.submitit_handler = signal.getsignal(self.signum)
        signal.signal(self.signum, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        from toy_quanta import stopping

        self.received = signum
        stopping.request(signum)

    def __exit__(self, *exc: Any) -> None:
        signal.signal(self.signum, self.submitit_handler)

    def requeue(self) -> None:
        """submitit's handler: our checkpoint() -> the same job requeued -> this process exits."""
        if callable(self.submitit_handler):
            self.submitit_handler(self.received, None)


class SubmititLaunching(BaseSubmititLauncher):
    """Hydra's submitit launcher, with the submitting side's waits and the job side's signals above."""

    def _executor(self) -> Any:
        """The executor, built from the launcher's settings exactly as BaseSubmititLauncher.launch does."""
        import submitit

        params = self.params
        specific_init_keys = {"max_num_timeout"}
        init_params = {"folder": params["submitit_folder"]}
        init_params.update(**{f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x in specific_init_keys})
        init_keys = specific_init_keys | {"submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{x if x in baseparams else f"{self._EXECUTOR}_{x}": y
                                      for x, y in params.items() if x not in init_keys})
        return executor

    def _sweep_dir(self) -> Path:
        """hydra.sweep.dir, made (with hydra.sweep.mode) as Hydra's launcher makes it."""
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        return sweep_dir

    def _gather(self, jobs: Sequence[Any], whats: Sequence[str], overrides: Sequence[Sequence[Sequence[str]]],
                name: str) -> List[JobReturn]:
        """Every job's JobReturns, one per grid point it ran, in order: its own; or, for a job that
        ended without them (lost on the cluster, or raised), FAILED ones carrying why (the sweep
        then fails with that line, and the other jobs' results stand); or, when this (submitting)
        process was asked to stop (SIGTERM, SIGINT), ones saying interrupted: the jobs go on and
        write their directories when they end. On SLURM the wait is bounded (_slurm.wait); a local
        job's process is watched by submitit itself."""
        from toy_quanta import stopping

        if self._EXECUTOR == "slurm":
            outcomes = _slurm.wait(jobs, whats, stopping.requested)
        else:
            outcomes = [None] * len(jobs)
            for i, job in enumerate(jobs):
                while not job.done() and not stopping.requested():
                    time.sleep(_slurm.POLL_S)
                if stopping.requested():
                    break
                try:
                    outcomes[i] = job.results()
                except Exception as exc:  # noqa: BLE001  its grid points fail with it
                    outcomes[i] = exc
        returns: List[JobReturn] = []
        for job, what, grid, outcome in zip(jobs, whats, overrides, outcomes):
            if isinstance(outcome, list):
                returns += outcome[0] if isinstance(outcome[0], list) else outcome
                continue
            if isinstance(outcome, Exception):
                log.error(f"{what} failed: {str(outcome).splitlines()[0] if str(outcome) else type(outcome).__name__}")
                returns += [JobReturn(overrides=list(o), task_name=name, status=JobStatus.FAILED,
                                      _return_value=outcome) for o in grid]
                continue
            log.warning(f"stopped waiting for {what}: submitit job {job.job_id} goes on (its log: {job.paths.stdout}); "
                        "its directories are written when it ends")
            returns += [JobReturn(overrides=list(o), task_name=name, status=JobStatus.COMPLETED,
                                  _return_value={"status": "interrupted", "submitit_job": str(job.job_id)})
                        for o in grid]
        return returns

    def _in_job(self, work: Callable[[], R], interrupted: Callable[[R], bool]) -> R:
        """In the submitit job: `work()` with USR2 and SIGTERM as stop requests; then a requeue
        (USR2), or, on SLURM after SIGTERM, an exit without a result (module doc)."""
        import submitit

        from toy_quanta import stopping

        env = submitit.JobEnvironment()
        with stopping.watching(), Preemption(env._usr_sig()) as preemption:
            out = work()
        if preemption.received is not None and interrupted(out):
            log.info(f"checkpointed on {signal.Signals(preemption.received).name}; requeueing")
            try:
                preemption.requeue()  # exits the process (or raises submitit's UncompletedJobError: no requeue left)
            except subprocess.CalledProcessError as exc:  # scontrol killed by the requeue's own SIGTERM, or refused
                if self._EXECUTOR != "slurm":
                    raise
                _slurm.exit_without_result(f"`{' '.join(map(str, exc.cmd))}` ended with status {exc.returncode}")
        if self._EXECUTOR == "slurm":
            _slurm.leave_to_scheduler(interrupted(out), stopping.requested())
        return out


class SubmititSlurmLauncher(SubmititLaunching, SlurmLauncher):
    """`hydra/launcher=submitit_slurm`: Hydra's (one SLURM array task per grid point), its waits
    bounded and its jobs' signals handled as above."""

    def __call__(self, sweep_overrides: List[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: Dict[type, Singleton]) -> JobReturn:
        return self._in_job(lambda: SlurmLauncher.__call__(self, sweep_overrides, job_dir_key, job_num, job_id,
                                                           singleton_state), interrupted)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self._sweep_dir()}")
        job_params: List[Any] = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = self._executor().map_array(self, *zip(*job_params))
        whats = [f"job {initial_job_idx + i}: {' '.join(filter_overrides(o)) or 'no overrides'}"
                 for i, o in enumerate(job_overrides)]
        return self._gather(jobs, whats, [[o] for o in job_overrides], getattr(self.task_function, "__name__", "task"))
