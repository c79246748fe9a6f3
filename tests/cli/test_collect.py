"""toy-quanta-collect (toy_quanta.cli.collect; the logic: toy_quanta.analysis.collect) on real sweeps made by the app."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from conftest import read_summary
from toy_quanta.analysis import collect as tq_collect
from toy_quanta.cli import collect as collect_cli
from toy_quanta.results import write_json


@pytest.fixture
def sweep_copy(basic_sweep, tmp_path):
    """A private copy of the seed=0,1 sweep, so tests may break it."""
    dst = tmp_path / "sweep"
    shutil.copytree(basic_sweep, dst)
    return dst


def _last_json_line(out: str) -> dict:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return json.loads(lines[-1])


def test_collect_gathers_every_job(sweep_copy):
    """One table with a `job` column and each job's rows (equal to its own metrics.parquet), the swept
    seed as a column matching the job, and a report of 2 completed jobs out of 2 expected."""
    table, report = tq_collect.collect(sweep_copy)
    assert report["jobs_expected"] == 2 and report["jobs_completed"] == 2
    assert report["jobs_failed"] == 0 and report["jobs_missing"] == 0 and report["missing"] == []
    assert sorted(table["job"].unique().tolist()) == ["0", "1"]
    assert report["rows"] == len(table)
    for j in ("0", "1"):
        own = pd.read_parquet(sweep_copy / j / "metrics.parquet")
        part = table[table["job"] == j]
        assert len(part) == len(own) > 0
        assert set(part["seed"]) == {int(j)}
        assert set(part["status"]) == {"completed"}
        assert sorted(part["value"].tolist()) == sorted(own["value"].tolist())
    for col in ("member", "step", "metric", "subtask", "value", "seed", "optim.lr"):
        assert col in table.columns


def test_collect_swept_shape_key_and_a_failed_job(vmap_width_sweep, tmp_path):
    """On the model.width=8,16,0 vmap sweep: model.width is a column with each job's own width, and
    the invalid job 2 is reported failed with its ConfigError (3 expected, 2 completed)."""
    dst = tmp_path / "w"
    shutil.copytree(vmap_width_sweep, dst)
    table, report = tq_collect.collect(dst)
    assert report["jobs_expected"] == 3 and report["jobs_completed"] == 2
    assert report["jobs_failed"] == 1 and report["jobs_missing"] == 0
    assert report["failed"][0]["job"] == "2" and "model.width=0" in report["failed"][0]["reason"]
    widths = table.groupby("job")["model.width"].unique()
    assert {j: list(v) for j, v in widths.items()} == {"0": [8], "1": [16]}


def test_missing_summary_is_reported_failed(sweep_copy):
    (sweep_copy / "1" / "summary.json").unlink()
    _, report = tq_collect.collect(sweep_copy)
    assert report["jobs_completed"] == 1 and report["jobs_failed"] == 1
    assert report["failed"][0]["job"] == "1"


def test_failed_status_is_reported_failed_with_its_error(sweep_copy):
    summary = read_summary(sweep_copy / "0")
    write_json(sweep_copy / "0" / "summary.json", {**summary, "status": "failed", "error": "RuntimeError: boom"})
    table, report = tq_collect.collect(sweep_copy)
    assert report["jobs_failed"] == 1 and report["failed"] == [{"job": "0", "reason": "RuntimeError: boom"}]
    # its metrics are still in the table, marked failed
    assert set(table.loc[table["job"] == "0", "status"]) == {"failed"}
    assert set(table.loc[table["job"] == "1", "status"]) == {"completed"}


def test_removed_job_directory_is_reported_missing(sweep_copy):
    shutil.rmtree(sweep_copy / "1")
    table, report = tq_collect.collect(sweep_copy)
    assert report["jobs_expected"] == 2 and report["jobs_completed"] == 1
    assert report["jobs_missing"] == 1 and report["missing"] == ["1"]
    assert set(table["job"]) == {"0"}


def test_main_prints_json_last_and_exit_status(sweep_copy, capsys):
    """main([dir]): writes collected.parquet, ends its output with one line of JSON (the report), and
    returns 0 when every job completed, non-zero once a job failed or is missing."""
    assert collect_cli.main([str(sweep_copy)]) == 0
    report = _last_json_line(capsys.readouterr().out)
    assert report["jobs_completed"] == 2 and report["jobs_failed"] == 0
    collected = pd.read_parquet(sweep_copy / tq_collect.COLLECTED_FILE)
    assert len(collected) == report["rows"] > 0

    # a failed job alone makes it fail ...
    completed = read_summary(sweep_copy / "0")
    write_json(sweep_copy / "0" / "summary.json", {"status": "failed", "error": "x"})
    assert collect_cli.main([str(sweep_copy)]) != 0
    report = _last_json_line(capsys.readouterr().out)
    assert report["jobs_failed"] == 1 and report["jobs_missing"] == 0

    # ... and so does a missing job alone
    write_json(sweep_copy / "0" / "summary.json", completed)
    shutil.rmtree(sweep_copy / "1")
    assert collect_cli.main([str(sweep_copy)]) != 0
    report = _last_json_line(capsys.readouterr().out)
    assert report["jobs_failed"] == 0 and report["jobs_missing"] == 1 and report["missing"] == ["1"]


def test_main_on_a_missing_directory(tmp_path, capsys):
    assert collect_cli.main([str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_collect_compares_the_jobs_as_arms(sweep_copy, capsys):
    """--arms KEY: each job's value of KEY names an arm; the comparison is written beside the table
    and printed; a key that is not a column is refused in one line."""
    assert collect_cli.main([str(sweep_copy), "--arms", "seed"]) == 0
    out = capsys.readouterr().out
    comparison = json.loads((sweep_copy / "arms.json").read_text())
    assert list(comparison["arms"]) == ["0", "1"] and comparison["arms"]["1"]["95"]["steps"] is not None
    assert (sweep_copy / "arms.png").stat().st_size > 0 and (sweep_copy / "arms.csv").exists()
    assert "arms by seed" in out and _last_json_line(out)["arms"].endswith("arms.json")
    assert collect_cli.main([str(sweep_copy), "--arms", "no_such_key"]) == 2
    assert "not a column" in capsys.readouterr().err


def test_expected_jobs_counts_the_experiments_own_sweep(tmp_path):
    """hydra.sweeper.params of an experiment (e.g. +collapse_fix: a,b,c) multiply the command line's
    sweeps; a key the command line overrides counts once."""
    import yaml

    def write(task, params):
        (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(
            {"hydra": {"overrides": {"task": task}, "sweeper": {"params": params}}}))
        return tq_collect.expected_jobs(tmp_path)

    assert write(["experiment=collapse", "seed=0,1"], {"+collapse_fix": "none,float64,stablemax"}) == 6
    assert write(["experiment=collapse", "+collapse_fix=none"], {"+collapse_fix": "none,float64,stablemax"}) == 1
    assert write(["seed=0,1,2"], None) == 3
