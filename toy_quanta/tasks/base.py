"""What a task is, in two parts: what the engine needs to train it (`TaskEngine`: its config, its
checks, its per-member keys and its Program) and what a report needs (tasks.report.TaskReport:
headline numbers, log lines, figures, its own analyses). Subclass `Task`, which is both, fill in
what your task needs and register an instance (toy_quanta.registry.register_task);
docs/adding-a-task.md."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np

from toy_quanta.engine.program import Program
from toy_quanta.tasks.report import TaskReport


class TaskEngine:
    """Everything engine.loop.fit, engine.members and the vmap launcher read of a task."""

    name: ClassVar[str]
    config: ClassVar[type]  # its structured config (a dataclass whose `name` defaults to the task's name)
    models: ClassVar[tuple[str, ...]]  # the registered models it can train
    # its config keys that may differ between the members of one program: key -> (the ensemble
    # list's name, type); `ensemble.<name>=[...]` varies it (members.expand), and each member's
    # value reaches program(cfg, members), member_inputs and the step (hyper["task.<key>"])
    member_keys: ClassVar[dict[str, tuple[str, type]]] = {}

    def validate(self, cfg: Any) -> None:
        """Raise ConfigError for a task.* value that is not allowed (config.validate checks each
        value of its own ensemble lists with this too)."""

    def model_io(self, cfg: Any) -> dict[str, int]:
        """The sizes its models are built for (see each model's build)."""
        raise NotImplementedError

    def member_inputs(self, cfg: Any, members: Sequence[dict[str, Any]]) -> Any:
        """(M, ...) host arrays, one row per member, handed to Program.init."""
        return np.arange(len(members), dtype=np.int32)

    def program(self, cfg: Any, members: Sequence[dict[str, Any]]) -> Program:
        """The device side of a run (engine.program.Program), for these members (members.expand:
        each one's values of the per-member keys; size what they share for the largest)."""
        raise NotImplementedError

    def group_key(self, cfg: Any) -> dict[str, Any]:
        """What else splits a vmapped sweep into separate programs, beyond the config's values."""
        return {}


class Task(TaskEngine, TaskReport):
    """A task: what the engine trains (TaskEngine) and what its reports show (TaskReport)."""
