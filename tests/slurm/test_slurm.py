"""Both SLURM launchers against a real slurmctld (scripts/slurm-up.sh; .ci/run brings one up):
sweeps that complete, a preemption (`scontrol requeue`), a time limit, a job killed outright and a
job cancelled by its user. The sweeps run side by side (threads started by `scenarios`), since
most of their time is SLURM's own (a requeued job waits ~8 s to start again; time limits are
checked every 30 s); the tests then read what each saw. A run on the cluster is compared with the
same sweep run here: the same programs on the same CPU, so equal to the bit (a GPU node against a
CPU would agree only to float rounding)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import pytest

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("TOY_QUANTA_SLURM_STATE", "/var/tmp/toy_quanta_slurm"))
# The sweeps and their SLURM jobs (which inherit the submitter's environment) train at XLA's usual
# optimisation level, not the fast suite's level 0 (tests/conftest.py: 5x slower steps), each on
# one thread: many processes share this machine's cores at once.
ENV = dict(os.environ, XLA_FLAGS=" ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_backend_optimization_level")]
    + ["--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]))


def accounting() -> bool:
    """Whether the cluster keeps accounting (sacct knows its jobs)."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    return "accounting_storage/slurmdbd" in config


def restart(with_accounting: bool) -> None:
    """Bring the cluster of scripts/slurm-up.sh back up with or without accounting (same CPUs);
    skip where it is not ours to restart."""
    if accounting() == with_accounting:
        return
    if os.geteuid() != 0 or not (STATE / "pids").is_file():
        pytest.skip(f"the cluster up here is {'with' if accounting() else 'without'} accounting and not one "
                    "scripts/slurm-up.sh started as this (root) user: it is not restarted to try the other")
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, timeout=30).stdout.split()[0]
    subprocess.run([REPO / "scripts/slurm-down.sh"], check=True, capture_output=True, timeout=120)
    up = subprocess.run([REPO / "scripts/slurm-up.sh", "--cpus", cpus, *(["--accounting"] if with_accounting else [])],
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    assert accounting() == with_accounting


@dataclass
class Sweep:
    """A `toy-quanta -m` run in the background: its exit status and what it printed, once ended."""

    folder: Path
    proc: subprocess.Popen
    rc: Optional[int] = None
    out: str = ""
    err: str = ""

    def wait(self, timeout: float = 600) -> "Sweep":
        self.rc = self.proc.wait(timeout=timeout)
        self.out, self.err = (self.folder.with_suffix(f".{s}").read_text() for s in ("out", "err"))
        return self

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                self.wait()
                raise AssertionError(f"the sweep ended before {what}: {self.err[-2000:]}")
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
            time.sleep(0.2)

    def checkpoints(self, pattern: str = ".vmap_groups/*/train_state.npz") -> int:
        return len(list(self.folder.glob(pattern)))

    def array_id(self) -> str:
        """The SLURM job id of the sweep's array (submitit's folder is named after it)."""
        self.until(lambda: any(p.name[0].isdigit() for p in (self.folder / ".submitit").glob("*/")),
                   "its SLURM job was submitted")
        return next(p.name for p in (self.folder / ".submitit").iterdir() if p.name[0].isdigit()).split("_")[0]

    def job_log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.folder / ".submitit").glob("*/*_log.*")))


def start(folder: Path, *overrides: str, nice: int = 0) -> Sweep:
    """`toy-quanta -m <overrides> hydra.sweep.dir=<folder>` in the background (at a lower priority
    by `nice`: the sweeps run here to compare with yield the CPU to the cluster's jobs)."""
    lower = ["nice", "-n", str(nice)] if nice else []  # (no preexec_fn: a fork of this JAX process could deadlock)
    with open(folder.with_suffix(".out"), "w") as out, open(folder.with_suffix(".err"), "w") as err:
        proc = subprocess.Popen([*lower, sys.executable, "-m", "toy_quanta.cli.app", "-m", *overrides,
                                 f"hydra.sweep.dir={folder}"], cwd=folder.parent, stdout=out, stderr=err, env=ENV)
    return Sweep(folder, proc)


