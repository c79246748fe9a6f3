"""The Hydra app, `toy-quanta`: one job = one ensemble of members trained as one program.

    toy-quanta                                   # the default job (experiment=demo)
    toy-quanta -m model.width=16,32,64 seed=0,1  # a sweep, one job after another
    toy-quanta -m hydra/launcher=vmap model.width=16,32 seed=0,1,2  # same-shaped jobs vmapped together
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import jax
import numpy as np
import pandas as pd
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from toy_quanta import grok_plots, lu, phase, progress, results
from toy_quanta.config import VECTOR_KEYS, Config, ConfigError, validate
from toy_quanta.data.mnist import MNISTFormatError
from toy_quanta.engine.loop import FitResult, fit
from toy_quanta.engine.members import expand
from toy_quanta.plotting import plot_curves

log = logging.getLogger("toy_quanta")
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" notices on every run

_NOT_SWEPT = ("train.progress", "train.checkpoint", "name")  # settings, not values a sweep varies
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
        if not sep or key.startswith(("hydra.", "hydra/", "ensemble.")) or key in (*VECTOR_KEYS, *_NOT_SWEPT):
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
        cfg, t, m = self.cfg, self.cfg.task, self.cfg.model
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
        if t.name == "modular" and snapshots is not None:
            self._progress(snapshots, result.steps, summary)
        title = f"{cfg.name}: {_describe(cfg)}"
        self._grid_analyses(result, frame, summary, title)
        results.write_json(self.out_dir / results.SUMMARY_FILE, summary)
        if t.name == "modular":
            grok_plots.job_figures(result, t.p, self.out_dir, cfg.name, title)
        elif t.name == "symbol_add":
            grok_plots.plot_grokking(result, self.out_dir / "curves.png", title=title)
            grok_plots.plot_representation(result, self.out_dir / "representation.png", title=title)
        elif t.name in ("mnist", "teacher_student"):
            grok_plots.plot_grokking(result, self.out_dir / "curves.png", title=title, loss_label=_loss_label(cfg))
        else:
            plot_curves(result, self.out_dir / "curves.png", title=title, log_x=cfg.train.log_count is not None)
        return summary

    def _progress(self, snapshots: dict, steps: list[int], summary: dict[str, Any]) -> None:
        """The teaching view of the mechanism, for member 0 (toy-quanta-progress does any member).
        The run has finished and is saved: a failure here is recorded in the summary, not turned
        into a failed job."""
        try:
            measures = progress.measure(self.cfg, np.asarray(steps), snapshots, member=0)
            summary["progress"] = progress.write(measures, self.out_dir / "progress", ring=False)
        except Exception as exc:  # noqa: BLE001
            log.warning("progress measures failed (%s: %s); run toy-quanta-progress %s", type(exc).__name__, exc,
                        self.out_dir)
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
                 lambda: lu.write_lu(frame, self.out_dir, title, loss_label=_loss_label(cfg)))):
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


def _loss_label(cfg: Config) -> str | None:
    """The y label of a loss that is not cross-entropy in nats."""
    if cfg.task.name == "teacher_student":
        return "MSE (targets standardised)"
    if cfg.task.name == "mnist" and cfg.task.loss == "mse":
        return "MSE against one-hot targets"
    return None


def _norms(cfg: Config) -> str:
    if cfg.ensemble.fixed_norm is not None:
        return f", parameter norm fixed at w in {list(cfg.ensemble.fixed_norm)}"
    return "" if cfg.optim.fixed_norm is None else f", parameter norm fixed at {cfg.optim.fixed_norm:g}"


def _describe(cfg: Config) -> str:
    return _describe_task(cfg) + _norms(cfg)


def _describe_task(cfg: Config) -> str:
    t, m = cfg.task, cfg.model
    if t.name == "symbol_add":
        o = cfg.optim
        embed = (f"; embedding lr={o.embed_lr if o.embed_lr is not None else o.lr:g} "
                 f"wd={o.embed_weight_decay if o.embed_weight_decay is not None else o.weight_decay:g}")
        return (f"i + j for {t.p} symbols, {t.train_fraction:g} of the {t.p * (t.p + 1) // 2} pairs; {m.d_embed}-D "
                f"embedding, decoder {m.depth} x {m.width} {m.activation}; {o.name} decoder lr={o.lr:g} "
                f"wd={o.weight_decay:g}{embed}")
    if t.name == "teacher_student":
        return (f"teacher MLP {t.d_in}-{t.teacher_width}x{t.teacher_depth}-{t.d_out} {t.teacher_activation}, "
                f"{t.n_train} training samples; student width {m.width}, depth {m.depth}; "
                f"{cfg.optim.name} lr={cfg.optim.lr:g} wd={cfg.optim.weight_decay:g}")
    if t.name == "modular":
        fractions = cfg.ensemble.train_fraction
        data = f"training fraction in {list(fractions)}" if fractions else f"{t.train_fraction:g} of the pairs"
        model = (f"transformer {m.n_layers} layers, width {m.d_model}" if m.name == "transformer"
                 else f"embedding MLP (d_embed {m.d_embed}, width {m.width}, {m.combine})")
        return (f"{t.op} mod {t.p}, {data}; {model}; {cfg.optim.name} lr={cfg.optim.lr:g} "
                f"wd={cfg.optim.weight_decay:g}, " + ("full batch" if t.full_batch else f"batch {cfg.train.batch_size}"))
    if t.name == "mnist":
        source = "embedded MNIST (5,000 digits)" if t.source == "embedded" else t.source
        return (f"{source}, {t.n_train} training images, {t.loss} loss; MLP width {m.width}, depth {m.depth}; "
                f"{cfg.optim.name} lr={cfg.optim.lr:g} wd={cfg.optim.weight_decay:g}, "
                + ("full batch" if t.full_batch else f"batch {cfg.train.batch_size}"))
    sizes = cfg.ensemble.D
    data = f"D in {list(sizes)}" if sizes is not None else "online" if t.D is None else f"D={t.D}"
    return (f"{t.n_tasks} subtasks, n={t.n}, k={t.k}, alpha={t.alpha:g} (p ∝ i^-{t.alpha + 1:g}), {data}; "
            f"width {m.width}, depth {m.depth}; {cfg.optim.name} lr={cfg.optim.lr:g}, batch {cfg.train.batch_size}")


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
    _report(summary)
    return summary


def _report(summary: dict[str, Any]) -> None:
    for member in summary["members"][:8]:
        f = member["final"]
        flag = f"  DIVERGED at step {member['diverged_step']}" if member["diverged"] else ""
        if "subtasks_learned" in f:
            log.info("member %d seed %d: test loss %.4f bits, test acc %.4f, %d subtasks learned%s", member["member"],
                     member["seed"], f["test_loss_bits"], f["test_acc"], f["subtasks_learned"], flag)
        elif "steps_to_val_80" in f:
            step = lambda k: "never" if f[k] is None else f"step {f[k]:.0f}"  # noqa: E731
            what = (f"fixed norm {member['optim.fixed_norm']:g}" if member.get("optim.fixed_norm") is not None
                    else f"init scale {member['model.init_scale']:g}")
            log.info("member %d seed %d (%s): train acc %.4f, test acc %.4f; 100%% train: %s, 60%% test: "
                     "%s, 80%% test: %s%s", member["member"], member["seed"], what,
                     f["train_acc"], f["test_acc"], step("steps_to_train_100"), step("steps_to_val_60"),
                     step("steps_to_val_80"), flag)
        else:
            step = lambda k: "never" if f[k] is None else f"step {f[k]:.0f}"  # noqa: E731
            log.info("member %d seed %d: train acc %.4f, validation acc %.4f; 99%% train at %s, 99%% validation at "
                     "%s%s", member["member"], member["seed"], f["train_acc"], f["test_acc"], step("steps_to_train_99"),
                     step("steps_to_val_99"), flag)
    log.info("%d steps in %.1f s (+%.1f s compile), %.0f steps/s", summary["steps"], summary["train_s"],
             summary["compile_s"], summary["steps_per_s"])
    print(f"output directory: {summary['output_dir']}", flush=True)


def _register_launcher() -> None:
    """Hydra finds plugins by walking the hydra_plugins namespace, which editable installs hide;
    registering the class by hand makes `hydra/launcher=vmap` work in every kind of install."""
    from hydra_plugins.toy_quanta_vmap_launcher.vmap_launcher import VmapLauncher

    Plugins.instance().register(VmapLauncher)


_register_launcher()


@hydra.main(version_base=None, config_path="pkg://toy_quanta.conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    hc = HydraConfig.get()
    try:
        return run_job(cfg, hc.runtime.output_dir, list(hc.overrides.task))
    except (ConfigError, MNISTFormatError) as exc:  # bad settings, or a corrupt data file: one line, no traceback
        if hc.mode == RunMode.MULTIRUN:
            raise  # Hydra records the job as failed; the other jobs of the sweep still ran
        print(f"toy-quanta: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
