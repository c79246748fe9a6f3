"""The host side of a run: compile once, then alternate compiled chunks with progress and logging.
It knows no task: the registry gives the task of cfg.task.name, the task its Program."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from toy_quanta import registry
from toy_quanta.config import Config
from toy_quanta.engine import checkpoint as ckpt
from toy_quanta.engine import devices, milestone
from toy_quanta.engine.members import stack
from toy_quanta.engine.train import Trainer, make_train
from toy_quanta.errors import Interrupted

log = logging.getLogger("toy_quanta")


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
    devices_used: int = 1
    resumed_from: int | None = None  # the step a resumed run started from
    stopped_at: int | None = None  # the log step at which the milestone stop (train.stop_*) ended it

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


def make_trainer(cfg: Config, members: Sequence[dict]) -> Trainer:
    """The trainer of these members' program: the task's program sized for them (the largest
    member's training set, say: a vmapped sweep groups jobs whose values differ), and the engine's
    step built for their values. The members are the one place those values are read from."""
    task = registry.task(cfg.task.name)
    return make_train(cfg, task.program(cfg, members), members)


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


SUBCHUNK_S = 5.0  # seconds of training per call at most: the host checkpoints and sees signals between calls
FIRST_SUBCHUNK = 16  # steps of the first call of a run, before its speed is known


def fit(
    cfg: Config,
    members: Sequence[dict[str, float | int]],
    on_log: Callable[[FitResult], None] | None = None,
    *,
    checkpoint: Path | None = None,
    should_stop: Callable[[], int | None] | None = None,
) -> FitResult:
    """Train `members` (see members.expand) as one vmapped program, sharded over the devices.
    `on_log` runs after each log step. With `checkpoint` (a file), a run resumes from it if it
    exists and saves to it every cfg.train.checkpoint_every_s seconds and at the end;
    `should_stop()` returning a signal number ends the run at the next call boundary with a
    checkpoint, raising errors.Interrupted."""
    trainer = make_trainer(cfg, members)
    hyper, task_data = trainer_inputs(cfg, trainer, members)
    n_members = len(members)
    sharding, n_padded = devices.plan(n_members, cfg.train.devices)
    hyper, task_data = devices.place(devices.pad((hyper, task_data), n_padded), sharding)
    result = FitResult(members=list(members), task=cfg.task.name, graphdef=trainer.graphdef,
                       devices_used=devices.devices_used(sharding))

    t0 = time.perf_counter()
    placed = {} if sharding is None else {"out_shardings": sharding}  # every output has the member axis first
    init = jax.jit(over_members(trainer.init), **placed)
    chunk = jax.jit(over_members(trainer.chunk, in_axes=(0, 0, None, None)), donate_argnums=0, **placed)
    state, data = init(hyper, task_data)
    if checkpoint is not None and Path(checkpoint).is_file():
        state = _resume(Path(checkpoint), state, result, cfg)
    lowered = chunk.lower(state, data, np.int32(0), np.bool_(True))
    rule = milestone.from_config(cfg.train)
    if rule is not None:  # a metric the task does not log: refused before anything compiles
        milestone.check_metric(rule, list(lowered.out_info[1]))
    chunk = lowered.compile()
    jax.block_until_ready(state)
    result.compile_s = time.perf_counter() - t0

    def save() -> None:
        ckpt.save(checkpoint, jax.tree.map(lambda x: x[:n_members], jax.device_get(state)), result.steps,
                  result.logs, result.snapshots, result.members, result.train_s)

    every = cfg.train.checkpoint_every_s
    last_save = time.monotonic()
    done = result.steps_done
    span = FIRST_SUBCHUNK
    pending = [int(t) for t in trainer.log_steps if not result.steps or t > result.steps[-1]]
    if rule is not None and rule.fires(result.logs):  # stopped by a signal at the very step the rule fired
        result.stopped_at, pending = result.steps[-1], []
    bar = tqdm(total=cfg.train.steps, initial=done, desc=cfg.name, unit="step", disable=not cfg.train.progress,
               dynamic_ncols=True, leave=True)
    try:
        for target in pending:
            while True:
                n = min(target - done, span)
                is_log = done + n == target
                t1 = time.perf_counter()
                state, logs = chunk(state, data, np.int32(n), np.bool_(is_log))
                logs = jax.device_get(logs) if is_log else jax.block_until_ready(state.step)
                elapsed = time.perf_counter() - t1
                result.train_s += elapsed
                if n == span:  # a full call: aim the next one at SUBCHUNK_S
                    span = max(1, min(8 * span, int(span * SUBCHUNK_S / max(elapsed, 1e-6))))
                bar.update(n)
                done += n
                result.steps_done = done
                if is_log:
                    _record(result, logs, state, cfg, n_members)
                    bar.set_postfix(train_loss=f"{_finite_mean(logs['train_loss'][:n_members]):.4f}",
                                    test_acc=f"{_finite_mean(logs['test_acc'][:n_members]):.3f}")
                    if on_log is not None:
                        on_log(result)
                    if rule is not None and rule.fires(result.logs):
                        result.stopped_at = done
                        break  # finished: a signal now changes nothing
                stop = should_stop() if should_stop is not None else None
                if checkpoint is not None and (stop or (every is not None and time.monotonic() - last_save >= every)):
                    save()
                    last_save = time.monotonic()
                if stop:
                    _finish(result, state, n_members)
                    raise Interrupted(stop, done, result)
                if is_log:
                    break
            if result.stopped_at is not None:
                log.info("every member reached its milestone at step %d: %s", done, rule.describe())
                break
        if checkpoint is not None:
            save()  # a failure after training (figures, analyses) then costs no training
    finally:
        bar.close()
    _finish(result, state, n_members)
    return result


def _finite_mean(x: np.ndarray) -> float:
    """The mean over the members whose value is finite (NaN, silently, when none is)."""
    finite = np.asarray(x)[np.isfinite(x)]
    return float(finite.mean()) if finite.size else float("nan")


def _record(result: FitResult, logs: dict, state: Any, cfg: Config, n_members: int) -> None:
    result.steps.append(result.steps_done)
    for name, value in logs.items():
        result.logs.setdefault(name, []).append(np.asarray(value)[:n_members])
    if cfg.train.snapshots:
        result.snapshots.append(jax.tree.map(lambda x: np.asarray(x)[:n_members],
                                             jax.device_get(nnx.to_pure_dict(state.params))))


def _resume(path: Path, state: Any, result: FitResult, cfg: Config) -> Any:
    """The run's state from its checkpoint (padded and placed like `state`); fills `result` with
    the metric rows and snapshots saved with it."""
    n_members = len(result.members)
    host = jax.tree.map(lambda x: np.asarray(x)[:n_members], jax.device_get(state))
    params_template = nnx.to_pure_dict(host.params) if cfg.train.snapshots else None
    saved = ckpt.load(path, host, result.members, params_template)
    result.steps, result.logs, result.snapshots = saved.steps, saved.logs, saved.snapshots
    result.train_s = saved.train_s
    result.steps_done = int(np.max(saved.state.step))
    result.resumed_from = result.steps_done
    log.info("resuming from step %d (%s)", result.steps_done, path)
    padded = devices.pad(saved.state, jax.tree.leaves(state)[0].shape[0])
    return jax.tree.map(lambda new, old: jax.device_put(new, old.sharding), padded, state)


def _finish(result: FitResult, state: Any, n_members: int) -> None:
    host = jax.device_get(state)
    result.alive = np.asarray(host.alive)[:n_members]
    result.diverged_step = np.asarray(host.diverged_step)[:n_members]
    result.params = jax.tree.map(lambda x: x[:n_members], host.params)
