"""`toy-quanta experiment=grok_modadd` end to end, tiny: results, summaries, figures, ensembles, sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_app

TINY = ["experiment=grok_modadd", "task.p=11", "train.steps=300", "train.log_count=20", "train.progress=false",
        "model.d_embed=16", "model.width=32"]


def _run(tmp_path: Path, extra: list[str]) -> dict:
    proc = run_app([*TINY, *extra, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def test_grok_modadd_writes_results_and_figures(tmp_path):
    summary = _run(tmp_path, [])
    assert summary["status"] == "completed" and summary["n_members"] == 1
    final = summary["members"][0]["final"]
    assert {"steps_to_train_99", "steps_to_val_99", "gap_99", "grokked", "train_acc", "test_acc"} <= set(final)
    assert final["train_acc"] == 1.0 and final["steps_to_train_99"] <= 300  # 44 training pairs are memorised
    if final["grokked"]:
        assert final["gap_99"] == final["steps_to_val_99"] - final["steps_to_train_99"]
    run = tmp_path / "run"
    for name in ("curves.png", "embedding_ring.png", "checkpoint.msgpack", "metrics.parquet"):
        assert (run / name).stat().st_size > 0, name
    frame = pd.read_parquet(run / "metrics.parquet")
    assert set(frame["metric"].unique()) >= {"train_acc", "test_acc", "param_norm"}
    assert (frame["task.train_fraction"] == 0.4).all() and frame["task.alpha"].isna().all()


def test_training_fractions_and_seeds_make_one_ensemble(tmp_path):
    summary = _run(tmp_path, ["ensemble.train_fraction=[0.3,0.7]", "ensemble.seeds=2"])
    members = summary["members"]
    assert [(m["task.train_fraction"], m["seed"]) for m in members] == [(0.3, 0), (0.3, 1), (0.7, 0), (0.7, 1)]
    # every member fits its own training pairs
    assert all(m["final"]["train_acc"] == 1.0 for m in members)


def test_a_bad_value_stops_before_training(tmp_path):
    proc = run_app([*TINY, "task.op=div", "task.p=12", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 2 and "task.p=12 is not allowed" in proc.stderr and "prime" in proc.stderr


def test_a_vmap_sweep_over_weight_decay(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_app(["-m", *TINY, "hydra/launcher=vmap", "optim.weight_decay=0.1,1.0", f"hydra.sweep.dir={sweep}"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in (0, 1)]
    assert [s["members"][0]["optim.weight_decay"] for s in summaries] == [0.1, 1.0]
    assert all(s["status"] == "completed" and s["group"]["group_members"] == 2 for s in summaries)


def test_jobs_of_several_fractions_vmapped_together_equal_each_job_alone(tmp_path):
    """The vmap launcher groups task.train_fraction=0.3,0.7 into one program; the 0.7 job must not
    be cut to the first job's full batch."""
    sweep = tmp_path / "sweep"
    short = ["train.steps=40"]  # float rounding differs between batched and single programs; keep it from growing
    proc = run_app(["-m", *TINY, *short, "hydra/launcher=vmap", "task.train_fraction=0.3,0.7",
                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    grouped = json.loads((sweep / "1" / "summary.json").read_text())
    assert grouped["group"]["group_members"] == 2
    alone = _run(tmp_path, [*short, "task.train_fraction=0.7"])
    for key in ("train_loss", "test_loss", "param_norm"):
        assert grouped["members"][0]["final"][key] == pytest.approx(alone["members"][0]["final"][key], rel=1e-4)


@pytest.mark.parametrize("experiment,shrink", [
    ("grok_power", ["task.p=11", "model.n_layers=1", "model.d_model=16", "model.d_mlp=32", "train.batch_size=16"]),
    ("grok_nanda", ["task.p=11", "model.d_model=16", "model.d_mlp=32"]),
    ("grok_fraction", ["task.p=11", "model.d_embed=8", "model.width=16", "ensemble.seeds=1"]),
    ("grok_weight_decay", ["task.p=11", "model.d_embed=8", "model.width=16", "ensemble.seeds=1"]),
])
def test_a_tiny_run_of_each_grokking_experiment(tmp_path, experiment, shrink):
    proc = run_app([f"experiment={experiment}", *shrink, "train.steps=20", "train.log_count=5", "train.progress=false",
                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["name"] == experiment
    swept = {"grok_fraction": "train_fraction", "grok_weight_decay": "weight_decay"}.get(experiment)
    if swept:
        assert summary["n_members"] > 3 and (tmp_path / "run" / f"steps_vs_{swept}.png").exists()
        assert "progress" not in summary and not (tmp_path / "run" / "snapshots.msgpack").exists()
    else:  # one member, snapshots on: the progress measures of the mechanism come with the job
        head = summary["progress"]
        assert (tmp_path / "run" / "progress" / "fourier.png").exists() and head["n_snapshots"] == 6
        # the restricted and excluded losses need the directions of a + b: not defined for x/y
        assert (head["restricted_loss"] is None) == (experiment == "grok_power")
