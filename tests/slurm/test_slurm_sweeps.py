"""The SLURM launchers against a real slurmctld (scripts/slurm-up.sh brings one up on this machine,
as root): a sweep through vmap_submitit_slurm and through submitit_slurm completes, and its results
equal the same sweep run locally (vmap and basic: the same programs on the same CPU, so equal to the
bit; a GPU node against a CPU would agree only to float rounding)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slurm

SWEEP = ["seed=0,1", "train.steps=300", "train.log_every=100", "train.progress=false"]


@pytest.fixture(scope="module")
def cluster() -> None:
    """Skip, saying why, unless a SLURM controller answers with an idle node."""
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM client here: bring a one-node cluster up with scripts/slurm-up.sh (as root)")
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if states.returncode != 0 or not {"idle", "mixed", "allocated"} & set(states.stdout.split()):
        pytest.skip(f"no SLURM node up (sinfo: {(states.stderr or states.stdout).strip()[:120]}): "
                    "scripts/slurm-up.sh (as root) brings one up")


def _sweep(folder: Path, launcher: str) -> Path:
    out = folder / launcher
    proc = subprocess.run([sys.executable, "-m", "toy_quanta.cli.app", "-m", f"hydra/launcher={launcher}", *SWEEP,
                           f"hydra.sweep.dir={out}", *(["hydra.launcher.timeout_min=10"] if "slurm" in launcher else [])],
                          cwd=folder, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _metrics(job: Path) -> pd.DataFrame:
    frame = pd.read_parquet(job / "metrics.parquet")
    return frame.sort_values(["member", "metric", "step", "subtask"]).reset_index(drop=True)


@pytest.mark.parametrize("slurm, local", [("vmap_submitit_slurm", "vmap"), ("submitit_slurm", "basic")])
def test_a_slurm_sweep_equals_the_same_sweep_run_here(cluster, tmp_path, slurm, local):
    remote, here = _sweep(tmp_path, slurm), _sweep(tmp_path, local)
    for job in ("0", "1"):
        summary = json.loads((remote / job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["members"][0]["seed"] == int(job)
        if slurm.startswith("vmap"):
            assert summary["group"]["group_jobs"] == [0, 1]  # one array task trained both grid points
        pd.testing.assert_frame_equal(_metrics(remote / job), _metrics(here / job))
