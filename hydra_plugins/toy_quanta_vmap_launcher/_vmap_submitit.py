"""`hydra/launcher=vmap_submitit_slurm` and `vmap_submitit_local`: the vmap launcher's groups, each
sent to the cluster as ONE submitit job (a SLURM array task, or a local process).

The submitting side plans the groups exactly as `hydra/launcher=vmap` does (vmap_launcher.plan:
group_key, max_group_members); each submitit job then trains its group with one `fit` and runs
Hydra's `run_job` for every grid point of it (vmap_launcher.run_group), so every grid point keeps
its own output directory, .hydra/ configs and return value; `launch` returns one JobReturn per
grid point in the sweep's order. Everything else is Hydra's submitit launcher
(BaseSubmititLauncher): the executor and all its settings (timeout_min, partition, gpus_per_node,
signal_delay_s, max_num_timeout, setup, additional_parameters, ...), and `checkpoint`, which
submitit calls on its preemption/timeout signal (USR2) to requeue the same callable with the same
arguments: the same group, which resumes from its checkpoint.

On USR2 a group does not die mid-step: its training stops at the next call boundary (at most
about 5 s), saves its checkpoint, its jobs write `interrupted` summaries, and only then does
submitit's own handler requeue the job and exit. SIGTERM (which SLURM sends at a preemption and
at the time limit, and which submitit itself only logs) stops the training the same way
(toy_quanta.stopping) without a requeue.

The module's name starts with "_" so that Hydra's plugin scanner skips it (it needs the `cluster`
extra); toy_quanta.cli.app registers its classes when hydra_submitit_launcher is installed.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from hydra_plugins.toy_quanta_vmap_launcher._groups import (Group, interrupted, keep_sweeper_configs, plan, run_group,
                                                            run_one)

log = logging.getLogger(__name__)
WAIT_POLL_S = 1.0  # how often the submitting side looks whether a group's job has ended


class _OnPreemption:
    """While a group trains: submitit's preemption/timeout signal (USR2) only asks the training to
    stop at its next call boundary; submitit's own handler (requeue, exit) runs afterwards."""

    def __init__(self, signum: int):
        self.signum = signum
        self.received: Optional[int] = None
        self.submitit_handler: Any = None

    def __enter__(self) -> "_OnPreemption":
        self.submitit_handler = signal.getsignal(self.signum)
        signal.signal(self.signum, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        signal.signal(self.signum, self.submitit_handler)

    def should_stop(self) -> Optional[int]:
        from toy_quanta import stopping

        return self.received or stopping.requested()

    def requeue(self) -> None:
        """submitit's handler: our checkpoint() -> the same job requeued -> this process exits."""
        if callable(self.submitit_handler):
            self.submitit_handler(self.received, None)


class _VmapSubmititLauncher(BaseSubmititLauncher):
    def __init__(self, max_group_members: Optional[int] = None, **params: Any) -> None:
        super().__init__(**params)
        self.max_group_members = max_group_members

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

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        keep_sweeper_configs(hydra_context)  # each job composed once, not twice

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        groups, alone, sweep_configs, _ = plan(self.hydra_context, self.config, job_overrides, initial_job_idx,
                                            self.max_group_members)
        log.info(f"Submitit '{self._EXECUTOR}' vmap launcher: {len(job_overrides)} jobs in {len(groups)} group(s), "
                 f"one submitit job each; sweep output dir: {sweep_dir}")
        name = getattr(self.task_function, "__name__", "task")
        submitted = []
        if groups:
            state = Singleton.get_state()
            submitted = self._executor().map_array(self, groups, [state] * len(groups))
        returns: dict[int, JobReturn] = {}
        for job in alone:  # an invalid config fails at once, here: nothing to send
            returns[job.idx] = run_one(self.hydra_context, sweep_configs[job.idx], job, name)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        for group, job in zip(groups, submitted):
            try:
                group_returns = self._wait(group, job, name)
            except Exception as exc:  # noqa: BLE001  the submitit job died (killed, out of memory): its grid points fail
                log.error(f"group {group.number} (submitit job {job.job_id}) failed: {exc}")
                group_returns = [JobReturn(overrides=list(j.overrides), task_name=name, status=JobStatus.FAILED,
                                           _return_value=exc) for j in group.jobs]
            returns.update(zip(group.ids, group_returns))
        return [returns[initial_job_idx + i] for i in range(len(job_overrides))]

    @staticmethod
    def _wait(group: Group, job: Any, name: str) -> List[JobReturn]:
        """The group's JobReturns once its submitit job has ended. A SIGTERM or SIGINT to this
        (submitting) process stops the waiting: the job goes on, and writes its grid points'
        directories when it ends; its JobReturns here say interrupted (the app then exits 128+signal)."""
        from toy_quanta import stopping

        while not job.done():
            if stopping.requested():
                log.warning(f"stopped waiting for group {group.number}: submitit job {job.job_id} goes on "
                            f"(its log: {job.paths.stdout}); its directories are written when it ends")
                return [JobReturn(overrides=list(j.overrides), task_name=name, status=JobStatus.COMPLETED,
                                  _return_value={"status": "interrupted", "submitit_job": str(job.job_id)})
                        for j in group.jobs]
            time.sleep(WAIT_POLL_S)
        return job.results()[0]

    def __call__(self, group: Group, singleton_state: Dict[type, Singleton]) -> List[JobReturn]:  # type: ignore[override]
        """In the submitit job: train the group, write each of its grid points."""
        import submitit

        assert self.config is not None and self.hydra_context is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        env = submitit.JobEnvironment()
        name = getattr(self.task_function, "__name__", "task")
        with _OnPreemption(env._usr_sig()) as preemption:
            returns = run_group(self.hydra_context, self.config, group, name, job_id=env.job_id,
                                should_stop=preemption.should_stop)
        if preemption.received is not None and any(interrupted(r) for r in returns):
            log.info(f"group {group.number}: checkpointed on {signal.Signals(preemption.received).name}; requeueing")
            preemption.requeue()  # exits the process (or raises submitit's UncompletedJobError: no requeue left)
        return returns


class VmapSubmititLocalLauncher(_VmapSubmititLauncher):
    _EXECUTOR = "local"


class VmapSubmititSlurmLauncher(_VmapSubmititLauncher):
    _EXECUTOR = "slurm"
