"""`toy-quanta-qdg RUN_DIR` end to end on a tiny trained sparse parity model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_app
from toy_quanta.qdg import relevant_pattern

TRAIN = ["task.n_tasks=4", "task.n=8", "task.k=3", "task.alpha=0.4", "task.test_size=256", "task.per_task_test=16",
         "model.width=32", "optim.lr=0.01", "train.steps=600", "train.batch_size=256", "train.log_every=200",
         "train.progress=false", "name=qdgtest"]
QUICK = ["n_samples=300", "n_clusters=4", "envelope_counts=[2,4,8]", "n_init=4", "envelope_min_size=3"]


def run_qdg(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-m", "toy_quanta.qdg", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("qdg")
    proc = run_app([*TRAIN, f"hydra.run.dir={root / 'run'}"], cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "run"


def test_qdg_end_to_end(trained):
    proc = run_qdg([str(trained), *QUICK], cwd=trained.parent)
    assert proc.returncode == 0, proc.stderr
    headline = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(headline) >= {"ari", "nmi", "envelope_slope", "envelope_slope_interval", "expected_slope"}
    assert -1 <= headline["ari"] <= 1 and 0 <= headline["nmi"] <= 1
    assert headline["expected_slope"] == pytest.approx(-1.4)
    out = Path(proc.stdout.split("output directory: ")[1].splitlines()[0])
    assert out.parent == trained / "qdg"
    for name in ("assignments.parquet", "samples.npz", "report.json", "report.md", "rank_frequency.png", "similarity.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    frame = pd.read_parquet(out / "assignments.parquet")
    assert len(frame) == report["n_samples"] == 300
    assert (frame["loss_bits"] < 0.1).all()  # only samples the model predicts well
    assert frame["cluster"].nunique() == 4
    assert {"cluster_k2", "cluster_k4", "cluster_k8"} <= set(frame.columns)
    assert report["ari"] == pytest.approx(next(c["ari"] for c in report["per_count"] if c["n_clusters"] == 4))
    # the saved samples are the clustered ones, and their subtask and label follow from the bits
    samples = np.load(out / "samples.npz")
    np.testing.assert_array_equal(samples["task"], frame["subtask"])
    from toy_quanta.results import load_run
    subsets = load_run(trained).subsets[0]
    rel = np.take_along_axis(samples["bits"], subsets[samples["task"]], axis=1)
    np.testing.assert_array_equal(rel.sum(1) % 2, samples["label"])
    np.testing.assert_array_equal(relevant_pattern(samples["task"], samples["bits"], subsets), frame["pattern"])
    # a second analysis keeps the first
    again = run_qdg([str(trained), *QUICK, "affinity=cosine", "gradient=margin"], cwd=trained.parent)
    assert again.returncode == 0, again.stderr
    assert len(list((trained / "qdg").iterdir())) >= 2 and (out / "report.json").exists()


@pytest.mark.parametrize("args,message", [
    (["affinity=gaussian"], "affinity='gaussian' is not allowed"),
    (["params=[embedding]"], "params=['embedding'] is not allowed"),
    (["member=3"], "member=3 is not allowed"),
    (["n_samples=5"], "n_samples=5 is not allowed"),
    (["loss_threshold_bits=1e-12"], "loss_threshold_bits=1e-12 is not allowed"),
])
def test_bad_settings_get_a_clear_error(trained, args, message):
    proc = run_qdg([str(trained), *QUICK, *args], cwd=trained.parent)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_directory_that_is_not_a_run(trained, tmp_path):
    proc = run_qdg([str(tmp_path / "missing")], cwd=tmp_path)
    assert proc.returncode == 2 and "not a directory" in proc.stderr
    proc = run_qdg([str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 2 and "config.yaml" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "config.yaml").write_text((trained / "config.yaml").read_text())  # a run without its checkpoint
    proc = run_qdg([str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 2 and "train.checkpoint=true" in proc.stderr and "Traceback" not in proc.stderr


def test_a_grokking_run_is_refused_with_a_clear_message(tmp_path):
    from omegaconf import OmegaConf

    from toy_quanta.config import Config, EmbedMLPConfig, ModularConfig, OptimConfig
    from toy_quanta.results import load_config

    cfg = Config(task=ModularConfig(p=11, op="add"), model=EmbedMLPConfig(), optim=OptimConfig(name="adamw"))
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    loaded = load_config(tmp_path)
    assert (loaded.task.p, loaded.model.name) == (11, "embed_mlp")
    proc = run_qdg([str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 2 and "a sparse parity run (this one trained task=modular)" in proc.stderr
