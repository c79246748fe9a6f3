"""Tasks and models by name (toy_quanta.registry): lookups of an unknown name fail naming the key, the
value and the allowed names; import_tasks_module registers the tasks of a user's .py file, and a
missing file or module is a ConfigError; a config of a user's task pickled here loads in the
processes this one starts (a submitit job, a joblib worker)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from toy_quanta import registry
from toy_quanta.errors import ConfigError

BUILTIN_TASKS = {"sparse_parity", "modular", "symbol_add", "mnist", "teacher_student"}
BUILTIN_MODELS = {"mlp", "dense_mlp", "embed_mlp", "transformer"}

USER_TASK = '''
from dataclasses import dataclass

from toy_quanta.registry import register_task
from toy_quanta.tasks.base import Task


@dataclass
class {cls}Config:
    name: str = "{name}"


class {cls}(Task):
    name = "{name}"
    config = {cls}Config
    models = ("dense_mlp",)


register_task({cls}())
'''


@pytest.fixture
def own_registry(monkeypatch):
    """The registry as it is now, restored after the test (a user's task registered in a test stays
    out of the others, e.g. the contract test's list of tasks)."""
    monkeypatch.setattr(registry, "_TASKS", dict(registry.tasks()))
    monkeypatch.setattr(registry, "_MODELS", dict(registry.models()))
    monkeypatch.setenv(registry.FILES_ENV, os.environ.get(registry.FILES_ENV, ""))  # put back after the test
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("toy_quanta_user_tasks."):
            del sys.modules[name]


def test_the_builtin_tasks_and_models_are_registered():
    assert BUILTIN_TASKS <= set(registry.tasks())
    assert BUILTIN_MODELS <= set(registry.models())
    for name, task in registry.tasks().items():
        assert task.name == name and task.config().name == name
        assert task.models and set(task.models) <= set(registry.models()), name
    for name, model in registry.models().items():
        assert model.name == name


@pytest.mark.parametrize("kind,value,lookup,every", [("task", "nope", registry.task, registry.tasks),
                                                    ("model", "cnn", registry.model, registry.models)])
def test_an_unknown_name_names_the_key_the_value_and_every_option(kind, value, lookup, every):
    with pytest.raises(ConfigError) as info:
        lookup(value)
    exc = info.value
    assert exc.key == f"{kind}.name" and exc.value == value
    assert str(exc).startswith(f"{kind}.name={value!r} is not allowed")
    for name in every():
        assert name in exc.allowed
    if kind == "task":
        assert "tasks_module=" in exc.allowed


def test_import_tasks_module_of_a_file_registers_its_task(tmp_path, own_registry):
    path = tmp_path / "my_registry_test_tasks.py"
    path.write_text(USER_TASK.format(cls="RegistryTestTask", name="registry_test_task"))
    with pytest.raises(ConfigError):
        registry.task("registry_test_task")
    module = registry.import_tasks_module(str(path))
    assert module.__name__ == "toy_quanta_user_tasks.my_registry_test_tasks"
    task = registry.task("registry_test_task")
    assert type(task).__name__ == "RegistryTestTask" and task.models == ("dense_mlp",)
    assert BUILTIN_TASKS <= set(registry.tasks())  # the built-in ones stay
    assert registry.import_tasks_module(str(path)) is module  # a second import is the same module


def test_a_config_of_a_users_task_pickled_here_loads_in_a_process_this_one_starts(tmp_path, own_registry):
    """What a submitit job or a joblib worker does with the config it is sent: the file is imported
    there under the same name (TOY_QUANTA_TASKS_FILES, inherited), so the config unpickles and the
    task is registered. Before, pickling failed: "import of module 'toy_quanta_user_tasks...' failed"."""
    path = tmp_path / "my_pickled_tasks.py"
    path.write_text(USER_TASK.format(cls="PickledTask", name="pickled_task"))
    registry.import_tasks_module(str(path))
    blob = pickle.dumps(registry.task("pickled_task").config())
    code = ("import pickle, sys; from toy_quanta import registry; cfg = pickle.loads(sys.stdin.buffer.read()); "
            "print(type(cfg).__module__, type(cfg) is registry.task('pickled_task').config)")
    child = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=120)
    assert child.returncode == 0, child.stderr.decode()[-2000:]
    assert child.stdout.decode().split() == ["toy_quanta_user_tasks.my_pickled_tasks", "True"]


def test_a_missing_file_is_a_config_error(tmp_path):
    missing = str(tmp_path / "nowhere.py")
    with pytest.raises(ConfigError) as info:
        registry.import_tasks_module(missing)
    assert info.value.key == "tasks_module" and info.value.value == missing
    assert "exists" in info.value.allowed


def test_a_missing_module_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        registry.import_tasks_module("no_such_module_of_tasks")
    assert info.value.key == "tasks_module" and info.value.value == "no_such_module_of_tasks"
    assert "importable module" in info.value.allowed
