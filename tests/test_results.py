"""What a job writes (toy_quanta.results): tidy metrics, summaries, checkpoints, atomic files."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from conftest import member
from test_registry import own_registry  # noqa: F401  (a fixture)
from toy_quanta import results
from toy_quanta.engine.members import vector_keys
from toy_quanta.engine.loop import FitResult
from toy_quanta.models.mlp import MLP

SCALARS = ("train_loss", "test_loss", "param_norm", "alive")
PER_TASK = ("subtask_loss",)


def fake_result(n_members=3, steps=(0, 10, 30), n_tasks=4, seed=0) -> FitResult:
    """A FitResult with random logs of the engine's shapes: (M,) or (M, T) per log step."""
    rng = np.random.default_rng(seed)
    members = [member(seed=i, lr=10.0 ** -(i + 1), weight_decay=0.1 * i, init_scale=1 + i, alpha=0.2 * i)
               for i in range(n_members)]
    logs = {name: [rng.random(n_members).astype(np.float32) for _ in steps] for name in SCALARS}
    logs.update({name: [rng.random((n_members, n_tasks)).astype(np.float32) for _ in steps] for name in PER_TASK})
    return FitResult(members=members, task="sparse_parity", steps=list(steps), logs=logs, alive=np.ones(n_members, bool),
                     diverged_step=-np.ones(n_members, np.int32), steps_done=steps[-1])


# --- metrics_frame ---------------------------------------------------------------------------

def test_metrics_frame_is_tidy_one_row_per_member_step_metric_subtask():
    """Exactly one row per (member, step, metric, subtask) with the value from the logs; subtask -1 for
    whole-distribution metrics; every per-member hyperparameter as a column; swept columns added."""
    r = fake_result()
    frame = results.metrics_frame(r, {"model.width": 16, "seed": 999})
    M, L, T = 3, 3, 4
    assert len(frame) == M * L * (len(SCALARS) + T * len(PER_TASK))
    assert not frame.duplicated(["member", "step", "metric", "subtask"]).any()
    for col in ("member", "step", "metric", "subtask", "value", *vector_keys(), "model.width"):
        assert col in frame.columns, col
    assert set(frame["metric"].astype(str)) == set(SCALARS) | set(PER_TASK)
    assert sorted(frame["step"].unique().tolist()) == [0, 10, 30]

    # every value, looked up independently in the logs
    expected = {}
    for name, per_step in r.logs.items():
        for li, step in enumerate(r.steps):
            arr = np.asarray(per_step[li])
            for m in range(M):
                if arr.ndim == 1:
                    expected[(m, step, name, -1)] = float(arr[m])
                else:
                    for t in range(T):
                        expected[(m, step, name, t)] = float(arr[m, t])
    got = {(int(row.member), int(row.step), str(row.metric), int(row.subtask)): row.value for row in frame.itertuples()}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-7), key

    # per-member hyperparameters follow the member; swept columns are constant; a swept column never
    # overwrites a per-member one
    for key in vector_keys():
        for m in range(M):
            column = frame.loc[frame["member"] == m, key]
            assert {None if pd.isna(v) else v for v in column} == {r.members[m][key]}, key
    assert set(frame["model.width"]) == {16}
    assert set(frame["seed"]) == {0, 1, 2}
    assert (frame.loc[frame["metric"].isin(SCALARS), "subtask"] == -1).all()
    assert set(frame.loc[frame["metric"] == "subtask_loss", "subtask"]) == set(range(T))


def test_write_metrics_parquet_round_trip(tmp_path):
    r = fake_result()
    path = tmp_path / results.METRICS_FILE
    results.write_metrics(path, r, {"task.n": 8})
    back = pd.read_parquet(path)
    frame = results.metrics_frame(r, {"task.n": 8})
    assert len(back) == len(frame)
    np.testing.assert_allclose(back["value"].to_numpy(), frame["value"].to_numpy())
    assert (back["task.n"] == 8).all()
    assert [p.name for p in tmp_path.iterdir()] == [results.METRICS_FILE]


# --- summaries -------------------------------------------------------------------------------

def test_member_summaries_final_values_and_divergence():
    """Final metrics per member (loss also in bits, subtasks below 0.1 bits counted) and divergence."""
    r = fake_result(n_members=2, n_tasks=5)
    r.logs["subtask_loss"][-1] = np.array([[0.01, 0.5, 0.06, 0.07, 0.0], [1.0, 1.0, 1.0, 1.0, 0.001]], np.float32)
    r.alive = np.array([True, False])
    r.diverged_step = np.array([-1, 17], np.int32)
    rows = results.member_summaries(r)
    assert [row["member"] for row in rows] == [0, 1]
    for i, row in enumerate(rows):
        for key in vector_keys():
            assert row[key] == r.members[i][key]
        assert math.isclose(row["final"]["test_loss"], float(r.logs["test_loss"][-1][i]), rel_tol=1e-7)
        assert math.isclose(row["final"]["test_loss_bits"], row["final"]["test_loss"] / math.log(2), rel_tol=1e-9)
        assert "alive" not in row["final"]
    # 0.1 bits = 0.0693 nats: 0.01, 0.06 and 0.0 are learned, 0.07 and 0.5 are not
    assert rows[0]["final"]["subtasks_learned"] == 3 and rows[1]["final"]["subtasks_learned"] == 1
    assert rows[0]["diverged"] is False and rows[0]["diverged_step"] is None
    assert rows[1]["diverged"] is True and rows[1]["diverged_step"] == 17
    json.dumps(rows)  # plain JSON types


