"""The Hydra app (toy_quanta.app) and both launchers on real multiruns of the console script."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

import toy_quanta.job as app
from conftest import read_summary, run_app, tiny_config
from toy_quanta import results
from toy_quanta.errors import ConfigError
from toy_quanta.engine.loop import FitResult
from toy_quanta.models.mlp import n_params

JOB_FILES = ("summary.json", "metrics.parquet", "curves.png", "config.yaml", "checkpoint.msgpack")


SCALARS = ("train_loss", "train_acc", "test_loss", "test_acc", "param_norm", "alive")

def _no_fit(*args, **kwargs):
    pytest.fail("fit was called: training started although the config is invalid")


# --- helpers of the app ----------------------------------------------------------------------

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


def test_vmap_group_key_splits_on_shapes_only():
    """Jobs differing only in per-member scalars (seed, alpha, D, init scale, lr, weight decay), the
    ensemble lists, name or progress share a group key; any other key (width, steps, optimiser,
    online against finite data, batch size) splits them."""
    from hydra_plugins.toy_quanta_vmap_launcher.vmap_launcher import group_key

    base = group_key(tiny_config())
    same = [tiny_config(seed=5), tiny_config(task={"alpha": 0.9}), tiny_config(model={"init_scale": 3.0}),
            tiny_config(optim={"lr": 0.5, "weight_decay": 0.1}), tiny_config(name="other"),
            tiny_config(train={"progress": True}), tiny_config(ensemble={"seeds": 3, "lr": [0.1, 0.2]})]
    for cfg in same:
        assert group_key(cfg) == base, cfg
    finite = group_key(tiny_config(task={"D": 100}))
    for cfg in (tiny_config(task={"D": 5000}), tiny_config(ensemble={"D": [10, 20]}), tiny_config(task={"D": 7}, seed=3)):
        assert group_key(cfg) == finite, cfg
    different = [tiny_config(model={"width": 32}), tiny_config(train={"steps": 61}), tiny_config(optim={"name": "sgd"}),
                 tiny_config(task={"D": 100}), tiny_config(train={"batch_size": 32}), tiny_config(model={"depth": 2}),
                 tiny_config(task={"subset_seed": 1})]
    keys = [group_key(cfg) for cfg in different]
    assert base not in keys and len(set(keys)) == len(keys)


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


def test_single_run_config_error_exits_2_with_a_message(tmp_path):
    """The console script (a subprocess): a bad value exits with status 2, prints the key and the
    value, and writes a failed summary.json; nothing trains (it returns within seconds)."""
    proc = run_app(["optim.lr=-1", f"hydra.run.dir={tmp_path / 'run'}", "train.progress=false"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "optim.lr=-1" in proc.stderr
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "failed" and "optim.lr=-1" in summary["error"]
    assert not (tmp_path / "run" / "metrics.parquet").exists()


def test_failure_during_training_keeps_partial_metrics(tmp_path, monkeypatch):
    """If training raises after some log steps, summary.json says failed (with the error) and the
    metrics logged so far stay in metrics.parquet."""
    def fit_then_crash(cfg, members, on_log=None):
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
    def fake_fit(cfg, members, on_log=None):
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


# --- real multiruns (subprocesses; fixtures in conftest.py) ----------------------------------

def _check_job_dirs(sweep_dir, n_jobs):
    """Job directories 0 .. n_jobs-1 are complete."""
    for j in range(n_jobs):
        job = sweep_dir / str(j)
        assert job.is_dir(), job
        for name in JOB_FILES:
            assert (job / name).is_file(), job / name
        assert (job / ".hydra").is_dir()
        for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
            assert (job / ".hydra" / name).is_file()
        assert read_summary(job)["status"] == "completed"
    assert (sweep_dir / "multirun.yaml").is_file()


def _metrics(job_dir):
    frame = pd.read_parquet(job_dir / "metrics.parquet")
    frame["metric"] = frame["metric"].astype(str)
    return frame.sort_values(["member", "metric", "step", "subtask"]).reset_index(drop=True)


@pytest.mark.parametrize("sweep", ["basic_sweep", "vmap_sweep"])
def test_multirun_writes_two_job_directories(sweep, request):
    """seed=0,1 with either launcher: directories 0 and 1, each with summary.json (completed),
    metrics.parquet, curves.png, config.yaml, checkpoint.msgpack and .hydra/, and its own seed."""
    sweep_dir = request.getfixturevalue(sweep)
    _check_job_dirs(sweep_dir, 2)
    for j in (0, 1):
        job = sweep_dir / str(j)
        assert yaml.safe_load((job / "config.yaml").read_text())["seed"] == j
        assert f"seed={j}" in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        summary = read_summary(job)
        assert summary["members"][0]["seed"] == j and summary["steps"] == 40 and summary["n_members"] == 1
        assert set(_metrics(job)["seed"]) == {j}


def test_vmap_launcher_trains_the_jobs_as_one_group(vmap_sweep, basic_sweep):
    """The vmap launcher puts both same-shaped jobs in one group of two members; the basic launcher
    records no group."""
    for j in (0, 1):
        group = read_summary(vmap_sweep / str(j))["group"]
        assert group["group"] == 0 and group["group_jobs"] == [0, 1] and group["group_members"] == 2
        assert read_summary(basic_sweep / str(j))["group"] is None


def test_vmap_launcher_gives_the_results_of_jobs_run_one_by_one(vmap_sweep, basic_sweep):
    """Every metric row and every final parameter of each vmap job equals the basic launcher's."""
    for j in (0, 1):
        a, b = _metrics(basic_sweep / str(j)), _metrics(vmap_sweep / str(j))
        assert len(a) == len(b) > 0
        for col in ("member", "step", "metric", "subtask", "seed", "optim.lr"):
            assert a[col].tolist() == b[col].tolist(), col
        np.testing.assert_allclose(b["value"].to_numpy(), a["value"].to_numpy(), rtol=1e-4, atol=1e-5)
        ca = results.load_checkpoint(basic_sweep / str(j) / "checkpoint.msgpack")
        cb = results.load_checkpoint(vmap_sweep / str(j) / "checkpoint.msgpack")
        for layer in ("inp", "out"):
            for p in ("kernel", "bias"):
                np.testing.assert_allclose(np.asarray(cb[layer][p]), np.asarray(ca[layer][p]), rtol=1e-4, atol=1e-5)
    # the two jobs themselves differ (different seeds), so the comparison is not trivial
    v0, v1 = _metrics(vmap_sweep / "0"), _metrics(vmap_sweep / "1")
    assert not np.allclose(v0["value"].to_numpy(), v1["value"].to_numpy())


