"""Validation of the new settings (toy_quanta.config.validate): fixed norms, the embedding's own
optimiser settings, task=symbol_add, task=teacher_student and the phase diagram. Every error names
the key, the value and what is allowed, and comes before any training (in-process through the
app's job function, and through the console script)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from tests.conftest import tiny_config
from toy_quanta import job as app
from toy_quanta.config import Config, EnsembleConfig, OptimConfig, PhaseConfig, TrainConfig, validate
from toy_quanta.errors import ConfigError
from toy_quanta.models.dense_mlp import DenseMLPConfig
from toy_quanta.models.embed_mlp import EmbedMLPConfig
from toy_quanta.tasks.mnist import MNISTConfig
from toy_quanta.tasks.modular import ModularConfig
from toy_quanta.tasks.symbol_add import SymbolAddConfig
from toy_quanta.tasks.teacher_student import TeacherStudentConfig
from toy_quanta.models.transformer import TransformerConfig

TOY_QUANTA = Path(sys.executable).parent / "toy-quanta"  # the console script of this environment


def symbol_add() -> Config:
    return Config(task=SymbolAddConfig(p=10), model=EmbedMLPConfig(d_embed=1, width=16, depth=2, activation="tanh"),
                  optim=OptimConfig(name="adamw", lr=1e-4, embed_lr=1e-3, embed_weight_decay=0.0),
                  train=TrainConfig(steps=10, log_every=5, progress=False), ensemble=EnsembleConfig())


def teacher() -> Config:
    return Config(task=TeacherStudentConfig(), model=DenseMLPConfig(width=16), optim=OptimConfig(name="adamw"),
                  train=TrainConfig(steps=10, log_every=5, progress=False), ensemble=EnsembleConfig())


def grid() -> Config:
    """symbol_add over a 2 x 2 grid of lr x weight decay, with a phase diagram."""
    cfg = symbol_add()
    cfg.ensemble = EnsembleConfig(lr=[1e-4, 1e-3], weight_decay=[0.0, 1.0])
    cfg.phase = PhaseConfig(x="optim.lr", y="optim.weight_decay")
    return cfg


def sparse_parity() -> Config:
    return tiny_config()


def _with(cfg: Config, **values) -> Config:
    """A copy of cfg with dotted keys (given with "__" for ".") set."""
    nodes = [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]
    cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name)) for name in nodes})
    for dotted, value in values.items():
        *parents, leaf = dotted.split("__")
        node = cfg
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return cfg


@pytest.mark.parametrize("make", [symbol_add, teacher, grid, sparse_parity])
def test_the_base_configs_are_valid(make):
    validate(make())


@pytest.mark.parametrize("cfg", [
    _with(teacher(), optim__fixed_norm=12.5),
    _with(teacher(), ensemble__fixed_norm=[1.0, 2.0, 3.0]),
    _with(symbol_add(), ensemble__fixed_norm=[0.5, 8.0]),
    Config(task=MNISTConfig(), model=DenseMLPConfig(), optim=OptimConfig(fixed_norm=30.0)),
    Config(task=ModularConfig(p=11, op="add"), model=TransformerConfig(), optim=OptimConfig(embed_lr=1e-2,
                                                                                          fixed_norm=4.0)),
    _with(symbol_add(), task__p=2, task__train_fraction=0.5),  # 3 pairs: 2 train, 1 validates
    _with(symbol_add(), task__train_fraction=0.99),  # round(54.45) = 54 of 55: one validates
    _with(teacher(), task__teacher_depth=0, task__teacher_activation="gelu"),
    _with(grid(), phase__x="optim.weight_decay", phase__y="optim.lr", phase__threshold=1.0, phase__gap_steps=0),
], ids=lambda c: c.task.name)
def test_new_settings_that_are_allowed(cfg):
    validate(cfg)


# (base config, {key: value}, the key the error names, text of what is allowed)
BAD = [
    (teacher, {"optim.fixed_norm": 0.0}, "optim.fixed_norm", "positive"),
    (teacher, {"optim.fixed_norm": -3.0}, "optim.fixed_norm", "positive"),
    (symbol_add, {"optim.fixed_norm": float("nan")}, "optim.fixed_norm", "positive"),
    (teacher, {"ensemble.fixed_norm": [5.0, 0.0]}, "ensemble.fixed_norm", "positive"),
    (symbol_add, {"ensemble.fixed_norm": [-1.0, 2.0]}, "ensemble.fixed_norm", "positive"),
    (teacher, {"optim.embed_lr": 1e-3}, "optim.embed_lr", "model=dense_mlp"),
    (teacher, {"optim.embed_weight_decay": 0.1}, "optim.embed_weight_decay", "model=dense_mlp"),
    (sparse_parity, {"optim.embed_lr": 1e-3}, "optim.embed_lr", "model=mlp"),
    (symbol_add, {"optim.embed_lr": 0.0}, "optim.embed_lr", "positive"),
    (symbol_add, {"task.p": 1}, "task.p", "[2, "),
    (symbol_add, {"task.p": 0}, "task.p", "[2, "),
    (symbol_add, {"task.train_fraction": 0.0}, "task.train_fraction", "(0, 1)"),
    (symbol_add, {"task.train_fraction": 1.0}, "task.train_fraction", "(0, 1)"),
    # round(0.995 * 55) = 55: no validation pair; round(0.005 * 55) = 0: no training pair
    (symbol_add, {"task.train_fraction": 0.995}, "task.train_fraction", "one for validation"),
    (symbol_add, {"task.train_fraction": 0.005}, "task.train_fraction", "at least one of the 55 pairs for training"),
    (symbol_add, {"task.p": 2, "task.train_fraction": 0.9}, "task.train_fraction", "3 pairs"),
    (symbol_add, {"ensemble.train_fraction": [0.5, 0.995]}, "ensemble.train_fraction", "one for validation"),
    (teacher, {"task.n_train": 0}, "task.n_train", "integer >= 1"),
    (teacher, {"task.teacher_activation": "swish"}, "task.teacher_activation", "tanh"),
    (teacher, {"task.tolerance": 0.0}, "task.tolerance", "positive"),
    (teacher, {"task.tolerance": -0.5}, "task.tolerance", "positive"),
    (grid, {"phase.y": None}, "phase.y", "phase.x"),  # phase.x without phase.y
    (grid, {"phase.x": "task.p"}, "phase.x", "optim.lr"),  # not a grid axis at all
    (grid, {"phase.x": "model.width"}, "phase.x", "optim.weight_decay"),
    (grid, {"ensemble.lr": None}, "phase.x", "ensemble.lr"),  # phase.x=optim.lr, but lr is not swept
    (grid, {"phase.threshold": 1.5}, "phase.threshold", "(0, 1]"),
    (grid, {"phase.threshold": 0.0}, "phase.threshold", "positive"),
    (grid, {"phase.gap_steps": -1}, "phase.gap_steps", ">= 0"),
]


def _bad_config(make, values) -> Config:
    return _with(make(), **{k.replace(".", "__"): v for k, v in values.items()})


def _id(case) -> str:
    return ",".join(f"{k}={v}" for k, v in case[1].items())


@pytest.mark.parametrize("make,values,key,allowed", BAD, ids=[_id(c) for c in BAD])
def test_a_bad_value_names_key_value_and_what_is_allowed(make, values, key, allowed):
    with pytest.raises(ConfigError) as info:
        validate(_bad_config(make, values))
    exc = info.value
    assert exc.key == key, str(exc)
    message = str(exc)
    assert message.startswith(f"{key}=") and "is not allowed" in message
    if key in values:
        value = values[key]
        if isinstance(value, list):  # the list, or its offending entry
            assert exc.value == value or exc.value in value, message
        else:
            assert exc.value == value or (value != value and exc.value != exc.value)  # nan
        assert repr(exc.value) in message
    assert allowed in exc.allowed, message


STOPS = [BAD[i] for i in (0, 5, 7, 11, 15, 19, 26, 27)]


@pytest.mark.parametrize("make,values,key,allowed", STOPS, ids=[_id(c) for c in STOPS])
def test_the_job_stops_before_training(tmp_path, monkeypatch, make, values, key, allowed):
    """In-process through the app's job function: the error comes before fit is called, and the
    job directory says why it failed (and holds no metrics)."""
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(app, "fit", no_training)
    with pytest.raises(ConfigError) as info:
        app.run_job(_bad_config(make, values), tmp_path)
    assert info.value.key == key
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith(f"ConfigError: {key}=")
    assert not (tmp_path / "metrics.parquet").exists()


@pytest.mark.parametrize("experiment", ["effective_toy", "phase_toy", "lu_modadd", "lu_mnist",
                                        "omnigrok_teacher_student"])
def test_the_new_experiments_compose_to_valid_configs(experiment):
    with initialize_config_module("toy_quanta.conf", version_base=None):
        cfg = app.to_config(compose("config", overrides=[f"experiment={experiment}"]))
    validate(cfg)
    assert cfg.name == experiment
    if experiment.startswith("lu_"):
        assert len(cfg.ensemble.fixed_norm) >= 3 and cfg.optim.weight_decay == 0.0
    if experiment == "phase_toy":
        assert (cfg.phase.x, cfg.phase.y) == ("optim.lr", "optim.weight_decay")
    if experiment in ("effective_toy", "phase_toy"):
        assert cfg.optim.embed_lr is not None and cfg.model.d_embed == 1


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
