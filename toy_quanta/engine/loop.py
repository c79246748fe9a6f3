"""The host side of a run: compile once, then alternate compiled chunks with progress and logging.
It knows no task: the registry gives the task of cfg.task.name, the task its Program."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from toy_quanta import registry
from toy_quanta.config import Config
from toy_quanta.engine.members import stack
from toy_quanta.engine.train import Trainer, make_train


@dataclass
class FitResult:
    members: list[dict[str, float | int]]
    task: str = ""  # the config's task.name
    steps: list[int] = field(default_factory=list)  # the log steps reached so far
    logs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # metric -> per log step, (M,) or (M, T)
    alive: np.ndarray | None = None  # (M,)
    diverged_step: np.ndarray | None = None  # (M,), -1 where the member never diverged
    params: Any = None  # nnx.State with a leading member axis
    snapshots: list[Any] = field(default_factory=list)  # with train.snapshots: pure dicts (M, ...) per log step
    graphdef: Any = None
    compile_s: float = 0.0
    train_s: float = 0.0
    steps_done: int = 0

    def log_array(self, name: str) -> np.ndarray:
        """(L, M) or (L, M, T): metric `name` at every log step."""
        return np.stack(self.logs[name])

    def select(self, idx: Sequence[int]) -> "FitResult":
        """The same run restricted to members `idx` (renumbered from 0)."""
        idx = np.asarray(idx, dtype=np.int64)
        return replace(
            self,
            members=[self.members[i] for i in idx],
            logs={name: [v[idx] for v in values] for name, values in self.logs.items()},
            alive=None if self.alive is None else self.alive[idx],
            diverged_step=None if self.diverged_step is None else self.diverged_step[idx],
            params=None if self.params is None else jax.tree.map(lambda p: p[idx], self.params),
            snapshots=[jax.tree.map(lambda p: p[idx], snap) for snap in self.snapshots],
        )

    @property
    def steps_per_s(self) -> float:
        return self.steps_done / self.train_s if self.train_s > 0 else float("nan")


def make_trainer(cfg: Config, members: Sequence[dict]) -> tuple[Config, Trainer]:
    """The config as these members' program needs it, and the trainer for its task."""
    # The members' own fixed norms (a vmapped sweep can group jobs whose optim.fixed_norm differ)
    # decide whether the steps project at all.
    norms = sorted({m["optim.fixed_norm"] for m in members} - {None})
    cfg = replace(cfg, ensemble=replace(cfg.ensemble, fixed_norm=norms or None))
    task = registry.task(cfg.task.name)
    cfg = task.adapt(cfg, members)
    return cfg, make_train(cfg, task.program(cfg))


def trainer_inputs(cfg: Config, trainer: Trainer, members: Sequence[dict]) -> tuple[dict, Any]:
    """The stacked per-member arguments of trainer.init: (hyperparameters, the task's inputs)."""
    return stack(members, cfg.task.name), registry.task(cfg.task.name).member_inputs(cfg, members)


def over_members(fn: Callable, in_axes: int | tuple[int | None, ...] = 0) -> Callable:
    """jax.vmap(fn, in_axes) over the members' leading axis; a lone member runs unbatched and gets
    its axis back. XLA lays out some unbatched programs better: the paper-setting step of one
    member ran 1.2x faster without the size-1 member axis (benchmark, this CPU)."""
    batched = jax.vmap(fn, in_axes=in_axes)

    def call(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        sizes = {x.shape[0] for a, ax in zip(args, axes) if ax is not None for x in jax.tree.leaves(a)}
        if sizes != {1}:
            return batched(*args)
        lone = [a if ax is None else jax.tree.map(lambda x: x[0], a) for a, ax in zip(args, axes)]
        return jax.tree.map(lambda x: x[None], fn(*lone))

    return call


def fit(
    cfg: Config,
    members: Sequence[dict[str, float | int]],
    on_log: Callable[[FitResult], None] | None = None,
) -> FitResult:
    """Train `members` (see members.expand) as one vmapped program. `on_log` runs after each chunk."""
    cfg, trainer = make_trainer(cfg, members)
    hyper, task_data = trainer_inputs(cfg, trainer, members)
    result = FitResult(members=list(members), task=cfg.task.name, graphdef=trainer.graphdef)

    t0 = time.perf_counter()
    init = jax.jit(over_members(trainer.init))
    chunk = jax.jit(over_members(trainer.chunk, in_axes=(0, 0, None)), donate_argnums=0)
    state, data = init(hyper, task_data)
    n0 = np.int32(0)
    chunk = chunk.lower(state, data, n0).compile()
    jax.block_until_ready(state)
    result.compile_s = time.perf_counter() - t0

    bar = tqdm(total=cfg.train.steps, desc=cfg.name, unit="step", disable=not cfg.train.progress,
               dynamic_ncols=True, leave=True)
    done = 0
    try:
        for target in trainer.log_steps:
            t1 = time.perf_counter()
            state, logs = chunk(state, data, np.int32(target - done))
            logs = jax.device_get(logs)
            result.train_s += time.perf_counter() - t1
            bar.update(int(target) - done)
            done = int(target)
            result.steps_done = done
            result.steps.append(done)
            for name, value in logs.items():
                result.logs.setdefault(name, []).append(np.asarray(value))
            if cfg.train.snapshots:
                result.snapshots.append(jax.device_get(nnx.to_pure_dict(state.params)))
            bar.set_postfix(train_loss=f"{np.nanmean(logs['train_loss']):.4f}", test_acc=f"{np.nanmean(logs['test_acc']):.3f}")
            if on_log is not None:
                on_log(result)
    finally:
        bar.close()
    host = jax.device_get(state)
    result.alive, result.diverged_step = np.asarray(host.alive), np.asarray(host.diverged_step)
    result.params = host.params
    return result
