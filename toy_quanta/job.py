"""One job, from a composed config to the files it writes: validate, train (engine.loop.fit),
then metrics, checkpoint, summary.json and the task's figures. The Hydra app (cli/app.py) and the
vmap launcher call `run_job`; what a job writes and reads is in results.py."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from toy_quanta import compilation_cache, hooks, registry, results, stopping
from toy_quanta.files import job_lock
from toy_quanta.config import Config, fold_task_lists, validate
from toy_quanta.engine.checkpoint import STATE_FILE
from toy_quanta.engine import milestone
from toy_quanta.engine.loop import FitResult, fit
from toy_quanta.engine.members import expand, vector_keys
from toy_quanta.engine.train import DIVERGENCE_RULE
from toy_quanta.errors import ConfigError, DiskFull, Interrupted, RunFileError

log = logging.getLogger("toy_quanta")
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" notices on every run

# Settings, not values a sweep varies; these may also change when a run resumes. The monitors'
# keys are settings too (hooks.monitor_keys).
SETTINGS = ("train.progress", "train.checkpoint_every_s", "train.devices", "train.compilation_cache", "train.figures",
            *hooks.monitor_keys())
_NOT_SWEPT = (*SETTINGS, "train.checkpoint", "name", "tasks_module")
FLUSH_EVERY_S = 10.0  # rewrite metrics.parquet at most this often while training


def to_config(cfg: DictConfig | Config) -> Config:
    """The typed Config of a composed Hydra config (the `hydra` node, if present, is left out).
    A key the schema does not have (`+no_such_key=1`) is a ConfigError."""
    if isinstance(cfg, Config):
        return cfg
    cfg = cfg.copy()
    if "hydra" in cfg:
        with open_dict(cfg):
            del cfg["hydra"]
    fold_task_lists(cfg)
    typed = OmegaConf.to_object(cfg)
    given = flatten(OmegaConf.to_container(cfg, resolve=False))
    known = flatten(typed)
    for key in given:
        if key not in known and not any(key.startswith(k + ".") for k in known if known[k] in (None, {})):
            near = difflib.get_close_matches(key, list(known), n=1)
            raise ConfigError(key, given[key], "no such key in the config" + (f" (did you mean {near[0]}?)" if near else
                                                                              "; see `toy-quanta --cfg job` for every key"))
    return typed


def follow_task_model(dcfg: DictConfig | Config, overrides: list[str]) -> None:
    """The model group's default is the first model of the task when the composed model is not one
    the task trains and the command line named none (`'~experiment' task=mnist` trains dense_mlp);
    the command line's model.* values apply to it. A model named with model=... is left to validate."""
    if not isinstance(dcfg, DictConfig) or "task" not in dcfg or "model" not in dcfg:
        return
    try:
        task = registry.task(str(dcfg.task.name))
    except (ConfigError, AttributeError):
        return  # validate names the unknown task
    named = any(o.lstrip("+~").partition("=")[0] == "model" for o in overrides)
    if named or str(dcfg.model.get("name")) in task.models:
        return
    model = OmegaConf.structured(registry.model(task.models[0]).config())
    for override in overrides:
        key, sep, value = override.lstrip("+").partition("=")
        if sep and key.startswith("model.") and key != "model.name":
            try:
                OmegaConf.update(model, key.removeprefix("model."), yaml.safe_load(value), merge=False)
            except Exception:  # noqa: BLE001  a key the task's model lacks: to_config names it
                raise ConfigError(key, value, f"a key of model {task.models[0]} (the model of task {task.name}: "
                                              f"`toy-quanta --cfg job model={task.models[0]}` lists them)") from None
    with open_dict(dcfg):
        dcfg.model = model


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested dict (or dataclass instance); lists, scalars and empty dicts are leaves."""
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        tree = {f.name: getattr(tree, f.name) for f in dataclasses.fields(tree)}
    if not isinstance(tree, dict) or not tree:
        return {prefix[:-1]: tree} if prefix else {}
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def check_run_dir(out_dir: Path, config_text: str) -> dict[str, Any] | None:
    """What an output directory already holds: None if no run (or a stopped run of this config,
    which then resumes from its checkpoint), the summary of a completed run of this config, or a
    ConfigError for a run of another config, naming the keys that differ (nothing is touched)."""
    old_path = out_dir / "config.yaml"
    if not old_path.is_file():
        return None
    try:
        old = flatten(yaml.safe_load(old_path.read_text()) or {})
    except yaml.YAMLError as exc:
        raise RunFileError(old_path, f"not readable YAML ({exc})", "the directory is left as it is") from None
    new = flatten(yaml.safe_load(config_text))
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in SETTINGS)
    if differ:
        shown = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} here" for k in differ[:6])
        more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
        raise ConfigError("hydra.run.dir", str(out_dir), f"a new directory or one holding a run of this same config; "
                                                         f"it holds a run of another config ({shown}{more})")
    try:
        summary = json.loads((out_dir / results.SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("status") == "completed" else None


def override_columns(overrides: list[str]) -> dict[str, Any]:
    """The job's swept values from its Hydra overrides, as metric-table columns."""
    columns = {}
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key.startswith(("hydra.", "hydra/", "ensemble.")) or key in (*vector_keys(), *_NOT_SWEPT):
            continue
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        columns[key] = parsed if isinstance(parsed, (int, float, str, bool)) else value
    return columns


