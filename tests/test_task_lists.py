"""A task's own per-member key (Task.member_keys) without a field in config.py: the majority task of
docs/adding-a-task.md declares task.noise; `ensemble.noise=[...]` makes its members, every value
is validated by the task, and arms may set it."""

from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

from docs.test_adding_a_task import PAGE, page_files
from toy_quanta import registry
from toy_quanta.checks import ensemble_list
from toy_quanta.config import validate
from toy_quanta.engine.members import expand, stack
from toy_quanta.errors import ConfigError
from toy_quanta.job import to_config


@pytest.fixture(scope="module")
def majority(tmp_path_factory):
    """The page's task, registered for this module only (the other tests' lists of tasks stay the
    built-in ones)."""
    folder = tmp_path_factory.mktemp("majority_lists")
    (folder / "majority.py").write_text(page_files(PAGE.read_text())["majority.py"])
    tasks, before = dict(registry.tasks()), set(sys.modules)
    registry.import_tasks_module(str(folder / "majority.py"))
    yield registry.task("majority")
    registry._TASKS.clear()
    registry._TASKS.update(tasks)
    for name in set(sys.modules) - before:
        if name.startswith("toy_quanta_user_tasks."):
            del sys.modules[name]


def composed(majority, **ensemble) -> OmegaConf:
    """A job config as Hydra composes it: the task's and dense_mlp's defaults, + the ensemble keys."""
    from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig

    base = OmegaConf.structured(Config(task=majority.config(), model=registry.model("dense_mlp").config(),
                                       optim=OptimConfig(), train=TrainConfig(progress=False),
                                       ensemble=EnsembleConfig(seeds=2)))
    for key, value in ensemble.items():  # as Hydra adds `+ensemble.KEY=VALUE`
        OmegaConf.update(base, f"ensemble.{key}", value, force_add=True)
    return base


def test_a_tasks_own_list_makes_its_members(majority):
    cfg = to_config(composed(majority, noise=[0.0, 0.2]))
    validate(cfg)
    assert cfg.ensemble.lists == {"noise": [0.0, 0.2]} and ensemble_list(cfg, "noise") == [0.0, 0.2]
    members = expand(cfg)
    assert [(m["task.noise"], m["seed"]) for m in members] == [(0.0, 0), (0.0, 1), (0.2, 0), (0.2, 1)]
    hyper = stack(members, "majority")
    assert hyper["task.noise"].tolist() == pytest.approx([0.0, 0.0, 0.2, 0.2])


@pytest.mark.parametrize("values, allowed", [
    ([0.0, 0.7], "a share of flipped labels in [0, 0.5)"),  # the task's own rule, for each value
    (0.1, "a non-empty list of values of task.noise"),
    ([], "a non-empty list of values of task.noise"),
])
def test_every_value_of_the_list_is_checked_by_the_task(majority, values, allowed):
    cfg = to_config(composed(majority, noise=values))
    with pytest.raises(ConfigError) as exc:
        validate(cfg)
    assert exc.value.key == "ensemble.noise" and exc.value.allowed == allowed


def test_an_arm_may_set_a_tasks_own_key(majority):
    """An arm that sets task.noise is a ConfigError-free config (it was an AttributeError), and a
    bad value in an arm is named there."""
    cfg = to_config(composed(majority, arms={"clean": {"task.noise": 0.0}, "noisy": {"task": {"noise": 0.2}}}))
    validate(cfg)
    assert [(m["arm"], m["task.noise"]) for m in expand(cfg)] == [("clean", 0.0)] * 2 + [("noisy", 0.2)] * 2
    bad = to_config(composed(majority, arms={"noisy": {"task.noise": 0.9}}))
    with pytest.raises(ConfigError) as exc:
        validate(bad)
    assert exc.value.key == "ensemble.arms.noisy.task.noise"
    both = to_config(composed(majority, noise=[0.1], arms={"noisy": {"task.noise": 0.2}}))
    with pytest.raises(ConfigError, match="unset here or in ensemble.noise"):
        validate(both)


def test_a_list_the_task_does_not_declare_is_refused(majority):
    with pytest.raises(ConfigError) as exc:
        validate(to_config(composed(majority, nosie=[0.1])))
    assert exc.value.key == "ensemble.nosie" and "a per-member list of task majority" in exc.value.allowed
    assert "(did you mean ensemble.noise?)" in exc.value.allowed
    alpha = to_config(composed(majority, alpha=[0.4]))  # sparse parity's list, not majority's
    with pytest.raises(ConfigError, match="null for task=majority"):
        validate(alpha)


def test_config_py_has_no_field_for_a_tasks_key():
    """Every list EnsembleConfig has a field for varies an engine key; a task's own lists (sparse
    parity's alpha and D, modular's train_fraction) live in ensemble.lists."""
    import dataclasses

    from toy_quanta.config import ENGINE_KEYS, EnsembleConfig

    task_lists = {name for task in registry.tasks().values() for name, _ in task.member_keys.values()}
    assert {"alpha", "D", "train_fraction"} <= task_lists
    fields = {f.name for f in dataclasses.fields(EnsembleConfig)}
    assert not fields & task_lists
    assert fields - {"seeds", "arms", "arms_levels", "lists"} == {name for name, _ in ENGINE_KEYS.values()}
