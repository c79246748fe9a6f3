"""One job (toy_quanta.job): run_job in-process (validation before any compilation, the files it
writes, a failure during training, train.checkpoint=false, a divergent member) and its helpers
(override_columns, to_config)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

import toy_quanta.job as app
from conftest import grid, read_summary, sparse_parity, symbol_add, teacher, tiny_config, with_values
from toy_quanta import results
from toy_quanta.config import Config, validate
from toy_quanta.engine.loop import FitResult
from toy_quanta.errors import ConfigError
from toy_quanta.models.mlp import n_params

JOB_FILES = ("summary.json", "metrics.parquet", "curves.png", "config.yaml", "checkpoint.msgpack")


SCALARS = ("train_loss", "train_acc", "test_loss", "test_acc", "param_norm", "alive")

def _no_fit(*args, **kwargs):
    pytest.fail("fit was called: training started although the config is invalid")


# --- helpers of the job ----------------------------------------------------------------------

def test_override_columns_parse_swept_values():
    """Swept values become typed columns; hydra.*, ensemble.*, per-member keys and settings that are
    not science values (name, train.progress, train.checkpoint) are left out."""
    cols = app.override_columns(["model.width=16", "optim.lr=0.01", "seed=3", "optim=sgd",
                                 "name=abc", "hydra.sweep.dir=/x", "hydra/launcher=vmap", "ensemble.lr=[0.1,0.2]",
                                 "+model.activation=tanh", "train.progress=false", "train.checkpoint=false",
                                 "task.alpha=0.5", "model.control_gather=false"])
    assert cols == {"model.width": 16, "optim": "sgd", "model.activation": "tanh", "model.control_gather": False}
    assert isinstance(cols["model.width"], int) and cols["model.control_gather"] is False


def test_to_config_drops_the_hydra_node_and_types_the_config():
    from omegaconf import OmegaConf

    cfg = tiny_config()
    dcfg = OmegaConf.structured(cfg)
    from omegaconf import open_dict
    with open_dict(dcfg):
        dcfg["hydra"] = {"run": {"dir": "x"}}
    typed = app.to_config(dcfg)
    assert typed == cfg
    assert app.to_config(cfg) is cfg


# --- run_job in-process ------------------------------------------------------------------------

def test_invalid_config_fails_before_any_compilation(tmp_path, monkeypatch):
    """run_job on a bad value raises ConfigError without calling fit, and summary.json says failed,
    naming the key and the value."""
    monkeypatch.setattr(app, "fit", _no_fit)
    cfg = tiny_config(task={"k": 99})
    with pytest.raises(ConfigError, match=r"task\.k=99"):
        app.run_job(cfg, tmp_path / "job")
    summary = read_summary(tmp_path / "job")
    assert summary["status"] == "failed"
    assert "ConfigError" in summary["error"] and "task.k=99" in summary["error"]
    assert summary["steps"] == 0
    assert (tmp_path / "job" / "config.yaml").exists()
    assert not (tmp_path / "job" / "metrics.parquet").exists()


def test_failure_during_training_keeps_partial_metrics(tmp_path, monkeypatch):
    """If training raises after some log steps, summary.json says failed (with the error) and the
    metrics logged so far stay in metrics.parquet."""
    def fit_then_crash(cfg, members, on_log=None, **_):
        r = FitResult(members=list(members), task=cfg.task.name)
        for step in (0, 20):
            r.steps.append(step)
            r.steps_done = step
            for name in SCALARS:
                r.logs.setdefault(name, []).append(np.full(len(members), 0.5, np.float32))
            on_log(r)
        raise RuntimeError("out of memory at step 21")

    monkeypatch.setattr(app, "fit", fit_then_crash)
    with pytest.raises(RuntimeError):
        app.run_job(tiny_config(), tmp_path)
    summary = read_summary(tmp_path)
    assert summary["status"] == "failed" and "out of memory at step 21" in summary["error"]
    assert summary["steps"] == 20
    frame = pd.read_parquet(tmp_path / "metrics.parquet")
    assert sorted(frame["step"].unique().tolist()) == [0, 20]


def test_checkpoint_false_writes_no_checkpoint(tmp_path, monkeypatch):
    """train.checkpoint=false: every other file is written, checkpoint.msgpack is not (a stand-in fit
    returns a finished two-step result, so nothing compiles)."""
    def fake_fit(cfg, members, on_log=None, **_):
        r = FitResult(members=list(members), task=cfg.task.name, steps=[0, 60], steps_done=60, alive=np.ones(len(members), bool),
                      diverged_step=-np.ones(len(members), np.int32))
        for name in SCALARS:
            r.logs[name] = [np.full(len(members), v, np.float32) for v in (0.7, 0.3)]
        r.logs["subtask_loss"] = [np.full((len(members), cfg.task.n_tasks), v, np.float32) for v in (0.7, 0.01)]
        return r

    monkeypatch.setattr(app, "fit", fake_fit)
    summary = app.run_job(tiny_config(train={"checkpoint": False}), tmp_path)
    assert not (tmp_path / "checkpoint.msgpack").exists()
    for name in JOB_FILES:
        if name != "checkpoint.msgpack":
            assert (tmp_path / name).is_file(), name
    assert summary["members"][0]["final"]["subtasks_learned"] == tiny_config().task.n_tasks
    assert summary["n_diverged"] == 0


@pytest.fixture(scope="module")
def divergent_job(tmp_path_factory):
    """A real job: an sgd ensemble whose second member has an absurd lr."""
    out = tmp_path_factory.mktemp("divergent_job")
    cfg = tiny_config(optim={"name": "sgd", "lr": 0.5}, ensemble={"lr": [0.5, 1e30]})
    summary = app.run_job(cfg, out, ["model.width=16"])
    return cfg, out, summary


def test_run_job_writes_every_file(divergent_job):
    cfg, out, summary = divergent_job
    for name in JOB_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "tensorboard").exists()  # train.tensorboard is off by default
    assert read_summary(out) == json.loads(json.dumps(summary))
    assert summary["status"] == "completed" and summary["steps"] == cfg.train.steps
    assert summary["n_members"] == 2
    assert summary["n_params"] == n_params(cfg.task.n_tasks, cfg.task.n, cfg.model.width, cfg.model.depth)
    assert summary["swept"] == {"model.width": 16}
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["optim"]["name"] == "sgd" and written["ensemble"]["lr"] == [0.5, 1e30]


def test_summary_flags_the_divergent_member(divergent_job):
    """summary.json: the absurd-lr member has diverged True and an integer diverged_step; the other
    trained normally."""
    cfg, out, summary = divergent_job
    good, bad = summary["members"]
    assert summary["n_diverged"] == 1
    assert bad["optim.lr"] == 1e30 and bad["diverged"] is True
    assert isinstance(bad["diverged_step"], int) and 0 <= bad["diverged_step"] < cfg.train.steps
    assert good["diverged"] is False and good["diverged_step"] is None
    assert math.isfinite(good["final"]["test_loss"]) and good["final"]["test_loss"] < math.log(2)


def test_metrics_and_checkpoint_agree_with_the_summary(divergent_job):
    """metrics.parquet's last test loss is the summary's; the checkpoint holds both members' params
    (finite for the divergent one too) with the model's shapes."""
    cfg, out, summary = divergent_job
    frame = pd.read_parquet(out / "metrics.parquet")
    last = frame[(frame["metric"] == "test_loss") & (frame["step"] == cfg.train.steps)].sort_values("member")
    np.testing.assert_allclose(last["value"].to_numpy()[0], summary["members"][0]["final"]["test_loss"], rtol=1e-6)
    assert sorted(frame["optim.lr"].unique().tolist()) == [0.5, 1e30]
    alive = frame[(frame["metric"] == "alive") & (frame["member"] == 1)].sort_values("step")
    d = summary["members"][1]["diverged_step"]
    np.testing.assert_array_equal(alive["value"].to_numpy(), [1.0 if s <= d else 0.0 for s in alive["step"]])
    ck = results.load_checkpoint(out / "checkpoint.msgpack")
    assert np.asarray(ck["inp"]["kernel"]).shape == (2, cfg.task.n_tasks + cfg.task.n, cfg.model.width)
    for leaf in (ck["inp"]["kernel"], ck["inp"]["bias"], ck["out"]["kernel"], ck["out"]["bias"]):
        assert np.all(np.isfinite(np.asarray(leaf)))