class JobWriter:
    """Writes one job's results into its directory, as training goes and at the end."""

    def __init__(self, out_dir: Path, columns: dict[str, Any], cfg: Config | None = None, sweep: bool = False):
        self.out_dir, self.cfg, self.columns, self.sweep = Path(out_dir), cfg, columns, sweep
        self.started = time.time()
        self.last_flush = 0.0
        self.latest: FitResult | None = None  # the run as far as it got, for fail()
        self._monitoring: hooks.Monitoring | None = None

    @property
    def monitors(self) -> hooks.Monitoring:
        """The monitors the config turns on (toy_quanta.hooks), started at the first log step.
        Monitoring never fails a run: a monitor's failure is logged and stops that monitor."""
        if self._monitoring is None:
            self._monitoring = hooks.Monitoring(self.out_dir, self.cfg)
        return self._monitoring

    def write_config(self, text: str) -> None:
        results.atomic_write(self.out_dir / "config.yaml", lambda p: p.write_text(text))

    def on_log(self, result: FitResult) -> None:
        self.latest = result
        self.monitors.scalars(result)
        if time.time() - self.last_flush >= FLUSH_EVERY_S:
            results.write_metrics(self.out_dir / results.METRICS_FILE, result, self.columns)
            self.last_flush = time.time()

    def finish(self, result: FitResult, group: dict[str, Any] | None = None) -> dict[str, Any]:
        cfg = self.cfg
        task = registry.task(cfg.task.name)
        frame = results.write_metrics(self.out_dir / results.METRICS_FILE, result, self.columns)
        if cfg.train.checkpoint:
            results.save_checkpoint(self.out_dir / results.CHECKPOINT_FILE, result.params)
        snapshots = (results.save_snapshots(self.out_dir / results.SNAPSHOTS_FILE, result.steps, result.snapshots)
                     if result.snapshots else None)
        n_members = len(result.members)
        summary = {
            "status": "completed",
            "name": cfg.name,
            "output_dir": str(self.out_dir),
            "swept": self.columns,
            "n_members": n_members,
            "n_params": sum(int(np.prod(x.shape[1:])) for x in jax.tree.leaves(result.params)),
            "steps": result.steps_done,
            "n_diverged": int(sum(not a for a in result.alive)),
            "wall_time_s": time.time() - self.started,
            "compile_s": result.compile_s,
            "train_s": result.train_s,
            "steps_per_s": result.steps_per_s,
            "model_steps_per_s": result.steps_per_s * (group or {}).get("group_members", n_members),
            "device": {**results.device_info(), "devices_used": result.devices_used},
            "resumed_from": result.resumed_from,
            "stopped": stop_summary(cfg, result),
            "divergence_rule": DIVERGENCE_RULE,
            "group": group,
            "members": results.member_summaries(result),
        }
        title = f"{cfg.name}: {describe(cfg)}"
        # the registered after-run analyses (toy_quanta.hooks): each failure recorded under its name
        hooks.run_after_runs(hooks.Finished(cfg, result, frame, summary, self.out_dir, title, snapshots))
        results.write_json(self.out_dir / results.SUMMARY_FILE, summary)
        if draws_figures(cfg, self.sweep):
            task.figures(result, cfg, self.out_dir, title)
        # the monitors: every log step when another process trained the job (the vmap launcher),
        # the figures, then closed; a failure recorded under the monitor's name (`<name>_error`)
        errors = self.monitors.finish(result)
        if errors:
            summary.update(errors)
            results.write_json(self.out_dir / results.SUMMARY_FILE, summary)
        state = self.out_dir / STATE_FILE
        if state.is_file():  # completed and saved: the final parameters are in checkpoint.msgpack
            state.unlink()
        return summary

    def fail(self, exc: BaseException, result: FitResult | None) -> None:
        """Keep what the run produced so far and say why it stopped: status interrupted (a signal;
        the checkpoint resumes it) or failed."""
        result = result or self.latest
        if result is not None and result.steps:
            _if_room(lambda: results.write_metrics(self.out_dir / results.METRICS_FILE, result, self.columns))
        if result is not None and result.snapshots:
            _if_room(lambda: results.save_snapshots(self.out_dir / results.SNAPSHOTS_FILE, result.steps, result.snapshots))
        if result is not None and self.cfg is not None:
            self.monitors.scalars(result)
            self.monitors.close(failed=True)
        stopped = isinstance(exc, Interrupted)
        state = self.out_dir / STATE_FILE
        _if_room(lambda: results.write_json(self.out_dir / results.SUMMARY_FILE, {
            "status": "interrupted" if stopped else "failed",
            "name": self.cfg.name if self.cfg is not None else None,
            "output_dir": str(self.out_dir),
            "swept": self.columns,
            "error": f"{type(exc).__name__}: {exc}",
            **({"checkpoint": str(state) if state.is_file() else None,
                "resume": "run the same command with the same output directory (hydra.run.dir)"} if stopped
               else {"traceback": traceback.format_exc()}),
            "steps": result.steps_done if result is not None else 0,
            "wall_time_s": time.time() - self.started,
        }))


