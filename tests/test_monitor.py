"""Monitors as plug-ins (toy_quanta.hooks.register_monitor), and the TensorBoard event files
(toy_quanta/monitors/tensorboard.py, train.tensorboard=true), read back with TensorBoard's own
reader and compared with metrics.parquet."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import toy_quanta.job as app
from conftest import tiny_config
from toy_quanta import hooks, monitors
from toy_quanta.engine.members import expand
from toy_quanta.monitors import tensorboard as monitor

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
    names = monitors.run_names(members)
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
    pngs = hooks.job_figures(out)
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
    n = monitors.MAX_PER_METRIC + 5
    log = monitor.TensorBoardLog(tmp_path, [{"seed": 0}])
    log.scalars(SimpleNamespace(steps=[0], resumed_from=None, members=[{"seed": 0}],
                                logs={"subtask_loss": [np.arange(n, dtype=np.float32)[None]]}))
    log.close()
    tags = read(tmp_path / "tensorboard" / "m0").Tags()["scalars"]
    assert len(tags) == monitors.MAX_PER_METRIC and f"subtask_loss/{monitors.MAX_PER_METRIC - 1:02d}" in tags


def test_run_names_name_only_what_differs():
    assert monitors.run_names([{"seed": 0, "optim.lr": 0.1}]) == ["m0"]
    names = monitors.run_names([{"seed": s, "arm": a, "task.alpha": 0.4} for a in ("base", "ema") for s in range(6)])
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
    log.figures(hooks.job_figures(tmp_path), step=7)
    assert set(read(tmp_path / "tensorboard" / monitor.FIGURES_RUN).Tags()["images"]) == {"curves", "progress/fourier"}
    assert hooks.job_figures(tmp_path) == [tmp_path / "curves.png", tmp_path / "progress" / "fourier.png"]


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


# --- the plug-in point (toy_quanta.hooks.register_monitor) ---------------------------------------------

JOB_PY = Path(app.__file__)


def test_the_job_writer_names_no_monitor():
    """job.py reaches the monitors through hooks only: it imports none and names none."""
    text = JOB_PY.read_text()
    assert not re.search(r"tensorboard|wandb|weights & biases", text, re.IGNORECASE)
    assert "toy_quanta.monitors" not in text and "import monitor" not in text


class Recorder:
    """A user's monitor: what the job writer handed it, in order."""

    def __init__(self, out_dir, members, cfg, fail_on=None):
        self.calls, self.fail_on = [("start", len(members), cfg.name)], fail_on
        Recorder.last = self

    def scalars(self, result):
        self.calls.append(("scalars", list(result.steps)))
        if self.fail_on == "scalars" and len(result.steps) > 1:
            raise RuntimeError("dashboard unreachable")

    def figures(self, paths, step):
        self.calls.append(("figures", [Path(p).name for p in paths], step))

    def close(self, failed=False):
        self.calls.append(("close", failed))


@pytest.fixture
def registered(monkeypatch):
    """Registers a monitor for the test only (hooks' registry is left as it was)."""
    def register(start, enabled=lambda cfg: True):
        monkeypatch.setitem(hooks._MONITORS, "mine", hooks.Monitor("mine", enabled, start))
    return register


def test_a_registered_monitor_gets_every_log_step_then_the_figures_then_close(tmp_path, registered):
    registered(Recorder)
    cfg = tiny_config(ensemble={"seeds": 2})
    summary = app.run_job(cfg, tmp_path / "job")
    calls = Recorder.last.calls
    steps = pd.read_parquet(tmp_path / "job" / "metrics.parquet")["step"].unique().tolist()
    assert calls[0] == ("start", 2, "tiny") and len(steps) > 2
    # after each log step the run so far; at the end all of it once more (the vmap launcher's path)
    assert [c[1] for c in calls if c[0] == "scalars"] == [steps[:k] for k in range(1, len(steps) + 1)] + [steps]
    assert calls[-2:] == [("figures", ["curves.png"], summary["steps"]), ("close", False)]
    assert "mine_error" not in summary


def test_a_monitor_that_fails_is_recorded_under_its_name_and_the_others_go_on(tmp_path, registered):
    registered(lambda out_dir, members, cfg: Recorder(out_dir, members, cfg, fail_on="scalars"))
    cfg = tiny_config(train={"tensorboard": True})
    summary = app.run_job(cfg, tmp_path / "job")
    assert summary["status"] == "completed" and summary["mine_error"] == "RuntimeError: dashboard unreachable"
    assert json.loads((tmp_path / "job" / "summary.json").read_text())["mine_error"] == summary["mine_error"]
    calls = Recorder.last.calls
    assert calls[-1] == ("close", True) and sum(c[0] == "scalars" for c in calls) == 2  # stopped at once
    assert "tensorboard_error" not in summary
    frame = pd.read_parquet(tmp_path / "job" / "metrics.parquet")
    acc = read(tmp_path / "job" / "tensorboard" / "m0")
    assert [e.step for e in acc.Scalars("test_loss")] == sorted(frame["step"].unique().tolist())


def test_a_monitor_that_cannot_start_is_recorded_and_the_config_turns_it_off(tmp_path, registered):
    def unreachable(out_dir, members, cfg):
        raise ConnectionError("no route to host")

    registered(unreachable, enabled=lambda cfg: cfg.train.snapshots)
    assert "mine_error" not in app.run_job(tiny_config(), tmp_path / "off")
    summary = app.run_job(tiny_config(train={"snapshots": True}), tmp_path / "on")
    assert summary["status"] == "completed" and summary["mine_error"] == "ConnectionError: no route to host"


def test_a_failed_job_closes_its_monitors_as_failed(tmp_path, registered):
    registered(Recorder)
    monitoring = hooks.Monitoring(tmp_path, tiny_config())
    monitoring.scalars(_result([0, 10], [1.0, 0.9]))
    monitoring.close(failed=True)
    assert Recorder.last.calls == [("start", 1, "tiny"), ("scalars", [0, 10]), ("close", True)]
    assert monitoring.errors == {}


def test_the_figures_leave_out_what_the_monitors_wrote(tmp_path):
    """W&B keeps copies of the images it logged under wandb/: never a figure of the job."""
    for name in ("curves.png", "progress/fourier.png", "tensorboard/x.png", "wandb/run-1/files/media/images/curves.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert hooks.job_figures(tmp_path) == [tmp_path / "curves.png", tmp_path / "progress" / "fourier.png"]


def test_the_monitors_keys_are_settings_a_resumed_run_may_change():
    assert {"train.tensorboard", "train.wandb", "train.wandb_project"} <= set(app.SETTINGS)
    assert [m.name for m in hooks.monitors()][:2] == ["tensorboard", "wandb"]
