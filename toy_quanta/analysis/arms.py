"""Arms compared side by side: steps to a validation accuracy per arm, and each arm's speed-up over
the first arm (the baseline), with bootstrap intervals over seeds.

An arm is a named set of per-member values (ensemble.arms), trained with several seeds in one
program. For each level (95% and 99% by default) a member's milestone is the first logged step at
which its validation accuracy reached the level; a member that never did is censored at the budget
(the last step): its milestone is a lower bound, and so is a ratio it enters. The summary of an arm
is the geometric mean over its seeds (grokking delays are spread multiplicatively), and the speed-up
of arm a is geomean(baseline) / geomean(a), with a percentile bootstrap interval resampling each
arm's seeds independently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toy_quanta import results
from toy_quanta.analysis.milestones import steps_to

LEVELS = (0.95, 0.99)
CONFIDENCE = 0.95
N_RESAMPLES = 2000
VAL_METRIC = "test_acc"  # the validation split of the grokking tasks


def milestones(frame: pd.DataFrame, levels: tuple[float, ...] = LEVELS, metric: str = VAL_METRIC) -> pd.DataFrame:
    """One row per member: member, arm, seed, budget, then steps_<level> (NaN: never) per level."""
    rows = frame[frame["metric"] == metric]
    acc_LxM = rows.pivot(index="step", columns="member", values="value").sort_index()
    steps_L = acc_LxM.index.to_numpy()
    members = rows.drop_duplicates("member").set_index("member").loc[acc_LxM.columns]
    out = pd.DataFrame({"member": acc_LxM.columns, "arm": members["arm"].to_numpy(),
                        "seed": members["seed"].to_numpy(), "budget": float(steps_L[-1])})
    for level in levels:
        out[_col(level)] = steps_to(acc_LxM.to_numpy(), steps_L, level)
    return out


def _col(level: float) -> str:
    return f"steps_{round(level * 100)}"


def _geomean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(np.mean(np.log(np.maximum(x, 1.0)), axis=axis))


def _interval(samples: tuple[np.ndarray, ...], statistic, seed: int) -> list[float]:
    """Percentile bootstrap interval of statistic(*samples), each sample resampled on its own."""
    if any(len(s) < 2 for s in samples):
        return [float("nan"), float("nan")]
    if all(np.ptp(s) == 0 for s in samples):  # no spread to resample: the interval is the point
        value = float(statistic(*samples, axis=-1))
        return [value, value]
    from scipy import stats  # here, not at import: scipy.stats costs every job's start-up 0.5 s

    res = stats.bootstrap(samples, statistic, n_resamples=N_RESAMPLES, confidence_level=CONFIDENCE,
                          method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def compare(frame: pd.DataFrame, levels: tuple[float, ...] = LEVELS, seed: int = 0) -> dict[str, Any]:
    """Per arm and level: the seeds' milestones, how many reached the level, the geometric mean
    with its interval; per arm after the first: the speed-up over the first arm with its interval;
    and every arm's speed-up over every other ("pairwise")."""
    table = milestones(frame, levels)
    arm_names = list(dict.fromkeys(table["arm"]))
    baseline = arm_names[0]
    budget = float(table["budget"].iloc[0])
    out: dict[str, Any] = {
        "baseline": baseline, "levels": list(levels), "budget": budget, "metric": VAL_METRIC,
        "rule": (f"milestone: the first logged step with validation accuracy >= the level; never reached: censored at "
                 f"the budget ({budget:g} steps, a lower bound); per arm the geometric mean over seeds; speed-up = "
                 f"geomean(baseline) / geomean(arm); intervals: {CONFIDENCE:.0%} percentile bootstrap over seeds "
                 f"({N_RESAMPLES} resamples, each arm resampled on its own)"),
        "arms": {},
    }
    for level in levels:
        col = _col(level)
        base = table.loc[table["arm"] == baseline, col].fillna(budget).to_numpy()
        for name in arm_names:
            mine = table[table["arm"] == name]
            steps = mine[col].fillna(budget).to_numpy()
            reached = int(mine[col].notna().sum())
            entry = out["arms"].setdefault(name, {"n_seeds": len(mine), "seeds": mine["seed"].astype(int).tolist()})
            level_out = {
                "steps": [None if np.isnan(v) else float(v) for v in mine[col]],
                "reached": reached,
                "geomean": float(_geomean(steps)),
                "interval": _interval((steps,), _geomean, seed),
                "censored": reached < len(mine),
            }
            if name != baseline:
                ratio = lambda b, a, axis=-1: _geomean(b, axis) / _geomean(a, axis)  # noqa: E731
                arm_censored = reached < len(mine)
                base_censored = bool(table.loc[table["arm"] == baseline, col].isna().any())
                level_out["speedup"] = float(ratio(base, steps))
                level_out["speedup_interval"] = _interval((base, steps), ratio, seed)
                level_out["speedup_bound"] = _bound(base_censored, arm_censored)
            entry[f"{round(level * 100)}"] = level_out
    out["pairwise"] = _pairwise(table, arm_names, levels, budget, seed)
    return out


