"""Reading what the claims' experiments wrote: job summaries, sweeps, the analyses' files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from toy_quanta import results
from toy_quanta.analysis.collect import job_dirs


def summary(job_dir: Path) -> dict[str, Any]:
    """A job's summary.json (a completed job's)."""
    s = json.loads((Path(job_dir) / results.SUMMARY_FILE).read_text())
    if s.get("status") != "completed":
        raise ValueError(f"{job_dir}: the job's status is {s.get('status')}, not completed")
    return s


def jobs(sweep_dir: Path) -> list[Path]:
    """A sweep's job directories, in job order."""
    return sorted(job_dirs(Path(sweep_dir)), key=lambda p: int(p.name) if p.name.isdigit() else p.name)


def metrics(job_dir: Path) -> pd.DataFrame:
    return results.read_metrics(Path(job_dir) / results.METRICS_FILE)


def curve(frame: pd.DataFrame, metric: str, subtask: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """(steps (L,), values (L, M)) of one metric of a job's table."""
    rows = frame[(frame["metric"] == metric) & (frame["subtask"] == subtask)]
    if rows.empty:
        raise KeyError(f"metric {metric} (subtask {subtask}) was not logged")
    table = rows.pivot(index="step", columns="member", values="value").sort_index()
    return table.index.to_numpy(), table.to_numpy()


def latest(pattern_dir: Path, name: str) -> Path:
    """The newest `name` under pattern_dir's dated subfolders (toy-quanta-qdg writes qdg/DATE_TIME/)."""
    found = sorted(Path(pattern_dir).glob(f"*/{name}"))
    if not found:
        raise FileNotFoundError(f"no {name} under {pattern_dir}")
    return found[-1]


def copy_figure(source: Path) -> Callable[[Path], None]:
    """A claim's figure that is a figure its run already drew."""

    def draw(path: Path) -> None:
        if not Path(source).is_file():
            raise FileNotFoundError(f"{source}: the run drew no such figure")
        shutil.copyfile(source, path)

    return draw


def geomean_interval(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, tuple[float, float] | None]:
    """The geometric mean of positive values and its 95% percentile bootstrap interval."""
    logs = np.log(np.asarray(values, np.float64))
    if logs.size < 2:
        return float(np.exp(logs.mean())), None
    rng = np.random.default_rng(seed)
    means = logs[rng.integers(0, logs.size, (n_boot, logs.size))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(np.exp(logs.mean())), (float(np.exp(low)), float(np.exp(high)))


def fmt(value: float | None, interval: tuple[float, float] | None = None, digits: int = 3) -> str:
    """A number with its interval, as the table shows it."""
    if value is None or not np.isfinite(value):
        return "none"
    text = f"{value:.{digits}g}"
    if interval is not None and np.all(np.isfinite(interval)):
        text += f" [{interval[0]:.{digits}g}, {interval[1]:.{digits}g}]"
    return text
