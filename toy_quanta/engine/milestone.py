"""The milestone stop: end a run before its budget once every member has reached a milestone and
held it (`train.stop_*`), so a run that only needs "steps to 99% validation" costs that, not the
whole budget.

The rule is read on the host at log steps, from the metrics already recorded: the steps up to the
one it fires at are the steps a run without the rule takes, bit for bit, and a run resumed from a
checkpoint recounts the hold from its restored metrics.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from toy_quanta.errors import ConfigError


class StopRule(NamedTuple):
    metric: str
    at_least: float | None
    at_most: float | None
    hold: int

    def describe(self) -> str:
        level = f">= {self.at_least:g}" if self.at_least is not None else f"<= {self.at_most:g}"
        return (f"every member has had {self.metric} {level} (every entry of a per-subtask metric) at "
                f"{self.hold} consecutive log steps, or has diverged")

    def met_LxM(self, values: np.ndarray) -> np.ndarray:
        """(L, M) whether each member met the level at each log step; values is (L, M) or (L, M, T)."""
        values = np.asarray(values, np.float64)
        ok = values >= self.at_least if self.at_least is not None else values <= self.at_most
        return ok.all(axis=2) if ok.ndim == 3 else ok

    def fires(self, logs: dict[str, list[np.ndarray]]) -> bool:
        """Whether every member has held the level over the last `hold` log steps (a member that
        diverged, and so no longer trains, does not hold the run up)."""
        series = logs.get(self.metric, [])
        if len(series) < self.hold:
            return False
        held_M = self.met_LxM(np.stack(series[-self.hold:])).all(axis=0)
        if "alive" in logs:
            held_M |= ~(np.asarray(logs["alive"][-1]) > 0)
        return bool(held_M.all())


def from_config(train: Any) -> StopRule | None:
    """The run's rule (train.stop_metric and its level), or None: the whole budget."""
    if train.stop_metric is None:
        return None
    return StopRule(train.stop_metric, train.stop_at_least, train.stop_at_most, train.stop_hold)


def check_metric(rule: StopRule, logged: list[str]) -> None:
    """ConfigError unless the task logs the rule's metric (called before the program compiles)."""
    if rule.metric not in logged:
        raise ConfigError("train.stop_metric", rule.metric, "a metric this task logs: one of " + ", ".join(logged))
