"""What a job writes: tidy metrics, summary.json, a checkpoint. Every file is written atomically,
so a run that fails part-way leaves the last complete version of each file behind."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx, serialization
from omegaconf import OmegaConf

from toy_quanta import registry
from toy_quanta.config import Config, OptimConfig, fold_task_lists
from toy_quanta.engine.loop import FitResult
from toy_quanta.engine.members import expand, member_keys
from toy_quanta.engine.program import Program
from toy_quanta.engine.train import make_model
from toy_quanta.errors import ConfigError, RunFileError
# re-exported: the writers and readers of every layer use them
from toy_quanta.files import METRICS_FILE, SUMMARY_FILE, atomic_write, read, read_metrics  # noqa: F401

CHECKPOINT_FILE = "checkpoint.msgpack"
SNAPSHOTS_FILE = "snapshots.msgpack"


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n"))


def json_safe(x: Any) -> Any:
    """JSON without NaN or infinities (not valid JSON): they become null. NumPy scalars and arrays
    become Python numbers and lists."""
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in x]
    return x


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def metrics_frame(result: FitResult, columns: dict[str, Any] | None = None) -> pd.DataFrame:
    """Tidy table: one row per member, log step, metric (and subtask, for per-subtask metrics).

    Columns: member, step, metric, subtask (-1 for whole-distribution metrics), value, then the
    members' per-member hyperparameters (their task's and the engine's: engine.members.expand) and
    the job's own swept values (`columns`).
    """
    steps = np.asarray(result.steps, np.int64)
    n_members = len(result.members)
    names = sorted(result.logs)  # the categories, as pandas orders them
    built: dict[str, list[np.ndarray]] = {"member": [], "step": [], "metric": [], "subtask": [], "value": []}
    for name, values in result.logs.items():  # built as arrays and framed once: a sweep writes a thousand
        arr = np.stack(values).astype(np.float64)  # (L, M) or (L, M, T)
        n_sub = arr.shape[2] if arr.ndim == 3 else 1
        step_idx, member_idx, subtask_idx = np.meshgrid(np.arange(len(steps)), np.arange(n_members), np.arange(n_sub), indexing="ij")
        built["member"].append(member_idx.ravel().astype(np.int32))
        built["step"].append(steps[step_idx.ravel()])
        built["metric"].append(np.full(arr.size, names.index(name), np.int32))
        built["subtask"].append(subtask_idx.ravel().astype(np.int32) if arr.ndim == 3 else np.full(arr.size, -1, np.int32))
        built["value"].append(arr.reshape(-1))
    if names:
        joined = {key: np.concatenate(parts) for key, parts in built.items()}
        joined["metric"] = pd.Categorical.from_codes(joined["metric"], categories=names)
        frame = pd.DataFrame(joined)
    else:
        frame = pd.DataFrame(columns=["member", "step", "metric", "subtask", "value"])
        frame["metric"] = frame["metric"].astype("category")
    kinds = {key: kind for key, (_, kind) in member_keys(result.task).items()} if result.task else {}
    for key in dict.fromkeys(k for m in result.members for k in m if k != "arm"):
        values = [m.get(key) for m in result.members]
        # an integer key may be null for some members (sparse parity's online task.D): a nullable
        # integer column; a float key that does not apply (a free norm: None) is NaN
        if kinds.get(key) is int:
            per_member = pd.array(values, dtype="Int64")
        elif key == "seed" or any(isinstance(v, str) for v in values):
            per_member = np.array(values)  # seeds; names (optim.grokfast)
        else:
            per_member = np.array([np.nan if v is None else v for v in values], np.float64)
        frame[key] = per_member[frame["member"].to_numpy()] if len(frame) else []
    if any("arm" in m for m in result.members):
        frame["arm"] = np.array([m.get("arm") for m in result.members])[frame["member"].to_numpy()] if len(frame) else []
    for key, value in (columns or {}).items():
        if key not in frame.columns:
            frame[key] = value
    return frame


def write_metrics(path: Path, result: FitResult, columns: dict[str, Any] | None = None) -> pd.DataFrame:
    """The run's tidy table, written to `path` (Parquet) and returned."""
    frame = metrics_frame(result, columns)
    atomic_write(path, lambda p: frame.to_parquet(p, index=False))
    return frame


