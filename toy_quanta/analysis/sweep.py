"""A finished sweep as two tables: one row per trained member, and that member's logged values.

Reads what `toy-quanta-collect` gathers (every job's metrics.parquet) plus each job's
config.yaml, so the analysis needs nothing but the sweep directories.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from toy_quanta.analysis.collect import collect
from toy_quanta.models.mlp import n_params

# Per-member values (engine.members.vector_keys()) come from the metric table; the rest from the job's config.
JOB_KEYS = {"n_tasks": "task.n_tasks", "n": "task.n", "k": "task.k", "width": "model.width", "depth": "model.depth",
            "steps": "train.steps", "batch_size": "train.batch_size", "lr": "optim.lr", "name": "name"}


@dataclass
class Sweep:
    runs: pd.DataFrame  # one row per member: run, sweep, job, member, seed, alpha, D, width, n_params, ...
    logs: pd.DataFrame  # run, step, metric, subtask, value (test_loss, train_loss, subtask_loss)
    reports: list[dict]  # collect's report per directory (completed, failed, missing jobs)

    def curve(self, run: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a whole-distribution metric of one run."""
        rows = self._rows(run, metric)
        return rows["step"].to_numpy(), rows["value"].to_numpy()

    def subtask_curve(self, run: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps (L,), per-subtask loss (L, T)) of one run."""
        rows = self._rows(run, "subtask_loss")
        table = rows.pivot(index="step", columns="subtask", values="value").sort_index()
        return table.index.to_numpy(), table.to_numpy()

    def _rows(self, run: str, metric: str) -> pd.DataFrame:
        rows = self._by_run.get(run)
        if rows is None:
            raise KeyError(f"no logs for run {run}")
        return rows[rows["metric"] == metric].sort_values(["step", "subtask"])

    def __post_init__(self) -> None:
        self._by_run = {run: group for run, group in self.logs.groupby("run", sort=False, observed=True)}


def _job_config(job_dir: Path) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(job_dir / "config.yaml"), resolve=True)
    out = {}
    for column, key in JOB_KEYS.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        out[column] = node
    return out


def load_sweeps(dirs: list[Path | str]) -> Sweep:
    """Every completed member of every sweep directory. Raises if no job completed."""
    runs, logs, reports = [], [], []
    for sweep_dir in map(Path, dirs):
        table, report = collect(sweep_dir)
        reports.append(report)
        if not len(table):
            continue
        table = table[table["status"] == "completed"]
        table = table[table["metric"].isin(["test_loss", "train_loss", "subtask_loss"])]
        for job, job_table in table.groupby("job", sort=False):
            conf = _job_config(sweep_dir / job)
            for member, rows in job_table.groupby("member", sort=True):
                first = rows.iloc[0]
                run = f"{sweep_dir}::{job}::{member}"
                D = first["task.D"]
                runs.append({
                    "run": run, "sweep": str(sweep_dir), "job": job, "member": int(member), "seed": int(first["seed"]),
                    "alpha": float(first["task.alpha"]), "D": None if pd.isna(D) else int(D), **conf,
                    "n_params": n_params(conf["n_tasks"], conf["n"], conf["width"], conf["depth"]),
                })
                logs.append(rows[["step", "metric", "subtask", "value"]].assign(run=run))
    if not runs:
        raise ValueError("no completed job in " + ", ".join(map(str, dirs)) + " (run the sweep first; see its summary.json files)")
    log_table = pd.concat(logs, ignore_index=True)
    log_table["metric"] = log_table["metric"].astype(str)
    return Sweep(runs=pd.DataFrame(runs), logs=log_table, reports=reports)