# --- a bad value of a task, model, optimiser or phase setting stops the job before training ------



def _bad_config(make, values) -> Config:
    return with_values(make(), **{k.replace(".", "__"): v for k, v in values.items()})


def _id(case) -> str:
    return ",".join(f"{k}={v}" for k, v in case[1].items())


# (base config, {key: value}, the key the error names, text of what is allowed): some of
# tests/test_config.py's BAD_SETTINGS, one per kind of setting
STOPS = [
    (teacher, {"optim.fixed_norm": 0.0}, "optim.fixed_norm", "positive"),
    (teacher, {"optim.embed_lr": 1e-3}, "optim.embed_lr", "model=dense_mlp"),
    (sparse_parity, {"optim.embed_lr": 1e-3}, "optim.embed_lr", "model=mlp"),
    (symbol_add, {"task.train_fraction": 0.0}, "task.train_fraction", "(0, 1)"),
    (symbol_add, {"task.p": 2, "task.train_fraction": 0.9}, "task.train_fraction", "3 pairs"),
    (teacher, {"task.tolerance": 0.0}, "task.tolerance", "positive"),
    (grid, {"phase.threshold": 0.0}, "phase.threshold", "positive"),
    (grid, {"phase.gap_steps": -1}, "phase.gap_steps", ">= 0"),
]


@pytest.mark.parametrize("make,values,key,allowed", STOPS, ids=[_id(c) for c in STOPS])
def test_the_job_stops_before_training(tmp_path, monkeypatch, make, values, key, allowed):
    """In-process through the app's job function: the error comes before fit is called, and the
    job directory says why it failed (and holds no metrics)."""
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(app, "fit", no_training)
    with pytest.raises(ConfigError) as info:
        app.run_job(_bad_config(make, values), tmp_path)
    assert info.value.key == key
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith(f"ConfigError: {key}=")
    assert not (tmp_path / "metrics.parquet").exists()