def _if_room(write: Any) -> None:
    """A failed run's last writes: on a full disk each is skipped (the older file stays whole), so the
    run's own error is what the user reads, not a chain of the same one."""
    try:
        write()
    except DiskFull as exc:
        log.warning("not written: %s", exc)


def stop_summary(cfg: Config, result: FitResult) -> dict[str, Any] | None:
    """How the milestone stop (train.stop_*) ended the run, or None when it ran its budget."""
    rule = milestone.from_config(cfg.train)
    if rule is None:
        return None
    return {"rule": rule.describe(), "step": result.stopped_at, "budget": cfg.train.steps}


def describe(cfg: Config) -> str:
    """One line for figure titles: the task's description and the fixed norms."""
    norms = ""
    if cfg.ensemble.fixed_norm is not None:
        norms = f", parameter norm fixed at w in {list(cfg.ensemble.fixed_norm)}"
    elif cfg.optim.fixed_norm is not None:
        norms = f", parameter norm fixed at {cfg.optim.fixed_norm:g}"
    return registry.task(cfg.task.name).describe(cfg) + norms


def draws_figures(cfg: Config, sweep: bool) -> bool:
    """train.figures, or by default: a lone job draws its figures, a multirun's job does not (a
    figure per job of a thousand-point sweep costs more than its training; the sweep gets one)."""
    return cfg.train.figures if cfg.train.figures is not None else not sweep