def test_vmap_sweep_over_a_shape_key_forms_two_groups(vmap_width_sweep):
    """model.width=8,16 cannot share a program: two groups of one member, both directories written,
    each with its own width in the config, the parameters and the swept column."""
    _check_job_dirs(vmap_width_sweep, 2)
    groups = []
    for j, width in ((0, 8), (1, 16)):
        job = vmap_width_sweep / str(j)
        summary = read_summary(job)
        groups.append(summary["group"]["group"])
        assert summary["group"]["group_members"] == 1 and summary["group"]["group_jobs"] == [j]
        assert yaml.safe_load((job / "config.yaml").read_text())["model"]["width"] == width
        assert summary["n_params"] == n_params(4, 8, width, 1)
        assert summary["swept"]["model.width"] == width
        assert set(_metrics(job)["model.width"]) == {width}
        assert np.asarray(results.load_checkpoint(job / "checkpoint.msgpack")["inp"]["kernel"]).shape == (1, 12, width)
    assert sorted(groups) == [0, 1]


def test_vmap_sweep_invalid_job_fails_alone(vmap_width_sweep):
    """The sweep's third job (model.width=0) gets its own directory with a failed summary.json naming
    the key and value, and no metrics; the valid jobs completed (above), the sweep exited non-zero."""
    job = vmap_width_sweep / "2"
    assert (job / ".hydra").is_dir() and (job / "config.yaml").is_file()
    summary = read_summary(job)
    assert summary["status"] == "failed"
    assert "ConfigError" in summary["error"] and "model.width=0" in summary["error"]
    assert not (job / "metrics.parquet").exists() and not (job / "checkpoint.msgpack").exists()
