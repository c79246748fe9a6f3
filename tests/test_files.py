"""Safe files (toy_quanta.files): one process per job directory, by an OS lock a killed process
cannot leave behind."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from toy_quanta.errors import ConfigError, RunDirBusy
from toy_quanta.files import LOCK_FILE, job_lock

HOLD = """
import sys, time
from pathlib import Path
from toy_quanta.files import job_lock
with job_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_first_and_a_killed_one_leaves_no_lock(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunDirBusy) as exc:
            with job_lock(tmp_path):
                pass
        assert isinstance(exc.value, ConfigError) and exc.value.key == "hydra.run.dir"
        assert f"process {holder.pid} on " in str(exc.value) and "\n" not in str(exc.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with job_lock(tmp_path):  # the OS released the killed process's lock
        assert (tmp_path / LOCK_FILE).is_file()


def test_the_lock_is_held_only_while_the_job_runs(tmp_path):
    with job_lock(tmp_path):
        pass
    with job_lock(tmp_path):  # released at the end: the same directory runs its next job
        pass


def _held(path: Path) -> bool:
    """Whether another process holds the job lock on path (a lock this process can take is not)."""
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _app(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "toy_quanta.cli.app", *args, "train.progress=false"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # three runs of the app (about 30 s)
def test_a_second_run_in_the_same_directory_is_refused_and_the_first_is_untouched(tmp_path):
    """The same command twice on one output directory: the second exits 2 at once with one line
    naming the first process; the first completes, its results those of the same run alone."""
    args = ["train.steps=30000", "train.log_every=1000"]
    first = _app([*args, f"hydra.run.dir={tmp_path / 'D'}"], tmp_path)
    alone = _app([*args, f"hydra.run.dir={tmp_path / 'alone'}"], tmp_path)
    deadline = time.time() + 120
    while not _held(tmp_path / "D" / LOCK_FILE) and time.time() < deadline:
        time.sleep(0.1)
    second = subprocess.run([sys.executable, "-m", "toy_quanta.cli.app", *args, f"hydra.run.dir={tmp_path / 'D'}",
                             "train.progress=false"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first run ended before the second started: give it more steps"
    assert second.returncode == 2
    assert second.stderr.strip().count("\n") == 0 and f"process {first.pid} on " in second.stderr, second.stderr
    for proc in (first, alone):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    assert json.loads((tmp_path / "D" / "summary.json").read_text())["status"] == "completed"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "D" / "metrics.parquet"),
                                  pd.read_parquet(tmp_path / "alone" / "metrics.parquet"))


@pytest.mark.slow  # three sweeps (about 40 s)
def test_a_second_vmap_sweep_on_the_same_directory_is_refused_while_the_first_trains_the_group(tmp_path):
    """Two `toy-quanta -m hydra/launcher=vmap` on one sweep directory (a sweep resubmitted while it
    runs): the group's training is locked (.vmap_groups/<hash>/.toy_quanta.lock), so the second is
    refused at once, one line naming the first, touching no job directory; the first completes,
    its results those of the same sweep alone."""
    args = ["-m", "hydra/launcher=vmap", "seed=0,1", "train.steps=30000", "train.log_every=1000"]
    first = _app([*args, f"hydra.sweep.dir={tmp_path / 'S'}"], tmp_path)
    alone = _app([*args, f"hydra.sweep.dir={tmp_path / 'alone'}"], tmp_path)
    deadline = time.time() + 120
    while not any(_held(p) for p in (tmp_path / "S").glob(f".vmap_groups/*/{LOCK_FILE}")) and time.time() < deadline:
        time.sleep(0.1)
    second = subprocess.run([sys.executable, "-m", "toy_quanta.cli.app", *args, f"hydra.sweep.dir={tmp_path / 'S'}",
                             "train.progress=false"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first sweep ended before the second started: give it more steps"
    assert not (tmp_path / "S" / "0" / "summary.json").exists()  # the second wrote no job's files
    assert second.returncode == 2, second.stderr[-2000:]
    assert second.stderr.strip().splitlines()[-1].startswith("toy-quanta: error: hydra.sweep.dir=") and \
        f"process {first.pid} on " in second.stderr.strip().splitlines()[-1], second.stderr
    for proc in (first, alone):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    for job in ("0", "1"):
        assert json.loads((tmp_path / "S" / job / "summary.json").read_text())["status"] == "completed"
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "S" / job / "metrics.parquet"),
                                      pd.read_parquet(tmp_path / "alone" / job / "metrics.parquet"))
    assert not (tmp_path / "S" / ".vmap_groups").exists()  # the group's folder and its lock are gone


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """The 3rd checkpoint does not fit (ENOSPC from inside numpy's savez, as on a full disk): the
    job stops with DiskFull naming the file and the space left, no half-written file is left, the
    2nd checkpoint and the metrics so far stay readable, and once there is room the same job
    resumes from that checkpoint and ends as the job that never stopped."""
    import errno

    import numpy as np

    from conftest import tiny_config
    from toy_quanta import results
    from toy_quanta.engine import checkpoint as ckpt
    from toy_quanta.engine import loop
    from toy_quanta.errors import DiskFull
    from toy_quanta.job import run_job

    monkeypatch.setattr(loop, "FIRST_SUBCHUNK", 3)
    monkeypatch.setattr(loop, "SUBCHUNK_S", 0.0)
    cfg = tiny_config(train={"steps": 60, "log_every": 20, "checkpoint_every_s": 0})
    savez, saves = np.savez, iter(range(1000))

    def full_after_two(f, **arrays):
        if next(saves) >= 2:
            savez(f, **{k: v for k, v in list(arrays.items())[:1]})  # part of the file, then no room
            raise OSError(errno.ENOSPC, "No space left on device")
        return savez(f, **arrays)

    monkeypatch.setattr(np, "savez", full_after_two)
    out = tmp_path / "job"
    with pytest.raises(DiskFull) as exc:
        run_job(tiny_config(train={"steps": 60, "log_every": 20, "checkpoint_every_s": 0}), out)
    message = str(exc.value)
    assert "\n" not in message and str(out / ckpt.STATE_FILE) in message and "free" in message
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    with np.load(out / ckpt.STATE_FILE) as kept:  # the last good checkpoint, whole: the 2nd save's
        saved_step = json.loads(kept["meta"].tobytes().decode())["step"]
        assert 0 < saved_step < 60 and kept["steps"].tolist() == [0]
    assert set(results.read_metrics(out / results.METRICS_FILE)["step"]) == {0}  # the metrics so far
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("DiskFull: ")

    monkeypatch.setattr(np, "savez", savez)  # space freed
    resumed = run_job(cfg, out)
    whole = run_job(cfg, tmp_path / "whole")
    assert resumed["status"] == "completed" and resumed["resumed_from"] == saved_step
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), pd.read_parquet(tmp_path / "whole" / "metrics.parquet"))


def test_a_full_disk_under_the_app_is_one_line(tmp_path):
    """The issue's case: grok_modadd on a 160 KiB tmpfs ends with exit status 1 and one line naming
    the file that did not fit, no traceback, and the metrics so far readable."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("no tmpfs mount here (a container without CAP_SYS_ADMIN)")
    try:
        proc = subprocess.run([sys.executable, "-m", "toy_quanta.cli.app", "experiment=grok_modadd", "train.steps=6000",
                               "train.checkpoint_every_s=0", "train.progress=false", f"hydra.run.dir={small / 'D'}"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert proc.stderr.strip().count("\n") == 0 and "did not fit" in proc.stderr and "Traceback" not in proc.stderr
        assert len(pd.read_parquet(small / "D" / "metrics.parquet")) > 0
        assert not [p for p in (small / "D").iterdir() if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(small)])
