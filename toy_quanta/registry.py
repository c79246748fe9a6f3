"""Tasks and models by name: the one place the engine, the app, the results writer, the report,
the analyses and the launcher look a task or a model up. Nothing here knows any of them.

A task or model module registers itself when imported (`register_task(MyTask())`); the
built-in ones are imported on first lookup, a user's own with `import_tasks_module`.

A user's file is imported as `toy_quanta_user_tasks.<its stem>`, and its path is passed on to the
processes this one starts (TOY_QUANTA_TASKS_FILES): a submitit job, a joblib worker. There a
finder imports the same file under the same name when a pickled config of its task names it, so
the job unpickles the config and knows the task."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toy_quanta.errors import ConfigError

if TYPE_CHECKING:
    from toy_quanta.models.base import Model
    from toy_quanta.tasks.base import Task

_TASKS: dict[str, "Task"] = {}
_MODELS: dict[str, "Model"] = {}
_BUILTIN = ("toy_quanta.models", "toy_quanta.tasks")  # packages whose import registers the built-ins
USER_PACKAGE = "toy_quanta_user_tasks"  # a user's file of tasks is the module USER_PACKAGE.<its stem>
FILES_ENV = "TOY_QUANTA_TASKS_FILES"  # the files imported so far (os.pathsep between), for child processes


class _UserTasksFinder(importlib.abc.MetaPathFinder):
    """In a process started by one that imported a user's file of tasks: USER_PACKAGE.<stem> is
    that file again (FILES_ENV), so what was pickled there (a config of its task) loads here."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname == USER_PACKAGE:
            return importlib.machinery.ModuleSpec(fullname, None, is_package=True)
        package, _, stem = fullname.partition(".")
        if package != USER_PACKAGE:
            return None
        for file in os.environ.get(FILES_ENV, "").split(os.pathsep):
            if file and Path(file).stem == stem and Path(file).is_file():
                return importlib.util.spec_from_file_location(fullname, file)
        return None


if not any(isinstance(finder, _UserTasksFinder) for finder in sys.meta_path):
    sys.meta_path.append(_UserTasksFinder())


def register_task(task: "Task") -> "Task":
    _TASKS[task.name] = task
    return task


def register_model(model: "Model") -> "Model":
    _MODELS[model.name] = model
    return model


def load_builtins() -> None:
    for package in _BUILTIN:
        if package not in sys.modules:
            importlib.import_module(package)


def tasks() -> dict[str, "Task"]:
    load_builtins()
    return dict(_TASKS)


def models() -> dict[str, "Model"]:
    load_builtins()
    return dict(_MODELS)


def task(name: str) -> "Task":
    known = tasks()
    if name not in known:
        raise ConfigError("task.name", name, "one of " + ", ".join(known) + " (a task of your own: set "
                                                                             "tasks_module=your_file.py)")
    return known[name]


def model(name: str) -> "Model":
    known = models()
    if name not in known:
        raise ConfigError("model.name", name, "one of " + ", ".join(known))
    return known[name]


def import_tasks_module(spec: str) -> Any:
    """Import a user's module of tasks (and models): a path to a .py file, or a dotted module name
    on sys.path. Importing it registers what it defines. Raises ConfigError if it cannot be found."""
    load_builtins()
    path = Path(spec).expanduser()
    if spec.endswith(".py"):
        if not path.is_file():
            raise ConfigError("tasks_module", spec, "a Python file that exists, or a module name on sys.path")
        name = f"{USER_PACKAGE}.{path.stem}"
        if name in sys.modules:
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path.resolve())
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        files = [f for f in os.environ.get(FILES_ENV, "").split(os.pathsep) if f]
        if str(path.resolve()) not in files:
            os.environ[FILES_ENV] = os.pathsep.join([*files, str(path.resolve())])
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise ConfigError("tasks_module", spec, f"a Python file (*.py) or an importable module name ({exc})") from None