def run(folder: Path, *overrides: str) -> Sweep:
    sweep = start(folder, *overrides, nice=10).wait()
    assert sweep.rc == 0, sweep.err[-3000:]
    return sweep


def scheduler(*command: str) -> str:
    proc = subprocess.run(list(command), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(command)}: {proc.stderr}"
    return proc.stdout


def ours_alive(array_id: str) -> list[str]:
    """The array's tasks SLURM still runs or queues."""
    return [line for line in scheduler("squeue", "-h", "-r", "-o", "%i %T").splitlines()
            if re.match(rf"{array_id}(_\d+)? ", line)]


def metrics(job: Path) -> pd.DataFrame:
    frame = pd.read_parquet(job / "metrics.parquet")
    return frame.sort_values(["member", "metric", "step", "subtask"]).reset_index(drop=True)


STEPS = 5000
LONG = [f"train.steps={STEPS}", "train.checkpoint_every_s=1", "train.log_every=250", "train.progress=false"]
LIMIT = "hydra.launcher.timeout_min=10"  # a SLURM job's time limit
# A one-minute limit with USR2 due 15 s before it. slurmctld checks limits every 30 s and sends the
# signal at the first check within 30 s of that: 15 to 45 s into the job (not sooner: a signal
# before submitit's handler is up would kill the job). So the run must outlast 45 s to be
# interrupted for sure, on a CPU faster than this one (~1,500 steps/s on one thread).
TIME_LIMIT_STEPS = 70000
TIME_LIMIT = ["hydra/launcher=vmap_submitit_slurm", "seed=0", f"train.steps={TIME_LIMIT_STEPS}",
              "train.checkpoint_every_s=2", "train.log_every=1000", "train.progress=false",
              "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=15", "hydra.launcher.max_num_timeout=8"]
LOST_WITHIN_S = 40  # a lost job fails its grid points this soon (_slurm: SLURM asked every 5 s, then a 15 s grace)


# A task of the user's own (tasks_module=): the SLURM job imports its file again to read its config.
USER_TASK = """
from dataclasses import dataclass
from toy_quanta.registry import register_task
from toy_quanta.tasks.sparse_parity import SparseParity, SparseParityConfig

@dataclass
class MySlurmTaskConfig(SparseParityConfig):
    name: str = "my_slurm_task"

class MySlurmTask(SparseParity):
    name = "my_slurm_task"
    config = MySlurmTaskConfig

register_task(MySlurmTask())
"""


def _user_task(root: Path) -> list[str]:
    (root / "my_slurm_task.py").write_text(USER_TASK)
    return [f"tasks_module={root / 'my_slurm_task.py'}", "task=my_slurm_task"]


def _requeued(root: Path, launcher: str, checkpoint: str, task: str, *overrides: str) -> dict:
    """A sweep of two grid points, SLURM job `task` requeued (a preemption) once `checkpoint` is written."""
    sweep = start(root / f"requeued_{launcher}", f"hydra/launcher={launcher}", "seed=0,1", *overrides, *LONG, LIMIT)
    array = sweep.array_id()
    sweep.until(lambda: sweep.checkpoints(checkpoint) > 0, f"{checkpoint} was written")
    scheduler("scontrol", "requeue", array + task)
    sweep.wait()
    return dict(sweep=sweep, alive=ours_alive(array))


def _time_limit(root: Path) -> dict:
    """A group that outlasts its one-minute limit: USR2, checkpoint, submitit's requeue, resume."""
    return dict(sweep=start(root / "time_limit", *TIME_LIMIT).wait(timeout=900))


def _kill_outright(job: str) -> None:
    """SIGKILL a running SLURM job's Python (its step 0, task 0), as the kernel's out-of-memory
    killer would: nothing of it runs after. (`scancel --signal=KILL` is no such test here: SLURM
    then ends the step with SIGTERM first, which the job catches.)"""
    allocation = scheduler("squeue", "-h", "-j", job, "-o", "%A").split()[0]  # 12_0 -> its own job id
    for line in scheduler("scontrol", "listpids", allocation).splitlines()[1:]:
        pid, _, step, local_id, *_ = line.split()
        if (step, local_id) == ("0", "0"):
            os.kill(int(pid), signal.SIGKILL)
            return
    raise AssertionError(f"no task 0 of step 0 in SLURM job {job}")