def run_job(dcfg: DictConfig | Config, out_dir: Path | str, overrides: list[str] | None = None,
            trained: FitResult | BaseException | None = None, group: dict[str, Any] | None = None,
            sweep: bool = False, typed: Config | None = None) -> dict[str, Any]:
    """Validate, train and write results. `trained` is this job's part of a vmapped group (the
    vmap launcher trained it already), or the exception that group's training raised; `sweep`:
    the job is one of a multirun's (its figures wait to be asked for: train.figures); `typed`: dcfg
    as to_config makes it, if the caller has made it already (a sweep's thousand jobs). SIGTERM and
    SIGINT stop the training at the next call boundary with a checkpoint (errors.Interrupted)."""
    with stopping.watching():
        return _run_job(dcfg, Path(out_dir), overrides, trained, group, sweep, typed)


def _run_job(dcfg: DictConfig | Config, out_dir: Path, overrides: list[str] | None,
             trained: FitResult | BaseException | None, group: dict[str, Any] | None, sweep: bool,
             typed: Config | None) -> dict[str, Any]:
    columns = override_columns(overrides or [])
    writer = JobWriter(out_dir, columns, sweep=sweep)
    result = trained if isinstance(trained, FitResult) else None
    follow_task_model(dcfg, overrides or [])
    cfg = typed if typed is not None else to_config(dcfg)  # an unknown key: nothing is written
    text = OmegaConf.to_yaml(OmegaConf.structured(dcfg) if isinstance(dcfg, Config) else dcfg, resolve=True)
    with job_lock(out_dir):  # one process per directory: a second one is refused, naming the first
        return _run_locked(out_dir, cfg, text, writer, result, trained, group)


def _run_locked(out_dir: Path, cfg: Config, text: str, writer: JobWriter, result: FitResult | None,
                trained: FitResult | BaseException | None, group: dict[str, Any] | None) -> dict[str, Any]:
    done = check_run_dir(out_dir, text)  # another config's run: refused before anything is written
    if done is not None:
        log.info("%s holds a completed run of this config: nothing to do", out_dir)
        print(f"output directory: {out_dir} (completed earlier)", flush=True)
        return done
    if stopping.requested() and trained is None:  # a sweep that was asked to stop starts no new job
        raise Interrupted(stopping.requested(), 0)  # and leaves its directory as it was
    try:
        writer.cfg = cfg
        writer.write_config(text)
        validate(cfg)
        if isinstance(trained, BaseException):
            raise trained
        if result is None:
            compilation_cache.enable(cfg.train.compilation_cache)
            state = out_dir / STATE_FILE if cfg.train.checkpoint_every_s is not None else None
            result = fit(cfg, expand(cfg), on_log=writer.on_log, checkpoint=state, should_stop=stopping.requested)
        summary = writer.finish(result, group)
    except BaseException as exc:
        writer.fail(exc, getattr(exc, "result", None) or result)
        raise
    _report(summary, registry.task(writer.cfg.task.name))
    return summary


def _report(summary: dict[str, Any], task: Any) -> None:
    for member in summary["members"][:8]:
        flag = f"  DIVERGED at step {member['diverged_step']}" if member["diverged"] else ""
        said = f" [{member['diagnosis']}]" if "diagnosis" in member else ""
        log.info("member %d seed %d: %s%s%s", member["member"], member["seed"], task.report_line(member), said, flag)
    for line in [*hooks.report_lines(summary), *task.report_lines(summary)]:
        log.info("%s", line)
    stopped = summary.get("stopped") or {}
    budget = f" of {stopped['budget']} (milestone reached)" if stopped.get("step") is not None else ""
    log.info("%d steps%s in %.1f s (+%.1f s compile), %.0f steps/s", summary["steps"], budget, summary["train_s"],
             summary["compile_s"], summary["steps_per_s"])
    print(f"output directory: {summary['output_dir']}", flush=True)
