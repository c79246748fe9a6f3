"""`toy-quanta-analyze` (toy_quanta.cli.analyze) end to end on tiny sweeps made here: a width sweep, a data sweep (one job,
ensemble.D) and a step run, analysed alone and together."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import _multirun
from toy_quanta.cli import analyze
from toy_quanta.analysis.sweep import load_sweeps

TINY = ["task.n_tasks=6", "task.n=8", "task.k=2", "task.alpha=0.4", "task.test_size=600", "task.per_task_test=30",
        "optim.lr=0.02", "train.batch_size=64", "train.log_count=8", "ensemble.seeds=2", "name=analyzetest"]


SWEEPS = {  # name: (overrides, swept)
    "params": ([*TINY, "train.steps=150", "hydra/launcher=vmap"], ["model.width=2,4,8,32"]),
    "data": ([*TINY, "train.steps=150", "model.width=32", "ensemble.D=[20,80,320,1280]"], ["seed=0"]),
    "steps": ([*TINY, "train.steps=300", "model.width=32"], ["seed=0"]),
}


def background_runs(items, tmp_path_factory) -> dict:
    """The three sweeps, independent subprocesses, started at the start of the session side by side
    (conftest._background_runs) when a selected test needs them."""
    if all(item.originalname == "test_analyze_refuses_bad_input" for item in items):
        return {}
    return {name: lambda name=name, extra=extra, sweep=sweep: _multirun(tmp_path_factory, name, extra, sweep)
            for name, (extra, sweep) in SWEEPS.items()}


@pytest.fixture(scope="module")
def sweeps(background):
    return {name: background[name].result() for name in SWEEPS}


def test_sweep_tables_know_each_members_scale(sweeps):
    s = load_sweeps([sweeps["params"], sweeps["data"]])
    finite, online = s.runs[s.runs["D"].notna()], s.runs[s.runs["D"].isna()]
    assert sorted(finite["D"]) == [20, 20, 80, 80, 320, 320, 1280, 1280]
    assert sorted(set(online["width"])) == [2, 4, 8, 32] and len(online) == 8
    assert (online["n_params"] == (6 + 8 + 1) * online["width"] + (online["width"] + 1) * 2).all()
    steps, sub = s.subtask_curve(online["run"].iloc[0])
    assert sub.shape == (len(steps), 6)


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_analyze_params_and_data_together(sweeps, tmp_path, capsys):
    out = tmp_path / "both"
    assert analyze.main([str(sweeps["params"]), str(sweeps["data"]), "--out", str(out), "--bootstrap", "200"]) == 0
    line = _last_json(capsys)
    by_name = {r["name"]: r for r in line["exponents"]}
    assert {"alpha_N", "alpha_D"} <= set(by_name)
    assert by_name["alpha_N"]["predicted"] == pytest.approx(0.4)
    assert by_name["alpha_D"]["predicted"] == pytest.approx(0.4 / 1.4)
    for r in line["exponents"]:
        lo, hi = r["ci"]
        assert np.isfinite(r["measured"]) and lo <= hi
    report = (out / "report.md").read_text()
    assert "loss vs parameters N" in report and "loss vs training samples D" in report
    assert "agrees" in report or "disagrees" in report
    for name in ("loss_N_0.4.png", "emergence_N_0.4.png", "loss_D_0.4.png", "emergence_D_0.4.png",
                 "other_studies.png", "convergence_0.4.png"):
        assert (out / name).stat().st_size > 10_000, name
    saved = json.loads((out / "report.json").read_text())
    assert saved["exponents"] == line["exponents"]


def test_analyze_a_step_run_fits_loss_against_steps(sweeps, capsys):
    assert analyze.main([str(sweeps["steps"]), "--bootstrap", "200"]) == 0
    names = [r["name"] for r in _last_json(capsys)["exponents"]]
    assert "alpha_S" in names and "alpha_N" not in names
    assert (sweeps["steps"] / "analysis" / "loss_S_0.4.png").exists()


def test_analyze_refuses_bad_input(tmp_path, capsys):
    assert analyze.main([str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert analyze.main([str(tmp_path / "empty")]) == 2
    assert "no completed job" in capsys.readouterr().err
