"""The cluster extra's launchers (docs/scaling-out.md), on CPU, without SLURM: Hydra finds every
name; `hydra/launcher=vmap_submitit_local` sends each vmap group to submitit as one job and gives
every grid point its own directory and the vmap launcher's numbers; `hydra/launcher=joblib` runs
jobs in two processes; the local multi-process launchers keep JAX from preallocating GPU memory;
a group's checkpoint path is stable. The two sweeps start with the session, in the background
(conftest._background_runs); the vmap and basic sweeps they are compared with are conftest's."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the cluster (or test) extra")
pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="needs the cluster (or test) extra")

from conftest import SWEEP_OVERRIDES, read_summary, run_app  # noqa: E402
from toy_quanta import results  # noqa: E402

# seed=0,1 x model.width=8,16: Hydra numbers the grid points with the last key fastest, so
# job -> (seed, width) is 0 -> (0, 8), 1 -> (0, 16), 2 -> (1, 8), 3 -> (1, 16); two groups of two.
GRID = {0: (0, 8), 1: (0, 16), 2: (1, 8), 3: (1, 16)}
SWEEPS = {
    "vmap_submitit": (["hydra/launcher=vmap_submitit_local"], ["seed=0,1", "model.width=8,16"]),
    "joblib": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], ["seed=0,1"]),
}
NEEDS = {  # test -> the background sweep it reads
    "test_vmap_submitit_local_writes_every_grid_point_of_each_group": "vmap_submitit",
    "test_vmap_submitit_local_gives_the_vmap_launchers_numbers": "vmap_submitit",
    "test_joblib_runs_the_jobs_in_two_processes": "joblib",
}


def _sweep(root: Path, extra: list[str], sweep: list[str]) -> Path:
    """conftest._multirun in a directory made beforehand (the run happens in a pool thread)."""
    sweep_dir = root / "sweep"
    swept = {o.split("=")[0] for o in [*sweep, *extra]}
    base = [o for o in SWEEP_OVERRIDES if o.split("=")[0] not in swept]
    proc = run_app(["-m", *sweep, *base, *extra, f"hydra.sweep.dir={sweep_dir}"], cwd=root)
    assert proc.returncode == 0, f"multirun failed:\nSTDOUT\n{proc.stdout}\nSTDERR\n{proc.stderr}"
    return sweep_dir


def background_runs(items, tmp_path_factory) -> dict:
    """The sweeps the selected tests read, started at the start of the session."""
    wanted = {NEEDS[item.originalname] for item in items if item.originalname in NEEDS}
    jobs = {}
    for name in wanted:
        root = tmp_path_factory.mktemp(name)
        jobs[name] = lambda root=root, args=SWEEPS[name]: _sweep(root, *args)
    return jobs


@pytest.fixture(scope="module")
def submitit_sweep(background) -> Path:
    return background["vmap_submitit"].result()


@pytest.fixture(scope="module")
def joblib_sweep(background) -> Path:
    return background["joblib"].result()


def _metrics(job_dir: Path) -> pd.DataFrame:
    frame = pd.read_parquet(job_dir / "metrics.parquet")
    frame["metric"] = frame["metric"].astype(str)
    return frame.sort_values(["member", "metric", "step", "subtask"]).reset_index(drop=True)


def _same_run(a: Path, b: Path, rtol: float, atol: float) -> None:
    """Every metric row and every final parameter of job directories a and b agree."""
    ma, mb = _metrics(a), _metrics(b)
    assert len(ma) == len(mb) > 0
    for col in ("member", "step", "metric", "subtask", "seed"):
        assert ma[col].tolist() == mb[col].tolist(), col
    np.testing.assert_allclose(mb["value"].to_numpy(), ma["value"].to_numpy(), rtol=rtol, atol=atol)
    ca, cb = (results.load_checkpoint(d / "checkpoint.msgpack") for d in (a, b))
    for layer in ("inp", "out"):
        for p in ("kernel", "bias"):
            np.testing.assert_allclose(np.asarray(cb[layer][p]), np.asarray(ca[layer][p]), rtol=rtol, atol=atol)


def _check_job_dir(job: Path) -> dict:
    assert (job / "metrics.parquet").is_file() and (job / "config.yaml").is_file()
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        assert (job / ".hydra" / name).is_file(), job / ".hydra" / name
    summary = read_summary(job)
    assert summary["status"] == "completed", summary
    return summary


# --- Hydra finds every launcher by its name ---------------------------------------------------

def _launcher_config(name: str):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="toy_quanta.conf", version_base=None):
        return compose(config_name="config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher


@pytest.mark.parametrize("name, target", [
    ("submitit_slurm", "hydra_plugins.toy_quanta_vmap_launcher._submitit.SubmititSlurmLauncher"),
    ("submitit_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
    ("vmap_submitit_slurm", "hydra_plugins.toy_quanta_vmap_launcher._vmap_submitit.VmapSubmititSlurmLauncher"),
    ("vmap_submitit_local", "hydra_plugins.toy_quanta_vmap_launcher._vmap_submitit.VmapSubmititLocalLauncher"),
    ("joblib", "hydra_plugins.toy_quanta_vmap_launcher._joblib.JoblibLauncher"),
    ("ray", "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"),
    ("vmap", "hydra_plugins.toy_quanta_vmap_launcher.vmap_launcher.VmapLauncher"),
])
def test_hydra_finds_each_launcher_by_its_name(name, target):
    """Each name composes to its launcher, and the launcher's class is a known plugin (what
    `toy-quanta -m hydra/launcher=<name>` instantiates). ray only with the cluster extra."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    if name == "ray":
        pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="ray is in the cluster extra, not in test")
    assert _launcher_config(name)._target_ == target
    assert target in {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}


