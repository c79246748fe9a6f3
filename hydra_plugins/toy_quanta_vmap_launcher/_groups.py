"""The vmap launcher's groups, shared by `hydra/launcher=vmap` (vmap_launcher.py) and the
vmap-submitit launchers (_vmap_submitit.py): `plan` groups a sweep on the submitting side;
`run_group`, in whatever process trains, trains one group with one `fit` and runs each of its jobs
through Hydra's `run_job`; `run_one` runs a job that belongs to no group (its config is invalid:
it fails on its own).

Jobs whose configs differ only in per-member scalars (toy_quanta.engine.members.vector_keys():
seed, model.init_scale, optim.lr, optim.weight_decay, optim.fixed_norm and the keys each task
declares, such as task.alpha, task.D and task.train_fraction; and ensemble.*, name) form a group
(split further by what the task says cannot share a program, Task.group_key, and by
max_group_members).

A group checkpoints its training to `<hydra.sweep.dir>/.vmap_groups/<hash>/train_state.npz`
(every train.checkpoint_every_s seconds, on SIGTERM/SIGINT and at the end; the hash is of the
group's job overrides and its group key, so the same sweep run again, or a requeued cluster job,
finds it and resumes); the file is removed once every job of the group has completed. While a
process trains and writes a group it holds an OS lock on that folder (files.job_lock), so a second
sweep started on the same directory is refused the group, naming the first, and writes nothing.

The module's name starts with "_" so that Hydra's plugin scanner, which runs the modules it finds
before they are in sys.modules, skips it (its dataclasses need their module there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.toy_quanta_vmap_launcher import _compose
from toy_quanta import registry
from toy_quanta.job import SETTINGS

log = logging.getLogger(__name__)

# Keys that never split a group besides the per-member scalars: the ensemble lists, labels, and the
# settings a run may change when it resumes (toy_quanta.job.SETTINGS), which the group takes from
# its first job and which its checkpoint's name leaves out.
_LABEL_KEYS = ("name", *SETTINGS)
GROUPS_DIR = ".vmap_groups"  # under hydra.sweep.dir: one folder per group, holding its training checkpoint


def group_key(cfg: Any) -> str:
    """Everything about a job that changes array shapes or the compiled program."""
    from toy_quanta.engine.members import vector_keys

    tree = dataclasses.asdict(cfg)  # a typed Config: resolved, plain values
    tree.pop("ensemble", None)
    for key in (*vector_keys(), *_LABEL_KEYS):
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    tree["task"].update(registry.task(cfg.task.name).group_key(cfg))
    return json.dumps(tree, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Job:
    """One grid point of the sweep: its number (hydra.job.num) and its overrides."""

    idx: int
    overrides: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Group:
    """Jobs trained as one program: same group key, at most max_group_members members together."""

    number: int
    jobs: tuple[Job, ...]
    key: str  # group_key of its jobs
    members: int

    @property
    def ids(self) -> list[int]:
        return [job.idx for job in self.jobs]

    def state_path(self, sweep_dir: Any) -> Path:
        """The group's training checkpoint: the same for the same jobs of the same sweep."""
        from toy_quanta.engine.checkpoint import STATE_FILE

        def values(overrides: Sequence[str]) -> list[str]:
            return [o for o in overrides if o.lstrip("+~").partition("=")[0] not in _LABEL_KEYS]

        text = json.dumps([[values(job.overrides) for job in self.jobs], self.key], sort_keys=True)
        return Path(str(sweep_dir)) / GROUPS_DIR / hashlib.sha256(text.encode()).hexdigest()[:16] / STATE_FILE


def keep_sweeper_configs(hydra_context: HydraContext) -> None:
    """Compose each job of the sweep once, and alike jobs from one template (_compose.py): Hydra's
    basic sweeper composes every job to check it, and the launcher takes those configs."""
    _compose.install(hydra_context)


