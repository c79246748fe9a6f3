"""Shared tiny configs and the real multirun sweeps (run once per session, in subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toy_quanta.config import (Config, EnsembleConfig, MLPConfig, OptimConfig, SparseParityConfig,
                               TrainConfig)

# Everything small enough that one compile + run takes a few seconds on 2 CPU cores.
TINY_TASK = dict(n_tasks=4, n=8, k=3, alpha=0.4, test_size=256, per_task_test=16)
TINY_MODEL = dict(width=16, depth=1)
TINY_OPTIM = dict(name="adam", lr=1e-2)
TINY_TRAIN = dict(steps=60, batch_size=64, log_every=20, progress=False)


def tiny_config(task=None, model=None, optim=None, train=None, ensemble=None, seed=0, name="tiny") -> Config:
    """A valid, tiny Config; each argument is a dict of keys overriding the tiny defaults."""
    return Config(
        task=SparseParityConfig(**{**TINY_TASK, **(task or {})}),
        model=MLPConfig(**{**TINY_MODEL, **(model or {})}),
        optim=OptimConfig(**{**TINY_OPTIM, **(optim or {})}),
        train=TrainConfig(**{**TINY_TRAIN, **(train or {})}),
        ensemble=EnsembleConfig(**(ensemble or {})),
        seed=seed,
        name=name,
    )


def member(seed=0, alpha=0.4, init_scale=1.0, lr=1e-2, weight_decay=0.0, D=None) -> dict:
    """One member dict as members.expand makes them."""
    return {"seed": seed, "task.alpha": alpha, "task.D": D, "task.train_fraction": None, "model.init_scale": init_scale,
            "optim.lr": lr, "optim.weight_decay": weight_decay}


# ---------------------------------------------------------------------------------------------
# Real multiruns of the console app, shared by test_app.py and test_collect.py.

SWEEP_OVERRIDES = [
    "task.n_tasks=4", "task.n=8", "task.k=3", "task.test_size=128", "task.per_task_test=8",
    "model.width=8", "optim.lr=0.01", "train.steps=40", "train.batch_size=32", "train.log_every=20",
    "train.progress=false", "name=sweeptest",
]


def run_app(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, "-m", "toy_quanta.app", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc


def _multirun(tmp_path_factory, name: str, extra: list[str], sweep: list[str], expect_failure: str | None = None) -> Path:
    """Run the app's multirun in a subprocess; returns the sweep directory. With expect_failure, one
    job is invalid: the sweep must still run every job and then exit non-zero naming the error."""
    root = tmp_path_factory.mktemp(name)
    sweep_dir = root / "sweep"
    swept = {o.split("=")[0] for o in [*sweep, *extra]}
    base = [o for o in SWEEP_OVERRIDES if o.split("=")[0] not in swept]
    proc = run_app(["-m", *sweep, *base, *extra, f"hydra.sweep.dir={sweep_dir}"], cwd=root)
    report = f"STDOUT\n{proc.stdout}\nSTDERR\n{proc.stderr}"
    if expect_failure is None:
        assert proc.returncode == 0, f"multirun failed:\n{report}"
    else:
        assert proc.returncode != 0 and expect_failure in proc.stderr, f"expected a failed job:\n{report}"
    return sweep_dir


@pytest.fixture(scope="session")
def basic_sweep(tmp_path_factory) -> Path:
    """seed=0,1 with Hydra's basic launcher: two jobs one after another."""
    return _multirun(tmp_path_factory, "basic", [], ["seed=0,1"])


@pytest.fixture(scope="session")
def vmap_sweep(tmp_path_factory) -> Path:
    """The same seed=0,1 sweep with hydra/launcher=vmap: one group of two members."""
    return _multirun(tmp_path_factory, "vmap", ["hydra/launcher=vmap"], ["seed=0,1"])


@pytest.fixture(scope="session")
def vmap_width_sweep(tmp_path_factory) -> Path:
    """A vmap sweep over a shape key, model.width=8,16,0: two groups of valid jobs (0, 1), and an
    invalid job (2, width 0) that fails on its own."""
    return _multirun(tmp_path_factory, "vmapwidth", ["hydra/launcher=vmap"], ["model.width=8,16,0"],
                     expect_failure="model.width=0")


def read_summary(job_dir: Path) -> dict:
    return json.loads((job_dir / "summary.json").read_text())
