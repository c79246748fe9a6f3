"""One job, from a composed config to the files it writes: validate, train (engine.loop.fit),
then metrics, checkpoint, summary.json and the task's figures. The Hydra app (cli/app.py) and the
vmap launcher call `run_job`; what a job writes and reads is in results.py."""

from __future__ import annotations

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

from toy_quanta import registry, results
from toy_quanta.analysis import lu, phase
from toy_quanta.config import Config, validate
from toy_quanta.engine.loop import FitResult, fit
from toy_quanta.engine.members import expand, vector_keys

log = logging.getLogger("toy_quanta")
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" notices on every run

_NOT_SWEPT = ("train.progress", "train.checkpoint", "name", "tasks_module")  # settings, not values a sweep varies
FLUSH_EVERY_S = 10.0  # rewrite metrics.parquet at most this often while training


def to_config(cfg: DictConfig | Config) -> Config:
    """The typed Config of a composed Hydra config (the `hydra` node, if present, is left out)."""
    if isinstance(cfg, Config):
        return cfg
    cfg = cfg.copy()
    if "hydra" in cfg:
        with open_dict(cfg):
            del cfg["hydra"]
    return OmegaConf.to_object(cfg)


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

    def __init__(self, out_dir: Path, columns: dict[str, Any], cfg: Config | None = None):
        self.out_dir, self.cfg, self.columns = Path(out_dir), cfg, columns
        self.started = time.time()
        self.last_flush = 0.0
        self.latest: FitResult | None = None  # the run as far as it got, for fail()

    def write_config(self, dcfg: DictConfig | Config) -> None:
        text = OmegaConf.to_yaml(OmegaConf.structured(dcfg) if isinstance(dcfg, Config) else dcfg, resolve=True)
        results.atomic_write(self.out_dir / "config.yaml", lambda p: p.write_text(text))

    def on_log(self, result: FitResult) -> None:
        self.latest = result
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
            "device": results.device_info(),
            "group": group,
            "members": results.member_summaries(result),
        }
        self._after_run(task, result, snapshots, summary)
        title = f"{cfg.name}: {describe(cfg)}"
        self._grid_analyses(result, frame, summary, title)
        results.write_json(self.out_dir / results.SUMMARY_FILE, summary)
        task.figures(result, cfg, self.out_dir, title)
        return summary

    def _after_run(self, task: Any, result: FitResult, snapshots: Any, summary: dict[str, Any]) -> None:
        """The task's extra analyses (modular arithmetic: the progress measures of member 0). The
        run has finished and is saved: a failure here is recorded in the summary, not turned into
        a failed job."""
        try:
            summary.update(task.after_run(self.cfg, result, snapshots, self.out_dir))
        except Exception as exc:  # noqa: BLE001
            log.warning("%s's analyses after the run failed (%s: %s)", task.name, type(exc).__name__, exc)
            summary["progress_error"] = f"{type(exc).__name__}: {exc}"

    def _grid_analyses(self, result: FitResult, frame: pd.DataFrame, summary: dict[str, Any], title: str) -> None:
        """A phase diagram (phase.x/y set) and the LU curves (members at 3 or more fixed norms),
        written into the job directory and its summary. Like _progress, a failure here is recorded,
        never turned into a failed job."""
        cfg = self.cfg
        norms = {m["optim.fixed_norm"] for m in result.members} - {None}
        for name, wanted, write in (
                ("phase", cfg.phase.x is not None,
                 lambda: phase.write_phase(frame, self.out_dir, cfg.phase.x, cfg.phase.y, cfg.phase.threshold,
                                           cfg.phase.gap_steps, title)),
                ("lu", len(norms) >= 3,
                 lambda: lu.write_lu(frame, self.out_dir, title, loss_label=registry.task(cfg.task.name).loss_label(cfg)))):
            if not wanted:
                continue
            try:
                summary[name] = write()
            except Exception as exc:  # noqa: BLE001
                log.warning("%s analysis failed (%s: %s)", name, type(exc).__name__, exc)
                summary[f"{name}_error"] = f"{type(exc).__name__}: {exc}"

    def fail(self, exc: BaseException, result: FitResult | None) -> None:
        """Keep what the run produced so far and say why it stopped."""
        result = result or self.latest
        if result is not None and result.steps:
            results.write_metrics(self.out_dir / results.METRICS_FILE, result, self.columns)
        if result is not None and result.snapshots:
            results.save_snapshots(self.out_dir / results.SNAPSHOTS_FILE, result.steps, result.snapshots)
        results.write_json(self.out_dir / results.SUMMARY_FILE, {
            "status": "failed",
            "name": self.cfg.name if self.cfg is not None else None,
            "output_dir": str(self.out_dir),
            "swept": self.columns,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "steps": result.steps_done if result is not None else 0,
            "wall_time_s": time.time() - self.started,
        })


def describe(cfg: Config) -> str:
    """One line for figure titles: the task's description and the fixed norms."""
    norms = ""
    if cfg.ensemble.fixed_norm is not None:
        norms = f", parameter norm fixed at w in {list(cfg.ensemble.fixed_norm)}"
    elif cfg.optim.fixed_norm is not None:
        norms = f", parameter norm fixed at {cfg.optim.fixed_norm:g}"
    return registry.task(cfg.task.name).describe(cfg) + norms


def run_job(dcfg: DictConfig | Config, out_dir: Path | str, overrides: list[str] | None = None,
            trained: FitResult | BaseException | None = None, group: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate, train and write results. `trained` is this job's part of a vmapped group (the
    vmap launcher trained it already), or the exception that group's training raised."""
    out_dir = Path(out_dir)
    columns = override_columns(overrides or [])
    writer = JobWriter(out_dir, columns)
    result = trained if isinstance(trained, FitResult) else None
    try:
        cfg = to_config(dcfg)
        writer.cfg = cfg
        writer.write_config(dcfg)
        validate(cfg)
        if isinstance(trained, BaseException):
            raise trained
        if result is None:
            result = fit(cfg, expand(cfg), on_log=writer.on_log)
        summary = writer.finish(result, group)
    except BaseException as exc:
        writer.fail(exc, result)
        raise
    _report(summary, registry.task(writer.cfg.task.name))
    return summary


def _report(summary: dict[str, Any], task: Any) -> None:
    for member in summary["members"][:8]:
        flag = f"  DIVERGED at step {member['diverged_step']}" if member["diverged"] else ""
        log.info("member %d seed %d: %s%s", member["member"], member["seed"], task.report_line(member), flag)
    log.info("%d steps in %.1f s (+%.1f s compile), %.0f steps/s", summary["steps"], summary["train_s"],
             summary["compile_s"], summary["steps_per_s"])
    print(f"output directory: {summary['output_dir']}", flush=True)