def _pairwise(table: pd.DataFrame, arm_names: list[str], levels: tuple[float, ...], budget: float,
              seed: int) -> dict[str, Any]:
    """Speed-up of every arm over every other, per level {speedup, interval, bound}: e.g. a filtered
    arm over the baseline that has its weight decay, the comparison that separates filter from decay."""
    ratio = lambda b, a, axis=-1: _geomean(b, axis) / _geomean(a, axis)  # noqa: E731
    out: dict[str, Any] = {}
    for name in arm_names:
        for other in arm_names:
            if other == name:
                continue
            for level in levels:
                col = _col(level)
                mine, theirs = (table.loc[table["arm"] == a, col] for a in (name, other))
                out.setdefault(name, {}).setdefault(f"over {other}", {})[f"{round(level * 100)}"] = {
                    "speedup": float(ratio(theirs.fillna(budget).to_numpy(), mine.fillna(budget).to_numpy())),
                    "interval": _interval((theirs.fillna(budget).to_numpy(), mine.fillna(budget).to_numpy()), ratio, seed),
                    "bound": _bound(bool(theirs.isna().any()), bool(mine.isna().any()))}
    return out


def _bound(base_censored: bool, arm_censored: bool) -> str | None:
    """What a ratio with censored milestones is: a censored baseline makes the true speed-up larger,
    a censored arm smaller."""
    return {(True, False): "lower bound (baseline censored)", (False, True): "upper bound (arm censored)",
            (True, True): "both censored: not a ratio"}.get((base_censored, arm_censored))


def sweep_frame(table: pd.DataFrame, key: str) -> pd.DataFrame:
    """A sweep's collected table (analysis.collect) as one frame of arms: each job's value of the
    swept `key` names its arm (jobs of one static setting each, e.g. +collapse_fix), and members
    are numbered across jobs."""
    if key not in table.columns:
        swept = [c for c in table.columns if c not in ("job", "member", "step", "metric", "subtask", "value", "status")]
        raise ValueError(f"--arms {key}: not a column of the sweep's table (swept and member keys: {', '.join(swept)})")
    frame = table.copy()
    frame["arm"] = frame[key].astype(str)
    pairs = frame[["job", "member"]].drop_duplicates().reset_index(drop=True)
    number = {(j, m): i for i, (j, m) in enumerate(zip(pairs["job"], pairs["member"]))}
    frame["member"] = [number[(j, m)] for j, m in zip(frame["job"], frame["member"])]
    return frame


def write_arms(frame: pd.DataFrame, out_dir: Path, title: str, levels: tuple[float, ...] = LEVELS) -> dict[str, Any]:
    """The comparison into `out_dir`: arms.csv (every member's milestones), arms.png, and the dict
    for summary.json["arms"]."""
    from toy_quanta.plots.arms import plot_arms

    comparison = compare(frame, levels)
    table = milestones(frame, levels)
    results.atomic_write(out_dir / "arms.csv", lambda p: table.to_csv(p, index=False))
    plot_arms(frame, comparison, out_dir / "arms.png", title)
    comparison["files"] = ["arms.csv", "arms.png"]
    return comparison


def lines(comparison: dict[str, Any]) -> list[str]:
    """A plain-text table of the comparison, for the log and the docs."""
    out = []
    for name, entry in comparison["arms"].items():
        parts = [f"{name:>14} ({entry['n_seeds']} seeds)"]
        for level in comparison["levels"]:
            e = entry[f"{round(level * 100)}"]
            lo, hi = e["interval"]
            part = f"{round(level * 100)}%: {e['geomean']:8.0f} [{lo:.0f}, {hi:.0f}] ({e['reached']}/{entry['n_seeds']})"
            if "speedup" in e:
                slo, shi = e["speedup_interval"]
                part += f" x{e['speedup']:.2f} [{slo:.2f}, {shi:.2f}]" + (f" {e['speedup_bound']}" if e["speedup_bound"] else "")
            parts.append(part)
        out.append("; ".join(parts))
    return out