def test_write_json_handles_numpy(tmp_path):
    path = tmp_path / "x.json"
    results.write_json(path, {"a": np.float32(1.5), "b": np.arange(3), "c": np.int64(7)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": 7}


# --- checkpoints -----------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 3])
def test_checkpoint_round_trip(tmp_path, depth):
    """save_checkpoint then load_checkpoint gives back the parameters (leading member axis), exactly."""
    states = [nnx.split(MLP(4, 6, 8, depth=depth, rngs=nnx.Rngs(s)))[1] for s in range(2)]
    params = jax.tree.map(lambda a, b: np.stack([np.asarray(a), np.asarray(b)]), states[0], states[1])
    path = tmp_path / results.CHECKPOINT_FILE
    results.save_checkpoint(path, params)
    back = results.load_checkpoint(path)
    want = nnx.to_pure_dict(params)
    flat_want = jax.tree_util.tree_flatten_with_path(want)[0]
    flat_back = jax.tree_util.tree_flatten_with_path(back)[0]
    assert [str(p) for p, _ in flat_back] == [str(p) for p, _ in flat_want]
    for (_, a), (_, b) in zip(flat_want, flat_back):
        assert np.asarray(b).shape[0] == 2
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # and the loaded dict restores a working model of member 1
    model = MLP(4, 6, 8, depth=depth, rngs=nnx.Rngs(5))
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda x: jax.numpy.asarray(np.asarray(x)[1]), back))
    ref = nnx.merge(graphdef, states[1])
    task, bits = np.array([0, 3, 1]), np.ones((3, 6), np.uint8)
    np.testing.assert_array_equal(np.asarray(nnx.merge(graphdef, state)(task, bits)), np.asarray(ref(task, bits)))


# --- atomic writes ---------------------------------------------------------------------------

def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "file.txt"
    for i in range(3):
        results.atomic_write(path, lambda p, i=i: p.write_text(f"version {i}"))
    assert path.read_text() == "version 2"
    assert [p.name for p in path.parent.iterdir()] == ["file.txt"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    """A write that raises half-way: the old content stays, the exception propagates, no temp file."""
    path = tmp_path / "file.txt"
    results.atomic_write(path, lambda p: p.write_text("old"))

    def half_then_fail(p: Path):
        with open(p, "w") as f:
            f.write("new, half")
            f.flush()
            os.fsync(f.fileno())
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        results.atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_failed_first_write_creates_nothing(tmp_path):
    path = tmp_path / "never.json"
    with pytest.raises(ValueError):
        results.atomic_write(path, lambda p: (p.write_text("{"), (_ for _ in ()).throw(ValueError("x"))))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("group", ["task", "model"])
def test_a_config_without_its_task_or_model_name_is_a_clear_error(tmp_path, group):
    """No task or model stands in for a missing one: the error names config.yaml and the key."""
    from omegaconf import OmegaConf

    from conftest import tiny_config
    from toy_quanta.errors import RunFileError

    raw = OmegaConf.create(OmegaConf.to_container(OmegaConf.structured(tiny_config())))
    del raw[group]["name"]
    OmegaConf.save(raw, tmp_path / "config.yaml")
    with pytest.raises(RunFileError, match=rf"config\.yaml: no {group}\.name") as info:
        results.load_config(tmp_path)
    assert info.value.path == tmp_path / "config.yaml"


def test_a_users_task_loads_from_anywhere_its_module_found_where_the_job_ran(tmp_path, monkeypatch, own_registry):
    """tasks_module=results_test_tasks.py, relative to where the job ran: load_config, run from
    another directory, imports it from there (Hydra's runtime.cwd); gone, it is a ConfigError
    naming the module and config.yaml."""
    from omegaconf import OmegaConf

    from test_registry import USER_TASK
    from toy_quanta.errors import ConfigError

    ran_in, job, elsewhere = tmp_path / "project", tmp_path / "project" / "outputs" / "mine", tmp_path / "elsewhere"
    for d in (job / ".hydra", elsewhere):
        d.mkdir(parents=True)
    module = ran_in / "results_test_tasks.py"
    module.write_text(USER_TASK.format(cls="ResultsTestTask", name="results_test_task"))
    OmegaConf.save(OmegaConf.create({"tasks_module": "results_test_tasks.py", "task": {"name": "results_test_task"},
                                     "model": {"name": "dense_mlp"}}), job / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"cwd": str(ran_in)}}}), job / ".hydra" / "hydra.yaml")
    monkeypatch.chdir(elsewhere)  # not where the job ran

    cfg = results.load_config(job)
    assert (cfg.task.name, type(cfg.task).__name__, cfg.model.name) == ("results_test_task", "ResultsTestTaskConfig",
                                                                        "dense_mlp")
    module.unlink()
    for name in [n for n in sys.modules if n.startswith("toy_quanta_user_tasks.")]:
        del sys.modules[name]  # imported once: forget it, as a new process would
    with pytest.raises(ConfigError, match=r"tasks_module='results_test_tasks\.py'.*config\.yaml"):
        results.load_config(job)
