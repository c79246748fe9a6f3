"""`toy-quanta-report [DIR ...]`: the headline figures of every experiment that has run.

    toy-quanta experiment=omnigrok_mnist; toy-quanta experiment=lu_mnist; toy-quanta experiment=phase_toy
    toy-quanta-report                       # searches outputs/ and multirun/
    toy-quanta-report outputs/phase_toy     # or the directories given

Finds every job directory (config.yaml and summary.json) below the directories, keeps the latest
completed job of each experiment name (`name` in its config), prints what it found and ends with
one line of JSON: {"experiments": {name: headline figures}, "n_jobs", "n_failed", "failed"}.
Headline figures per task: steps to the accuracy milestones per member (grokking: 99% training and
validation and the gap; Omnigrok's MNIST: 100% training, 60% and 80% test), final losses and
accuracies, the toy's RQI and effective loss, a phase diagram's counts, the LU curves' critical
norm with its grid interval, the progress measures' key frequencies.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from toy_quanta import registry, results
from toy_quanta.engine.members import vector_keys
from toy_quanta.errors import ConfigError
from toy_quanta.results import SUMMARY_FILE, json_safe

DEFAULT_ROOTS = ("outputs", "multirun")
MAX_MEMBERS = 8  # larger ensembles are summarised by medians, not listed


def find_jobs(roots: list[Path]) -> list[Path]:
    """Job directories below `roots`: those with both config.yaml and summary.json."""
    jobs = set()
    for root in roots:
        for summary in root.rglob(SUMMARY_FILE):
            if (summary.parent / "config.yaml").is_file():
                jobs.add(summary.parent)
    return sorted(jobs)


CORE = ("train_loss", "train_acc", "test_loss", "test_acc")  # every task logs these


def fields(task: str) -> tuple[str, ...]:
    """The final-dict fields reported for a task (its Task.headline, besides the member's varying
    hyperparameters); the metrics every task logs, for a task this version does not know."""
    try:
        return tuple(registry.task(task).headline)
    except ConfigError:
        return CORE


def _members(summary: dict[str, Any], task: str) -> dict[str, Any]:
    members = summary.get("members") or []
    shown = fields(task)
    keys = dict.fromkeys(k for k in vector_keys() if any(k in m for m in members))
    varying = [k for k in keys if len({json.dumps(m.get(k)) for m in members}) > 1]
    if len(members) <= MAX_MEMBERS:
        rows = [{**{k: m.get(k) for k in varying}, **{f: m["final"].get(f) for f in shown},
                 "diverged": m.get("diverged", False)} for m in members]
        return {"members": rows}
    medians = {}
    for f in shown:
        values = [m["final"].get(f) for m in members]
        finite = [float(v) for v in values if isinstance(v, (int, float)) and np.isfinite(v)]
        medians[f] = float(np.median(finite)) if finite else None
        medians[f"{f}_reached"] = len(finite)
    return {"n_members": len(members), "varying": varying, "median": medians}


def headline(cfg: Any, summary: dict[str, Any], job: Path | None = None) -> dict[str, Any]:
    """One job's headline figures."""
    task = str((cfg.get("task") or {}).get("name"))
    head: dict[str, Any] = {"task": task, "steps": summary.get("steps"), "wall_time_s": summary.get("wall_time_s"),
                            "output_dir": summary.get("output_dir")}
    group = summary.get("group") or {}
    if group.get("group_wall_time_s") is not None:  # vmap-launched: trained with its group, in one program
        head["group_wall_time_s"] = group["group_wall_time_s"]
        head["group_jobs"] = len(group.get("group_jobs") or [])
    if cfg.get("tasks_module"):  # a task of the user's own: its module says what to show
        why = results.import_job_tasks_module(job or Path(str(summary.get("output_dir", "."))), str(cfg.tasks_module))
        if why is not None:  # moved or renamed since: the metrics every task logs are shown instead
            head["note"] = (f"tasks_module={cfg.tasks_module!s} cannot be imported ({why}): "
                            f"showing {', '.join(CORE)} only")
    if "phase" in summary:
        ph = summary["phase"]
        head["phase"] = {k: ph.get(k) for k in ("x", "y", "threshold", "gap_steps", "n_members", "counts")}
    if "lu" in summary:
        lu = summary["lu"]
        head["lu"] = {k: lu.get(k) for k in ("w", "w_c", "w_lo", "w_hi", "at_edge", "test_loss_min", "l_knee")}
    if "progress" in summary:
        pr = summary["progress"]
        head["progress"] = {k: pr.get(k) for k in ("key_frequencies", "key_share", "gini", "restricted_loss",
                                                    "excluded_loss")}
    if "phase" not in summary and "lu" not in summary:
        head.update(_members(summary, task))
    else:
        head["n_members"] = len(summary.get("members") or [])
    return head


