"""The hidden-progress experiment (conf/experiment/hidden_progress.yaml) through `toy-quanta -m`,
shrunk to two tiny jobs, and `toy-quanta-collect DIR --steps-to-learn task.n` on it; behind the
`slow` marker, a real (n=64, k=3) job whose plateau hides progress."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_app
from toy_quanta.analysis import hidden_progress as hp
from toy_quanta.cli import collect as collect_cli

TINY = ["model.width=32", "ensemble.seeds=3", "train.steps=600", "train.log_count=40", "task.test_size=512",
        "task.per_task_test=32", "train.progress=false"]


def _tiny_sweep(root):
    sweep = root / "sweep"
    proc = run_app(["-m", "experiment=hidden_progress", "task.k=2", "task.n=16,32", *TINY,
                    f"hydra.sweep.dir={sweep}"], cwd=root)
    return sweep, proc


def background_runs(items, tmp_path_factory) -> dict:
    """The tiny sweep starts with the session (conftest._background_runs) when a test here needs it."""
    if not any("tiny_sweep" in getattr(item, "fixturenames", ()) for item in items):
        return {}
    return {"tiny": lambda: _tiny_sweep(tmp_path_factory.mktemp("hidden_progress"))}


@pytest.fixture(scope="module")
def tiny_sweep(background):
    sweep, proc = background["tiny"].result()
    assert proc.returncode == 0, f"STDOUT\n{proc.stdout}\nSTDERR\n{proc.stderr}"
    return sweep


def test_the_experiment_sweeps_n_for_k_2_and_3_in_barak_et_al_s_setting():
    """Every job of the experiment's own sweep composes and validates: one parity, online data,
    hinge loss, the progress measure, SGD lr 0.1, batch 32, 8 seeds; n over a decade for each k."""
    from hydra import compose, initialize_config_module

    from toy_quanta.config import validate
    from toy_quanta.job import to_config

    with initialize_config_module("toy_quanta.conf", version_base=None):
        base = compose("config", overrides=["experiment=hidden_progress"], return_hydra_config=True)
        params = {key: str(v).split(",") for key, v in base.hydra.sweeper.params.items()}
        assert set(params) == {"task.k", "task.n"}
        cfgs = [to_config(compose("config", overrides=["experiment=hidden_progress", f"task.k={k}", f"task.n={n}"]))
                for k in params["task.k"] for n in params["task.n"]]
    for cfg in cfgs:
        validate(cfg)
        t = cfg.task
        assert (t.n_tasks, t.D, t.loss, t.progress, t.encoding) == (1, None, "hinge", True, "plus_minus")
        assert (cfg.train.stop_metric, cfg.train.stop_at_least) == ("test_acc", 0.99)
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.momentum) == ("sgd", 0.1, 0.0, 0.0)
        assert (cfg.train.batch_size, cfg.ensemble.seeds, cfg.model.depth, cfg.model.activation) == (32, 8, 1, "relu")
    for k in (2, 3):
        ns = [c.task.n for c in cfgs if c.task.k == k]
        assert max(ns) / min(ns) >= 8


def test_collect_fits_steps_to_learn_and_writes_its_files(tiny_sweep, capsys):
    """Two jobs (k=2, n=16 and 32; 3 seeds each, members vmapped), the experiment's hinge loss and
    progress measure; the collect option writes hidden_progress.json, .csv and .png and prints the
    fit and per-n numbers."""
    assert collect_cli.main([str(tiny_sweep), "--steps-to-learn", "task.n"]) == 0
    out = capsys.readouterr().out
    result = json.loads((tiny_sweep / hp.FILES["json"]).read_text())
    members = pd.read_csv(tiny_sweep / hp.FILES["csv"])
    assert (tiny_sweep / hp.FILES["figure"]).stat().st_size > 0
    assert list(result["k"]) == ["2"] and list(result["k"]["2"]["n"]) == ["16", "32"]
    assert result["loss"] == "hinge" and result["level"] == hp.LEVEL
    assert len(members) == 6 and sorted(members["n"].unique()) == [16, 32] and set(members["seed"]) == {0, 1, 2}
    assert (~members["censored"]).sum() >= 4, members  # most tiny members learn within 600 steps
    assert members["ratio_start"].between(0.3, 3).all()  # a random start: near 1
    entry = result["k"]["2"]
    assert entry["fit"] is not None and entry["fit"]["ci_low"] <= entry["fit"]["exponent"] <= entry["fit"]["ci_high"]
    assert "steps to learn against task.n" in out and "k=2: steps ∝ n^" in out
    assert out.strip().splitlines()[-1].startswith("{") and "hidden_progress" in out.strip().splitlines()[-1]


def test_collect_refuses_a_key_that_is_not_in_the_sweep(tiny_sweep, capsys):
    assert collect_cli.main([str(tiny_sweep), "--steps-to-learn", "task.width"]) == 2
    err = capsys.readouterr().err
    assert "task.width" in err and "not a column" in err


@pytest.mark.slow
def test_a_real_parity_learns_after_a_plateau_that_hides_progress(tmp_path):
    """(n=128, k=2) in the experiment's setting with {0, 1} inputs (the compared row), 4 seeds (about
    40 s): every seed reaches 0.99 test accuracy, and before its test loss is 5% down the
    relevant-weight ratio has grown x1.8 or more (the sweep: x2.4-3.5), rising at most log steps,
    while the loss stayed within 15% of its start."""
    proc = run_app(["experiment=hidden_progress", "task.k=2", "task.n=128", "task.encoding=zero_one", "train.steps=4000",
                    "train.log_count=150", "train.stop_metric=null", "ensemble.seeds=4", "train.progress=false",
                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_parquet(tmp_path / "run" / "metrics.parquet").assign(job="run")
    table = hp.with_config_values(table, tmp_path, ("task.k", "task.n"))
    members = hp.member_table(hp.sweep_curves(table, "task.n"))
    assert not members["censored"].any(), members
    assert (members["plateau_end_step"] < members["steps_to_learn"]).all()
    assert (members["ratio_gain"] >= 1.8).all() and (members["ratio_rise_fraction"] > 0.55).all(), members
    assert (members["loss_max_ratio"] < 1.15).all(), members
    assert np.all(members["distance_end_fraction"] > 0.1)
