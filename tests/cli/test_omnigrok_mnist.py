"""`toy-quanta experiment=omnigrok_mnist` (toy_quanta.cli.app, task=mnist) end to end, tiny: results, milestones, figure, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_app
from toy_quanta.data.mnist import write_idx


def _corrupt_mnist(root: Path) -> Path:
    """A tiny MNIST directory whose test labels file is cut short."""
    data = root / "mnist"
    data.mkdir()
    for split, n in (("train", 20), ("t10k", 10)):
        write_idx(data / f"{split}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
        write_idx(data / f"{split}-labels-idx1-ubyte.gz", np.zeros(n, np.uint8))
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes((data / "t10k-labels-idx1-ubyte.gz").read_bytes()[:-5])
    return data


# The app run of each test, args for its own directory. They are independent, so they go side by
# side in the background (conftest._background_runs).
RUNS = {
    "test_a_tiny_omnigrok_run_writes_results_and_milestones": lambda root: [
        "experiment=omnigrok_mnist", "train.steps=30", "train.log_count=8", "train.progress=false", "model.width=32",
        f"hydra.run.dir={root / 'run'}"],
    "test_a_missing_mnist_directory_stops_before_training": lambda root: [
        "experiment=omnigrok_mnist", f"task.source={root / 'nowhere'}", f"hydra.run.dir={root / 'run'}"],
    "test_a_corrupt_idx_file_gets_one_line_and_keeps_the_config": lambda root: [
        "experiment=omnigrok_mnist", f"task.source={_corrupt_mnist(root)}", "task.n_train=10",
        f"hydra.run.dir={root / 'run'}"],
}


def background_runs(items, tmp_path_factory) -> dict:
    """The selected tests' runs, started at the start of the session (conftest._background_runs)."""
    jobs = {}
    for item in items:
        if item.originalname in RUNS:
            root = tmp_path_factory.mktemp(item.originalname[5:30])
            args = RUNS[item.originalname](root)
            jobs[item.originalname] = lambda root=root, args=args: (root, run_app(args, cwd=root))
    return jobs


@pytest.fixture(scope="module")
def runs(background) -> dict:
    """test name -> future of (its directory, its finished app process)."""
    return background


def test_a_tiny_omnigrok_run_writes_results_and_milestones(runs):
    tmp_path, proc = runs["test_a_tiny_omnigrok_run_writes_results_and_milestones"].result()
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["n_members"] == 2
    assert [m["model.init_scale"] for m in summary["members"]] == [1.0, 8.0]
    for m in summary["members"]:
        final = m["final"]
        assert {"steps_to_train_100", "steps_to_val_60", "steps_to_val_80", "train_acc", "test_acc"} <= set(final)
        assert "test_loss_bits" not in final  # MSE, not cross-entropy
    # standard init learns the embedded digits within 30 steps of batch 200; scale 8 is far behind
    small, large = (m["final"] for m in summary["members"])
    assert small["test_acc"] > 0.6 > large["test_acc"]
    frame = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    norms = frame[(frame["metric"] == "param_norm") & (frame["step"] == 0)].sort_values("member")["value"].to_numpy()
    assert abs(norms[1] / norms[0] - 8.0) < 1e-4
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


def test_a_missing_mnist_directory_stops_before_training(runs):
    tmp_path, proc = runs["test_a_missing_mnist_directory_stops_before_training"].result()
    assert proc.returncode == 2 and "task.source=" in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "run" / "metrics.parquet").exists()


def test_a_corrupt_idx_file_gets_one_line_and_keeps_the_config(runs):
    tmp_path, proc = runs["test_a_corrupt_idx_file_gets_one_line_and_keeps_the_config"].result()
    assert proc.returncode == 2 and "t10k-labels-idx1-ubyte.gz" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and (tmp_path / "run" / "config.yaml").exists()
