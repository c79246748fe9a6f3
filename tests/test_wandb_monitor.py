"""Weights & Biases as a monitor (toy_quanta/monitors/wandb.py, train.wandb=true), offline: a job
writes its runs under its wandb/ (WANDB_MODE=offline, no network, no account), and the tests read
them back from the runs' transaction logs (`run-<id>.wandb`) and compare them with metrics.parquet.

The transaction log is the file `wandb sync` uploads: LevelDB's log format (32 KiB blocks of
records, each with a CRC-32, a length and a kind: whole, first, middle or last part of a
protobuf), after a 7-byte header (":W&B", 0xBEE1, version 0). Its protobuf is wandb's own
`wandb.proto.wandb_internal_pb2.Record`; wandb has no Python reader of the file, so `records` is
one. wandb-core writes the file on its own: `run.finish()` may return before the file holds the
run's end, so `read_run` waits for it."""

from __future__ import annotations

import json
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import toy_quanta.job as app
from conftest import tiny_config
from toy_quanta import monitors
from toy_quanta.config import validate
from toy_quanta.engine.members import expand
from toy_quanta.errors import ConfigError

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """Every Record in a run's transaction log, in order (each part's CRC checked), up to a record
    still being written."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if len(data) < len(HEADER):
        return
    assert data[:len(HEADER)] == HEADER, data[:len(HEADER)]
    pos, pending = len(HEADER), b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if pos + 7 + length > len(data):
            return
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0:  # padding
            continue
        assert crc == zlib.crc32(chunk, zlib.crc32(bytes([kind]))), f"{path}: bad CRC at {pos}"
        pending += chunk
        if kind in (FULL, LAST):
            yield wandb_internal_pb2.Record.FromString(pending)
            pending = b""


@dataclass
class OfflineRun:
    """What an offline run's transaction log holds, as the W&B app would show it."""

    folder: Path
    name: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    tags: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # (step, {key: value}) per logged row
    exit_code: int | None = None

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(step, row[key]) for step, row in self.history if key in row]

    def metrics(self) -> set[str]:
        return {key for _, row in self.history for key in row if not key.startswith("_")}


def _nested(items) -> dict:
    """History or config items (key or nested_key, value_json) as a dict."""
    out: dict = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


def read_run(folder: Path, wait_s: float = 60.0) -> OfflineRun:
    """The run in `folder`, once its transaction log holds the run's end (its exit record)."""
    deadline = time.monotonic() + wait_s
    while True:
        run = _read_run(folder)
        if run.exit_code is not None:
            return run
        assert time.monotonic() < deadline, f"{folder}: the run never ended"
        time.sleep(0.1)


def _read_run(folder: Path) -> OfflineRun:
    run = OfflineRun(folder)
    logs = list(folder.glob("run-*.wandb"))  # none yet: wandb-core has not opened it
    assert len(logs) <= 1, logs
    for record in (r for log in logs for r in records(log)):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.name, run.group, run.job_type, run.project = r.display_name, r.run_group, r.job_type, r.project
            run.tags = list(r.tags)
            run.config.update(_nested(r.config.update))
        elif kind == "config":
            run.config.update(_nested(record.config.update))
        elif kind == "history":
            run.history.append((record.history.step.num, _nested(record.history.item)))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def all_runs(job_dir: Path) -> list[OfflineRun]:
    """The offline runs under a job's wandb/, by folder (offline-run-<time>-<id>)."""
    return [read_run(folder) for folder in sorted((Path(job_dir) / "wandb").glob("offline-run-*"))]


def offline_runs(job_dir: Path) -> dict[str, OfflineRun]:
    """The job's offline runs, by name (each name once)."""
    runs = all_runs(job_dir)
    assert len({r.name for r in runs}) == len(runs), [r.name for r in runs]
    return {r.name: r for r in runs}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """W&B offline and quiet, its own files (settings, cache) under tmp_path: no network, no home."""
    pytest.importorskip("wandb")
    for key, value in _OFFLINE.items():
        monkeypatch.setenv(key, value.replace("{tmp}", str(tmp_path)))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)


_OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true",
            "WANDB_DISABLE_CODE": "true", "WANDB_X_DISABLE_STATS": "true", "WANDB_DIR": "{tmp}/wandb_dir",
            "WANDB_CONFIG_DIR": "{tmp}/wandb_config", "WANDB_CACHE_DIR": "{tmp}/wandb_cache",
            "WANDB_DATA_DIR": "{tmp}/wandb_data"}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    pytest.importorskip("wandb")
    tmp = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in _OFFLINE.items():
            patch.setenv(key, value.replace("{tmp}", str(tmp)))
        patch.delenv("WANDB_PROJECT", raising=False)
        cfg = tiny_config(train={"wandb": True}, ensemble={"seeds": 2, "lr": [1e-2, 3e-2]})
        summary = app.run_job(cfg, tmp / "job")
    return tmp / "job", summary, cfg


def test_each_member_is_an_offline_run_with_every_metric_at_every_log_step(job):
    out, summary, cfg = job
    assert summary["status"] == "completed" and "wandb_error" not in summary
    runs = offline_runs(out)
    names = monitors.run_names(expand(cfg))
    assert sorted(runs) == sorted([*names, "figures"])
    frame = pd.read_parquet(out / "metrics.parquet")
    for member, name in enumerate(names):
        run, rows = runs[name], frame[frame["member"] == member]
        assert run.metrics() == {(m if s < 0 else f"{m}/{s:02d}") for m, s in zip(rows["metric"], rows["subtask"])}
        assert [step for step, _ in run.history] == sorted(rows["step"].unique().tolist())
        for (metric, subtask), part in rows.groupby(["metric", "subtask"], observed=True):
            logged = run.series(metric if subtask < 0 else f"{metric}/{subtask:02d}")
            assert [s for s, _ in logged] == part["step"].tolist()
            np.testing.assert_allclose([v for _, v in logged], part["value"].to_numpy(), rtol=1e-6, atol=1e-30)
        assert run.exit_code == 0 and run.tags == []


def test_the_runs_share_the_jobs_group_and_hold_its_config(job):
    out, summary, cfg = job
    runs = offline_runs(out)
    group = "/".join(out.resolve().parts[-2:])
    assert {(r.group, r.job_type, r.project) for r in runs.values()} == {(group, "job", "toy-quanta")}
    for member, values in enumerate(expand(cfg)):
        config = runs[monitors.run_names(expand(cfg))[member]].config
        assert config["member"] == member and config["job_dir"] == str(out)
        assert config["seed"] == values["seed"] and config["optim.lr"] == pytest.approx(values["optim.lr"])
        assert config["task.name"] == "sparse_parity" and config["train.steps"] == 60 and config["train.wandb"] is True
        assert config["ensemble.lr"] == [1e-2, 3e-2] and config["model.width"] == 16


def test_the_figures_are_images_of_the_written_files(job):
    out, summary, _ = job
    run = offline_runs(out)["figures"]
    ((step, row),) = run.history
    pngs = sorted(out.glob("*.png"))
    assert step == summary["steps"] and [p.name for p in pngs] == ["curves.png"]
    image = row["curves"]
    assert image["_type"] == "image-file" and image["width"] > 100 and image["height"] > 100
    assert (run.folder / "files" / image["path"]).read_bytes() == pngs[0].read_bytes()


def test_a_sweeps_job_is_named_in_the_sweeps_group(tmp_path, offline):
    """Hydra writes multirun.yaml into the sweep's folder: the job's folder is its W&B job type."""
    sweep = tmp_path / "multirun" / "grok" / "2026-01-02_03-04-05"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    summary = app.run_job(tiny_config(train={"wandb": True, "wandb_project": "mine"}), sweep / "3")
    assert "wandb_error" not in summary
    runs = offline_runs(sweep / "3")
    assert sorted(runs) == ["3/figures", "3/m0"]
    assert {(r.group, r.job_type, r.project) for r in runs.values()} == {("grok/2026-01-02_03-04-05", "3", "mine")}


def _result(steps, values, resumed_from=None):
    return SimpleNamespace(steps=list(steps), resumed_from=resumed_from, members=[{"seed": 0}],
                           logs={"test_loss": [np.array([v]) for v in values],
                                 "subtask_acc": [np.array([[v, 2 * v]]) for v in values]})


