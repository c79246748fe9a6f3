"""toy_quanta.engine.checkpoint and fit's resume: a run stopped at any call boundary and resumed
from its checkpoint ends exactly as the run that never stopped; bad checkpoints are refused, named
and kept."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from conftest import tiny_config
from toy_quanta.engine import checkpoint as ckpt
from toy_quanta.engine import loop
from toy_quanta.engine.members import expand
from toy_quanta.errors import Interrupted, RunFileError


def _cfg(**train):
    cfg = tiny_config(train={"steps": 60, "log_every": 20, "snapshots": True, "checkpoint_every_s": 0, **train},
                      ensemble={"seeds": 2})
    return cfg


def _short_calls(monkeypatch):
    """Calls of 3 steps at most, so stops also fall between log steps (running loss sums saved)."""
    monkeypatch.setattr(loop, "FIRST_SUBCHUNK", 3)
    monkeypatch.setattr(loop, "SUBCHUNK_S", 0.0)


def _assert_same(a: loop.FitResult, b: loop.FitResult) -> None:
    assert a.steps == b.steps and a.logs.keys() == b.logs.keys()
    for name in a.logs:
        np.testing.assert_array_equal(np.stack(a.logs[name]), np.stack(b.logs[name]), err_msg=name)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    assert len(a.snapshots) == len(b.snapshots)
    for sa, sb in zip(a.snapshots, b.snapshots):
        for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.alive, b.alive)


@pytest.fixture(scope="module")
def reference():
    cfg = _cfg()
    return loop.fit(cfg, expand(cfg))


@pytest.mark.parametrize("stop_after", [2, 7])
def test_a_run_stopped_and_resumed_equals_the_run_that_never_stopped(stop_after, reference, tmp_path, monkeypatch):
    """Stopped after the 2nd call (at a log step) or the 7th (between log steps), then resumed from
    the checkpoint: metrics, parameters and snapshots are identical, no log step missing or twice."""
    _short_calls(monkeypatch)
    cfg, path = _cfg(), tmp_path / ckpt.STATE_FILE
    calls = iter(range(1000))
    with pytest.raises(Interrupted) as stopped:
        loop.fit(cfg, expand(cfg), checkpoint=path, should_stop=lambda: 15 if next(calls) + 1 >= stop_after else None)
    assert path.is_file() and stopped.value.result.steps_done == stopped.value.step > 0
    resumed = loop.fit(cfg, expand(cfg), checkpoint=path)
    assert resumed.resumed_from == stopped.value.step
    _assert_same(resumed, reference)


def test_how_a_run_is_cut_into_calls_does_not_change_it(reference, monkeypatch):
    """Calls of 3 steps give the same bits as whole log intervals: every step is the same program."""
    _short_calls(monkeypatch)
    cfg = _cfg()
    _assert_same(loop.fit(cfg, expand(cfg)), reference)


def test_a_completed_checkpoint_resumes_at_the_end_without_training(reference, tmp_path):
    cfg, path = _cfg(), tmp_path / ckpt.STATE_FILE
    loop.fit(cfg, expand(cfg), checkpoint=path)
    again = loop.fit(cfg, expand(cfg), checkpoint=path)
    assert again.resumed_from == 60 and again.train_s == pytest.approx(again.train_s)
    _assert_same(again, reference)


def _saved(tmp_path):
    cfg, path = _cfg(), tmp_path / ckpt.STATE_FILE
    loop.fit(cfg, expand(cfg), checkpoint=path)
    return cfg, path


def test_a_truncated_checkpoint_is_named_and_kept(tmp_path):
    cfg, path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(RunFileError, match=r"train_state\.npz: not a readable checkpoint.*the file is kept"):
        loop.fit(cfg, expand(cfg), checkpoint=path)
    assert path.stat().st_size == 1000


def test_a_checkpoint_of_another_shape_or_other_members_is_refused(tmp_path):
    cfg, path = _saved(tmp_path)
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, width=cfg.model.width * 2))
    with pytest.raises(RunFileError, match=r"incompatible checkpoint: state\.params.*float32\["):
        loop.fit(wider, expand(wider), checkpoint=path)
    reseeded = dataclasses.replace(cfg, seed=5)
    with pytest.raises(RunFileError, match="other members"):
        loop.fit(reseeded, expand(reseeded), checkpoint=path)


def test_save_then_load_round_trips_every_array(tmp_path):
    cfg = _cfg()
    trainer = loop.make_trainer(cfg, expand(cfg))
    hyper, inputs = loop.trainer_inputs(cfg, trainer, expand(cfg))
    state, _ = jax.jit(jax.vmap(trainer.init))(hyper, inputs)
    state = jax.device_get(state)
    logs = {"test_loss": [np.array([1.0, 2.0]), np.array([0.5, 0.25])]}
    ckpt.save(tmp_path / "s.npz", state, [0, 20], logs, [], expand(cfg), 1.5)
    saved = ckpt.load(tmp_path / "s.npz", state, expand(cfg))
    for x, y in zip(jax.tree.leaves(saved.state), jax.tree.leaves(state)):
        np.testing.assert_array_equal(x, y)
        assert np.asarray(x).dtype == np.asarray(y).dtype
    assert saved.steps == [0, 20] and saved.train_s == 1.5
    np.testing.assert_array_equal(np.stack(saved.logs["test_loss"]), np.stack(logs["test_loss"]))
