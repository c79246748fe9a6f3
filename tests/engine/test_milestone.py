"""The milestone stop (train.stop_*, engine/milestone.py): the rule on planted metrics, and runs
that end at it: the same metrics as a run of the whole budget up to that step, the same step and
metrics after a stop by signal and a resume, a bad metric or level refused before training."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from conftest import tiny_config
from toy_quanta import job
from toy_quanta.config import validate
from toy_quanta.engine.loop import fit
from toy_quanta.engine.members import expand
from toy_quanta.engine.milestone import StopRule
from toy_quanta.errors import ConfigError, Interrupted

STOP = dict(stop_metric="test_acc", stop_at_least=0.8, stop_hold=2)


def _logs(values_LxM, alive_M=None):
    logs = {"test_acc": [np.asarray(v, np.float64) for v in values_LxM]}
    if alive_M is not None:
        logs["alive"] = [np.asarray(alive_M, np.float32)] * len(values_LxM)
    return logs


def test_the_rule_needs_every_member_to_hold_the_level():
    rule = StopRule("test_acc", 0.9, None, 2)
    assert not rule.fires(_logs([[0.95, 0.95]]))  # one log step: not held yet
    assert not rule.fires(_logs([[0.95, 0.5], [0.95, 0.95]]))  # member 1 reached it only now
    assert rule.fires(_logs([[0.5, 0.5], [0.95, 0.9], [0.91, 0.99]]))
    assert not rule.fires(_logs([[0.95, 0.95], [0.85, 0.95]]))  # member 0 fell back below it
    # a member that diverged (alive 0) no longer trains: it does not hold the others up
    assert rule.fires(_logs([[0.95, 0.1], [0.95, 0.1]], alive_M=[1.0, 0.0]))
    assert not rule.fires(_logs([[0.95, 0.1], [0.95, 0.1]], alive_M=[1.0, 1.0]))


def test_a_per_subtask_metric_needs_every_subtask_and_at_most_reads_downwards():
    rule = StopRule("subtask_loss", None, 0.1, 1)
    assert rule.fires({"subtask_loss": [np.array([[0.05, 0.02], [0.01, 0.09]])]})
    assert not rule.fires({"subtask_loss": [np.array([[0.05, 0.2], [0.01, 0.09]])]})
    assert rule.met_LxM(np.array([[[0.05, 0.2], [0.01, 0.09]]])).tolist() == [[False, True]]


def _cfg(**train):
    return tiny_config(train=dict(steps=600, log_every=20, **train), ensemble=dict(seeds=2))


@pytest.fixture(scope="module")
def whole():
    """The whole budget, no rule, parameters at every log step."""
    cfg = _cfg(snapshots=True)
    return fit(cfg, expand(cfg))


@pytest.fixture(scope="module")
def stopped():
    cfg = _cfg(**STOP)
    return fit(cfg, expand(cfg))


def test_a_run_ends_at_the_first_log_step_where_the_rule_holds(whole, stopped):
    met_LxM = StopRule("test_acc", 0.8, None, 2).met_LxM(whole.log_array("test_acc"))
    held_L = met_LxM[1:].all(1) & met_LxM[:-1].all(1)
    expected = whole.steps[1 + int(np.argmax(held_L))]
    assert held_L.any() and expected < 600
    assert stopped.stopped_at == stopped.steps_done == stopped.steps[-1] == expected
    assert whole.stopped_at is None and whole.steps_done == 600


def test_the_stopped_run_is_the_whole_run_up_to_its_step(whole, stopped):
    n = len(stopped.steps)
    assert stopped.steps == whole.steps[:n]
    for name, values in stopped.logs.items():
        np.testing.assert_array_equal(np.stack(values), np.stack(whole.logs[name][:n]), err_msg=name)
    snapshot = whole.snapshots[n - 1]  # the whole run's parameters at the stopped run's last step
    from flax import nnx

    final = nnx.to_pure_dict(stopped.params)
    for a, b in zip(jax_leaves(final), jax_leaves(snapshot)):
        np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_a_run_stopped_by_a_signal_resumes_to_the_same_milestone(tmp_path, stopped):
    cfg = _cfg(**STOP, checkpoint_every_s=0.0)
    state = tmp_path / "train_state.npz"
    calls = []

    def stop_after_two_calls():
        calls.append(1)
        return signal.SIGTERM if len(calls) == 2 else None

    with pytest.raises(Interrupted) as info:
        fit(cfg, expand(cfg), checkpoint=state, should_stop=stop_after_two_calls)
    assert state.is_file() and info.value.step < stopped.stopped_at
    resumed = fit(cfg, expand(cfg), checkpoint=state)
    assert resumed.resumed_from == info.value.step
    assert resumed.stopped_at == stopped.stopped_at and resumed.steps == stopped.steps
    for name, values in stopped.logs.items():
        np.testing.assert_array_equal(np.stack(resumed.logs[name]), np.stack(values), err_msg=name)


def test_the_summary_records_the_stop(tmp_path):
    summary = job.run_job(_cfg(**STOP), tmp_path / "run")
    assert summary["stopped"]["step"] == summary["steps"] < 600
    assert summary["stopped"]["budget"] == 600 and "test_acc >= 0.8" in summary["stopped"]["rule"]
    assert job.run_job(_cfg(), tmp_path / "whole")["stopped"] is None


def test_a_metric_the_task_does_not_log_is_refused_before_training(tmp_path):
    cfg = _cfg(stop_metric="test_accuracy", stop_at_least=0.9)
    with pytest.raises(ConfigError, match=r"train.stop_metric='test_accuracy' is not allowed: a metric this task "
                                          r"logs: one of .*test_acc") as info:
        fit(cfg, expand(cfg), on_log=lambda result: pytest.fail("trained"))
    assert info.value.key == "train.stop_metric"


@pytest.mark.parametrize("train, key", [
    (dict(stop_metric="test_acc"), "train.stop_at_least"),  # no level
    (dict(stop_metric="test_acc", stop_at_least=0.9, stop_at_most=0.1), "train.stop_at_least"),  # two levels
    (dict(stop_metric="test_acc", stop_at_least=float("nan")), "train.stop_at_least"),
    (dict(stop_metric="test_loss", stop_at_most=float("inf")), "train.stop_at_most"),
    (dict(stop_metric="", stop_at_least=0.9), "train.stop_metric"),
    (dict(stop_metric="test_acc", stop_at_least=0.9, stop_hold=0), "train.stop_hold"),
])
def test_bad_rules_are_refused_naming_the_key(train, key):
    with pytest.raises(ConfigError) as info:
        validate(_cfg(**train))
    assert info.value.key == key


def test_no_metric_means_no_rule_whatever_the_levels_say():
    validate(_cfg(stop_at_least=0.99))  # an experiment's level, its rule turned off by stop_metric=null
