"""The built-in after-run analyses (toy_quanta.hooks): registered when this module is imported.

- diagnosis: each member's loss spikes (analysis.slingshot) and, for tasks that log training and
  validation accuracy, its one-word diagnosis (analysis.phase.diagnose at phase.threshold and
  phase.gap_steps, with the task's own reachable level);
- the task's own analyses (Task.after_run), under the task's after_run_name;
- phase: a phase diagram, when phase.x and phase.y are set;
- lu: the LU curves, when the members have 3 or more fixed norms;
- arms: the arms' comparison, when ensemble.arms is set and the task logs test accuracy.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from toy_quanta import registry
from toy_quanta.analysis import arms, lu, phase, slingshot
from toy_quanta.hooks import Finished, register_after_run

MAX_SPIKES_LISTED = 20  # summary.json lists a member's first loss spikes, and counts them all


def diagnosis(run: Finished) -> Optional[dict[str, Any]]:
    result, members, cfg = run.result, run.summary["members"], run.cfg
    steps = np.asarray(result.steps)
    found: dict[str, Any] = {}
    if {"train_loss", "readout_norm"} <= set(result.logs):
        found["slingshot_rule"] = slingshot.RULE
        for i, member in enumerate(members):
            spikes = slingshot.spikes(steps, result.log_array("train_loss")[:, i], result.log_array("readout_norm")[:, i])
            member["loss_spikes"] = {"count": len(spikes), "first": spikes[:MAX_SPIKES_LISTED]}
    if not {"train_acc", "test_acc"} <= set(result.logs):
        return found
    threshold, gap = cfg.phase.threshold, cfg.phase.gap_steps
    task = registry.task(cfg.task.name)
    each = [task.reachable(cfg, m) for m in result.members]
    reachable = {split: np.array([r[split] for r in each]) for split in ("train_acc", "test_acc")}
    labels = phase.diagnose(steps, result.log_array("train_acc"), result.log_array("test_acc"), threshold, gap,
                            reachable=reachable)
    for i, member in enumerate(members):
        member["diagnosis"] = str(labels["diagnosis"][i])
        member["grokking_delay"] = None if np.isnan(labels["delay"][i]) else float(labels["delay"][i])
    return {**found, "diagnosis_rule": phase.diagnosis_rule(threshold, gap, reachable=reachable)}


def task_analyses(run: Finished) -> Optional[dict[str, Any]]:
    task = registry.task(run.cfg.task.name)
    return task.after_run(run.cfg, run.result, run.snapshots, run.out_dir)


def phase_diagram(run: Finished) -> Optional[dict[str, Any]]:
    p = run.cfg.phase
    if p.x is None:
        return None
    return {"phase": phase.write_phase(run.frame, run.out_dir, p.x, p.y, p.threshold, p.gap_steps, run.title)}


def lu_curves(run: Finished) -> Optional[dict[str, Any]]:
    norms = {m["optim.fixed_norm"] for m in run.result.members} - {None}
    if len(norms) < 3:
        return None
    label = registry.task(run.cfg.task.name).loss_label(run.cfg)
    return {"lu": lu.write_lu(run.frame, run.out_dir, run.title, loss_label=label)}


def arms_comparison(run: Finished) -> Optional[dict[str, Any]]:
    if "arm" not in run.frame.columns or "test_acc" not in set(run.frame["metric"]):
        return None
    return {"arms": arms.write_arms(run.frame, run.out_dir, run.title, tuple(run.cfg.ensemble.arms_levels))}


def _arms_lines(summary: dict[str, Any]) -> list[str]:
    if "arms" not in summary:
        return []
    head = ("arms, steps to validation accuracy (geometric mean [95% CI] (reached/seeds), speed-up over "
            f"{summary['arms']['baseline']}):")
    return [head, *(f"  {line}" for line in arms.lines(summary["arms"]))]


register_after_run("diagnosis", diagnosis, order=10)
register_after_run("task", task_analyses, order=20, name=lambda run: registry.task(run.cfg.task.name).after_run_name)
register_after_run("phase", phase_diagram, order=30)
register_after_run("lu", lu_curves, order=31)
register_after_run("arms", arms_comparison, order=32, lines=_arms_lines)
