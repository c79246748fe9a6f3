"""Snapshots over training (toy_quanta.results), the progress measures (toy_quanta.analysis.progress) and `toy-quanta-progress` (toy_quanta.cli.progress) on a tiny real grokking run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import run_app, tiny_config
from toy_quanta import results
from toy_quanta.analysis import progress
from toy_quanta.cli import progress as progress_cli

TINY = ["experiment=grok_modadd_progress", "task.p=11", "train.steps=300", "train.log_count=12", "train.progress=false",
        "model.d_embed=16", "model.width=32", "ensemble.seeds=2"]


def background_runs(items, tmp_path_factory) -> dict:
    """The tiny grokking run, started at the start of the session (conftest._background_runs) when a
    selected test needs it: (its directory, the finished app process)."""
    if all(item.originalname == "test_runs_it_cannot_measure_are_refused" for item in items):
        return {}
    tmp = tmp_path_factory.mktemp("progress")
    return {"run": lambda: (tmp / "run", run_app([*TINY, f"hydra.run.dir={tmp / 'run'}"], cwd=tmp))}


@pytest.fixture(scope="module")
def run_dir(background) -> Path:
    run, proc = background["run"].result()
    assert proc.returncode == 0, proc.stderr
    return run


def test_snapshots_hold_every_log_step_and_end_at_the_checkpoint(run_dir):
    steps, params = results.load_snapshots(run_dir)
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    assert list(steps) == sorted(metrics["step"].unique())
    final = results.load_checkpoint(run_dir / "checkpoint.msgpack")
    for snap, last in zip(jax.tree.leaves(params), jax.tree.leaves(final)):
        assert snap.shape == (len(steps), *last.shape) and last.shape[0] == 2
        np.testing.assert_array_equal(snap[-1], last)


def test_the_job_writes_progress_figures_for_member_0(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    head = summary["progress"]
    assert head["member"]["seed"] == 0 and head["steps"] == 300 and head["op"] == "add"
    for name in ("progress.png", "fourier.png", "progress.csv", "report.json"):
        assert (run_dir / "progress" / name).stat().st_size > 0, name
    assert json.loads((run_dir / "progress" / "report.json").read_text()) == head


@pytest.mark.parametrize("member", [0, 1])
def test_recomputed_losses_and_accuracies_match_the_engines_metrics(run_dir, member):
    """The progress measures evaluate the saved parameters in float64 NumPy; the engine evaluated
    the same parameters in JAX while training."""
    cfg, steps, params, over_training = progress.load(run_dir)
    assert over_training
    pr = progress.measure(cfg, steps, params, member)
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    wide = metrics[metrics["member"] == member].pivot(index="step", columns="metric", values="value").loc[steps]
    np.testing.assert_allclose(pr.train_acc_L, wide["train_acc"], rtol=1e-6)  # the engine's mean is float32
    np.testing.assert_allclose(pr.test_acc_L, wide["test_acc"], rtol=1e-6)
    np.testing.assert_allclose(pr.train_loss_L, wide["train_loss"], rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(pr.test_loss_L, wide["test_loss"], rtol=2e-4)
    np.testing.assert_allclose(pr.weight_norm_L, wide["param_norm"], rtol=1e-5)
    assert pr.norms_LxF.shape == (len(steps), 5) and 0 <= pr.gini_L.min() and pr.gini_L.max() < 1
    assert all(0 <= x <= 1 for x in (*pr.rqi_L, *pr.ring_rqi_L))
    # the restricted logits are a projection of the logits: with no key frequencies at step 0
    # (random init) they keep only each output's mean, so their loss is about ln p
    assert pr.restricted_loss_L is not None and pr.excluded_loss_L is not None


def test_the_command_writes_figures_and_ends_with_json(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    progress_cli.main([str(run_dir), "--member", "1", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    head = json.loads(lines[-1])
    assert head["member"]["seed"] == 1 and head["n_snapshots"] == len(results.load_snapshots(run_dir)[0]) > 10
    assert f"output directory: {out}" in lines
    for name in ("progress.png", "fourier.png", "embedding_ring.png", "progress.csv", "report.json"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "progress.csv")
    assert list(table["step"]) == sorted(table["step"]) and "fourier_norm_5" in table and "excluded_loss" in table


def test_default_output_goes_under_the_run(run_dir, capsys):
    progress_cli.main([str(run_dir)])
    out = Path(capsys.readouterr().out.strip().splitlines()[-2].removeprefix("output directory: "))
    assert out.parent == run_dir / "progress" and (out / "fourier.png").exists()


def test_without_snapshots_the_final_parameters_are_measured(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("snapshots.msgpack", "progress"))
    progress_cli.main([str(copy), "--out", str(tmp_path / "out")])
    head = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert head["n_snapshots"] == 1 and head["steps"] == 300 and "final parameters only" in head["notes"][-1]
    assert not (tmp_path / "out" / "progress.png").exists() and (tmp_path / "out" / "fourier.png").exists()


def _sparse_parity_run(tmp_path: Path) -> Path:
    job = tmp_path / "sp"
    job.mkdir()
    (job / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(tiny_config())))
    return job


@pytest.mark.parametrize("args,message", [
    (["--member", "5"], "--member=5 is not allowed"),
    (["--tol", "0"], "--tol=0.0 is not allowed"),
    (["--key-factor", "-1"], "--key-factor=-1.0 is not allowed"),
])
def test_bad_arguments_get_one_line_errors(run_dir, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        progress_cli.main([str(run_dir), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_runs_it_cannot_measure_are_refused(tmp_path, capsys):
    for run, message in ((tmp_path / "missing", "is not a directory"),
                         (_sparse_parity_run(tmp_path), "a modular arithmetic run")):
        with pytest.raises(SystemExit) as exit_info:
            progress_cli.main([str(run)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
