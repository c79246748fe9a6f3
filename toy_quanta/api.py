"""The package from Python (notebooks, scripts): compose a job as `toy-quanta OVERRIDES` composes
it, run it into a directory, and read what it wrote.

    from toy_quanta import api
    run = api.run("experiment=grok_modadd", "train.steps=3000", out_dir="runs/grok")
    run.curve("test_acc")          # steps x members
    run.show("curves.png")         # the job's figure, inline in a notebook
    runs = api.sweep("experiment=quanta_params", "model.width=8,16,32", out_dir="runs/widths")

Running the same call again with the same `out_dir` returns the finished run without training
(a job directory that holds a completed run of the same config is reused, as on the command line).
`sweep` lays its jobs out as `toy-quanta -m` does (out_dir/0, out_dir/1, ...), so the analyses
of sweeps (`toy_quanta.analysis.sweep.load_sweeps`, `collect`, `toy-quanta-analyze`) read it.
"""

from __future__ import annotations

import difflib
import itertools
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

with warnings.catch_warnings():  # tqdm.auto in a kernel without ipywidgets says so; its text bar works
    warnings.filterwarnings("ignore", message="IProgress not found")
    from toy_quanta import config, registry, results
    from toy_quanta.analysis.collect import collect
    from toy_quanta.errors import ConfigError
    from toy_quanta.job import flatten, run_job, to_config


def compose(*overrides: str) -> DictConfig:
    """The config `toy-quanta OVERRIDES` would run (experiment files, groups and keys alike).
    A `tasks_module=...` override imports that module first, as the command line does."""
    return _compose("config", overrides)


def _compose(config_name: str, overrides: tuple[str, ...] | list[str], hydra_node: bool = False) -> DictConfig:
    for override in overrides:
        if override.lstrip("+").startswith("tasks_module="):
            registry.import_tasks_module(override.partition("=")[2].strip("'\""))
    registry.load_builtins()
    config.register_configs()
    if GlobalHydra.instance().is_initialized():  # another caller's Hydra (a test's, a notebook's)
        GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="toy_quanta.conf", version_base=None):
            return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=hydra_node)
    except HydraException as exc:  # an unknown key, a value of the wrong type, a bad override
        raise _config_error(exc, config_name, list(overrides)) from None


def _config_error(exc: HydraException, config_name: str, overrides: list[str]) -> ConfigError:
    """Hydra's composition error as a ConfigError naming the override's key (as the job's own
    checks do), with a near key for a misspelt one."""
    text = f"{exc} {exc.__cause__ or ''}"
    for i, line in enumerate(overrides):
        key, _, value = line.lstrip("+~").partition("=")
        value = _parsed(value)
        if f"'{key}'" not in text and f"{key}=" not in text and f"full_key: {key}" not in text:
            continue
        if "Could not override" in text:  # no such key: suggest the nearest one there is
            others = [o for j, o in enumerate(overrides) if j != i]
            known = list(flatten(OmegaConf.to_container(_compose(config_name, others), resolve=False)))
            near = difflib.get_close_matches(key, known, n=1)
            return ConfigError(key, value, "no such key in the config" + (f" (did you mean {near[0]}?)" if near else
                                                                          f"; to add one, write +{line}"))
        detail = str(exc.__cause__ or exc).strip().splitlines()[0]
        return ConfigError(key, value, detail)
    return ConfigError("overrides", " ".join(overrides), str(exc).strip().splitlines()[0])


@dataclass
class Run:
    """A job's directory and what it wrote."""

    dir: Path
    summary: dict[str, Any]

    @property
    def metrics(self) -> pd.DataFrame:
        """The tidy metrics table (one row per member, log step, metric and subtask)."""
        return results.read_metrics(self.dir / results.METRICS_FILE)

    @property
    def members(self) -> pd.DataFrame:
        """One row per member: its per-member settings and its final numbers."""
        rows = []
        for member in self.summary["members"]:
            row = {k: v for k, v in member.items() if k != "final"}
            row.update(member["final"])
            rows.append(row)
        return pd.DataFrame(rows).set_index("member")

    def curve(self, metric: str, subtask: int = -1) -> pd.DataFrame:
        """One metric over training: a steps x members table (a per-subtask metric: one subtask)."""
        frame = self.metrics
        rows = frame[(frame["metric"] == metric) & (frame["subtask"] == subtask)]
        if rows.empty:
            logged = sorted(set(frame["metric"]))
            raise KeyError(f"metric {metric!r} (subtask {subtask}) was not logged; logged: {', '.join(logged)}")
        return rows.pivot(index="step", columns="member", values="value")

    def subtasks(self, metric: str, member: int = 0) -> pd.DataFrame:
        """A per-subtask metric of one member: a steps x subtasks table."""
        frame = self.metrics
        rows = frame[(frame["metric"] == metric) & (frame["member"] == member) & (frame["subtask"] >= 0)]
        if rows.empty:
            raise KeyError(f"metric {metric!r} has no per-subtask values in {self.dir}")
        return rows.pivot(index="step", columns="subtask", values="value")

    @property
    def figures(self) -> list[str]:
        """The figures the job wrote (paths inside its directory, e.g. progress/progress.png)."""
        return sorted(p.relative_to(self.dir).as_posix() for p in self.dir.rglob("*.png"))

    def show(self, name: str) -> Any:
        """A figure of the job, for display in a notebook (IPython's Image)."""
        from IPython.display import Image  # a notebook's dependency, not the package's

        path = self.dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the job wrote {', '.join(self.figures) or 'no figures'}")
        return Image(filename=str(path))