# --- the output directory: resume, completed, another config; unknown keys ---------------------

def test_an_unknown_key_is_refused_naming_it(tmp_path):
    """`toy-quanta +no_such_key=1` and a misspelt nested key: ConfigError naming the key (with the
    nearest real key), before anything is written."""
    from omegaconf import OmegaConf, open_dict

    for key, value, hint in (("no_such_key", 1, "no such key"), ("train.stepz", 5, "did you mean train.steps")):
        dcfg = OmegaConf.structured(tiny_config())
        with open_dict(dcfg):
            OmegaConf.update(dcfg, key, value, force_add=True)
        with pytest.raises(ConfigError, match=rf"{key}={value}.*{hint}"):
            app.run_job(dcfg, tmp_path / "job")
        assert not (tmp_path / "job").exists()


def test_a_completed_run_is_not_trained_again(tmp_path, monkeypatch):
    cfg = tiny_config()
    first = app.run_job(cfg, tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    monkeypatch.setattr(app, "fit", _no_fit)
    again = app.run_job(cfg, tmp_path)
    assert again == json.loads(json.dumps(first, default=float)) or again["members"] == read_summary(tmp_path)["members"]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps


def test_a_directory_of_another_config_is_refused_and_left_alone(tmp_path, monkeypatch):
    cfg = tiny_config()
    app.run_job(cfg, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    monkeypatch.setattr(app, "fit", _no_fit)
    other = tiny_config(model={"width": 12}, train={"steps": 30})
    with pytest.raises(ConfigError, match=r"hydra\.run\.dir=.*another config \(model\.width: 16 there, 12 here, "
                                          r"train\.steps: .* there, 30 here\)"):
        app.run_job(other, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    # settings that do not change the science (progress bar, checkpoint interval) do not count
    assert app.run_job(tiny_config(train={"progress": False, "checkpoint_every_s": 1.0}), tmp_path)["status"] == "completed"


def test_a_corrupt_checkpoint_stops_the_job_naming_the_file_and_keeps_it(tmp_path):
    from toy_quanta.errors import RunFileError

    cfg = tiny_config()
    (tmp_path / "train_state.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(RunFileError, match=r"train_state\.npz: not a readable checkpoint"):
        app.run_job(cfg, tmp_path)
    assert (tmp_path / "train_state.npz").read_bytes() == b"PK\x03\x04 not a zip"
    assert read_summary(tmp_path)["status"] == "failed"


def test_every_reader_names_a_truncated_file(tmp_path):
    """qdg/genic (load_run), progress (load_snapshots), lu (read_metrics), config.yaml: a clear
    RunFileError naming the file, not a msgpack, Arrow or YAML traceback."""
    from toy_quanta.errors import RunFileError

    app.run_job(tiny_config(train={"snapshots": True}), tmp_path)
    for name in ("checkpoint.msgpack", "snapshots.msgpack", "metrics.parquet"):
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RunFileError, match=r"checkpoint\.msgpack: not a readable parameter checkpoint"):
        results.load_run(tmp_path)
    with pytest.raises(RunFileError, match=r"snapshots\.msgpack: not a readable snapshots file"):
        results.load_snapshots(tmp_path)
    with pytest.raises(RunFileError, match=r"metrics\.parquet: not a readable metrics table"):
        results.read_metrics(tmp_path / "metrics.parquet")
    (tmp_path / "config.yaml").write_text("task: [unclosed\n")
    with pytest.raises(RunFileError, match=r"config\.yaml: not a readable config\.yaml"):
        results.load_config(tmp_path)


def test_the_model_default_follows_the_task(hydra_compose):
    """docs/configuration.md: the model default is the task's first. `'~experiment' task=mnist`
    composes model=mlp (the group default), which mnist cannot train: the job takes dense_mlp, with
    the command line's model.* values; a model named on the command line is left to validate."""
    from toy_quanta.job import follow_task_model

    overrides = ["~experiment", "task=mnist", "model.width=3"]
    dcfg = hydra_compose(overrides)
    assert dcfg.model.name == "mlp"
    follow_task_model(dcfg, overrides)
    cfg = app.to_config(dcfg)
    validate(cfg)
    assert cfg.model.name == "dense_mlp" and cfg.model.width == 3 and cfg.model.depth == 2

    named = ["~experiment", "task=mnist", "model=mlp"]
    dcfg = hydra_compose(named)
    follow_task_model(dcfg, named)
    with pytest.raises(ConfigError, match="model='mlp' is not allowed: a model for task mnist"):
        validate(app.to_config(dcfg))

    kept = ["~experiment", "task=modular", "model=embed_mlp"]  # a model the task trains is kept
    dcfg = hydra_compose(kept)
    follow_task_model(dcfg, kept)
    assert dcfg.model.name == "embed_mlp"
