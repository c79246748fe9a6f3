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

On USR2 or SIGTERM a group does not die mid-step: its training stops at the next call boundary
(at most about 5 s), saves its checkpoint, its jobs write `interrupted` summaries; then, after
USR2, submitit's own handler requeues the job; after SIGTERM on SLURM (a preemption, a requeue,
the time limit, scancel) the job leaves no result and the submitter follows SLURM (_submitit.py,
_slurm.py). The submitter's wait on a SLURM job is bounded (_slurm.wait).

The module's name starts with "_" so that Hydra's plugin scanner skips it (it needs the `cluster`
extra); toy_quanta.cli.app registers its classes when hydra_submitit_launcher is installed.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, setup_globals

from hydra_plugins.toy_quanta_vmap_launcher._groups import (Group, interrupted, keep_sweeper_configs, plan, run_group,
                                                            run_one, span)
from hydra_plugins.toy_quanta_vmap_launcher._submitit import SubmititLaunching

log = logging.getLogger(__name__)


class _VmapSubmititLauncher(SubmititLaunching):
    def __init__(self, max_group_members: Optional[int] = None, **params: Any) -> None:
        super().__init__(**params)
        self.max_group_members = max_group_members

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        keep_sweeper_configs(hydra_context)  # each job composed once, not twice

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = self._sweep_dir()
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
        gathered = self._gather(submitted, [f"group {g.number}, jobs {span(g.ids)}" for g in groups],
                                [[j.overrides for j in g.jobs] for g in groups], name)
        returns.update(zip([i for g in groups for i in g.ids], gathered))
        return [returns[initial_job_idx + i] for i in range(len(job_overrides))]

    def __call__(self, group: Group, singleton_state: Dict[type, Singleton]) -> List[JobReturn]:  # type: ignore[override]
        """In the submitit job: train the group, write each of its grid points."""
        import submitit

        from toy_quanta import stopping

        assert self.config is not None and self.hydra_context is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        name = getattr(self.task_function, "__name__", "task")
        job_id = submitit.JobEnvironment().job_id
        return self._in_job(lambda: run_group(self.hydra_context, self.config, group, name, job_id=job_id,
                                              should_stop=stopping.requested),
                            lambda returns: any(interrupted(r) for r in returns))


class VmapSubmititLocalLauncher(_VmapSubmititLauncher):
    _EXECUTOR = "local"


class VmapSubmititSlurmLauncher(_VmapSubmititLauncher):
    _EXECUTOR = "slurm"
