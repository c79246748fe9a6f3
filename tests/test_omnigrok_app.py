"""`toy-quanta experiment=omnigrok_mnist` end to end, tiny: results, milestones, figure, errors."""

from __future__ import annotations

import json

import pandas as pd

from tests.conftest import run_app


def test_a_tiny_omnigrok_run_writes_results_and_milestones(tmp_path):
    proc = run_app(["experiment=omnigrok_mnist", "train.steps=30", "train.log_count=8", "train.progress=false",
                    "model.width=32", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
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


def test_a_missing_mnist_directory_stops_before_training(tmp_path):
    proc = run_app(["experiment=omnigrok_mnist", f"task.source={tmp_path / 'nowhere'}",
                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 2 and "task.source=" in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "run" / "metrics.parquet").exists()


def test_a_corrupt_idx_file_gets_one_line_and_keeps_the_config(tmp_path):
    import numpy as np

    from toy_quanta.data.mnist import write_idx

    data = tmp_path / "mnist"
    data.mkdir()
    for split, n in (("train", 20), ("t10k", 10)):
        write_idx(data / f"{split}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
        write_idx(data / f"{split}-labels-idx1-ubyte.gz", np.zeros(n, np.uint8))
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes((data / "t10k-labels-idx1-ubyte.gz").read_bytes()[:-5])
    proc = run_app(["experiment=omnigrok_mnist", f"task.source={data}", "task.n_train=10",
                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 2 and "t10k-labels-idx1-ubyte.gz" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and (tmp_path / "run" / "config.yaml").exists()