def _lost(root: Path, name: str, seeds: str, cancel: bool) -> dict:
    """vmap_submitit_slurm, one group per grid point: group 0 killed outright (_kill_outright), group
    1 (if `cancel`) cancelled by its user (`scancel`: SIGTERM, then KILL); any other group runs to
    its end."""
    sweep = start(root / name, "hydra/launcher=vmap_submitit_slurm", seeds, "hydra.launcher.max_group_members=1",
                  *LONG, LIMIT)
    array = sweep.array_id()
    sweep.until(lambda: sweep.checkpoints() >= 1 + cancel, "the groups checkpointed")
    single = "," not in seeds
    _kill_outright(array if single else f"{array}_0")
    if cancel:
        scheduler("scancel", f"{array}_1")
    acted = time.time()
    sweep.wait()
    return dict(sweep=sweep, array=array, acted=acted, accounting=accounting())


@pytest.fixture(scope="module")
def scenarios(cluster, tmp_path_factory) -> dict[str, Future]:
    """Every scenario of the cluster's present accounting mode, side by side, and the same sweeps
    run here to compare with."""
    root = tmp_path_factory.mktemp("slurm")
    pool = ThreadPoolExecutor(max_workers=8)
    futures = {
        "time_limit": pool.submit(_time_limit, root),
        "requeued_vmap": pool.submit(_requeued, root, "vmap_submitit_slurm", ".vmap_groups/*/train_state.npz", ""),
        "requeued_basic": pool.submit(_requeued, root, "submitit_slurm", "0/train_state.npz", "_0", *_user_task(root)),
        "lost": pool.submit(_lost, root, "lost", "seed=0,1,2", True),
        "vmap_here": pool.submit(run, root / "vmap_here", "hydra/launcher=vmap", "seed=0,1", *LONG),
        "basic_here": pool.submit(run, root / "basic_here", "hydra/launcher=basic", "seed=0,1", *_user_task(root), *LONG),
    }
    yield dict(futures, root=root)
    pool.shutdown(wait=True)


def _completed(job: Path, steps: int) -> dict:
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    frame = pd.read_parquet(job / "metrics.parquet")
    keys = ["member", "metric", "step", "subtask"]
    assert not frame.duplicated(keys).any(), "a resumed run wrote some metric rows twice"
    assert frame["step"].min() == 0 and frame["step"].max() == steps
    return summary


def _resumed_from(log: str, signal_name: str) -> list[int]:
    """The steps the job's log says it was interrupted at by `signal_name`, each resumed from."""
    stopped = [int(s) for s in re.findall(rf"interrupted by {signal_name} at step (\d+)", log)]
    resumed = [int(s) for s in re.findall(r"resuming from step (\d+)", log)]
    assert stopped and resumed[-len(stopped):] == stopped, (stopped, resumed)
    return stopped


def test_a_requeued_vmap_sweep_returns_only_when_its_jobs_have_finished(scenarios):
    """Defect 1: after `scontrol requeue` (what PreemptMode=REQUEUE does) `toy-quanta -m` used to
    exit 0 two seconds later with the interrupted summaries. Now it returns once the rerun has
    resumed and completed, and the sweep equals the same sweep run here, uninterrupted."""
    seen = scenarios["requeued_vmap"].result()
    sweep: Sweep = seen["sweep"]
    assert sweep.rc == 0, sweep.err[-3000:]
    assert seen["alive"] == [], f"toy-quanta -m returned while SLURM still had its job: {seen['alive']}"
    assert [s > 0 for s in _resumed_from(sweep.job_log(), "SIGTERM")] == [True]
    here = scenarios["vmap_here"].result().folder
    for job in ("0", "1"):
        summary = _completed(sweep.folder / job, STEPS)
        assert summary["group"]["group_jobs"] == [0, 1]  # one array task trained both grid points
        pd.testing.assert_frame_equal(metrics(sweep.folder / job), metrics(here / job))