def run(*overrides: str, out_dir: str | Path | None = None) -> Run:
    """Run the job `toy-quanta OVERRIDES` would run, into `out_dir` (default: a new
    runs/NAME_TIME), and return it. Bad settings raise ConfigError before anything trains."""
    _log_to_stderr()
    cfg = compose(*overrides)
    if out_dir is None:
        out_dir = Path("runs") / f"{cfg.name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = run_job(cfg, out_dir, list(overrides))
    return Run(out_dir, summary)


@dataclass
class Multirun:
    """A sweep's directory (laid out as `toy-quanta -m` lays it out) and its jobs, in job order."""

    dir: Path
    jobs: list[Run]
    overrides: list[list[str]]  # each job's overrides (the sweep's values in place of its lists)

    @property
    def metrics(self) -> pd.DataFrame:
        """Every job's metrics in one table, with a `job` column (toy-quanta-collect's table)."""
        return collect(self.dir)[0]


def sweep_jobs(*overrides: str) -> tuple[list[list[str]], dict[str, str], DictConfig]:
    """The jobs `toy-quanta -m OVERRIDES` would run (each its list of overrides, the sweep's values in
    place of its lists; the product over every swept key, an experiment's own hydra.sweeper.params
    included), the sweeper's params, and the composed base config."""
    parser = OverridesParser.create()
    given = parser.parse_overrides(list(overrides))
    fixed = [o.input_line for o in given if not o.is_sweep_override()]
    base = _compose("config", fixed, hydra_node=True)
    params = {str(k): str(v) for k, v in (OmegaConf.select(base, "hydra.sweeper.params") or {}).items()}
    lists: dict[str, list[str]] = {}
    for override in parser.parse_overrides([f"{k}={v}" for k, v in params.items()]) + given:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ValueError(f"{override.input_line}: only lists of values (a,b,c or range(...)) are swept here")
            lists[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            lists[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(combo) for combo in itertools.product(*lists.values())], params, base


def sweep(*overrides: str, out_dir: str | Path | None = None) -> Multirun:
    """Run the jobs `toy-quanta -m OVERRIDES` would run (`model.width=8,16,32`: one job per value,
    the product over every swept key, with an experiment's own hydra.sweeper.params), one after
    another, into out_dir/0, out_dir/1, ... (default: a new multirun/NAME_TIME). Each job is `run`'s:
    a finished one is reused. The directory reads as a sweep (analysis.sweep.load_sweeps, collect)."""
    jobs, params, base = sweep_jobs(*overrides)
    if out_dir is None:
        name = OmegaConf.select(base, "name") or "run"
        out_dir = Path("multirun") / f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    out_dir = Path(out_dir)
    for job in jobs:  # every job composes and validates before any trains (as run: bad keys first)
        config.validate(to_config(compose(*job)))
    out_dir.mkdir(parents=True, exist_ok=True)
    multirun = {"hydra": {"overrides": {"task": list(overrides)}, "sweeper": {"params": params}}}
    results.atomic_write(out_dir / "multirun.yaml", lambda p: p.write_text(yaml.safe_dump(multirun)))
    runs = []
    for i, job in enumerate(jobs):
        job_dir = out_dir / str(i)
        hydra_dir = job_dir / ".hydra"  # what marks a job directory of a sweep (analysis.collect.job_dirs)
        hydra_dir.mkdir(parents=True, exist_ok=True)
        results.atomic_write(hydra_dir / "overrides.yaml", lambda p, job=job: p.write_text(yaml.safe_dump(job)))
        runs.append(run(*job, out_dir=job_dir))
    return Multirun(out_dir, runs, jobs)


def load(job_dir: str | Path) -> Run:
    """A finished job's directory (from the command line or from `run`)."""
    job_dir = Path(job_dir)
    summary = results.read(job_dir / results.SUMMARY_FILE, lambda p: json.loads(p.read_text()), "summary.json")
    return Run(job_dir, summary)


def _parsed(value: str) -> Any:
    """An override's value as the command line means it (3, not '3'), or the text if not YAML."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _log_to_stderr() -> None:
    """The job's report lines (what the command line prints), once per session."""
    logger = logging.getLogger("toy_quanta")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

