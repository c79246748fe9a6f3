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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from toy_quanta import registry

log = logging.getLogger(__name__)

# Keys that never split a group besides the per-member scalars: the ensemble lists and labels.
_LABEL_KEYS = ("name", "train.progress")


def group_key(cfg: Any) -> str:
    """Everything about a job that changes array shapes or the compiled program."""
    from toy_quanta.engine.members import vector_keys

    tree = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    tree.pop("ensemble", None)
    for key in (*vector_keys(), *_LABEL_KEYS):
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    tree["task"].update(registry.task(cfg.task.name).group_key(cfg))
    return json.dumps(tree, sort_keys=True)


class VmapLauncher(Launcher):
    def __init__(self, max_group_members: Optional[int] = None) -> None:
        self.max_group_members = max_group_members
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _job_config(self, overrides: Sequence[str], idx: int) -> DictConfig:
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        return sweep_config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from toy_quanta.config import validate
        from toy_quanta.engine.loop import fit
        from toy_quanta.engine.members import expand
        from toy_quanta.job import run_job as run_toy_quanta_job, to_config

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = self.config.hydra.sweep.dir
        Path(str(sweep_dir)).mkdir(parents=True, exist_ok=True)

        jobs = []  # (idx, overrides, sweep_config, typed cfg or None)
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            sweep_config = self._job_config(overrides, idx)
            HydraConfig.instance().set_config(sweep_config)
            try:
                cfg = to_config(sweep_config)
                validate(cfg)
            except Exception:
                cfg = None  # run_job below raises the same error inside the job, which marks it failed
            jobs.append((idx, list(overrides), sweep_config, cfg))

        members_of = {pos: expand(cfg) for pos, (_, _, _, cfg) in enumerate(jobs) if cfg is not None}
        groups: dict[str, list[int]] = defaultdict(list)
        for pos, (_, _, _, cfg) in enumerate(jobs):
            if cfg is not None:
                groups[group_key(cfg)].append(pos)
        # Split groups larger than max_group_members, keeping each job's members together.
        batches = []
        for positions in groups.values():
            batch: list[int] = []
            size = 0
            for pos in positions:
                n = len(members_of[pos])
                if batch and self.max_group_members and size + n > self.max_group_members:
                    batches.append(batch)
                    batch, size = [], 0
                batch.append(pos)
                size += n
            batches.append(batch)
        log.info(f"vmap launcher: {len(job_overrides)} jobs in {len(batches)} vmapped group(s)")

        trained: dict[int, Any] = {}  # job position -> FitResult of its members, or the exception
        group_info: dict[int, dict] = {}
        for g, batch in enumerate(batches):
            members, spans = [], []
            for pos in batch:
                job_members = members_of[pos]
                spans.append(range(len(members), len(members) + len(job_members)))
                members += job_members
            first_cfg = dataclasses.replace(jobs[batch[0]][3], name=f"group {g}")
            ids = [jobs[pos][0] for pos in batch]
            log.info(f"group {g}: jobs {ids}, {len(members)} members")
            t0 = time.time()
            HydraConfig.instance().set_config(jobs[batch[0]][2])
            try:
                result = fit(first_cfg, members)
            except Exception as exc:  # every job of the group fails with it; other groups go on
                log.error(f"group {g} failed: {exc}")
                for pos in batch:
                    trained[pos] = exc
                continue
            info = {"group": g, "group_jobs": ids, "group_members": len(members), "group_wall_time_s": time.time() - t0}
            for pos, span in zip(batch, spans):
                trained[pos] = result.select(list(span))
                group_info[pos] = info

        runs = []
        for pos, (idx, overrides, sweep_config, _) in enumerate(jobs):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")

            def task(cfg: DictConfig, pos=pos, overrides=overrides) -> Any:
                return run_toy_quanta_job(cfg, HydraConfig.get().runtime.output_dir, overrides,
                                          trained=trained.get(pos), group=group_info.get(pos))

            task.__name__ = getattr(self.task_function, "__name__", "task")
            runs.append(run_job(hydra_context=self.hydra_context, task_function=task, config=sweep_config,
                                job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs
