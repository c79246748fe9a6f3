"""What runs after a job has trained: analyses that register themselves, as tasks and models do.

An after-run analysis reads the finished job (`Finished`) and returns the entries it adds to
summary.json (or None); it may also annotate `summary["members"]`. The job writer runs every
registered one in order, after the metrics and the checkpoint are saved: a failure is logged and
recorded as `summary["<name>_error"]`, and never loses what the run wrote. The built-in ones
(the members' diagnosis, the task's own analyses, the phase diagram, LU, the arms' comparison)
are in toy_quanta/analysis/after_run.py; a user's module registers its own the same way:

    from toy_quanta.hooks import register_after_run
    register_after_run("my_check", lambda run: {"my_check": ...} if ... else None)
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

log = logging.getLogger("toy_quanta")

_BUILTIN = "toy_quanta.analysis.after_run"  # importing it registers the built-in analyses


@dataclass(frozen=True)
class Finished:
    """A trained job, as its after-run analyses see it."""

    cfg: Any  # the typed Config
    result: Any  # engine.loop.FitResult
    frame: Any  # the tidy metrics table (pandas), as written to metrics.parquet
    summary: dict[str, Any]  # summary.json so far (members included)
    out_dir: Path
    title: str  # the job's one-line description, for figure titles
    snapshots: Any = None  # the parameters at every log step (train.snapshots), or None


@dataclass(frozen=True)
class AfterRun:
    # its summary key (and its failure's, `<name>_error`); a function of the run where it depends
    # on it (a task's own analyses are named by the task)
    name: Union[str, Callable[[Finished], str]]
    run: Callable[[Finished], Optional[dict[str, Any]]]
    order: int = 50  # smaller first: the diagnosis (10) before the task's (20) and the grid's (30)
    lines: Optional[Callable[[dict[str, Any]], list[str]]] = None  # what the job's log shows of it

    def name_for(self, run: Finished) -> str:
        return self.name if isinstance(self.name, str) else self.name(run)


_AFTER_RUN: dict[str, AfterRun] = {}


def register_after_run(key: str, run: Callable[[Finished], Optional[dict[str, Any]]], order: int = 50,
                       name: Union[str, Callable[[Finished], str], None] = None,
                       lines: Optional[Callable[[dict[str, Any]], list[str]]] = None) -> AfterRun:
    """Register (or replace) the after-run analysis `key`; its summary key is `name` (default: key)."""
    _AFTER_RUN[key] = AfterRun(name or key, run, order, lines)
    return _AFTER_RUN[key]


def after_runs() -> list[AfterRun]:
    """Every registered after-run analysis, in order (the built-in ones loaded on first use)."""
    importlib.import_module(_BUILTIN)
    return sorted(_AFTER_RUN.values(), key=lambda a: a.order)


def run_after_runs(run: Finished) -> None:
    """Run each analysis on the finished job, adding what it returns to run.summary. A failure is
    logged and recorded under the analysis's own name; the others still run."""
    for analysis in after_runs():
        name = None
        try:
            name = analysis.name_for(run)
            found = analysis.run(run)
            if found:
                run.summary.update(found)
        except Exception as exc:  # noqa: BLE001  the run is finished and saved: an analysis never fails it
            name = name or "after_run"
            log.warning("%s analysis failed (%s: %s)", name, type(exc).__name__, exc)
            run.summary[f"{name}_error"] = f"{type(exc).__name__}: {exc}"


def report_lines(summary: dict[str, Any]) -> list[str]:
    """The lines the registered analyses show in the job's log, for what they found."""
    return [line for analysis in after_runs() if analysis.lines is not None for line in analysis.lines(summary)]
