"""`toy-quanta experiment=grok_modadd` (toy_quanta.cli.app, task=modular) end to end, tiny: results, summaries, figures, ensembles, sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_app

TINY = ["experiment=grok_modadd", "task.p=11", "train.steps=300", "train.log_count=20", "train.progress=false",
        "model.d_embed=16", "model.width=32"]


EXPERIMENTS = [
    ("grok_power", ["task.p=11", "model.n_layers=1", "model.d_model=16", "model.d_mlp=32", "train.batch_size=16"]),
    ("grok_nanda", ["task.p=11", "model.d_model=16", "model.d_mlp=32"]),
    ("grok_fraction", ["task.p=11", "model.d_embed=8", "model.width=16", "ensemble.seeds=1"]),
    ("grok_weight_decay", ["task.p=11", "model.d_embed=8", "model.width=16", "ensemble.seeds=1"]),
]
SHORT = ["train.steps=40"]  # float rounding differs between batched and single programs; keep it from growing


def _single(extra: list[str]):
    """A single run of TINY + extra: args for a run directory root / 'run'."""
    return lambda root: [*TINY, *extra, f"hydra.run.dir={root / 'run'}"]


def _sweep(extra: list[str]):
    """A multirun of TINY + extra: args for a sweep directory root / 'sweep'."""
    return lambda root: ["-m", *TINY, *extra, f"hydra.sweep.dir={root / 'sweep'}"]


def _experiment(experiment: str, shrink: list[str]):
    return lambda root: [f"experiment={experiment}", *shrink, "train.steps=20", "train.log_count=5",
                         "train.progress=false", f"hydra.run.dir={root / 'run'}"]


# Every app run of this module, by the test that needs it. They are independent, so the module's
# runs go side by side in the background (conftest._background_runs), each in its own directory.
RUNS = {
    "test_grok_modadd_writes_results_and_figures": {"modadd": _single([])},
    "test_training_fractions_and_seeds_make_one_ensemble": {
        "fractions_seeds": _single(["ensemble.train_fraction=[0.3,0.7]", "ensemble.seeds=2"])},
    "test_a_bad_value_stops_before_training": {"bad_value": _single(["task.op=div", "task.p=12"])},
    "test_a_vmap_sweep_over_weight_decay": {
        "weight_decay_sweep": _sweep(["hydra/launcher=vmap", "optim.weight_decay=0.1,1.0"])},
    "test_jobs_of_several_fractions_vmapped_together_equal_each_job_alone": {
        "fraction_sweep": _sweep([*SHORT, "hydra/launcher=vmap", "task.train_fraction=0.3,0.7"]),
        "fraction_alone": _single([*SHORT, "task.train_fraction=0.7"])},
    **{f"test_a_tiny_run_of_each_grokking_experiment[{name}]": {name: _experiment(name, shrink)}
       for name, shrink in EXPERIMENTS},
}


def background_runs(items, tmp_path_factory) -> dict:
    """The selected tests' runs, started at the start of the session (conftest._background_runs)."""
    jobs = {}
    for item in items:
        key = item.originalname
        if key == "test_a_tiny_run_of_each_grokking_experiment":
            key += f"[{item.callspec.params['experiment']}]"
        for name, args in RUNS.get(key, {}).items():
            root = tmp_path_factory.mktemp(name)
            jobs[name] = lambda root=root, args=args: (root, run_app(args(root), cwd=root))
    return jobs


@pytest.fixture(scope="module")
def runs(background) -> dict:
    """name -> future of (root directory, finished app process)."""
    return background


def _finished(runs: dict, name: str) -> tuple[Path, object]:
    return runs[name].result()


def _summary(runs: dict, name: str) -> dict:
    root, proc = _finished(runs, name)
    assert proc.returncode == 0, proc.stderr
    return json.loads((root / "run" / "summary.json").read_text())


def test_grok_modadd_writes_results_and_figures(runs):
    summary = _summary(runs, "modadd")
    assert summary["status"] == "completed" and summary["n_members"] == 1
    final = summary["members"][0]["final"]
    assert {"steps_to_train_99", "steps_to_val_99", "gap_99", "grokked", "train_acc", "test_acc"} <= set(final)
    assert final["train_acc"] == 1.0 and final["steps_to_train_99"] <= 300  # 44 training pairs are memorised
    if final["grokked"]:
        assert final["gap_99"] == final["steps_to_val_99"] - final["steps_to_train_99"]
    run = _finished(runs, "modadd")[0] / "run"
    for name in ("curves.png", "embedding_ring.png", "checkpoint.msgpack", "metrics.parquet"):
        assert (run / name).stat().st_size > 0, name
    frame = pd.read_parquet(run / "metrics.parquet")
    assert set(frame["metric"].unique()) >= {"train_acc", "test_acc", "param_norm"}
    assert (frame["task.train_fraction"] == 0.4).all()
    assert not {"task.alpha", "task.D"} & set(frame.columns)  # sparse parity's keys: not a modular column


def test_training_fractions_and_seeds_make_one_ensemble(runs):
    summary = _summary(runs, "fractions_seeds")
    members = summary["members"]
    assert [(m["task.train_fraction"], m["seed"]) for m in members] == [(0.3, 0), (0.3, 1), (0.7, 0), (0.7, 1)]
    # every member fits its own training pairs
    assert all(m["final"]["train_acc"] == 1.0 for m in members)


def test_a_bad_value_stops_before_training(runs):
    _, proc = _finished(runs, "bad_value")
    assert proc.returncode == 2 and "task.p=12 is not allowed" in proc.stderr and "prime" in proc.stderr


def test_a_vmap_sweep_over_weight_decay(runs):
    root, proc = _finished(runs, "weight_decay_sweep")
    sweep = root / "sweep"
    assert proc.returncode == 0, proc.stderr
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in (0, 1)]
    assert [s["members"][0]["optim.weight_decay"] for s in summaries] == [0.1, 1.0]
    assert all(s["status"] == "completed" and s["group"]["group_members"] == 2 for s in summaries)


def test_jobs_of_several_fractions_vmapped_together_equal_each_job_alone(runs):
    """The vmap launcher groups task.train_fraction=0.3,0.7 into one program; the 0.7 job must not
    be cut to the first job's full batch."""
    root, proc = _finished(runs, "fraction_sweep")  # train.steps=40: see SHORT
    sweep = root / "sweep"
    assert proc.returncode == 0, proc.stderr
    grouped = json.loads((sweep / "1" / "summary.json").read_text())
    assert grouped["group"]["group_members"] == 2
    alone = _summary(runs, "fraction_alone")
    for key in ("train_loss", "test_loss", "param_norm"):
        assert grouped["members"][0]["final"][key] == pytest.approx(alone["members"][0]["final"][key], rel=1e-4)


@pytest.mark.parametrize("experiment", [name for name, _ in EXPERIMENTS])
def test_a_tiny_run_of_each_grokking_experiment(runs, experiment):
    tmp_path, proc = _finished(runs, experiment)
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
