"""toy_quanta.api: a job and a sweep from Python, as the command line runs them, and what they wrote."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from toy_quanta import api
from toy_quanta.analysis.collect import collect
from toy_quanta.analysis.sweep import load_sweeps
from toy_quanta.errors import ConfigError

TINY = ("train.steps=20", "task.n_tasks=3", "task.n=8", "task.test_size=64", "task.per_task_test=8",
        "model.width=8", "train.batch_size=32", "train.log_every=10", "train.progress=false")


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """Two jobs (seed 0 and 2, two members each) of one shape: one compile for the whole module."""
    return api.sweep(*TINY, "ensemble.seeds=2", "seed=0,2", out_dir=tmp_path_factory.mktemp("api") / "sweep")


@pytest.fixture(scope="module")
def tiny_run(tiny_sweep):
    return tiny_sweep.jobs[0]


def test_run_writes_a_job_and_reads_it(tiny_run):
    run = tiny_run
    assert run.summary["status"] == "completed" and run.summary["n_members"] == 2
    assert (run.dir / "metrics.parquet").is_file() and "curves.png" in run.figures
    assert list(run.members.index) == [0, 1] and "test_loss" in run.members.columns
    assert api.load(run.dir).summary == json.loads((run.dir / "summary.json").read_text())


def test_curve_is_steps_by_members_of_the_metrics_table(tiny_run):
    curve = tiny_run.curve("test_loss")
    assert list(curve.index) == [0, 10, 20] and list(curve.columns) == [0, 1]
    frame = tiny_run.metrics
    rows = frame[(frame["metric"] == "test_loss") & (frame["member"] == 1)].sort_values("step")
    np.testing.assert_array_equal(curve[1].to_numpy(), rows["value"].to_numpy())
    per_subtask = tiny_run.subtasks("subtask_loss", member=1)
    assert per_subtask.shape == (3, 3)
    with pytest.raises(KeyError, match="no_such_metric"):
        tiny_run.curve("no_such_metric")
    with pytest.raises(FileNotFoundError, match="curves.png"):
        tiny_run.show("nothing.png")


def test_the_same_run_again_reuses_the_finished_job(tiny_run, capsys):
    stamp = (tiny_run.dir / "metrics.parquet").stat().st_mtime_ns
    again = api.run(*TINY, "ensemble.seeds=2", "seed=0", out_dir=tiny_run.dir)
    assert "completed earlier" in capsys.readouterr().out
    assert again.summary == tiny_run.summary
    assert (tiny_run.dir / "metrics.parquet").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="train.steps"):  # another config into the same directory: refused
        api.run(*TINY[1:], "train.steps=30", "ensemble.seeds=2", "seed=0", out_dir=tiny_run.dir)


@pytest.mark.parametrize("override, key", [("train.stepz=3", "train.stepz"), ("+train.stepz=3", "train.stepz"),
                                           ("model.width=abc", "model.width"), ("train.steps=-1", "train.steps")])
def test_a_bad_key_or_value_raises_config_error_naming_it_before_training(tmp_path, override, key):
    with pytest.raises(ConfigError) as caught:
        api.run(*TINY, override, out_dir=tmp_path / "bad")
    assert caught.value.key == key
    assert not (tmp_path / "bad" / "metrics.parquet").exists()
    if key == "train.stepz":
        assert "did you mean train.steps" in str(caught.value)


def test_sweep_lays_out_jobs_as_a_multirun(tiny_sweep, tmp_path, capsys):
    out = tiny_sweep.dir
    assert [r.dir.name for r in tiny_sweep.jobs] == ["0", "1"]
    assert tiny_sweep.overrides[1][-1] == "seed=2"
    table, report = collect(out)
    assert (report["jobs_expected"], report["jobs_completed"], report["jobs_failed"]) == (2, 2, 0)
    assert set(tiny_sweep.metrics["job"]) == {"0", "1"} and set(table["seed"]) == {0, 1, 2, 3}
    assert sorted(load_sweeps([out]).runs["seed"]) == [0, 1, 2, 3]
    capsys.readouterr()
    api.sweep(*TINY, "ensemble.seeds=2", "seed=0,2", out_dir=out)  # again: both jobs reused
    assert capsys.readouterr().out.count("completed earlier") == 2
    with pytest.raises(ConfigError) as caught:  # every job is checked before any trains
        api.sweep(*TINY, "seed=0,1", "model.width=8,0", out_dir=tmp_path / "bad")
    assert caught.value.key == "model.width" and not (tmp_path / "bad").exists()


def test_the_package_leaves_the_callers_matplotlib_backend_alone():
    """Only the command line picks Agg: a notebook's backend (here svg) survives importing the API
    and every figure module, so its own plt.show() still shows."""
    code = ("import matplotlib, pkgutil, importlib; matplotlib.use('svg')\n"
            "import toy_quanta.api, toy_quanta.plots\n"
            "for m in pkgutil.iter_modules(toy_quanta.plots.__path__): importlib.import_module('toy_quanta.plots.' + m.name)\n"
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
            "import toy_quanta.cli\n"
            "assert matplotlib.get_backend().lower() == 'agg', matplotlib.get_backend()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