def member_summaries(result: FitResult) -> list[dict[str, Any]]:
    """Per member: its hyperparameters, whether it diverged, and its final scalar metrics with the
    task's headline numbers (Task.summarize)."""
    task = registry.task(result.task)
    steps_L = np.asarray(result.steps)
    rows = []
    for i, member in enumerate(result.members):
        logs = {name: np.stack([v[i] for v in values]) for name, values in result.logs.items()}
        final = {name: float(v[-1]) for name, v in logs.items() if v.ndim == 1 and name != "alive"}
        final.update(task.summarize(steps_L, logs))
        diverged = result.alive is not None and not bool(result.alive[i])
        rows.append({
            "member": i,
            **member,
            "diverged": diverged,
            "diverged_step": int(result.diverged_step[i]) if diverged else None,
            "final": final,
        })
    return rows


def device_info() -> dict[str, Any]:
    dev = jax.devices()[0]
    return {"platform": dev.platform, "device_kind": dev.device_kind, "n_devices": jax.device_count(),
            "host": platform.node(), "jax": jax.__version__}


def save_checkpoint(path: Path, params: Any) -> None:
    """Final parameters (leading member axis) as msgpack of Flax's pure dict."""
    pure = nnx.to_pure_dict(params) if isinstance(params, nnx.State) else params
    blob = serialization.msgpack_serialize(jax.tree.map(np.asarray, pure))
    atomic_write(path, lambda p: p.write_bytes(blob))


def load_checkpoint(path: Path) -> dict:
    """The pure dict saved by save_checkpoint: nested dicts of (M, ...) arrays."""
    return read(path, lambda p: serialization.msgpack_restore(p.read_bytes()), "parameter checkpoint")


def save_snapshots(path: Path, steps: list[int], snapshots: list[Any]) -> dict:
    """Parameters at every log step: {"steps": (L,), "params": pure dict of (L, M, ...) arrays}.
    Returns the stacked params."""
    params = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *snapshots)
    blob = serialization.msgpack_serialize({"steps": np.asarray(steps[: len(snapshots)], np.int64), "params": params})
    atomic_write(path, lambda p: p.write_bytes(blob))
    return params


def load_snapshots(job_dir: Path) -> tuple[np.ndarray, dict]:
    """(steps (L,), params: pure dict of (L, M, ...) arrays) saved with train.snapshots=true."""
    path = Path(job_dir) / SNAPSHOTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the job saved no parameters over training; re-run it with "
                                "train.snapshots=true")
    blob = read(path, lambda p: serialization.msgpack_restore(p.read_bytes()), "snapshots file")
    return np.asarray(blob["steps"]), blob["params"]


def import_job_tasks_module(job: Path, spec: str) -> str | None:
    """Import a job's tasks_module: as written, then (a relative file) from the directory the job
    was started in (Hydra's runtime.cwd). None if it worked, else why not."""
    tries = [spec]
    hydra_file = job / ".hydra" / "hydra.yaml"
    if not Path(spec).is_absolute() and hydra_file.is_file():
        try:
            cwd = OmegaConf.load(hydra_file).hydra.runtime.cwd
            tries.append(str(Path(cwd) / spec))
        except Exception:  # noqa: BLE001  an unreadable hydra.yaml: only the spec as written
            pass
    reason = ""
    for candidate in tries:
        try:
            registry.import_tasks_module(candidate)
            return None
        except ConfigError as exc:
            reason = exc.allowed
    return reason


def load_config(job_dir: Path) -> Config:
    """The typed Config a job ran with, from the config.yaml it wrote. Its tasks_module, if any, is
    imported first (import_job_tasks_module: a relative file from where the job ran, too), so runs
    of a user's own task load from any directory. A config.yaml without task.name or model.name is
    a RunFileError naming the file and the key: nothing stands in for them."""
    path = Path(job_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {job_dir} is not the output directory of a toy-quanta job")
    raw = read(path, OmegaConf.load, "config.yaml")
    if raw.get("tasks_module"):  # as written, else from where the job ran (a relative file)
        why = import_job_tasks_module(Path(job_dir), str(raw.tasks_module))
        if why is not None:
            raise ConfigError("tasks_module", str(raw.tasks_module), f"{why} ({path}; looked for it as written and "
                                                                     "from the directory the job ran in)")
    for group in ("task", "model"):  # every job writes both: no default stands in for a missing one
        if not (raw.get(group) or {}).get("name"):
            raise RunFileError(path, f"no {group}.name", "it is not a config.yaml that toy-quanta wrote")
    try:
        task = registry.task(str(raw.task.name))
        model = registry.model(str(raw.model.name))
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.value, f"{exc.allowed} ({path})") from None
    schema = OmegaConf.structured(Config(task=task.config(), model=model.config(), optim=OptimConfig()))
    OmegaConf.set_struct(schema.ensemble, False)  # a task's own list (ensemble.D) as the job was given it
    merged = OmegaConf.merge(schema, raw)
    fold_task_lists(merged)
    return OmegaConf.to_object(merged)


