"""After-run analyses as plug-ins (toy_quanta.hooks): a registered analysis runs on every finished
job, a failing one is recorded under its own name and loses nothing the run wrote, and job.py
names no analysis."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd
import pytest

import toy_quanta.job as app
from conftest import symbol_add, tiny_config
from toy_quanta import hooks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registered():
    """Register analyses for one test, and take them out again afterwards."""
    added = []

    def add(key, *args, **kwargs):
        added.append(key)
        return hooks.register_after_run(key, *args, **kwargs)

    yield add
    for key in added:
        hooks._AFTER_RUN.pop(key, None)


def test_a_registered_analysis_reads_the_finished_job_and_adds_to_its_summary(tmp_path, registered):
    seen = {}

    def mean_final_test_loss(run: hooks.Finished):
        seen.update(out_dir=run.out_dir, title=run.title, n=len(run.summary["members"]))
        last = run.frame[(run.frame.metric == "test_loss") & (run.frame.step == run.frame.step.max())]
        return {"mean_test_loss": float(last.value.mean())}

    registered("mean_test_loss", mean_final_test_loss, lines=lambda s: [f"mean test loss {s['mean_test_loss']:.4f}"])
    cfg = tiny_config(ensemble={"seeds": 2})
    summary = app.run_job(cfg, tmp_path)
    assert seen == {"out_dir": tmp_path, "title": seen["title"], "n": 2} and seen["title"].startswith("tiny: ")
    finals = [m["final"]["test_loss"] for m in summary["members"]]  # independently, from the members
    assert summary["mean_test_loss"] == pytest.approx(sum(finals) / 2, rel=1e-6)
    assert json.loads((tmp_path / "summary.json").read_text())["mean_test_loss"] == summary["mean_test_loss"]
    assert f"mean test loss {summary['mean_test_loss']:.4f}" in hooks.report_lines(summary)


def test_a_failing_analysis_is_recorded_under_its_name_and_the_run_keeps_everything(tmp_path, registered):
    def broken(run):
        raise RuntimeError("the disk of my analysis is full")

    registered("my_check", broken, order=15)  # between the diagnosis and the task's own
    summary = app.run_job(symbol_add(), tmp_path)
    assert summary["status"] == "completed"
    assert summary["my_check_error"] == "RuntimeError: the disk of my analysis is full"
    assert "progress_error" not in summary and "after_run_error" not in summary
    assert all("diagnosis" in m for m in summary["members"])  # the other analyses ran
    for name in ("metrics.parquet", "checkpoint.msgpack", "config.yaml", "curves.png"):
        assert (tmp_path / name).is_file(), name
    assert len(pd.read_parquet(tmp_path / "metrics.parquet")) > 0
    assert json.loads((tmp_path / "summary.json").read_text())["my_check_error"].startswith("RuntimeError")


def test_a_tasks_own_analysis_fails_under_the_tasks_name(tmp_path, monkeypatch):
    """The task's after_run (sparse parity's: the solvable model) fails as `solvable_error`, not as
    another analysis's."""
    from toy_quanta import registry

    task = registry.task("sparse_parity")

    def broken(*_):
        raise ValueError("no skills")

    monkeypatch.setattr(type(task), "after_run", broken)
    summary = app.run_job(tiny_config(), tmp_path)
    assert summary["status"] == "completed" and summary["solvable_error"] == "ValueError: no skills"


def test_job_imports_no_analysis_and_the_built_in_ones_are_registered():
    tree = ast.parse((ROOT / "toy_quanta" / "job.py").read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("analysis" in name for name in imported), imported
    from_job = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not from_job & {"arms", "lu", "phase", "slingshot", "progress"}, from_job
    names = [a.name for a in hooks.after_runs()]
    assert names[0] == "diagnosis" and {"phase", "lu", "arms"} <= set(names)
