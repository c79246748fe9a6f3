"""Running the ledger: the experiments the selected claims need, each the command a user would type
(`toy-quanta [-m] OVERRIDES`, then any follow-up command such as `toy-quanta-qdg DIR`), into
DIR/runs/<experiment>-<hash>; then every claim measured from them and judged.

An experiment that completed earlier (its directory holds the `.claims_done` mark) is not run
again; one that was interrupted is started again with the same command, which resumes each job
from its checkpoint (and skips the jobs already completed).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toy_quanta.claims.ledger import Claim, Experiment, Measured, Verdict, experiments

log = logging.getLogger("toy_quanta.claims")
DONE = ".claims_done"  # in an experiment's directory: it completed, with its command and wall time
LOG_FILE = "claims_run.log"  # in an experiment's directory: what its commands printed


@dataclass
class Outcome:
    """One claim, measured and judged (or the error that stopped it)."""

    claim: Claim
    measured: Measured | None = None
    verdict: Verdict | None = None
    error: str | None = None
    wall_s: float = 0.0  # the wall time of its experiments in this run (0 for reused ones)
    runs: dict[str, str] = field(default_factory=dict)  # experiment id -> its directory, relative to the root


class ExperimentFailed(RuntimeError):
    pass


def run_dir(root: Path, e: Experiment) -> Path:
    return Path(root) / "runs" / e.key


def completed(root: Path, e: Experiment) -> dict[str, Any] | None:
    """The record of an experiment that completed earlier, or None."""
    try:
        return json.loads((run_dir(root, e) / DONE).read_text())
    except (OSError, ValueError):
        return None


def commands(e: Experiment, out: Path) -> list[list[str]]:
    """The experiment's command lines (the app through this interpreter, as `toy-quanta` runs it)."""
    where = f"hydra.sweep.dir={out}" if e.sweep else f"hydra.run.dir={out}"
    first = [sys.executable, "-m", "toy_quanta.cli.app", *(["-m"] if e.sweep else []), *e.overrides, where,
             "train.progress=false"]
    return [first, *(_module_command(shlex.split(then.format(dir=out))) for then in e.then)]


def _module_command(argv: list[str]) -> list[str]:
    """`toy-quanta-qdg ARGS` as `python -m toy_quanta.cli.qdg ARGS` (this interpreter, this package)."""
    script, *args = argv
    if not script.startswith("toy-quanta-"):
        raise ValueError(f"a follow-up command is a toy-quanta-* command, not {script!r}")
    return [sys.executable, "-m", "toy_quanta.cli." + script.removeprefix("toy-quanta-"), *args]


def run_experiment(root: Path, e: Experiment) -> float:
    """Run `e` unless it completed earlier; returns its wall seconds (0 if reused)."""
    if completed(root, e) is not None:
        log.info("%s: completed earlier (%s)", e.id, run_dir(root, e))
        return 0.0
    out = run_dir(root, e)
    out.mkdir(parents=True, exist_ok=True)
    start, started = time.monotonic(), time.time()
    log.info("%s: %s", e.id, e.command)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(out / LOG_FILE, "a") as sink:
        for argv in commands(e, out):
            sink.write(f"\n$ {shlex.join(argv)}\n")
            sink.flush()
            proc = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=out.parent)
            if proc.returncode != 0:
                tail = (out / LOG_FILE).read_text().strip().splitlines()[-3:]
                raise ExperimentFailed(f"{e.id}: `{shlex.join(argv[1:])}` exited with status {proc.returncode} "
                                       f"({out / LOG_FILE}): " + " | ".join(tail))
    wall = time.monotonic() - start
    record = {"command": e.command, "then": list(e.then), "wall_s": wall, "started": started, "finished": time.time()}
    (out / DONE).write_text(json.dumps(record, indent=2) + "\n")
    log.info("%s: done in %.0f s", e.id, wall)
    return wall


def span(root: Path, selected: list[Claim]) -> dict[str, float] | None:
    """When the selected claims' experiments ran (from their marks, however many invocations it
    took): the wall time from the first start to the last end, and the sum of their own times."""
    records = [r for e in experiments(selected) if (r := completed(root, e)) is not None and "started" in r]
    if not records:
        return None
    return {"wall_s": max(r["finished"] for r in records) - min(r["started"] for r in records),
            "sum_s": sum(r["wall_s"] for r in records), "experiments": len(records)}


def run_all(root: Path, selected: list[Claim], jobs: int = 1,
            on_done: Callable[[Experiment, float | Exception], None] | None = None) -> dict[str, float | Exception]:
    """Run every experiment the claims need (`jobs` at a time): id -> wall seconds, or the error."""
    todo = experiments(selected)
    done: dict[str, float | Exception] = {}

    def one(e: Experiment) -> None:
        try:
            done[e.id] = run_experiment(root, e)
        except Exception as exc:  # noqa: BLE001  (the other experiments and claims go on)
            log.error("%s", exc)
            done[e.id] = exc
        if on_done is not None:
            on_done(e, done[e.id])

    # The longest first when several run at once, so the last one to finish is short.
    order = sorted(todo, key=lambda e: -e.cost_s) if jobs > 1 else todo
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, order))
    return done


def judge_all(root: Path, selected: list[Claim], ran: dict[str, float | Exception]) -> list[Outcome]:
    """Measure and judge every claim from its experiments' directories."""
    outcomes = []
    for c in selected:
        out = Outcome(c, runs={e.id: f"runs/{e.key}" for e in c.experiments})  # relative to root
        failed = [f"{e.id}: {ran[e.id]}" for e in c.experiments if isinstance(ran.get(e.id), Exception)]
        out.wall_s = sum(v for e in c.experiments if isinstance(v := ran.get(e.id, 0.0), float))
        if failed:
            out.error = "; ".join(failed)
        else:
            try:
                out.measured = c.measure({e.id: run_dir(root, e) for e in c.experiments})
                out.verdict = c.judge(out.measured)
            except Exception as exc:  # noqa: BLE001  (recorded in the table; the command exits non-zero)
                out.error = f"{type(exc).__name__}: {exc}"
                log.error("%s: %s\n%s", c.id, out.error, traceback.format_exc())
        outcomes.append(out)
    return outcomes
