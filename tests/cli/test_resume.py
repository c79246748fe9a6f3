"""Checkpoints and exact resume, with real processes: a run killed with SIGKILL, or stopped with
SIGTERM or SIGINT, and then started again with the same command and output directory, ends with
the metrics table and parameters of a run that was never interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SWEEP_OVERRIDES
from toy_quanta import results

# Long enough (several seconds) to be stopped part-way; a checkpoint after every call.
ARGS = [o for o in SWEEP_OVERRIDES if not o.startswith(("train.steps", "train.log_every", "name"))] + [
    "train.steps=15000", "train.log_every=1000", "train.checkpoint_every_s=0", "ensemble.seeds=2", "name=resume"]


def _command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "toy_quanta.cli.app", *ARGS, f"hydra.run.dir={run_dir}"]


def _run(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_command(run_dir), cwd=run_dir.parent, capture_output=True, text=True, timeout=300)


def _stopped(run_dir: Path, signum: int, resume: bool = True) -> dict:
    """Start the run, wait for its first checkpoint and some training, send `signum`; then (resume)
    run the same command again. Returns what each process did."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(_command(run_dir), cwd=run_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    state = run_dir / "train_state.npz"
    deadline = time.monotonic() + 120
    while _saved_step(state) < 1000 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # until a checkpoint past the first log step (written after every call)
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    stop_s = time.monotonic() - sent
    saved_step = _saved_step(state)
    summary = json.loads((run_dir / "summary.json").read_text()) if signum != signal.SIGKILL else None
    metrics_rows = len(pd.read_parquet(run_dir / "metrics.parquet"))
    again = _run(run_dir) if resume else None
    return {"rc": proc.returncode, "stdout": out, "stderr": err, "stop_s": stop_s, "saved_step": saved_step,
            "summary": summary, "metrics_rows": metrics_rows, "again": again}


def _saved_step(state: Path) -> int:
    """The step of the checkpoint at `state` (0 if there is none yet)."""
    try:
        with np.load(state) as z:
            return json.loads(z["meta"].tobytes())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def _vmap_sweep(sweep_dir: Path) -> list[str]:
    """seed=0,1 with the vmap launcher: one group of two members, checkpointed as a group."""
    return [sys.executable, "-m", "toy_quanta.cli.app", "-m", "hydra/launcher=vmap", "seed=0,1",
            *[a for a in ARGS if not a.startswith("ensemble.seeds")], f"hydra.sweep.dir={sweep_dir}"]


