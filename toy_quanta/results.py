"""What a job writes: tidy metrics, summary.json, a checkpoint. Every file is written atomically,
so a run that fails part-way leaves the last complete version of each file behind."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx, serialization
from omegaconf import OmegaConf

from toy_quanta import registry
from toy_quanta.config import Config, OptimConfig
from toy_quanta.engine.loop import FitResult
from toy_quanta.engine.members import expand
from toy_quanta.engine.train import make_model
from toy_quanta.errors import ConfigError, RunFileError
from toy_quanta.files import atomic_write  # noqa: F401  (re-exported: the writers of every layer use it)

METRICS_FILE = "metrics.parquet"
SUMMARY_FILE = "summary.json"
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
    parts = []
    for name, values in result.logs.items():
        arr = np.stack(values).astype(np.float64)  # (L, M) or (L, M, T)
        n_sub = arr.shape[2] if arr.ndim == 3 else 1
        step_idx, member_idx, subtask_idx = np.meshgrid(np.arange(len(steps)), np.arange(n_members), np.arange(n_sub), indexing="ij")
        parts.append(pd.DataFrame({
            "member": member_idx.ravel().astype(np.int32),
            "step": steps[step_idx.ravel()],
            "metric": name,
            "subtask": subtask_idx.ravel().astype(np.int32) if arr.ndim == 3 else np.full(arr.size, -1, np.int32),
            "value": arr.reshape(-1),
        }))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["member", "step", "metric", "subtask", "value"])
    frame["metric"] = frame["metric"].astype("category")
    for key in dict.fromkeys(k for m in result.members for k in m if k != "arm"):
        values = [m.get(key) for m in result.members]
        # task.D is null for online members: a nullable integer column; keys that do not apply
        # to the task (None) are NaN
        if key == "task.D":
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


def read(path: Path, load: Callable[[Path], Any], what: str) -> Any:
    """load(path), with any failure to parse the file (truncated, corrupt, another format) as a
    RunFileError naming it. A missing file stays a FileNotFoundError."""
    path = Path(path)
    try:
        return load(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001  (msgpack, Parquet, YAML, zip: each has its own errors)
        raise RunFileError(path, f"not a readable {what} ({type(exc).__name__}: {exc})",
                           "the file may be truncated (a run killed while writing it with an older version, or a "
                           "copy cut short); re-run the job to write it again") from None


def load_checkpoint(path: Path) -> dict:
    """The pure dict saved by save_checkpoint: nested dicts of (M, ...) arrays."""
    return read(path, lambda p: serialization.msgpack_restore(p.read_bytes()), "parameter checkpoint")


def read_metrics(path: Path) -> pd.DataFrame:
    """A job's metrics table (metrics.parquet)."""
    return read(path, pd.read_parquet, "metrics table")


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
    """The typed Config a job ran with, from the config.yaml it wrote (its tasks_module, if any,
    is imported first, so runs of a user's own task load too)."""
    path = Path(job_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {job_dir} is not the output directory of a toy-quanta job")
    raw = read(path, OmegaConf.load, "config.yaml")
    if raw.get("tasks_module"):
        registry.import_tasks_module(str(raw.tasks_module))
    for group in ("task", "model"):  # every job writes both: no default stands in for a missing one
        if not (raw.get(group) or {}).get("name"):
            raise RunFileError(path, f"no {group}.name", "it is not a config.yaml that toy-quanta wrote")
    try:
        task = registry.task(str(raw.task.name))
        model = registry.model(str(raw.model.name))
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.value, f"{exc.allowed} ({path})") from None
    schema = OmegaConf.structured(Config(task=task.config(), model=model.config(), optim=OptimConfig()))
    return OmegaConf.to_object(OmegaConf.merge(schema, raw))


@dataclass
class TrainedRun:
    """A finished job's members, ready to evaluate: the config, each member's hyperparameters,
    its task inputs (Task.member_inputs: sparse parity's subsets) and its trained model."""

    cfg: Config
    members: list[dict[str, Any]]
    subsets: np.ndarray  # (M, ...) the task's per-member inputs; sparse parity: (M, n_tasks, k) subsets
    params: Any  # pure dict, leading member axis

    def model(self, member: int) -> Any:
        if not 0 <= member < len(self.members):
            raise ConfigError("member", member, f"an index of the run's {len(self.members)} members (0..{len(self.members) - 1})")
        graphdef, state = nnx.split(make_model(self.cfg, jax.random.key(0)))
        nnx.replace_by_pure_dict(state, jax.tree.map(lambda x: jnp.asarray(x[member]), self.params))
        return nnx.merge(graphdef, state)


def load_run(job_dir: Path, analysis: str = "qdg") -> TrainedRun:
    """A job directory's config and final parameters (saved with train.checkpoint=true), for an
    analysis its task supports (Task.analyses)."""
    job_dir = Path(job_dir)
    cfg = load_config(job_dir)
    task = registry.task(cfg.task.name)
    if analysis not in task.analyses:
        able = [name for name, t in registry.tasks().items() if analysis in t.analyses]
        raise ConfigError("run_dir", str(job_dir), f"a {' or '.join(n.replace('_', ' ') for n in able)} run (this one trained "
                                                   f"task={cfg.task.name})")
    loss = getattr(cfg.task, "loss", "cross_entropy")
    if analysis in ("qdg", "genic") and loss != "cross_entropy":  # both read two-logit cross-entropy losses
        raise ConfigError("run_dir", str(job_dir), f"a run trained with task.loss=cross_entropy ({analysis} reads the "
                                                   f"two-logit cross-entropy; this one trained task.loss={loss})")
    ckpt = job_dir / CHECKPOINT_FILE
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} not found: the job saved no parameters (it ran with train.checkpoint=false, "
                                "or did not finish); re-run it with train.checkpoint=true")
    members = expand(cfg)
    return TrainedRun(cfg, members, task.member_inputs(cfg, members), load_checkpoint(ckpt))
