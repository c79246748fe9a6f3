"""The task contract (toy_quanta.tasks.base.Task, toy_quanta.engine.program.Program): every registered
task (toy_quanta.registry.tasks()) with every model it allows (Task.models), as a tiny 2-member job
through toy_quanta.job.run_job. Each job writes its files, a completed summary with the task's
headline numbers, metrics at every log step, finite evaluations, and a checkpoint that, evaluated
through the engine (engine.loop.make_trainer), gives back the last logged test loss and accuracy."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from toy_quanta import registry, results
from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig
from toy_quanta.engine.loop import make_trainer, trainer_inputs
from toy_quanta.engine.members import expand
from toy_quanta.job import run_job

# Tiny task settings per built-in task: a registered task missing here fails test_every_task_has_a_tiny_config.
TINY_TASKS: dict[str, dict] = {
    "sparse_parity": dict(n_tasks=4, n=8, k=3, test_size=64, per_task_test=8),
    "modular": dict(p=7, op="add"),
    "symbol_add": dict(p=5, train_fraction=0.6),
    "mnist": dict(source="embedded", n_train=50),
    "teacher_student": dict(n_train=20, n_test=40),
    "induction": dict(vocab=16, seq_len=12, block_min=3, block_max=5, test_size=16, probe_size=4),
}
# Tiny model settings per built-in model.
TINY_MODELS: dict[str, dict] = {
    "transformer": dict(d_model=16, n_heads=2, d_mlp=32, n_layers=1),
    "embed_mlp": dict(d_embed=8, width=16),
    "dense_mlp": dict(width=16, depth=1),
    "onehot_mlp": dict(width=16, depth=1),
    "mlp": dict(width=16),
}
# Figures a task writes besides curves.png, with the models they need (None: any model).
EXTRA_FIGURES: dict[str, tuple[str, ...]] = {
    "modular": ("embedding_ring.png",),
    "symbol_add": ("representation.png",),
}
STEPS, LOG_EVERY, SEEDS = 6, 3, 2
LOG_STEPS = [0, 3, 6]
JOB_FILES = ("config.yaml", "metrics.parquet", "summary.json", "checkpoint.msgpack", "curves.png")
FINAL = ("train_loss", "train_acc", "test_loss", "test_acc")

CASES = [(name, model) for name, task in registry.tasks().items() if name in TINY_TASKS for model in task.models]


def test_every_task_has_a_tiny_config():
    """A task registered without a tiny config here would escape the contract test."""
    for name, task in registry.tasks().items():
        assert name in TINY_TASKS, (f"task {name!r} has no tiny config: add one to TINY_TASKS in "
                                    f"tests/tasks/test_contract.py")
        for model in task.models:
            assert model in TINY_MODELS, (f"model {model!r} (allowed by task {name!r}) has no tiny config: add one "
                                          f"to TINY_MODELS in tests/tasks/test_contract.py")


def tiny(task_name: str, model_name: str) -> Config:
    task = registry.task(task_name)
    return Config(task=task.config(**TINY_TASKS[task_name]),
                  model=registry.model(model_name).config(**TINY_MODELS[model_name]),
                  optim=OptimConfig(name="adamw", lr=1e-2),
                  train=TrainConfig(steps=STEPS, batch_size=16, log_every=LOG_EVERY, progress=False),
                  ensemble=EnsembleConfig(seeds=SEEDS), name=f"contract_{task_name}_{model_name}")


@pytest.fixture(scope="module", params=CASES, ids=[f"{t}-{m}" for t, m in CASES])
def job(request, tmp_path_factory):
    """(task name, model name, cfg, job directory, summary) of one tiny job."""
    task_name, model_name = request.param
    cfg = tiny(task_name, model_name)
    out = tmp_path_factory.mktemp(f"contract_{task_name}_{model_name}")
    summary = run_job(cfg, out)
    return task_name, model_name, cfg, out, summary


def _metrics(out) -> pd.DataFrame:
    frame = pd.read_parquet(out / results.METRICS_FILE)
    frame["metric"] = frame["metric"].astype(str)
    return frame


def _member_logs(frame: pd.DataFrame, member: int) -> dict[str, np.ndarray]:
    """One member's metrics at every log step, as a task's summarize gets them."""
    logs = {}
    for name, rows in frame[frame.member == member].groupby("metric", observed=True):
        if (rows.subtask == -1).all():
            logs[name] = rows.sort_values("step")["value"].to_numpy()
        else:
            table = rows.pivot(index="step", columns="subtask", values="value").sort_index()
            logs[name] = table.to_numpy()
    return logs


def test_the_job_writes_its_files(job):
    task_name, model_name, _, out, _ = job
    for name in (*JOB_FILES, *EXTRA_FIGURES.get(task_name, ())):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_summary_has_every_member_and_the_headline(job):
    task_name, _, cfg, out, summary = job
    on_disk = json.loads((out / results.SUMMARY_FILE).read_text())
    assert on_disk["status"] == summary["status"] == "completed"
    assert on_disk["n_members"] == len(on_disk["members"]) == SEEDS and on_disk["steps"] == STEPS
    assert [m["seed"] for m in on_disk["members"]] == [0, 1]
    task = registry.task(task_name)
    # the headline keys that apply: those the task's summarize gives from member 0's logged metrics
    # (read back from metrics.parquet: (L,) scalars, (L, T) per-subtask vectors), and its final metrics
    logs = _member_logs(_metrics(out), 0)
    summarised = set(task.summarize(np.asarray(LOG_STEPS), logs))
    applies = [key for key in task.headline if key in summarised or key in logs]
    for member in on_disk["members"]:
        final = member["final"]
        for key in (*FINAL, *applies):
            assert key in final, (key, sorted(final))
        for key in FINAL:
            assert math.isfinite(final[key]), (key, final[key])
        assert 0.0 <= final["train_acc"] <= 1.0 and 0.0 <= final["test_acc"] <= 1.0
        assert member["diverged"] is False


def test_metrics_have_every_log_step_for_both_members(job):
    _, _, _, out, _ = job
    frame = _metrics(out)
    assert sorted(frame.member.unique().tolist()) == list(range(SEEDS))
    for member in range(SEEDS):
        for name in FINAL:
            rows = frame[(frame.metric == name) & (frame.member == member) & (frame.subtask == -1)]
            assert sorted(rows.step.tolist()) == LOG_STEPS, (member, name)
            assert np.all(np.isfinite(rows.value.to_numpy())), (member, name)
    # the members differ (their seeds do)
    loss = frame[(frame.metric == "test_loss") & (frame.subtask == -1)].sort_values(["member", "step"])
    assert not np.array_equal(*[loss[loss.member == m].value.to_numpy() for m in range(SEEDS)])


def test_the_checkpoint_reproduces_the_last_logged_evaluation(job):
    """The saved final parameters, put into a fresh engine state and evaluated by the trainer's
    evaluation, give the test loss and accuracy logged at the last step."""
    _, _, cfg, out, _ = job
    loaded = results.load_checkpoint(out / results.CHECKPOINT_FILE)
    members = expand(cfg)
    trainer = make_trainer(cfg, members)
    hyper, inputs = trainer_inputs(cfg, trainer, members)
    state, data = jax.jit(jax.vmap(trainer.init))(hyper, inputs)
    fresh = nnx.to_pure_dict(state.params)
    assert jax.tree.structure(fresh) == jax.tree.structure(loaded)
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(loaded)):
        assert np.shape(a) == np.shape(b)
    params = jax.tree.map(np.array, state.params)
    nnx.replace_by_pure_dict(params, jax.tree.map(np.asarray, loaded))
    logs = jax.jit(jax.vmap(trainer.evaluate))(state._replace(params=params), data)
    frame = _metrics(out)
    for name in ("test_loss", "test_acc"):
        last = frame[(frame.metric == name) & (frame.step == STEPS) & (frame.subtask == -1)].sort_values("member")
        np.testing.assert_allclose(np.asarray(logs[name]), last["value"].to_numpy(), rtol=1e-5, err_msg=name)
        assert np.all(np.isfinite(np.asarray(logs[name])))


def test_the_engine_and_the_report_ask_different_things_of_a_task():
    """Task is TaskEngine (what training needs) plus TaskReport (what a report needs), with no
    method in both; plotting is no part of the engine's side (tasks/base.py imports no plots)."""
    import inspect

    from toy_quanta.tasks import base, report

    engine = {n for n in vars(base.TaskEngine) if not n.startswith("__")}
    shown = {n for n in vars(report.TaskReport) if not n.startswith("__")}
    assert {"validate", "program", "member_inputs", "member_keys", "model_io", "group_key"} <= engine
    assert {"summarize", "report_line", "report_lines", "figures", "after_run", "describe"} <= shown
    assert not engine & shown
    assert issubclass(base.Task, base.TaskEngine) and issubclass(base.Task, report.TaskReport)
    assert "plots" not in inspect.getsource(base) and "matplotlib" not in inspect.getsource(base)


def test_the_engine_trains_a_task_that_has_no_report_side():
    """engine.loop.fit reads a task only through TaskEngine: a task that is nothing else trains,
    and its members' test loss equals the full task's (sparse parity, same config and seeds)."""
    from toy_quanta.engine.loop import fit
    from toy_quanta.tasks.base import TaskEngine
    from toy_quanta.tasks.sparse_parity import SparseParity, SparseParityConfig

    full = SparseParity()

    class Bare(TaskEngine):  # the engine's side of sparse parity, and nothing more
        name, config, models, member_keys = "bare_parity", SparseParityConfig, ("mlp",), full.member_keys
        validate, model_io = full.validate, full.model_io
        member_inputs, program = full.member_inputs, full.program

    cfg = tiny("sparse_parity", "mlp")
    registry.register_task(Bare())
    try:
        bare_cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, name="bare_parity"))
        bare = fit(bare_cfg, expand(bare_cfg))
    finally:
        registry._TASKS.pop("bare_parity")
    ref = fit(cfg, expand(cfg))
    np.testing.assert_array_equal(bare.log_array("test_loss"), ref.log_array("test_loss"))