def test_a_submitit_slurm_sweep_survives_a_requeue_and_equals_the_same_sweep_run_here(scenarios):
    """Hydra's launcher, one SLURM array task per grid point (ours: its waits bounded and its
    jobs' signals handled), on a task of the user's own: task 0 requeued midway resumes, and
    `toy-quanta -m` waits for it."""
    seen = scenarios["requeued_basic"].result()
    sweep: Sweep = seen["sweep"]
    assert sweep.rc == 0, sweep.err[-3000:]
    assert seen["alive"] == []
    assert [s > 0 for s in _resumed_from(sweep.job_log(), "SIGTERM")] == [True]
    here = scenarios["basic_here"].result().folder
    for job in ("0", "1"):
        summary = _completed(sweep.folder / job, STEPS)
        assert summary["members"][0]["seed"] == int(job)
        assert "name: my_slurm_task" in (sweep.folder / job / "config.yaml").read_text()
        pd.testing.assert_frame_equal(metrics(sweep.folder / job), metrics(here / job))


def test_a_time_limit_is_survived_by_checkpoint_requeue_and_resume(scenarios):
    """USR2 before the limit: the group stops at a chunk boundary, checkpoints, is requeued by
    submitit and resumes (SLURM checks limits every 30 s, so where it stops varies: at least one
    resume from a step above 0), and completes with every metric row once."""
    sweep: Sweep = scenarios["time_limit"].result()["sweep"]
    assert sweep.rc == 0, sweep.err[-3000:]
    log = sweep.job_log()
    assert "this job is timed-out" in log  # submitit's word for a USR2 near the limit
    assert any(s > 0 for s in _resumed_from(log, "SIGUSR2"))
    _completed(sweep.folder / "0", TIME_LIMIT_STEPS)


def _failed_at(out: str, array: str, task: str) -> tuple[float, str]:
    """When the sweep's log said SLURM job `array`+`task` failed, and the line."""
    line = next(line for line in out.splitlines() if f"failed: SLURM job {array}{task} (" in line)
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp(), line


def _assert_lost(seen: dict, cancelled: bool) -> None:
    sweep: Sweep = seen["sweep"]
    array, task = seen["array"], "_0" if cancelled else ""
    assert sweep.rc == 1, (sweep.rc, sweep.err[-3000:])
    last = sweep.err.strip().splitlines()[-1]
    assert re.fullmatch(rf"toy-quanta: error: SLURM job {array}{task} \(group 0, jobs 0 \(1 job\)\) ended FAILED "
                        r"without writing a result; its log: \S+_log\.err", last), last
    assert "Traceback" not in sweep.err
    when, _ = _failed_at(sweep.out, array, task)
    assert when - seen["acted"] < LOST_WITHIN_S, f"its grid points failed {when - seen['acted']:.0f} s after the kill"
    if cancelled:  # its user's scancel: reported as cancelled; it checkpointed, and says interrupted
        _, line = _failed_at(sweep.out, array, "_1")
        assert "(group 1, jobs 1 (1 job)) ended CANCELLED without writing a result" in line, line
        assert json.loads((sweep.folder / "1/summary.json").read_text())["status"] == "interrupted"
        _completed(sweep.folder / "2", STEPS)  # the other job's results are kept


def test_a_job_killed_or_cancelled_fails_only_its_grid_points_within_a_bounded_time(scenarios):
    """Defect 2, in whichever accounting mode the cluster is up; and a user's scancel."""
    _assert_lost(scenarios["lost"].result(), cancelled=True)


def test_a_job_killed_outright_fails_the_sweep_in_the_other_accounting_mode_too(scenarios):
    """Defect 2 was a wait for ever without accounting (sacct: "accounting storage is disabled");
    with accounting submitit itself saw the kill. Both are tried: the cluster of slurm-up.sh is
    restarted in the other mode (once the other sweeps have ended), then restored."""
    for name, future in scenarios.items():
        if name != "root":
            future.exception()  # ended, one way or the other
    before = accounting()
    restart(not before)
    try:
        seen = _lost(scenarios["root"], "lost_other_mode", "seed=0", cancel=False)
    finally:
        restart(before)
    assert seen["accounting"] is not before
    _assert_lost(seen, cancelled=False)
