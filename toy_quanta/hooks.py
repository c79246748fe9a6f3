"""What a job runs besides training, registered as tasks and models are: after-run analyses and monitors.

An after-run analysis reads the finished job (`Finished`) and returns the entries it adds to
summary.json (or None); it may also annotate `summary["members"]`. The job writer runs every
registered one in order, after the metrics and the checkpoint are saved: a failure is logged and
recorded as `summary["<name>_error"]`, and never loses what the run wrote. The built-in ones
(the members' diagnosis, the task's own analyses, the phase diagram, LU, the arms' comparison)
are in toy_quanta/analysis/after_run.py; a user's module registers its own the same way:

    from toy_quanta.hooks import register_after_run
    register_after_run("my_check", lambda run: {"my_check": ...} if ... else None)

Monitors (TensorBoard, Weights & Biases) register themselves the same way (`register_monitor`):
the job writer starts those the config turns on at the first log step, hands them every log step
and the figures, and closes them; a failure stops that monitor only (`Monitoring`). The built-in
ones are registered in toy_quanta/monitors/builtin.py.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

log = logging.getLogger("toy_quanta")

_BUILTIN = "toy_quanta.analysis.after_run"  # importing it registers the built-in analyses
# importing it registers TensorBoard and W&B (their own packages load only when a run starts one)
_BUILTIN_MONITORS = "toy_quanta.monitors.builtin"


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


# --- monitors: live views of the training ---------------------------------------------------------

@dataclass(frozen=True)
class Monitor:
    """A live view of a job's training. `start(out_dir, members, cfg)` returns the object the job
    writer then calls: `scalars(result)` after every log step, with the run so far
    (engine.loop.FitResult; it writes the log steps it has not written yet, and a resumed run's
    `resumed_from` says where the restored run picks up), `figures(paths, step)` once at the end,
    and `close(failed=False)` (failed: the job failed or was interrupted)."""

    name: str  # its failure's summary key: `<name>_error`
    enabled: Callable[[Any], bool]  # does this config (typed, or its dict; not yet validated) turn it on
    start: Callable[[Path, Sequence[dict[str, Any]], Any], Any]
    keys: tuple[str, ...] = ()  # the config keys it reads: settings, never swept values (job.SETTINGS)
    check: Optional[Callable[[Any], None]] = None  # raises ConfigError before training (a missing package)
    folder: Optional[str] = None  # the job's subfolder it writes: none of the job's figures are there


_MONITORS: dict[str, Monitor] = {}


def register_monitor(name: str, enabled: Callable[[Any], bool],
                     start: Callable[[Path, Sequence[dict[str, Any]], Any], Any], *, keys: tuple[str, ...] = (),
                     check: Optional[Callable[[Any], None]] = None, folder: Optional[str] = None) -> Monitor:
    """Register (or replace) the monitor `name`."""
    _MONITORS[name] = Monitor(name, enabled, start, tuple(keys), check, folder)
    return _MONITORS[name]


def monitors() -> list[Monitor]:
    """Every registered monitor, in the order registered (the built-in ones loaded on first use)."""
    importlib.import_module(_BUILTIN_MONITORS)
    return list(_MONITORS.values())


def monitor_keys() -> tuple[str, ...]:
    """The config keys the monitors read: settings a run may change when it resumes."""
    return tuple(key for monitor in monitors() for key in monitor.keys)


def check_monitors(cfg: Any) -> None:
    """Raise ConfigError if a monitor the config turns on cannot run (config.validate calls it, so
    that a job refuses before it trains)."""
    for monitor in monitors():
        if monitor.check is not None and monitor.enabled(cfg):
            monitor.check(cfg)


def job_figures(job_dir: Path) -> list[Path]:
    """Every PNG a job wrote (its subfolders too: progress/, analysis/), in path order; none of
    what the monitors wrote (W&B keeps copies of the images it logged)."""
    job_dir = Path(job_dir)
    theirs = {monitor.folder for monitor in monitors() if monitor.folder}
    return sorted(p for p in job_dir.rglob("*.png") if p.relative_to(job_dir).parts[0] not in theirs)


class Monitoring:
    """The monitors a job's config turns on, started at its first log step (when its members are
    known). One that fails is logged once, closed and left out from then on, and its error kept in
    `errors` under `<name>_error`; the run and the other monitors go on."""

    def __init__(self, out_dir: Path, cfg: Any):
        self.out_dir, self.cfg = Path(out_dir), cfg
        self.waiting = [monitor for monitor in monitors() if monitor.enabled(cfg)]
        self.running: list[tuple[Monitor, Any]] = []
        self.errors: dict[str, str] = {}

    def scalars(self, result: Any) -> None:
        """The log steps of `result` (engine.loop.FitResult) each monitor has not written yet."""
        for monitor in self.waiting:
            try:
                self.running.append((monitor, monitor.start(self.out_dir, result.members, self.cfg)))
            except Exception as exc:  # noqa: BLE001  monitoring never fails a run
                self._failed(monitor, None, exc)
        self.waiting = []
        self._each(lambda view: view.scalars(result))

    def finish(self, result: Any) -> dict[str, str]:
        """Every log step (all of them when another process trained the job: the vmap launcher),
        the job's figures, then close. Returns the failures, as summary.json entries."""
        self.scalars(result)
        if self.running:
            paths = job_figures(self.out_dir)
            self._each(lambda view: view.figures(paths, result.steps_done))
        self.close()
        return self.errors

    def close(self, failed: bool = False) -> None:
        self._each(lambda view: view.close(failed=True) if failed else view.close())
        self.running = []

    def _each(self, call: Callable[[Any], Any]) -> None:
        for monitor, view in list(self.running):
            try:
                call(view)
            except Exception as exc:  # noqa: BLE001  (a full disk, a W&B error: the run goes on)
                self._failed(monitor, view, exc)

    def _failed(self, monitor: Monitor, view: Any, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        self.errors[f"{monitor.name}_error"] = error
        log.warning("monitor %s stopped (%s); the run goes on without it", monitor.name, error)
        self.running = [(m, v) for m, v in self.running if m is not monitor]
        if view is not None:
            try:
                view.close(failed=True)
            except Exception:  # noqa: BLE001  already failed and recorded: closing is a courtesy
                pass