def report(roots: list[Path]) -> dict[str, Any]:
    """Headlines of the latest completed job of each experiment name, and the failed jobs."""
    latest: dict[str, tuple[float, Path, dict]] = {}
    failed, n_jobs = [], 0
    for job in find_jobs(roots):
        n_jobs += 1
        try:
            summary = json.loads((job / SUMMARY_FILE).read_text())
            cfg = OmegaConf.load(job / "config.yaml")
        except (OSError, ValueError) as exc:
            failed.append({"job": str(job), "reason": f"unreadable: {exc}"})
            continue
        if summary.get("status") != "completed":
            failed.append({"job": str(job), "reason": summary.get("error", "not completed")})
            continue
        name = str(cfg.get("name", job.name))
        stamp = (job / SUMMARY_FILE).stat().st_mtime
        if name not in latest or stamp > latest[name][0]:
            latest[name] = (stamp, job, headline(cfg, summary, job))
    return {"experiments": {name: latest[name][2] for name in sorted(latest)}, "n_jobs": n_jobs,
            "n_failed": len(failed), "failed": failed}


def _fmt(v: Any) -> str:
    if v is None:
        return "never"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _print(rep: dict[str, Any]) -> None:
    for name, head in rep["experiments"].items():
        took = (f"{head['group_wall_time_s']:.0f} s with its group of {head['group_jobs']} jobs"
                if "group_wall_time_s" in head else f"{head['wall_time_s'] or 0:.0f} s")
        print(f"{name} ({head['task']}, {head['steps']} steps, {took}): {head['output_dir']}")
        if "note" in head:
            print(f"  note: {head['note']}")
        if "phase" in head:
            ph = head["phase"]
            counts = ", ".join(f"{k} {v}" for k, v in (ph["counts"] or {}).items())
            print(f"  phases over {ph['x']} x {ph['y']}: {counts}")
        if "lu" in head:
            lu = head["lu"]
            print(f"  LU: w_c = {_fmt(lu['w_c'])} (grid interval [{_fmt(lu['w_lo'])}, {_fmt(lu['w_hi'])}]"
                  f"{', at the edge of the grid' if lu['at_edge'] else ''}), min test loss {_fmt(lu['test_loss_min'])}, "
                  f"knee of the L at {_fmt(lu['l_knee'])}")
        if head.get("progress"):
            pr = head["progress"]
            print(f"  key frequencies {pr['key_frequencies']}, Gini {_fmt(pr['gini'])}")
        for row in head.get("members", []):
            print("  " + ", ".join(f"{k.split('.')[-1]} {_fmt(v)}" for k, v in row.items()))
        if "median" in head:
            print(f"  {head['n_members']} members; medians: "
                  + ", ".join(f"{k} {_fmt(v)}" for k, v in head["median"].items() if not k.endswith("_reached")))
    for job in rep["failed"]:
        print(f"failed: {job['job']}: {str(job['reason']).splitlines()[0] if job['reason'] else ''}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="toy-quanta-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", type=Path,
                        help=f"directories to search for jobs (default: {' and '.join(DEFAULT_ROOTS)})")
    args = parser.parse_args(argv)
    roots = args.dirs or [Path(d) for d in DEFAULT_ROOTS if Path(d).is_dir()]
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing or not roots:
        what = f"{', '.join(missing)}: no such directory" if missing else \
            f"no {' or '.join(DEFAULT_ROOTS)} directory here: give the directories that hold toy-quanta jobs"
        print(f"toy-quanta-report: error: {what}", file=sys.stderr)
        sys.exit(2)
    rep = report(roots)
    if not rep["experiments"] and not rep["failed"]:
        print(f"toy-quanta-report: error: no toy-quanta job (config.yaml and summary.json) below "
              f"{', '.join(map(str, roots))}", file=sys.stderr)
        sys.exit(2)
    _print(rep)
    print(json.dumps(json_safe(rep)))


if __name__ == "__main__":
    main()
