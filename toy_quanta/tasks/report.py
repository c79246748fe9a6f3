"""What a report needs from a task: its headline numbers, its log lines, its figures and its own
after-run analyses. None of it runs while training; the engine's side is tasks.base.TaskEngine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class TaskReport:
    # summary.json["members"][i]["final"] keys that toy-quanta-report shows for it
    headline: ClassVar[tuple[str, ...]] = ("test_loss", "test_acc")
    # what else the analyses can do with its runs (e.g. "progress", "qdg")
    analyses: ClassVar[frozenset[str]] = frozenset()
    # the summary.json key of what after_run adds, and of its failure (`<name>_error`)
    after_run_name: ClassVar[str] = "after_run"

    def summarize(self, steps_L: np.ndarray, logs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Headline numbers of one member from its metrics at every log step ((L,) or (L, T))."""
        return {}

    def report_line(self, member: dict[str, Any]) -> str:
        """One log line for a member's summary."""
        f = member["final"]
        return f"train acc {f['train_acc']:.4f}, test acc {f['test_acc']:.4f}, test loss {f['test_loss']:.4f}"

    def figures(self, result: Any, cfg: Any, out_dir: Path, title: str) -> None:
        """The job's figures, written into out_dir: by default accuracy, loss and weight norm over
        training, per member (curves.png)."""
        from toy_quanta.plots.grok import plot_grokking  # matplotlib: only for the runs that draw

        plot_grokking(result, out_dir / "curves.png", title=title, loss_label=self.loss_label(cfg))

    def after_run(self, cfg: Any, result: Any, snapshots: Any, out_dir: Path) -> dict[str, Any]:
        """Extra analyses of a finished job, merged into summary.json (a failure is recorded there)."""
        return {}

    def report_lines(self, summary: dict[str, Any]) -> list[str]:
        """Lines the job's log shows after the members' (e.g. what after_run found)."""
        return []

    def describe(self, cfg: Any) -> str:
        """One line: the task, the model and the optimiser, for figure titles."""
        return f"{self.name}; {cfg.model.name}; {cfg.optim.name} lr={cfg.optim.lr:g} wd={cfg.optim.weight_decay:g}"

    def loss_label(self, cfg: Any) -> str:
        """The y label of its loss."""
        return "cross-entropy (nats)"

    def reachable(self, cfg: Any, member: dict[str, Any]) -> dict[str, float]:
        """The highest training and validation accuracy a perfect model reaches on this task
        (train_acc, test_acc): 1 unless some samples are unpredictable (label noise, a sequence's
        first copy), for one member (its values of the per-member keys). The diagnosis of a
        member scales its threshold by them, so "fitted" means fitted as far as the task allows."""
        return {"train_acc": 1.0, "test_acc": 1.0}
