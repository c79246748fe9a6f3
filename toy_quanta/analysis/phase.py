"""Grokking phase diagrams (Liu et al. 2022, "Towards understanding grokking: an effective theory").

Each member of an ensemble falls in one of four phases, from its accuracy curves:

- comprehension: training and validation accuracy both reach `threshold`, validation no more
  than `gap_steps` steps after training;
- grokking: both reach it, validation more than `gap_steps` steps after training;
- memorisation: only training accuracy reaches it;
- confusion: training accuracy never reaches it. A member whose validation accuracy reaches the
  threshold while its training accuracy does not is confusion too: it never fitted its training
  set, and the paper's phases all presuppose that it did (comprehension and grokking require both).

"Reaches" is the first logged step at or above the threshold; the budget is the last logged step.
Comprehension and grokking together are the paper's "Goldilocks zone". Pure functions, except
write_phase (phase.png, phase.csv and phase_grid.csv of a job) and run_settings (a run's `phase`
config node), which toy-quanta-phase (toy_quanta.cli.phase) and the app's job writer call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from toy_quanta import results
from toy_quanta.analysis.milestones import steps_to
from toy_quanta.errors import ConfigError

PHASES = ("comprehension", "grokking", "memorisation", "confusion")
INITIALS = {"comprehension": "C", "grokking": "G", "memorisation": "M", "confusion": "X"}
DEFAULT_THRESHOLD = 0.9
DEFAULT_GAP_STEPS = 1000
TRAIN_METRIC, VAL_METRIC = "train_acc", "test_acc"  # test_* is the validation split of grokking tasks
# Columns of the tidy table that are not member hyperparameters: never an axis of the diagram.
STRUCTURAL = ("member", "step", "metric", "subtask", "value")


def validate(threshold: Any, gap_steps: Any) -> tuple[float, float]:
    """(threshold, gap_steps) as floats; ConfigError (a ValueError) naming the bad argument."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError("threshold", threshold, "a number in (0, 1]") from None
    if not 0 < t <= 1:  # NaN fails this too
        raise ConfigError("threshold", threshold, "a number in (0, 1]")
    try:
        g = float(gap_steps)
    except (TypeError, ValueError):
        raise ConfigError("gap_steps", gap_steps, "a number of steps >= 0") from None
    if not g >= 0:  # NaN fails this too
        raise ConfigError("gap_steps", gap_steps, "a number of steps >= 0")
    return t, g


def classify(steps_L: np.ndarray, train_acc_LxM: np.ndarray, val_acc_LxM: np.ndarray,
             threshold: float = DEFAULT_THRESHOLD, gap_steps: float = DEFAULT_GAP_STEPS) -> dict[str, np.ndarray]:
    """Per member (M,): "phase" (str), "steps_train" and "steps_val" (first logged step at or above
    the threshold, NaN if never) and "gap" (steps_val - steps_train, NaN unless both reached).
    A 1-D accuracy curve (L,) is one member."""
    threshold, gap_steps = validate(threshold, gap_steps)
    steps_L = np.asarray(steps_L)
    train_LxM, val_LxM = (_as_LxM(a, len(steps_L), name) for a, name in
                          ((train_acc_LxM, "train_acc_LxM"), (val_acc_LxM, "val_acc_LxM")))
    if train_LxM.shape != val_LxM.shape:
        raise ValueError(f"train_acc_LxM {train_LxM.shape} and val_acc_LxM {val_LxM.shape} differ in shape")
    # NaN accuracy (a diverged member) compares False: it never counts as reached.
    steps_train_M = steps_to(train_LxM, steps_L, threshold)
    steps_val_M = steps_to(val_LxM, steps_L, threshold)
    gap_M = steps_val_M - steps_train_M
    train_ok_M, val_ok_M = ~np.isnan(steps_train_M), ~np.isnan(steps_val_M)
    both_M = train_ok_M & val_ok_M
    # A negative gap (validation first) is comprehension: nothing was delayed.
    phase_M = np.select([both_M & (gap_M <= gap_steps), both_M, train_ok_M], list(PHASES[:3]), default=PHASES[3])
    return {"phase": phase_M.astype(object), "steps_train": steps_train_M, "steps_val": steps_val_M, "gap": gap_M}


# A single run's diagnosis: the phases above, told apart within one run, plus overfitting.
DIAGNOSES = ("generalised", "grokked", "memorised", "overfitting", "not fitted")
OVERFIT_DROP = 0.1  # validation accuracy this far below its peak at the end: overfitting


def _shown(value: Any) -> str:
    """A number, or the range of a per-member array of them."""
    values = np.unique(np.asarray(value, np.float64))
    return f"{values[0]:.3g}" if len(values) == 1 else f"{values.min():.3g} to {values.max():.3g} by member"