def _vmap_stopped(sweep_dir: Path) -> dict:
    """The vmap sweep stopped with SIGTERM part-way through its group, then run again."""
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(_vmap_sweep(sweep_dir), cwd=sweep_dir.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and \
            max([_saved_step(p) for p in sweep_dir.glob(".vmap_groups/*/train_state.npz")] or [0]) < 1000:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    stopped = {j: json.loads((sweep_dir / str(j) / "summary.json").read_text()) for j in (0, 1)}
    again = subprocess.run(_vmap_sweep(sweep_dir), cwd=sweep_dir.parent, capture_output=True, text=True, timeout=300)
    return {"rc": proc.returncode, "stderr": err, "stopped": stopped, "again": again}


def background_runs(items, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("resume")
    return {"uninterrupted": lambda: _run(root / "uninterrupted"),
            "sigkill": lambda: _stopped(root / "sigkill", signal.SIGKILL),
            "sigterm": lambda: _stopped(root / "sigterm", signal.SIGTERM),
            "sigint": lambda: _stopped(root / "sigint", signal.SIGINT, resume=False),
            "vmap_uninterrupted": lambda: subprocess.run(_vmap_sweep(root / "vmap_whole"), cwd=root, capture_output=True,
                                                         text=True, timeout=300),
            "vmap_sigterm": lambda: _vmap_stopped(root / "vmap_stopped")}


@pytest.fixture(scope="module")
def uninterrupted(background) -> Path:
    proc = background["uninterrupted"].result()
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.split("output directory: ")[-1].splitlines()[0].strip())


def _same_run(resumed: Path, reference: Path) -> None:
    """Every metric row, every final parameter and every member's final numbers are equal."""
    a, b = pd.read_parquet(resumed / "metrics.parquet"), pd.read_parquet(reference / "metrics.parquet")
    assert not a.duplicated(["member", "step", "metric", "subtask"]).any()
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    pa, pb = (results.load_checkpoint(d / results.CHECKPOINT_FILE) for d in (resumed, reference))
    for x, y in zip(*(sorted(_leaves(p).items()) for p in (pa, pb))):
        assert x[0] == y[0] and np.array_equal(x[1], y[1]), x[0]
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (resumed, reference))
    assert sa["status"] == sb["status"] == "completed"
    assert [m["final"] for m in sa["members"]] == [m["final"] for m in sb["members"]]
    assert not (resumed / "train_state.npz").exists()  # a completed run keeps its final parameters only


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _leaves(sub, f"{prefix}/{key}").items()}
    return {prefix: np.asarray(tree)}


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_run(how, background, uninterrupted):
    got = background[how].result()
    assert 0 < got["saved_step"] < 15000, "the run must have been stopped part-way"
    again = got["again"]
    assert again.returncode == 0, again.stderr
    resumed_at = int(again.stdout.split("resuming from step ")[1].split()[0]) if "resuming from step " in again.stdout \
        else int(again.stderr.split("resuming from step ")[1].split()[0])
    assert resumed_at == got["saved_step"]
    run_dir = Path(again.stdout.split("output directory: ")[-1].splitlines()[0].strip())
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from"] == resumed_at
    _same_run(run_dir, uninterrupted)


@pytest.mark.parametrize("how, code", [("sigterm", 128 + signal.SIGTERM), ("sigint", 128 + signal.SIGINT)])
def test_a_signal_stops_the_run_with_a_checkpoint_and_no_traceback(how, code, background):
    got = background[how].result()
    assert got["rc"] == code, got["stderr"][-2000:]
    assert got["stop_s"] < 30
    assert "Traceback" not in got["stderr"] and "Traceback" not in got["stdout"]
    assert f"interrupted by {how.upper()}" in got["stderr"]
    summary = got["summary"]
    assert summary["status"] == "interrupted" and summary["checkpoint"].endswith("train_state.npz")
    assert summary["steps"] == got["saved_step"]
    assert got["metrics_rows"] > 0  # the metrics so far are kept


def test_a_vmap_group_stopped_by_sigterm_resumes_to_exactly_the_uninterrupted_sweep(background):
    """hydra/launcher=vmap: SIGTERM stops the group's training with its checkpoint (exit 143, both
    grid points interrupted); the same sweep run again resumes the group, completes both grid
    points exactly as a sweep never stopped, and removes the group's checkpoint."""
    whole = background["vmap_uninterrupted"].result()
    assert whole.returncode == 0, whole.stderr[-2000:]
    got = background["vmap_sigterm"].result()
    assert got["rc"] == 128 + signal.SIGTERM and "Traceback" not in got["stderr"], got["stderr"][-2000:]
    assert {s["status"] for s in got["stopped"].values()} == {"interrupted"}
    assert all(0 < s["steps"] < 15000 for s in got["stopped"].values())  # stopped part-way
    again = got["again"]
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from step" in again.stdout + again.stderr
    stopped_dir = Path(again.stdout.split("output directory: ")[-1].splitlines()[0].strip()).parent
    whole_dir = Path(whole.stdout.split("output directory: ")[-1].splitlines()[0].strip()).parent
    for job in ("0", "1"):
        _same_run(stopped_dir / job, whole_dir / job)
    assert not list(stopped_dir.glob(".vmap_groups/*/train_state.npz"))
