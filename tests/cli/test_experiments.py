"""Tiny end-to-end runs of the packaged experiments conf/experiment/{effective_toy, phase_toy, lu_modadd,
lu_mnist, omnigrok_teacher_student}.yaml: composed by Hydra and run in-process through the job
function the console app calls (toy_quanta.job.run_job), checking the files each job writes. The
console script itself is exercised in tests/cli/test_app.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from toy_quanta.job import run_job

QUIET = ["train.progress=false", "train.checkpoint=false"]


def _run(tmp_path_factory, experiment: str, overrides: list[str]) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp(experiment)
    overrides = [f"experiment={experiment}", *overrides, *QUIET]
    with initialize_config_module("toy_quanta.conf", version_base=None):
        dcfg = compose("config", overrides=overrides)
    summary = run_job(dcfg, out, overrides)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["status"] == summary["status"] == "completed", on_disk.get("error")
    assert on_disk["name"] == experiment
    for name in ("config.yaml", "metrics.parquet", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    return out, on_disk


def _metric(out: Path, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(out / "metrics.parquet")
    return frame[(frame["metric"] == name) & (frame["subtask"] == -1)]


# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def effective_toy(tmp_path_factory):
    return _run(tmp_path_factory, "effective_toy", ["train.steps=6", "train.log_every=3", "model.width=8",
                                                    "model.depth=1", "ensemble.seeds=1",
                                                    "ensemble.weight_decay=[0.0,5.0]"])


def test_effective_toy_logs_the_representation_and_draws_it(effective_toy):
    out, summary = effective_toy
    assert (out / "representation.png").stat().st_size > 0
    assert [(m["optim.weight_decay"], m["seed"]) for m in summary["members"]] == [(0.0, 0), (5.0, 0)]
    for name in ("rqi", "eff_loss"):
        rows = _metric(out, name)
        assert sorted(rows["step"].unique()) == [0, 3, 6] and len(rows) == 6, name
        assert np.isfinite(rows["value"]).all()
    assert _metric(out, "rqi")["value"].between(0, 1).all() and (_metric(out, "eff_loss")["value"] >= 0).all()
    assert all(m["task.train_fraction"] == 0.82 for m in summary["members"])


@pytest.fixture(scope="module")
def phase_toy(tmp_path_factory):
    return _run(tmp_path_factory, "phase_toy", ["train.steps=6", "train.log_every=3", "model.width=8",
                                                "model.depth=1", "ensemble.lr=[1e-3,1e-2]",
                                                "ensemble.weight_decay=[0.0,1.0]", "phase.gap_steps=2"])


@pytest.mark.slow
def test_phase_toy_writes_the_phase_diagram(phase_toy):
    out, summary = phase_toy
    assert summary["n_members"] == 4
    assert {(m["optim.lr"], m["optim.weight_decay"]) for m in summary["members"]} == {
        (lr, wd) for lr in (1e-3, 1e-2) for wd in (0.0, 1.0)}
    head = summary["phase"]
    assert head["x"] == "optim.lr" and head["y"] == "optim.weight_decay" and head["n_members"] == 4
    assert sum(head["counts"].values()) == 4
    assert set(head["counts"]) == {"comprehension", "grokking", "memorisation", "confusion"}
    assert (out / "phase.png").stat().st_size > 0
    members = pd.read_csv(out / "phase.csv")
    assert len(members) == 4 and set(members["phase"]) <= set(head["counts"])
    assert members["phase"].value_counts().to_dict() == {k: v for k, v in head["counts"].items() if v}
    grid = pd.read_csv(out / "phase_grid.csv")
    assert len(grid) == 4 and set(zip(grid["optim.lr"], grid["optim.weight_decay"])) == {
        (lr, wd) for lr in (1e-3, 1e-2) for wd in (0.0, 1.0)}


def _check_lu(out: Path, summary: dict, norms: list[float]) -> None:
    assert summary["n_members"] == len(norms)
    assert [m["optim.fixed_norm"] for m in summary["members"]] == norms
    head = summary["lu"]
    assert head["w"] == norms and head["n_members"] == len(norms)
    assert min(norms) <= head["w_c"] <= max(norms) and head["w_lo"] <= head["w_c"]
    assert head["w_grid_min"] in norms
    assert (out / "lu.png").stat().st_size > 0
    table = pd.read_csv(out / "lu.csv")
    assert table["w"].tolist() == norms and (table["n"] == 1).all()
    # w_grid_min is where the final test loss is least
    assert head["w_grid_min"] == table["w"][table["test_loss_mean"].idxmin()]
    # every member sat at its fixed norm at every log step
    norm_rows = _metric(out, "param_norm")
    np.testing.assert_allclose(norm_rows["value"], norm_rows["optim.fixed_norm"], rtol=1e-5)


LU_MODADD_NORMS = [10.0, 30.0, 90.0]


@pytest.fixture(scope="module")
def lu_modadd(tmp_path_factory):
    return _run(tmp_path_factory, "lu_modadd", ["task.p=11", "model.d_embed=8", "model.width=16", "train.steps=6",
                                                "train.log_count=3", f"ensemble.fixed_norm={LU_MODADD_NORMS}"])


def test_lu_modadd_writes_the_lu_curves(lu_modadd):
    _check_lu(*lu_modadd, LU_MODADD_NORMS)


LU_MNIST_NORMS = [5.0, 20.0, 80.0]


@pytest.fixture(scope="module")
def lu_mnist(tmp_path_factory):
    return _run(tmp_path_factory, "lu_mnist", ["task.source=embedded", "model.width=16", "model.depth=1",
                                               "train.steps=4", "train.log_count=2",
                                               f"ensemble.fixed_norm={LU_MNIST_NORMS}"])


@pytest.mark.slow
def test_lu_mnist_writes_the_lu_curves(lu_mnist):
    out, summary = lu_mnist
    _check_lu(out, summary, LU_MNIST_NORMS)
    assert all(m["model.init_scale"] == 1.0 for m in summary["members"])  # ensemble.init_scale is null


@pytest.fixture(scope="module")
def omnigrok_teacher_student(tmp_path_factory):
    return _run(tmp_path_factory, "omnigrok_teacher_student", ["model.width=16", "model.depth=1", "task.n_test=200",
                                                               "train.steps=6", "train.log_count=3"])


@pytest.mark.slow
def test_omnigrok_teacher_student_runs_both_scales(omnigrok_teacher_student):
    out, summary = omnigrok_teacher_student
    assert [m["model.init_scale"] for m in summary["members"]] == [1.0, 8.0]
    assert "lu" not in summary and "phase" not in summary
    final = [m["final"] for m in summary["members"]]
    assert all({"train_acc", "test_acc", "train_loss", "test_loss"} <= set(f) for f in final)
    assert all(0.0 <= f["test_acc"] <= 1.0 for f in final)
    # every parameter x 8: the initial norm is 8 times the standard one (same seed)
    norms = _metric(out, "param_norm")
    at0 = norms[norms["step"] == 0].sort_values("member")["value"].to_numpy()
    assert at0[1] / at0[0] == pytest.approx(8.0, rel=1e-5)


# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def grokfast(tmp_path_factory):
    # three of its arms (the config tests compose all five): none, ema and ma kinds in one program
    return _run(tmp_path_factory, "grokfast", ["train.steps=40", "train.log_every=10", "task.p=11",
                                                "model.d_embed=8", "model.width=16", "optim.grokfast_window=5",
                                                "ensemble.seeds=1", "train.batch_size=32", "~ensemble.arms.baseline_ema_wd",
                                                "~ensemble.arms.baseline_ma_wd"])


def test_grokfast_compares_its_arms_in_the_summary_and_a_figure(grokfast):
    out, summary = grokfast
    arms = ["baseline", "ema", "ma"]
    assert [m["arm"] for m in summary["members"]] == arms
    assert [m["optim.grokfast"] for m in summary["members"]] == ["none", "ema", "ma"]
    comparison = summary["arms"]
    assert list(comparison["arms"]) == arms and comparison["baseline"] == "baseline" and comparison["budget"] == 40
    for arm in arms[1:]:
        for level in ("95", "99"):
            assert {"steps", "reached", "geomean", "interval", "speedup", "speedup_interval"} <= set(comparison["arms"][arm][level])
    assert "over ma" in comparison["pairwise"]["ema"]
    assert (out / "arms.png").stat().st_size > 0
    table = pd.read_csv(out / "arms.csv")
    assert list(table["arm"]) == [m["arm"] for m in summary["members"]]
    assert all(m["diagnosis"] in ("generalised", "grokked", "memorised", "overfitting", "not fitted")
               for m in summary["members"])
    assert "not fitted" in summary["diagnosis_rule"]
    frame = pd.read_parquet(out / "metrics.parquet")
    assert set(frame["arm"]) == set(arms)


@pytest.fixture(scope="module")
def collapse(tmp_path_factory):
    return _run(tmp_path_factory, "collapse", ["+collapse_fix=stablemax", "train.steps=20", "train.log_every=10",
                                                "task.p=11", "model.width=16", "ensemble.seeds=1"])


def test_collapse_logs_the_collapse_metrics_with_its_fix(collapse):
    out, summary = collapse
    cfg = summary["members"][0]
    assert summary["n_members"] == 1 and cfg["diagnosis"]
    for name in ("softmax_collapse", "zero_loss", "readout_norm"):
        rows = _metric(out, name)
        assert sorted(rows["step"]) == [0, 10, 20], name
        assert np.isfinite(rows["value"]).all()
    assert _metric(out, "softmax_collapse")["value"].between(0, 1).all()
    config = (out / "config.yaml").read_text()
    assert "loss: stablemax" in config and "loss_dtype: float64" in config and "b2: 0.999" in config