def diagnosis_rule(threshold: float = DEFAULT_THRESHOLD, gap_steps: float = DEFAULT_GAP_STEPS,
                   drop: float = OVERFIT_DROP, reachable: dict[str, Any] | None = None) -> str:
    reach = reachable or {"train_acc": 1.0, "test_acc": 1.0}
    train, val = (_shown(threshold * np.asarray(reach[k], np.float64)) for k in ("train_acc", "test_acc"))
    scaled = ("" if all(np.all(np.asarray(v) == 1.0) for v in reach.values()) else
              f" (the threshold {threshold:g} times the accuracy the task can reach: {_shown(reach['train_acc'])} in "
              f"training, {_shown(reach['test_acc'])} in validation)")
    return (f"not fitted: training accuracy never reached {train}{scaled}; overfitting: it did, and the final "
            f"validation accuracy is more than {drop:g} below its peak; generalised: validation reached {val} "
            f"at most {gap_steps:g} steps after training did (or before it); grokked: more than {gap_steps:g} steps "
            f"after (the delay is given); memorised: validation never reached {val} within the budget")


def diagnose(steps_L: np.ndarray, train_acc_LxM: np.ndarray, val_acc_LxM: np.ndarray,
             threshold: float = DEFAULT_THRESHOLD, gap_steps: float = DEFAULT_GAP_STEPS,
             drop: float = OVERFIT_DROP, reachable: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Per member (M,): "diagnosis" (one of DIAGNOSES, by diagnosis_rule), "delay" (validation's
    step minus training's at the threshold, NaN unless both reached, and unless validation came
    after training) and "peak_val". `reachable` (Task.reachable) scales each split's threshold by
    the accuracy the task can reach there: a number, or (M,) one per member."""
    reach = reachable or {"train_acc": 1.0, "test_acc": 1.0}
    train_acc_LxM = np.asarray(train_acc_LxM, np.float64) / reach["train_acc"]
    val_acc_LxM = np.asarray(val_acc_LxM, np.float64) / reach["test_acc"]
    phases = classify(steps_L, train_acc_LxM, val_acc_LxM, threshold, gap_steps)
    val_LxM = _as_LxM(val_acc_LxM, len(steps_L), "val_acc_LxM")
    peak_M = np.nanmax(np.where(np.isnan(val_LxM), -np.inf, val_LxM), axis=0)
    final_M = val_LxM[-1]
    fitted_M = ~np.isnan(phases["steps_train"])
    fell_M = fitted_M & ~(final_M >= peak_M - drop)  # NaN at the end (diverged) counts as fallen
    label_M = np.select([~fitted_M, fell_M, phases["phase"] == "comprehension", phases["phase"] == "grokking"],
                        ["not fitted", "overfitting", "generalised", "grokked"], default="memorised")
    # validation first (a negative gap) is no delay: nothing was waited for
    delay_M = np.where(phases["gap"] >= 0, phases["gap"], np.nan)
    return {"diagnosis": label_M.astype(object), "delay": delay_M, "peak_val": peak_M * reach["test_acc"]}


def _as_LxM(acc: np.ndarray, n_steps: int, name: str) -> np.ndarray:
    arr = np.asarray(acc, np.float64)
    arr = arr[:, None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] != n_steps:
        raise ValueError(f"{name} has shape {np.shape(acc)}: expected (L, M) with L = {n_steps} logged steps")
    return arr


def check_axis(frame: pd.DataFrame, name: str, key: Any) -> None:
    """ConfigError unless `key` is a hyperparameter column of `frame` with >= 2 distinct values."""
    hyper = [c for c in frame.columns if c not in STRUCTURAL]
    if key not in hyper:
        raise ConfigError(name, key, f"a member hyperparameter column of the metrics table, one of {hyper}")
    values = pd.unique(frame[key].dropna())
    if len(values) < 2:
        shown = ", ".join(f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v) for v in values) or "none"
        raise ConfigError(name, key, f"a key swept over at least 2 values (it has {len(values)}: {shown})")


def _curves(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """step x member table of one whole-set metric."""
    rows = frame[(frame["metric"] == metric) & (frame["subtask"] == -1)]
    if rows.empty:
        raise ValueError(f"the metrics table has no whole-set {metric!r} rows: a phase diagram needs "
                         f"{TRAIN_METRIC!r} and {VAL_METRIC!r}")
    if rows.duplicated(["step", "member"]).any():
        raise ValueError(f"the metrics table has several {metric!r} values for one (step, member): "
                         "pass one job's metrics, not several concatenated")
    return rows.pivot(index="step", columns="member", values="value").sort_index()


def member_phases(frame: pd.DataFrame, x: str, y: str, threshold: float = DEFAULT_THRESHOLD,
                  gap_steps: float = DEFAULT_GAP_STEPS) -> pd.DataFrame:
    """One row per member: member, seed, x, y (columns named by the keys), phase, steps_train,
    steps_val, gap, train_acc and val_acc (final), budget (the last logged step)."""
    threshold, gap_steps = validate(threshold, gap_steps)
    check_axis(frame, "x", x)
    check_axis(frame, "y", y)
    if x == y:
        raise ConfigError("y", y, f"a key other than x={x!r}")
    train_LxM = _curves(frame, TRAIN_METRIC)
    val_LxM = _curves(frame, VAL_METRIC).reindex(index=train_LxM.index, columns=train_LxM.columns)
    steps_L = train_LxM.index.to_numpy()
    out = classify(steps_L, train_LxM.to_numpy(), val_LxM.to_numpy(), threshold, gap_steps)
    keys = list(dict.fromkeys(k for k in ("seed", x, y) if k in frame.columns))
    hyper = frame.groupby("member", sort=True)[keys].first().reindex(train_LxM.columns)
    table = pd.DataFrame({"member": train_LxM.columns.to_numpy()})
    for key in keys:
        table[key] = hyper[key].to_numpy()
    if "seed" not in table:
        table["seed"] = np.nan
    for name in ("phase", "steps_train", "steps_val", "gap"):
        table[name] = out[name]
    table["train_acc"] = train_LxM.iloc[-1].to_numpy()
    table["val_acc"] = val_LxM.iloc[-1].to_numpy()
    table["budget"] = int(steps_L[-1])
    return table


def grid_table(members_df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """One row per (x, y) point: x, y, phase (the majority over its members; ties go to the earlier
    of PHASES), n_members, n_<phase> for each phase, median_steps_val and median_gap (over the
    members that reached the threshold; NaN if none did). Sorted by y, then x."""
    for name, key in (("x", x), ("y", y)):
        if key not in members_df.columns:
            raise ConfigError(name, key, f"a column of the member table, one of {list(members_df.columns)}")
    rows = []
    for (xv, yv), group in members_df.groupby([x, y], sort=True, dropna=False):
        counts = {p: int((group["phase"] == p).sum()) for p in PHASES}
        # max() returns the first maximal key, and counts is in PHASES order: ties go to the earlier phase.
        rows.append({x: xv, y: yv, "phase": max(counts, key=counts.get), "n_members": len(group),
                     **{f"n_{p}": n for p, n in counts.items()},
                     "median_steps_val": _nanmedian(group["steps_val"]), "median_gap": _nanmedian(group["gap"])})
    columns = [x, y, "phase", "n_members", *(f"n_{p}" for p in PHASES), "median_steps_val", "median_gap"]
    grid = pd.DataFrame(rows, columns=columns)
    return grid.sort_values([y, x], kind="stable").reset_index(drop=True)


def _nanmedian(values: pd.Series) -> float:
    arr = values.to_numpy(np.float64)
    return float(np.median(arr[~np.isnan(arr)])) if (~np.isnan(arr)).any() else np.nan


def phase_counts(members_df: pd.DataFrame) -> dict[str, int]:
    """How many members fell in each phase (every phase present, in PHASES order)."""
    return {p: int((members_df["phase"] == p).sum()) for p in PHASES}


def tables(frame: pd.DataFrame, x: str, y: str, threshold: float = DEFAULT_THRESHOLD,
           gap_steps: float = DEFAULT_GAP_STEPS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(member rows, grid rows); raises ValueError on a bad key or threshold before anything is written."""
    members = member_phases(frame, x, y, threshold, gap_steps)
    return members, grid_table(members, x, y)


def write_tables(members: pd.DataFrame, grid: pd.DataFrame, out_dir: Path, x: str, y: str, threshold: float,
                 gap_steps: float, title: str) -> dict[str, Any]:
    """phase.png, phase.csv and phase_grid.csv of tables' output into out_dir; the JSON-safe report."""
    from toy_quanta.plots import phase as phase_plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    phase_plots.plot_phase(grid, x, y, out_dir / "phase.png", title=title)
    results.atomic_write(out_dir / "phase.csv", lambda p: members.to_csv(p, index=False))
    results.atomic_write(out_dir / "phase_grid.csv", lambda p: grid.to_csv(p, index=False))
    return results.json_safe({
        "x": x, "y": y, "threshold": float(threshold), "gap_steps": float(gap_steps), "n_members": len(members),
        "budget": int(members["budget"].iloc[0]) if len(members) else None,
        "counts": phase_counts(members), "grid": grid.to_dict(orient="records"),
    })


def write_phase(frame: pd.DataFrame, out_dir: Path, x: str, y: str, threshold: float = DEFAULT_THRESHOLD,
                gap_steps: float = DEFAULT_GAP_STEPS, title: str = "") -> dict[str, Any]:
    """phase.png, phase.csv and phase_grid.csv into out_dir; returns x, y, threshold, gap_steps,
    n_members, budget, counts (members per phase) and grid (the grid table's rows), JSON-safe."""
    threshold, gap_steps = validate(threshold, gap_steps)
    members, grid = tables(frame, x, y, threshold, gap_steps)
    return write_tables(members, grid, out_dir, x, y, threshold, gap_steps, title)


def run_settings(run_dir: Path) -> tuple[dict[str, Any], str]:
    """(the run config's `phase` node as a dict, or {} for runs from before it; the run's name)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}, run_dir.name
    raw = OmegaConf.load(path)
    node = raw.get("phase") if isinstance(raw, DictConfig) else None
    settings = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else {}
    name = raw.get("name", run_dir.name) if isinstance(raw, DictConfig) else run_dir.name
    return settings, str(name)
