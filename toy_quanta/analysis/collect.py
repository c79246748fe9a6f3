"""One tidy table from every job of a multirun directory (the logic of `toy-quanta-collect DIR`,
toy_quanta.cli.collect): every job's metrics, with `job` and the job's swept values as columns,
and a report of the jobs that are missing (expected from the sweep but without a directory) or
failed.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from toy_quanta.errors import RunFileError
from toy_quanta.files import METRICS_FILE, SUMMARY_FILE, read_metrics

COLLECTED_FILE = "collected.parquet"  # the table toy-quanta-collect writes into the sweep directory


def expected_jobs(sweep_dir: Path) -> int | None:
    """How many jobs the sweep asked for, from multirun.yaml's overrides (None if unknown)."""
    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra = yaml.safe_load(path.read_text())["hydra"]
    overrides = list(hydra["overrides"]["task"])
    # an experiment's own sweep (hydra.sweeper.params, e.g. +collapse_fix: a,b) multiplies too,
    # unless the command line overrode the same key
    given = {o.lstrip("+~").partition("=")[0] for o in overrides}
    params = (hydra.get("sweeper") or {}).get("params") or {}
    overrides += [f"{key}={value}" for key, value in params.items() if key.lstrip("+~") not in given]
    parsed = OverridesParser.create().parse_overrides(overrides)
    sizes = [len(list(o.sweep_iterator())) if o.is_sweep_override() else 1 for o in parsed]
    return int(pd.Series(sizes).prod()) if sizes else 1


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Job directories: those holding Hydra's .hydra/ folder, in job-number order where numeric."""
    dirs = [p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir() and p.parent != sweep_dir]
    return sorted(dirs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, str(p)))


def _read_job(job: Path) -> tuple[dict | None, Any]:
    """(summary or None, metrics table, None, or the RunFileError that reading it raised)."""
    summary_path, metrics_path = job / SUMMARY_FILE, job / METRICS_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if not metrics_path.exists():
        return summary, None
    try:
        return summary, read_metrics(metrics_path)
    except RunFileError as exc:
        return summary, exc


def collect(sweep_dir: Path | str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(table, report). The report lists completed, failed and missing jobs."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such directory (give a multirun sweep directory)")
    jobs = job_dirs(sweep_dir)
    # Parquet reading releases the GIL: a thousand jobs' files are read side by side
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        read = list(pool.map(_read_job, jobs))
    frames, names, statuses, completed, failed, diverged = [], [], [], [], [], []
    for job, (summary, metrics) in zip(jobs, read):
        name = str(job.relative_to(sweep_dir))
        if summary is None or summary.get("status") != "completed":
            reason = summary.get("error") if summary else "no summary.json (the job died or is still running)"
            failed.append({"job": name, "reason": reason})
        else:
            completed.append(name)
            bad = [m for m in summary.get("members", []) if m.get("diverged")]
            if bad:  # completed, but some members blew up (engine.train.DIVERGENCE_RULE)
                diverged.append({"job": name, "members": [m["member"] for m in bad],
                                 "steps": [m["diverged_step"] for m in bad]})
        if isinstance(metrics, RunFileError):  # one unreadable table does not hide the sweep's others
            if name in completed:
                completed.remove(name)
            failed.append({"job": name, "reason": str(metrics)})
        elif metrics is not None:  # a failed job's partial metrics are kept, marked by `status`
            frames.append(metrics)
            names.append(name)
            statuses.append("completed" if name in completed else "failed")
    n_expected = expected_jobs(sweep_dir)
    seen = {j["job"] for j in failed} | set(completed)
    missing = []
    if n_expected is not None:
        numeric = {int(j) for j in seen if j.isdigit()}
        if numeric or not seen:
            missing = [str(i) for i in range(n_expected) if i not in numeric]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if frames:  # job first and status last, set once for the whole table (not per job: it was most of the time)
        lengths = [len(f) for f in frames]
        table.insert(0, "job", np.repeat(np.array(names, dtype=object), lengths))
        table["status"] = np.repeat(np.array(statuses, dtype=object), lengths)
    if "metric" in table:
        table["metric"] = table["metric"].astype("category")
    report = {
        "sweep_dir": str(sweep_dir),
        "jobs_expected": n_expected,
        "jobs_completed": len(completed),
        "jobs_failed": len(failed),
        "jobs_missing": len(missing),
        "failed": failed,
        "missing": missing,
        "jobs_with_diverged_members": len(diverged),
        "diverged": diverged,
        "rows": len(table),
    }
    return table, report
