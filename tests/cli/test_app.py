"""The console app `toy-quanta` (toy_quanta.cli.app) and both launchers (Hydra's basic launcher and
hydra_plugins/toy_quanta_vmap_launcher): config errors of the console script (one line, exit 2, before training), the vmap launcher's
grouping, and real multiruns of the console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import read_summary, run_app, tiny_config
from toy_quanta import results
from toy_quanta.models.mlp import n_params

JOB_FILES = ("summary.json", "metrics.parquet", "curves.png", "config.yaml", "checkpoint.msgpack")
TOY_QUANTA = Path(sys.executable).parent / "toy-quanta"  # the console script of this environment


# --- the console script: a bad value is one line, before anything trains ----------------------

def test_single_run_config_error_exits_2_with_a_message(tmp_path):
    """The console script (a subprocess): a bad value exits with status 2, prints the key and the
    value, and writes a failed summary.json; nothing trains (it returns within seconds)."""
    proc = run_app(["optim.lr=-1", f"hydra.run.dir={tmp_path / 'run'}", "train.progress=false"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "optim.lr=-1" in proc.stderr
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "failed" and "optim.lr=-1" in summary["error"]
    assert not (tmp_path / "run" / "metrics.parquet").exists()


def test_the_console_script_reports_a_bad_threshold_in_one_line(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([str(TOY_QUANTA), "experiment=phase_toy", "phase.threshold=2", f"hydra.run.dir={run}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "phase.threshold=2.0" in lines[0] and "(0, 1]" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (run / "metrics.parquet").exists()
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("override, line", [
    ("model.widht=3", "model.widht=3 is not allowed: no such key in the config (did you mean model.width?)"),
    ("task.alpah=0.3", "task.alpah=0.3 is not allowed: no such key in the config (did you mean task.alpha?)"),
    ("task.alpha=abc", "task.alpha='abc' is not allowed: Value 'abc' of type 'str' could not be converted to Float"),
])
def test_an_override_hydra_cannot_merge_is_one_line_naming_the_key(override, line, tmp_path):
    """A misspelt key without `+`, or a value of the wrong type: Hydra's multi-line report becomes
    the same one line as every other bad value (status 2, no traceback, no HYDRA_FULL_ERROR hint);
    an error that is not about one override (an unknown experiment) is still Hydra's report."""
    proc = subprocess.run([str(TOY_QUANTA), override, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [f"toy-quanta: error: {line}"]
    if override.startswith("model."):
        other = subprocess.run([str(TOY_QUANTA), "experiment=no_such_experiment"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
        assert other.returncode == 1 and "Could not find 'experiment/no_such_experiment'" in other.stderr


# --- the vmap launcher's groups ----------------------------------------------------------------

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


# --- real multiruns (subprocesses; fixtures in conftest.py) ----------------------------------

def _check_job_dirs(sweep_dir, n_jobs, failed=False):
    """Job directories 0 .. n_jobs-1 are complete: every file but the figures, which a multirun's
    jobs draw only when asked (train.figures); the sweep has its one figure instead, unless a job
    failed (Hydra then ends the multirun without its end callbacks: toy-quanta-figures draws it)."""
    for j in range(n_jobs):
        job = sweep_dir / str(j)
        assert job.is_dir(), job
        for name in JOB_FILES:
            assert (job / name).is_file() == (name != "curves.png"), job / name
        assert (job / ".hydra").is_dir()
        for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
            assert (job / ".hydra" / name).is_file()
        assert read_summary(job)["status"] == "completed"
    assert (sweep_dir / "multirun.yaml").is_file()
    assert (sweep_dir / "sweep.png").is_file() != failed
    if not failed:
        assert (sweep_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _metrics(job_dir):
    frame = pd.read_parquet(job_dir / "metrics.parquet")
    frame["metric"] = frame["metric"].astype(str)
    return frame.sort_values(["member", "metric", "step", "subtask"]).reset_index(drop=True)


@pytest.mark.parametrize("sweep", ["basic_sweep", "vmap_sweep"])
def test_multirun_writes_two_job_directories(sweep, request):
    """seed=0,1 with either launcher: directories 0 and 1, each with summary.json (completed),
    metrics.parquet, config.yaml, checkpoint.msgpack and .hydra/ (no figures: sweep.png instead),
    and its own seed."""
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
    _check_job_dirs(vmap_width_sweep, 2, failed=True)
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