def job_config(hydra_context: HydraContext, config: DictConfig, overrides: Sequence[str], idx: int,
               job_id: Any = None) -> DictConfig:
    """The composed config of one job of the sweep (Hydra's load_sweep_config; the one the
    sweeper composed, if it did: keep_sweeper_configs)."""
    sweep_config = _compose.install(hydra_context).take(config, overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = idx if job_id is None else job_id
        sweep_config.hydra.job.num = idx
    return sweep_config


def plan(hydra_context: HydraContext, config: DictConfig, job_overrides: Sequence[Sequence[str]],
         initial_job_idx: int, max_group_members: Optional[int],
         ) -> tuple[list[Group], list[Job], dict[int, DictConfig], dict[int, Any]]:
    """The sweep's groups, the jobs in none (an invalid config: each fails on its own in run_one),
    every job's composed config and the typed Config of each valid one (by job number: made once,
    the group's training and the job's writing read it)."""
    from toy_quanta.config import validate
    from toy_quanta.engine.members import expand
    from toy_quanta.job import follow_task_model, to_config

    sweep_configs: dict[int, DictConfig] = {}
    typed: dict[int, Any] = {}
    keyed: dict[str, list[tuple[Job, int]]] = defaultdict(list)
    alone: list[Job] = []
    for i, overrides in enumerate(job_overrides):
        job = Job(initial_job_idx + i, tuple(overrides))
        sweep_config = job_config(hydra_context, config, overrides, job.idx)
        sweep_configs[job.idx] = sweep_config
        HydraConfig.instance().set_config(sweep_config)
        try:
            follow_task_model(sweep_config, list(overrides))
            cfg = to_config(sweep_config)
            validate(cfg)
            keyed[group_key(cfg)].append((job, len(expand(cfg))))
            typed[job.idx] = cfg
        except Exception:  # noqa: BLE001  run_one raises the same error inside the job, which marks it failed
            alone.append(job)
    # Split groups larger than max_group_members, keeping each job's members together.
    groups: list[Group] = []
    for key, entries in keyed.items():
        batch: list[Job] = []
        size = 0
        for job, n in entries:
            if batch and max_group_members and size + n > max_group_members:
                groups.append(Group(len(groups), tuple(batch), key, size))
                batch, size = [], 0
            batch.append(job)
            size += n
        groups.append(Group(len(groups), tuple(batch), key, size))
    return groups, alone, sweep_configs, typed


def _job_dir(sweep_config: DictConfig) -> Path:
    """Where Hydra's run_job puts this job (hydra.sweep.dir / hydra.sweep.subdir)."""
    HydraConfig.instance().set_config(sweep_config)
    return Path(str(OmegaConf.select(sweep_config, "hydra.sweep.dir"))) / str(
        OmegaConf.select(sweep_config, "hydra.sweep.subdir"))


def _completed_earlier(sweep_config: DictConfig) -> bool:
    try:
        summary = json.loads((_job_dir(sweep_config) / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return summary.get("status") == "completed"


def run_one(hydra_context: HydraContext, sweep_config: DictConfig, job: Job, task_name: str,
            trained: Any = None, group: Optional[dict] = None, typed: Any = None) -> JobReturn:
    """One job through Hydra's run_job (its directory, .hydra/, log file, callbacks) and
    toy_quanta.job.run_job: `trained` is its share of its group's training (or the exception the
    group's training raised); None trains it on its own (or fails it: an invalid config). `typed`:
    its typed Config, if plan made it (not made again)."""
    from toy_quanta.errors import Interrupted
    from toy_quanta.job import run_job as run_toy_quanta_job

    log.info(f"\t#{job.idx} : {' '.join(filter_overrides(list(job.overrides)))}")

    def task(cfg: DictConfig) -> Any:
        try:
            return run_toy_quanta_job(cfg, HydraConfig.get().runtime.output_dir, list(job.overrides),
                                      trained=trained, group=group, sweep=True, typed=typed)
        except Interrupted:  # as the app does in a multirun: summary.json says interrupted; the sweep stops
            return {"status": "interrupted"}

    task.__name__ = task_name
    return run_job(hydra_context=hydra_context, task_function=task, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def span(ids: list[int]) -> str:
    """Job numbers for the log: a run of consecutive ones as first-last (a thousand-job group is one line)."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) + f" ({len(ids)} job{'s' * (len(ids) != 1)})"


def interrupted(ret: JobReturn) -> bool:
    """The job stopped on a signal (its summary.json says interrupted; a checkpoint resumes it)."""
    value = ret._return_value
    return ret.status == JobStatus.COMPLETED and isinstance(value, dict) and value.get("status") == "interrupted"


def run_group(hydra_context: HydraContext, config: DictConfig, group: Group, task_name: str, *,
              sweep_configs: Optional[dict[int, DictConfig]] = None, typed: Optional[dict[int, Any]] = None,
              job_id: Any = None,
              should_stop: Optional[Callable[[], Optional[int]]] = None) -> list[JobReturn]:
    """Train `group` as one ensemble (one fit on its jobs' members, checkpointed to
    Group.state_path), then run each of its jobs with its share (FitResult.select): one JobReturn
    per job, in the group's order. `should_stop` (default: a SIGTERM/SIGINT, toy_quanta.stopping)
    ends the training at the next call boundary with a checkpoint; its jobs are then interrupted."""
    from toy_quanta import stopping

    with stopping.watching():  # SIGTERM/SIGINT: stop at a chunk boundary with a checkpoint
        return _run_group(hydra_context, config, group, task_name, sweep_configs, typed or {}, job_id,
                          should_stop or stopping.requested)


def _run_group(hydra_context: HydraContext, config: DictConfig, group: Group, task_name: str,
               sweep_configs: Optional[dict[int, DictConfig]], typed: dict[int, Any], job_id: Any,
               should_stop: Callable[[], Optional[int]]) -> list[JobReturn]:
    from toy_quanta.errors import RunDirBusy
    from toy_quanta.files import LOCK_FILE, job_lock

    state = group.state_path(config.hydra.sweep.dir)
    log.info(f"group {group.number}: jobs {span(group.ids)}, {group.members} members")
    try:
        with job_lock(state.parent, "hydra.sweep.dir"):  # one process trains a group: a second is refused
            returns = _train_and_write(hydra_context, config, group, task_name, sweep_configs, typed, job_id,
                                       should_stop, state)
            if all(r.status == JobStatus.COMPLETED and not interrupted(r) for r in returns):
                # every job is written: the final parameters are in each job's checkpoint.msgpack
                state.unlink(missing_ok=True)
                (state.parent / LOCK_FILE).unlink(missing_ok=True)
                for folder in (state.parent, state.parent.parent):  # and .vmap_groups/ once no group is left in it
                    try:
                        folder.rmdir()
                    except OSError:
                        break
            return returns
    except RunDirBusy as exc:  # its job directories are left to the process training it
        log.error(f"group {group.number}: {exc}")
        return [JobReturn(overrides=list(job.overrides), task_name=task_name, status=JobStatus.FAILED,
                          _return_value=exc) for job in group.jobs]


def _train_and_write(hydra_context: HydraContext, config: DictConfig, group: Group, task_name: str,
                     sweep_configs: Optional[dict[int, DictConfig]], typed: dict[int, Any], job_id: Any,
                     should_stop: Callable[[], Optional[int]], state: Path) -> list[JobReturn]:
    from toy_quanta import compilation_cache
    from toy_quanta.engine.loop import fit
    from toy_quanta.engine.members import expand
    from toy_quanta.errors import Interrupted
    from toy_quanta.job import to_config

    configs = [(sweep_configs or {}).get(job.idx) or job_config(hydra_context, config, job.overrides, job.idx, job_id)
               for job in group.jobs]
    shares: list[Any] = [None] * len(group.jobs)
    info = None
    if all(_completed_earlier(c) for c in configs):  # this sweep ran before: each job returns its summary
        log.info(f"group {group.number}: every job completed earlier")
    else:
        t0 = time.time()
        spans: list[range] = []
        try:
            members: list[dict] = []
            first = None
            for job, sweep_config in zip(group.jobs, configs):
                cfg = typed.get(job.idx)
                if cfg is None:
                    HydraConfig.instance().set_config(sweep_config)
                    cfg = to_config(sweep_config)
                first = first or cfg
                job_members = expand(cfg)
                spans.append(range(len(members), len(members) + len(job_members)))
                members += job_members
            HydraConfig.instance().set_config(configs[0])
            first = dataclasses.replace(first, name=f"group {group.number}")
            if should_stop():  # a sweep that was asked to stop starts no new group
                raise Interrupted(should_stop(), 0)
            compilation_cache.enable(first.train.compilation_cache)
            checkpoint = state if first.train.checkpoint_every_s is not None else None
            result = fit(first, members, checkpoint=checkpoint, should_stop=should_stop)
        except Interrupted as exc:  # checkpointed: the jobs say interrupted, with the metrics so far
            log.warning(f"group {group.number}: {exc}")
            shares = [Interrupted(exc.signum, exc.step, None if exc.result is None else exc.result.select(list(span)))
                      for span in spans] if spans else [exc] * len(group.jobs)
        except Exception as exc:  # noqa: BLE001  every job of the group fails with it; other groups go on
            log.error(f"group {group.number} failed: {exc}")
            shares = [exc] * len(group.jobs)
        else:
            info = {"group": group.number, "group_jobs": group.ids, "group_members": len(members),
                    "group_wall_time_s": time.time() - t0}
            shares = [result.select(list(span)) for span in spans]

    returns = []
    for job, sweep_config, share in zip(group.jobs, configs, shares):
        returns.append(run_one(hydra_context, sweep_config, job, task_name, trained=share, group=info,
                               typed=typed.get(job.idx)))
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return returns
