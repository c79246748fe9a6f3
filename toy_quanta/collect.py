"""`toy-quanta-collect DIR`: one tidy table from every job of a multirun directory.

Writes DIR/collected.parquet (every job's metrics, with `job` and the job's swept values as
columns), reports jobs that are missing (expected from the sweep but without a directory) or
failed, and prints a one-line JSON summary last.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from toy_quanta.results import METRICS_FILE, SUMMARY_FILE, atomic_write

COLLECTED_FILE = "collected.parquet"


def expected_jobs(sweep_dir: Path) -> int | None:
    """How many jobs the sweep asked for, from multirun.yaml's overrides (None if unknown)."""
    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = yaml.safe_load(path.read_text())["hydra"]["overrides"]["task"]
    parsed = OverridesParser.create().parse_overrides(overrides)
    sizes = [len(list(o.sweep_iterator())) if o.is_sweep_override() else 1 for o in parsed]
    return int(pd.Series(sizes).prod()) if sizes else 1


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Job directories: those holding Hydra's .hydra/ folder, in job-number order where numeric."""
    dirs = [p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir() and p.parent != sweep_dir]
    return sorted(dirs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, str(p)))


def collect(sweep_dir: Path | str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(table, report). The report lists completed, failed and missing jobs."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such directory (give a multirun sweep directory)")
    frames, completed, failed = [], [], []
    for job in job_dirs(sweep_dir):
        name = str(job.relative_to(sweep_dir))
        summary_path, metrics_path = job / SUMMARY_FILE, job / METRICS_FILE
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
        if summary is None or summary.get("status") != "completed":
            reason = summary.get("error") if summary else "no summary.json (the job died or is still running)"
            failed.append({"job": name, "reason": reason})
        else:
            completed.append(name)
        if metrics_path.exists():  # a failed job's partial metrics are kept, marked by `status`
            frame = pd.read_parquet(metrics_path)
            frame.insert(0, "job", name)
            frame["status"] = "completed" if name in completed else "failed"
            frames.append(frame)
    n_expected = expected_jobs(sweep_dir)
    seen = {j["job"] for j in failed} | set(completed)
    missing = []
    if n_expected is not None:
        numeric = {int(j) for j in seen if j.isdigit()}
        if numeric or not seen:
            missing = [str(i) for i in range(n_expected) if i not in numeric]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
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
        "rows": len(table),
    }
    return table, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toy-quanta-collect", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (multirun/NAME/DATE_TIME)")
    parser.add_argument("--out", type=Path, default=None, help=f"table path (default: DIR/{COLLECTED_FILE})")
    args = parser.parse_args(argv)
    try:
        table, report = collect(args.sweep_dir)
    except FileNotFoundError as exc:
        print(f"toy-quanta-collect: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.sweep_dir / COLLECTED_FILE
    if len(table):
        atomic_write(out, lambda p: table.to_parquet(p, index=False))
        report["table"] = str(out)
    print(f"{report['jobs_completed']} completed, {report['jobs_failed']} failed, {report['jobs_missing']} missing"
          f" of {report['jobs_expected'] if report['jobs_expected'] is not None else '?'} jobs; {report['rows']} rows")
    for f in report["failed"]:
        print(f"  failed  job {f['job']}: {f['reason']}")
    for m in report["missing"]:
        print(f"  missing job {m}")
    if len(table) and "test_loss" in set(table["metric"]):
        final = table[(table["metric"] == "test_loss")]
        final = final[final["step"] == final.groupby("job")["step"].transform("max")]
        cols = ["job", "member", *[c for c in final.columns if "." in c or c == "seed"]]
        print(final[cols + ["value"]].rename(columns={"value": "final_test_loss"}).to_string(index=False))
    print(json.dumps(report, default=str))
    return 1 if report["jobs_failed"] or report["jobs_missing"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
