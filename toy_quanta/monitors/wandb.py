"""Weights & Biases runs of a job (train.wandb=true, the `wandb` extra; a monitor: toy_quanta.hooks).

One W&B run per member, named as TensorBoard names them (`m03_seed=1_optim.lr=0.001`; in a sweep
prefixed by the job's folder, `2/m03_...`), in the group of its sweep (a multirun's jobs together)
or of its job, with the job's folder as job type. Each holds every logged metric at every log step
(per-subtask ones as `subtask_test_loss/07`, up to monitors.MAX_PER_METRIC) and the job's config,
flattened, with the member's own values. A run `figures` holds the job's figures as images.

W&B writes under the job's `wandb/`; WANDB_MODE=offline keeps it there for `wandb sync` later.
A resumed job starts new runs, tagged `resumed`, holding every log step from 0 (the checkpoint
restores the earlier ones); the stopped job's runs end as failed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import wandb

from toy_quanta.monitors import member_scalars, run_names

WANDB_DIR = "wandb"  # W&B's own folder, under the directory it is given (the job's)
DEFAULT_PROJECT = "toy-quanta"  # when neither train.wandb_project nor WANDB_PROJECT names one
FIGURES_RUN = "figures"
SWEEP_FILE = "multirun.yaml"  # Hydra writes it into a sweep's folder, beside the jobs' folders
_GROUP_CHARS, _JOB_TYPE_CHARS = 128, 64  # W&B's limits


def placement(job_dir: Path) -> tuple[str, str | None]:
    """The W&B group of a job and its name there: a sweep's job (a folder beside multirun.yaml) is
    in the sweep's group under its folder's name; a lone job is a group of its own, unnamed. A
    group is named by its folder's last two parts (`grok_modadd/2026-01-02_03-04-05`)."""
    job_dir = Path(job_dir).resolve()
    if (job_dir.parent / SWEEP_FILE).is_file():
        return _label(job_dir.parent), job_dir.name[:_JOB_TYPE_CHARS]
    return _label(job_dir), None


def _label(folder: Path) -> str:
    return "/".join(folder.parts[-2:])[-_GROUP_CHARS:]


def flat_config(cfg: Any) -> dict[str, Any]:
    """The job's config (a dataclass) as dotted keys, the way the command line names them."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg), "")
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class WandbLog:
    """Logs a job's log steps as they come (`scalars`, called after each log step with the run so
    far) and its figures at the end (`figures`), then finishes the runs (`close`)."""

    def __init__(self, job_dir: Path, members: Sequence[dict[str, Any]], cfg: Any):
        self.job_dir, self.members, self.cfg = Path(job_dir), list(members), cfg
        self.group, self.job = placement(self.job_dir)
        self.names = run_names(self.members)
        self.project = cfg.train.wandb_project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.runs: list[Any] | None = None
        self.written = 0  # log steps of the run already logged
        self.config: dict[str, Any] = {}
        self.tags: list[str] = []

    def _init(self, name: str, config: dict[str, Any], quiet: bool) -> Any:
        # One process, many runs (reinit="create_new", wandb >= 0.19.10). The job's console output
        # and the machine's stats go to its first run only: every member's copy would be the same.
        settings = wandb.Settings(console="off", x_disable_stats=True) if quiet else None
        return wandb.init(project=self.project, dir=str(self.job_dir), group=self.group, job_type=self.job or "job",
                          name=f"{self.job}/{name}" if self.job else name, config=config, tags=self.tags,
                          reinit="create_new", settings=settings)

    def _open(self, resumed_from: int | None) -> None:
        self.config = {**flat_config(self.cfg), "job_dir": str(self.job_dir)}
        if resumed_from is not None:
            self.config["resumed_from"] = resumed_from
            self.tags = ["resumed"]
        self.runs = []  # filled as they start, so that close() finishes those that did
        for i, (name, member) in enumerate(zip(self.names, self.members)):
            own = {key: _plain(value) for key, value in member.items()}
            self.runs.append(self._init(name, {**self.config, **own, "member": i}, quiet=i > 0))

    def scalars(self, result: Any) -> None:
        """Every log step of `result` (engine.loop.FitResult) not logged yet; a resumed job's new
        runs get its steps from 0 (W&B takes a run's steps in increasing order only)."""
        if self.runs is None:
            self._open(result.resumed_from)
        for j in range(self.written, len(result.steps)):
            for i, run in enumerate(self.runs):
                run.log(member_scalars(result, j, i), step=int(result.steps[j]))
        self.written = len(result.steps)

    def figures(self, paths: Sequence[Path], step: int) -> None:
        """The job's figures (PNG files in its directory) as images in the run `figures`, each
        keyed by its path there without the suffix (progress/fourier)."""
        if not paths:
            return
        run = self._init(FIGURES_RUN, self.config or flat_config(self.cfg), quiet=True)
        try:
            run.log({Path(p).relative_to(self.job_dir).with_suffix("").as_posix(): wandb.Image(str(p)) for p in paths},
                    step=step)
        finally:
            run.finish()

    def close(self, failed: bool = False) -> None:
        runs, self.runs = self.runs or [], None
        for run in runs:
            run.finish(exit_code=1 if failed else 0)
