"""`toy-quanta-qdg RUN_DIR` (toy_quanta.cli.qdg) end to end on a tiny trained sparse parity model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_app
from toy_quanta.analysis.qdg import relevant_pattern

TRAIN = ["task.n_tasks=4", "task.n=8", "task.k=3", "task.alpha=0.4", "task.test_size=256", "task.per_task_test=16",
         "model.width=32", "optim.lr=0.01", "train.steps=600", "train.batch_size=256", "train.log_every=200",
         "train.progress=false", "name=qdgtest"]
QUICK = ["n_samples=300", "n_clusters=4", "envelope_counts=[2,4,8]", "n_init=4", "envelope_min_size=3"]


def run_qdg(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-m", "toy_quanta.cli.qdg", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _train(root: Path) -> tuple[Path, subprocess.CompletedProcess]:
    return root, run_app([*TRAIN, f"hydra.run.dir={root / 'run'}"], cwd=root)


@pytest.fixture(scope="module")
def trained(background) -> Path:
    root, proc = background["trained"].result()  # _train, started with the session
    assert proc.returncode == 0, proc.stderr
    return root / "run"


@pytest.mark.slow
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
    subsets = load_run(trained).member_inputs[0]
    rel = np.take_along_axis(samples["bits"], subsets[samples["task"]], axis=1)
    np.testing.assert_array_equal(rel.sum(1) % 2, samples["label"])
    np.testing.assert_array_equal(relevant_pattern(samples["task"], samples["bits"], subsets), frame["pattern"])
    # a second analysis keeps the first
    again = run_qdg([str(trained), *QUICK, "affinity=cosine", "gradient=margin"], cwd=trained.parent)
    assert again.returncode == 0, again.stderr
    assert len(list((trained / "qdg").iterdir())) >= 2 and (out / "report.json").exists()


BAD_SETTINGS = [
    (["affinity=gaussian"], "affinity='gaussian' is not allowed"),
    (["params=[embedding]"], "params=['embedding'] is not allowed"),
    (["member=3"], "member=3 is not allowed"),
    (["n_samples=5"], "n_samples=5 is not allowed"),
    (["loss_threshold_bits=1e-12"], "loss_threshold_bits=1e-12 is not allowed"),
]


def _grokking_run(job: Path) -> Path:
    """A directory holding only the config.yaml of a grokking (modular) job."""
    from omegaconf import OmegaConf

    from toy_quanta.config import Config, OptimConfig

    from toy_quanta.models.embed_mlp import EmbedMLPConfig

    from toy_quanta.tasks.modular import ModularConfig

    cfg = Config(task=ModularConfig(p=11, op="add"), model=EmbedMLPConfig(), optim=OptimConfig(name="adamw"))
    (job / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return job


# The runs that stop with an error: each is a few seconds of start-up, and they are independent, so
# they go side by side in the background (conftest.run_pool). Those that need no trained run start
# with the session, beside the training; the others once the end-to-end test (which counts the
# analyses in the run's qdg/ directory) is done.

def background_runs(items, tmp_path_factory) -> dict:
    """Started at the start of the session (conftest._background_runs): the training, a missing
    directory, an empty one, a grokking run; each -> (directory, finished process)."""
    names = {item.originalname for item in items}
    jobs = {}
    if names & {"test_qdg_end_to_end", "test_bad_settings_get_a_clear_error", "test_a_directory_that_is_not_a_run"}:
        root = tmp_path_factory.mktemp("qdg")
        jobs["trained"] = lambda: _train(root)
    if "test_a_directory_that_is_not_a_run" in names:
        missing = tmp_path_factory.mktemp("notarun") / "missing"
        jobs["missing"] = lambda: (missing.parent, run_qdg([str(missing)], cwd=missing.parent))
        empty = tmp_path_factory.mktemp("empty")
        jobs["empty"] = lambda: (empty, run_qdg([str(empty)], cwd=empty))
    if "test_a_grokking_run_is_refused_with_a_clear_message" in names:
        grok = _grokking_run(tmp_path_factory.mktemp("grokrun"))
        jobs["grokking"] = lambda: (grok, run_qdg([str(grok)], cwd=grok))
    return jobs


@pytest.fixture(scope="module")
def refusals(trained, selected_tests, run_pool, tmp_path_factory) -> dict:
    """name -> future of (directory, finished process): each bad setting on the trained run, and a run
    directory without its checkpoint."""
    futures = {}
    for item in selected_tests:
        if item.originalname == "test_bad_settings_get_a_clear_error":
            args = item.callspec.params["args"]
            futures[tuple(args)] = run_pool.submit(
                lambda args=args: (trained, run_qdg([str(trained), *QUICK, *args], cwd=trained.parent)))
        if item.originalname == "test_a_directory_that_is_not_a_run":
            job = tmp_path_factory.mktemp("nocheckpoint")
            (job / "config.yaml").write_text((trained / "config.yaml").read_text())  # a run without its checkpoint
            futures["no_checkpoint"] = run_pool.submit(lambda: (job, run_qdg([str(job)], cwd=job)))
    return futures


@pytest.mark.parametrize("args,message", BAD_SETTINGS)
def test_bad_settings_get_a_clear_error(refusals, args, message):
    _, proc = refusals[tuple(args)].result()  # run_qdg([str(trained), *QUICK, *args])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_directory_that_is_not_a_run(background, refusals):
    _, proc = background["missing"].result()  # run_qdg([str(tmp_path / "missing")])
    assert proc.returncode == 2 and "not a directory" in proc.stderr
    _, proc = background["empty"].result()  # an empty directory
    assert proc.returncode == 2 and "config.yaml" in proc.stderr and "Traceback" not in proc.stderr
    _, proc = refusals["no_checkpoint"].result()  # the trained run's config.yaml alone
    assert proc.returncode == 2 and "train.checkpoint=true" in proc.stderr and "Traceback" not in proc.stderr


def test_a_grokking_run_is_refused_with_a_clear_message(background):
    from toy_quanta.results import load_config

    tmp_path, proc = background["grokking"].result()  # run_qdg([str(tmp_path)]) on _grokking_run(tmp_path)
    loaded = load_config(tmp_path)
    assert (loaded.task.p, loaded.model.name) == (11, "embed_mlp")
    assert proc.returncode == 2 and "a sparse parity run (this one trained task=modular)" in proc.stderr
