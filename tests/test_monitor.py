"""TensorBoard event files (toy_quanta.monitor, train.tensorboard=true), read back with
TensorBoard's own reader and compared with metrics.parquet."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import toy_quanta.job as app
from conftest import tiny_config
from toy_quanta import monitor
from toy_quanta.engine.members import expand

EVERYTHING = {"scalars": 0, "images": 0}  # size guidance: keep every event, no sampling


def read(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance=EVERYTHING)
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    cfg = tiny_config(train={"tensorboard": True}, ensemble={"seeds": 2, "lr": [1e-2, 3e-2]})
    out = tmp_path_factory.mktemp("tb") / "job"
    summary = app.run_job(cfg, out)
    return out, summary, expand(cfg)


def test_each_member_is_a_run_with_every_metric_at_every_log_step(job):
    out, summary, members = job
    frame = pd.read_parquet(out / "metrics.parquet")
    names = monitor.run_names(members)
    assert names == ["m0_seed=0_optim.lr=0.01", "m1_seed=1_optim.lr=0.01", "m2_seed=0_optim.lr=0.03",
                     "m3_seed=1_optim.lr=0.03"]
    runs = sorted(p.name for p in (out / "tensorboard").iterdir())
    assert runs == sorted([*names, monitor.FIGURES_RUN])
    for member, name in enumerate(names):
        acc = read(out / "tensorboard" / name)
        rows = frame[frame["member"] == member]
        expected = {(m if s < 0 else f"{m}/{s:02d}") for m, s in zip(rows["metric"], rows["subtask"])}
        assert set(acc.Tags()["scalars"]) == expected
        for (metric, subtask), part in rows.groupby(["metric", "subtask"], observed=True):
            tag = metric if subtask < 0 else f"{metric}/{subtask:02d}"
            events = acc.Scalars(tag)
            assert [e.step for e in events] == part["step"].tolist()
            # simple_value is float32
            np.testing.assert_allclose([e.value for e in events], part["value"].to_numpy(), rtol=1e-6, atol=1e-30)


def test_the_figures_are_images_of_the_written_files(job):
    out, summary, _ = job
    acc = read(out / "tensorboard" / monitor.FIGURES_RUN)
    pngs = monitor.job_figures(out)
    assert [p.name for p in pngs] == ["curves.png"] and set(acc.Tags()["images"]) == {"curves"}
    for path in pngs:
        (image,) = acc.Images(path.stem)
        assert image.step == summary["steps"]
        assert image.encoded_image_string == path.read_bytes()
        assert image.width > 100 and image.height > 100


def _result(steps, values, resumed_from=None):
    """What TensorBoardLog reads of engine.loop.FitResult: steps, logs (one (M,) or (M, T) array
    per log step), members and resumed_from."""
    return SimpleNamespace(steps=list(steps), resumed_from=resumed_from, members=[{"seed": 0}],
                           logs={"test_loss": [np.array([v]) for v in values],
                                 "subtask_acc": [np.array([[v, 2 * v]]) for v in values]})


def test_a_resumed_run_replaces_what_the_stopped_run_logged_after_its_checkpoint(tmp_path):
    """The stopped run logged steps 0-30 and saved its checkpoint at step 10; the resumed run's
    steps 20 and on are the ones TensorBoard shows, each once."""
    stopped = monitor.TensorBoardLog(tmp_path, [{"seed": 0}])
    stopped.scalars(_result([0, 10], [1.0, 0.9]))
    stopped.scalars(_result([0, 10, 20, 30], [1.0, 0.9, 0.8, 0.7]))  # only 20 and 30 are new
    stopped.close()
    resumed = monitor.TensorBoardLog(tmp_path, [{"seed": 0}])
    resumed.scalars(_result([0, 10, 20, 30, 40], [1.0, 0.9, 0.5, 0.4, 0.3], resumed_from=10))
    resumed.close()
    acc = read(tmp_path / "tensorboard" / "m0")
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("test_loss")] == [
        (0, 1.0), (10, 0.9), (20, 0.5), (30, 0.4), (40, 0.3)]
    assert [round(e.value, 6) for e in acc.Scalars("subtask_acc/01")] == [2.0, 1.8, 1.0, 0.8, 0.6]


def test_many_subtasks_are_cut_at_max_per_metric(tmp_path):
    n = monitor.MAX_PER_METRIC + 5
    log = monitor.TensorBoardLog(tmp_path, [{"seed": 0}])
    log.scalars(SimpleNamespace(steps=[0], resumed_from=None, members=[{"seed": 0}],
                                logs={"subtask_loss": [np.arange(n, dtype=np.float32)[None]]}))
    log.close()
    tags = read(tmp_path / "tensorboard" / "m0").Tags()["scalars"]
    assert len(tags) == monitor.MAX_PER_METRIC and f"subtask_loss/{monitor.MAX_PER_METRIC - 1:02d}" in tags


def test_run_names_name_only_what_differs():
    assert monitor.run_names([{"seed": 0, "optim.lr": 0.1}]) == ["m0"]
    names = monitor.run_names([{"seed": s, "arm": a, "task.alpha": 0.4} for a in ("base", "ema") for s in range(6)])
    assert names[0] == "m00_seed=0_arm=base" and names[11] == "m11_seed=5_arm=ema"
    assert len(set(names)) == 12


def test_figures_in_subfolders_are_tagged_by_their_path(tmp_path):
    import matplotlib.pyplot as plt

    (tmp_path / "progress").mkdir()
    for name in ("curves.png", "progress/fourier.png"):
        fig, ax = plt.subplots(figsize=(2, 1))
        fig.savefig(tmp_path / name)
        plt.close(fig)
    log = monitor.TensorBoardLog(tmp_path, [{"seed": 0}])
    log.figures(monitor.job_figures(tmp_path), step=7)
    assert set(read(tmp_path / "tensorboard" / monitor.FIGURES_RUN).Tags()["images"]) == {"curves", "progress/fourier"}
    assert monitor.job_figures(tmp_path) == [tmp_path / "curves.png", tmp_path / "progress" / "fourier.png"]


def test_a_failure_to_write_them_never_fails_the_run(tmp_path, monkeypatch):
    """The job completes and keeps its results; summary.json says why the monitoring stopped."""
    def full_disk(self, result):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(monitor.TensorBoardLog, "scalars", full_disk)
    cfg = tiny_config(train={"tensorboard": True}, ensemble={"seeds": 2, "lr": [1e-2, 3e-2]})
    summary = app.run_job(cfg, tmp_path / "job")
    assert summary["status"] == "completed" and "No space left" in summary["tensorboard_error"]
    assert json.loads((tmp_path / "job" / "summary.json").read_text())["tensorboard_error"] == summary["tensorboard_error"]
    assert (tmp_path / "job" / "metrics.parquet").is_file() and (tmp_path / "job" / "checkpoint.msgpack").is_file()