def test_a_resumed_job_starts_new_runs_with_every_step_and_the_stopped_ones_end_failed(tmp_path, offline):
    """The stopped job logged steps 0-30 and saved its checkpoint at step 10; the resumed job's
    runs hold every step from 0 (the checkpoint's and its own), tagged resumed."""
    from toy_quanta.monitors.wandb import WandbLog

    cfg = tiny_config(train={"wandb": True})
    stopped = WandbLog(tmp_path, [{"seed": 0}], cfg)
    stopped.scalars(_result([0, 10], [1.0, 0.9]))
    stopped.scalars(_result([0, 10, 20, 30], [1.0, 0.9, 0.8, 0.7]))  # only 20 and 30 are new
    stopped.close(failed=True)
    (first,) = all_runs(tmp_path)
    resumed = WandbLog(tmp_path, [{"seed": 0}], cfg)
    resumed.scalars(_result([0, 10, 20, 30, 40], [1.0, 0.9, 0.5, 0.4, 0.3], resumed_from=10))
    resumed.close()
    (second,) = [r for r in all_runs(tmp_path) if r.folder != first.folder]
    assert first.name == second.name == "m0"
    assert first.exit_code == 1 and first.tags == [] and "resumed_from" not in first.config
    assert [(s, round(v, 6)) for s, v in first.series("test_loss")] == [(0, 1.0), (10, 0.9), (20, 0.8), (30, 0.7)]
    assert second.exit_code == 0 and second.tags == ["resumed"] and second.config["resumed_from"] == 10
    assert [(s, round(v, 6)) for s, v in second.series("test_loss")] == [(0, 1.0), (10, 0.9), (20, 0.5), (30, 0.4),
                                                                         (40, 0.3)]
    assert [round(v, 6) for _, v in second.series("subtask_acc/01")] == [2.0, 1.8, 1.0, 0.8, 0.6]


def _init_fails(wandb, monkeypatch):
    def unreachable(*args, **kwargs):
        raise wandb.errors.CommError("no route to api.wandb.ai")

    monkeypatch.setattr(wandb, "init", unreachable)
    return "CommError: no route to api.wandb.ai"


def _log_fails(wandb, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", full)
    return "OSError: [Errno 28] No space left on device"


@pytest.mark.parametrize("breaks", [_init_fails, _log_fails], ids=["init", "log"])
def test_a_failing_wandb_never_fails_the_run(tmp_path, offline, monkeypatch, breaks):
    """The job completes and keeps its results; summary.json says why W&B stopped."""
    import wandb

    error = breaks(wandb, monkeypatch)
    cfg = tiny_config(train={"wandb": True}, ensemble={"seeds": 2})
    summary = app.run_job(cfg, tmp_path / "job")
    assert summary["status"] == "completed" and summary["wandb_error"] == error
    assert json.loads((tmp_path / "job" / "summary.json").read_text())["wandb_error"] == error
    frame = pd.read_parquet(tmp_path / "job" / "metrics.parquet")
    assert sorted(frame["member"].unique()) == [0, 1] and (tmp_path / "job" / "checkpoint.msgpack").is_file()
    assert (tmp_path / "job" / "curves.png").is_file()


def test_without_wandb_the_job_refuses_before_training(tmp_path, monkeypatch):
    """W&B is an optional extra: train.wandb=true without it is a ConfigError saying how to install it."""
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    monkeypatch.setattr(app, "fit", no_training)
    with pytest.raises(ConfigError) as info:
        app.run_job(tiny_config(train={"wandb": True}), tmp_path)
    assert info.value.key == "train.wandb" and "pip install toy-quanta[wandb]" in str(info.value)
    assert "\n" not in str(info.value)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("ConfigError: train.wandb=True")
    assert not (tmp_path / "metrics.parquet").exists() and not (tmp_path / "wandb").exists()
    validate(tiny_config())  # a job that does not ask for W&B does not need it


@pytest.mark.parametrize("values,key,allowed", [
    ({"wandb": "yes"}, "train.wandb", "true or false"),
    ({"wandb": 1}, "train.wandb", "true or false"),
    ({"wandb_project": "team/grokking"}, "train.wandb_project", "none of / \\ # ? % :"),
    ({"wandb_project": ""}, "train.wandb_project", "1 to 128 characters"),
    ({"wandb_project": "x" * 129}, "train.wandb_project", "1 to 128 characters"),
    ({"wandb_project": 3}, "train.wandb_project", "a W&B project name"),
])
def test_a_bad_wandb_setting_names_key_value_and_what_is_allowed(values, key, allowed):
    with pytest.raises(ConfigError) as info:
        validate(tiny_config(train=values))
    message = str(info.value)
    assert info.value.key == key and message.startswith(f"{key}=") and allowed in message
    assert repr(values[key.removeprefix("train.")]) in message
