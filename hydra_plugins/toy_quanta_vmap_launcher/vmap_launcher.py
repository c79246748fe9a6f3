"""`hydra/launcher=vmap`: trains a multirun's same-shaped jobs as one vmapped ensemble.

Jobs whose configs differ only in per-member scalars (toy_quanta.engine.members.vector_keys():
seed, model.init_scale, optim.lr, optim.weight_decay, optim.fixed_norm and the keys each task
declares, such as task.alpha, task.D and task.train_fraction; and ensemble.*, name) form a group
(split further by what the task says cannot share a program, Task.group_key) and are trained as
one compiled program. Then every job goes through Hydra's ordinary `run_job`,
so each still gets its own output directory, .hydra/ configs, log file and return value.
The launcher serves the toy_quanta app only: it trains through toy_quanta, not through the
task function Hydra hands it. Its config, `hydra/launcher=vmap`, is registered by
toy_quanta.config.register_configs, which the app calls (so it is found in editable installs too).
The grouping, the training of a group (checkpointed under hydra.sweep.dir/.vmap_groups/, resumed
by the same sweep run again) and the per-job run_job are in _groups.py, which the vmap-submitit
launchers (_vmap_submitit.py) share.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.utils import JobReturn, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.toy_quanta_vmap_launcher._groups import (  # noqa: F401  (group_key, Group, Job: re-exported)
    Group, Job, group_key, keep_sweeper_configs, plan, run_group, run_one)

log = logging.getLogger(__name__)


class VmapLauncher(Launcher):
    def __init__(self, max_group_members: Optional[int] = None) -> None:
        self.max_group_members = max_group_members
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        keep_sweeper_configs(hydra_context)  # each job composed once, not twice

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        groups, alone, sweep_configs, typed = plan(self.hydra_context, self.config, job_overrides, initial_job_idx,
                                            self.max_group_members)
        log.info(f"vmap launcher: {len(job_overrides)} jobs in {len(groups)} vmapped group(s)")
        name = getattr(self.task_function, "__name__", "task")
        returns: dict[int, JobReturn] = {}
        for group in groups:
            returns.update(zip(group.ids, run_group(self.hydra_context, self.config, group, name,
                                                    sweep_configs=sweep_configs, typed=typed)))
        for job in alone:
            returns[job.idx] = run_one(self.hydra_context, sweep_configs[job.idx], job, name)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[initial_job_idx + i] for i in range(len(job_overrides))]
