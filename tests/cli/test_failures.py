"""A multirun whose jobs fail in the ways real runs do: an exception during training (not a bad
config) and members that blow up. The other jobs finish untouched, and collect lists each."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import SWEEP_OVERRIDES, read_summary, run_app
from toy_quanta.analysis.collect import collect

# A task of one's own (tasks_module=) that raises while the job builds its training program, for seed 1 only.
FLAKY = textwrap.dedent('''
    from dataclasses import dataclass
    from toy_quanta.registry import register_task
    from toy_quanta.tasks.sparse_parity import SparseParity, SparseParityConfig

    @dataclass
    class FlakyConfig(SparseParityConfig):
        name: str = "flaky"

    class Flaky(SparseParity):
        name = "flaky"
        config = FlakyConfig

        def program(self, cfg, members):
            if cfg.seed == 1:
                raise RuntimeError("device lost while building seed 1's program")
            return super().program(cfg, members)

    register_task(Flaky())
''')


def background_runs(items, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("failures")
    (root / "flaky.py").write_text(FLAKY)
    sweep = root / "sweep"
    args = ["-m", "tasks_module=flaky.py", "task=flaky", "seed=0,1", "optim=sgd", "optim.lr=0.1,1e9",
            *[o for o in SWEEP_OVERRIDES if not o.startswith("optim.lr")], f"hydra.sweep.dir={sweep}"]
    return {"sweep": lambda: (sweep, run_app(args, cwd=root))}


@pytest.fixture(scope="module")
def sweep(background) -> tuple[Path, object]:
    return background["sweep"].result()


def test_an_exception_fails_its_jobs_only_and_a_blow_up_is_a_completed_job_with_diverged_members(sweep):
    sweep_dir, proc = sweep
    assert proc.returncode != 0 and "device lost" in proc.stderr  # the sweep reports the failure at the end
    jobs = {int(p.name): read_summary(p) for p in sweep_dir.iterdir() if (p / "summary.json").is_file()}
    assert sorted(jobs) == [0, 1, 2, 3]  # seed x lr: (0, 0.1), (0, 1e9), (1, 0.1), (1, 1e9)
    assert jobs[0]["status"] == "completed" and not any(m["diverged"] for m in jobs[0]["members"])
    assert jobs[1]["status"] == "completed" and all(m["diverged"] for m in jobs[1]["members"])
    assert "training loss above" in jobs[1]["divergence_rule"]
    for j in (2, 3):
        assert jobs[j]["status"] == "failed" and "RuntimeError: device lost" in jobs[j]["error"]
    _, report = collect(sweep_dir)
    assert report["jobs_completed"] == 2 and report["jobs_failed"] == 2
    assert {f["job"] for f in report["failed"]} == {"2", "3"}
    assert [d["job"] for d in report["diverged"]] == ["1"] and report["diverged"][0]["members"] == [0]
    assert json.loads(json.dumps(report)) == report
