"""The SLURM tests' cluster. They run against a real slurmctld on this machine
(scripts/slurm-up.sh, as root; .ci/run brings one up) and skip, saying why, where none is up."""

from __future__ import annotations

import shutil
import subprocess

import pytest


@pytest.fixture(scope="session")
def cluster() -> None:
    """Skip, saying why, unless a SLURM controller answers with an idle node."""
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM client here: bring a one-node cluster up with scripts/slurm-up.sh (as root)")
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if states.returncode != 0 or not {"idle", "mixed", "allocated"} & set(states.stdout.split()):
        pytest.skip(f"no SLURM node up (sinfo: {(states.stderr or states.stdout).strip()[:120]}): "
                    "scripts/slurm-up.sh (as root) brings one up")