@dataclass
class TrainedRun:
    """A finished job's members, ready to evaluate: the config, each member's values (members.expand),
    its task inputs (Task.member_inputs), its trained model, and the task's program to evaluate it
    with (Program.loss, Program.sample)."""

    cfg: Config
    members: list[dict[str, Any]]
    member_inputs: Any  # (M, ...) what Task.member_inputs gave each member's Program.init
    params: Any  # pure dict, leading member axis

    @cached_property
    def program(self) -> Program:
        """The task's Program for these members, as the job built it (its loss, its sampler)."""
        return registry.task(self.cfg.task.name).program(self.cfg, self.members)

    def model(self, member: int) -> Any:
        if not 0 <= member < len(self.members):
            raise ConfigError("member", member, f"an index of the run's {len(self.members)} members (0..{len(self.members) - 1})")
        graphdef, state = nnx.split(make_model(self.cfg, jax.random.key(0)))
        nnx.replace_by_pure_dict(state, jax.tree.map(lambda x: jnp.asarray(x[member]), self.params))
        return nnx.merge(graphdef, state)


def load_run(job_dir: Path, analysis: str = "qdg", check: Callable[[Config], None] | None = None) -> TrainedRun:
    """A job directory's config and final parameters (saved with train.checkpoint=true), for an
    analysis its task supports (Task.analyses); `check(cfg)` raises the analysis's own refusal (a
    ConfigError) before the checkpoint is read."""
    job_dir = Path(job_dir)
    cfg = load_config(job_dir)
    task = registry.task(cfg.task.name)
    if analysis not in task.analyses:
        able = [name for name, t in registry.tasks().items() if analysis in t.analyses]
        raise ConfigError("run_dir", str(job_dir), f"a {' or '.join(n.replace('_', ' ') for n in able)} run (this one trained "
                                                   f"task={cfg.task.name})")
    if check is not None:
        check(cfg)
    ckpt = job_dir / CHECKPOINT_FILE
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} not found: the job saved no parameters (it ran with train.checkpoint=false, "
                                "or did not finish); re-run it with train.checkpoint=true")
    members = expand(cfg)
    return TrainedRun(cfg, members, task.member_inputs(cfg, members), load_checkpoint(ckpt))


def load_result(job_dir: Path) -> tuple[Config, FitResult]:
    """A finished job as its training left it, from its files: the config, and a FitResult with
    its members (members.expand), every logged metric at every log step (metrics.parquet), who
    diverged (summary.json) and the final parameters (checkpoint.msgpack, if saved). What a job's
    figures are drawn from, long after it ran (`toy-quanta-figures`)."""
    job_dir = Path(job_dir)
    cfg = load_config(job_dir)
    frame = read_metrics(job_dir / METRICS_FILE)
    summary = read(job_dir / SUMMARY_FILE, lambda p: json.loads(p.read_text()), "summary.json")
    members = expand(cfg)
    steps = np.sort(frame["step"].unique())
    logs: dict[str, list[np.ndarray]] = {}
    metric = frame["metric"].astype(str)
    for name in metric.unique():  # in the order the job logged them
        rows = frame[metric == name].sort_values(["step", "member", "subtask"])
        n_sub = rows["subtask"].nunique() if (rows["subtask"] >= 0).any() else 0
        shape = (len(steps), len(members), n_sub) if n_sub else (len(steps), len(members))
        values = rows["value"].to_numpy(np.float64).reshape(shape).astype(np.float32)
        logs[name] = list(values)
    by_member = {m["member"]: m for m in summary.get("members", [])}
    diverged = np.array([by_member.get(i, {}).get("diverged_step") or -1 for i in range(len(members))], np.int64)
    result = FitResult(members=members, task=cfg.task.name, steps=[int(s) for s in steps], logs=logs,
                       alive=diverged < 0, diverged_step=diverged, steps_done=int(summary.get("steps", steps[-1])))
    ckpt = job_dir / CHECKPOINT_FILE
    if ckpt.is_file():
        program = registry.task(cfg.task.name).program(cfg, members)
        graphdef, state = nnx.split(nnx.eval_shape(lambda: make_model(cfg, jax.random.key(0), program.model_io)))
        nnx.replace_by_pure_dict(state, load_checkpoint(ckpt))
        result.params, result.graphdef = state, graphdef
    return cfg, result