def test_local_multiprocess_launchers_keep_jax_from_preallocating_gpu_memory(monkeypatch):
    """submitit_local and vmap_submitit_local export XLA_PYTHON_CLIENT_PREALLOCATE=false in the shell
    that starts each job; joblib's workers start with it in their environment, which the launcher
    sets only while it launches."""
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as HydraJoblibLauncher
    from hydra_plugins.toy_quanta_vmap_launcher._joblib import JoblibLauncher

    for name in ("submitit_local", "vmap_submitit_local"):
        assert "export XLA_PYTHON_CLIENT_PREALLOCATE=false" in _launcher_config(name).setup, name
    conf = _launcher_config("joblib")
    assert conf.env == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}

    seen = {}
    monkeypatch.setattr(HydraJoblibLauncher, "launch",
                        lambda self, overrides, idx: seen.update(env=os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
                                                                 kwargs=self.joblib) or [])
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    JoblibLauncher(env=conf.env, n_jobs=2).launch([], 0)
    assert seen == {"env": "false", "kwargs": {"n_jobs": 2}}  # `env` is not handed to joblib.Parallel
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ


def test_a_groups_checkpoint_is_the_same_for_the_same_jobs_of_the_same_sweep(tmp_path):
    """.vmap_groups/<hash of the jobs' overrides and the group key>/train_state.npz: a requeued job
    or the same sweep run again (its settings changed or not) finds it; other jobs or another shape
    get another one."""
    from hydra_plugins.toy_quanta_vmap_launcher.vmap_launcher import Group, Job

    def group(*overrides, key="k", number=0):
        return Group(number, tuple(Job(i, tuple(o)) for i, o in enumerate(overrides)), key, len(overrides))

    path = group(["seed=0"], ["seed=1"]).state_path(tmp_path)
    assert path.parent.parent == tmp_path / ".vmap_groups" and path.name == "train_state.npz"
    assert group(["seed=0"], ["seed=1"], number=3).state_path(tmp_path) == path  # the numbering is not part of it
    # nor the settings a resumed run may change
    assert group(["seed=0", "train.checkpoint_every_s=60"], ["seed=1", "train.progress=true"]).state_path(tmp_path) == path
    assert len({path, group(["seed=0"], ["seed=2"]).state_path(tmp_path), group(["seed=0"]).state_path(tmp_path),
                group(["seed=0"], ["seed=1"], key="other").state_path(tmp_path)}) == 4


# --- real sweeps (subprocesses, started with the session) ---------------------------------

def test_vmap_submitit_local_writes_every_grid_point_of_each_group(submitit_sweep):
    """seed=0,1 x model.width=8,16: two groups (one per width), each ONE submitit job; every grid
    point has its own directory with .hydra/, a completed summary.json saying its group had 2
    members, its own seed and width; no group checkpoint is left behind."""
    for j, (seed, width) in GRID.items():
        job = submitit_sweep / str(j)
        summary = _check_job_dir(job)
        config = yaml.safe_load((job / "config.yaml").read_text())
        assert (config["seed"], config["model"]["width"]) == (seed, width)
        assert f"seed={seed}" in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert summary["n_members"] == 1 and summary["members"][0]["seed"] == seed
        group = summary["group"]
        assert group["group_members"] == 2
        assert group["group_jobs"] == [j2 for j2, (_, w) in GRID.items() if w == width]
    submitted = [d for d in (submitit_sweep / ".submitit").iterdir() if list(d.glob("*_result.pkl"))]
    assert len(submitted) == 2  # one submitit job per group
    assert not (submitit_sweep / ".vmap_groups").exists()
    launcher = yaml.safe_load((submitit_sweep / "multirun.yaml").read_text())["hydra"]["launcher"]
    assert launcher["_target_"].endswith("VmapSubmititLocalLauncher")


def test_vmap_submitit_local_gives_the_vmap_launchers_numbers(submitit_sweep, vmap_sweep, vmap_width_sweep):
    """The width-8 group (seeds 0 and 1) is conftest's vmap_sweep group: the same metrics and final
    parameters. The width-16 seed-0 point matches vmap_width_sweep's width-16 job, trained in a group
    of one (so to the vmap-versus-one-by-one tolerance)."""
    _same_run(vmap_sweep / "0", submitit_sweep / "0", rtol=1e-6, atol=1e-7)
    _same_run(vmap_sweep / "1", submitit_sweep / "2", rtol=1e-6, atol=1e-7)
    _same_run(vmap_width_sweep / "1", submitit_sweep / "1", rtol=1e-4, atol=1e-5)
    # the grid points differ from each other, so the comparisons are not trivial
    assert not np.allclose(_metrics(submitit_sweep / "0")["value"], _metrics(submitit_sweep / "2")["value"])


def test_joblib_runs_the_jobs_in_two_processes(joblib_sweep, basic_sweep):
    """hydra/launcher=joblib with n_jobs=2: both jobs complete, each on its own (no group), with the
    basic launcher's numbers."""
    for j in (0, 1):
        summary = _check_job_dir(joblib_sweep / str(j))
        assert summary["group"] is None and summary["members"][0]["seed"] == j
        _same_run(basic_sweep / str(j), joblib_sweep / str(j), rtol=1e-6, atol=1e-7)
    launcher = yaml.safe_load((joblib_sweep / "multirun.yaml").read_text())["hydra"]["launcher"]
    assert launcher["n_jobs"] == 2 and launcher["env"] == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
