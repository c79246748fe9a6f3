"""Tasks and models by name: the one place the engine, the app, the results writer, the report,
the analyses and the launcher look a task or a model up. Nothing here knows any of them.

A task or model module registers itself when imported (`register_task(MyTask())`); the
built-in ones are imported on first lookup, a user's own with `import_tasks_module`."""

from __future__ import annotations

import importlib
import importlib.util
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
        name = f"toy_quanta_user_tasks.{path.stem}"
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
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise ConfigError("tasks_module", spec, f"a Python file (*.py) or an importable module name ({exc})") from None
