"""Omnigrok's LU mechanism (Liu, Michaud, Tegmark 2023) from fixed-norm runs.

A fixed-norm member trains with weight decay 0 and has all its parameters rescaled to a total L2
norm w (`optim.fixed_norm`) after every step. Final training loss against w is L-shaped (high at
small w, flat once w is large enough), test loss U-shaped (best near a critical norm w_c). An
ordinary run's weight-norm trajectory, overlaid, shows weight decay pulling the norm towards w_c.

Pure functions on the tidy metrics table (results.metrics_frame), then what toy-quanta-lu
(toy_quanta.cli.lu) and the app's job writer need around them: reading a job (load_job), its loss
label and ordinary-run trajectory, and writing lu.png, lu.csv and lu.json (write_lu).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from toy_quanta import registry, results
from toy_quanta.errors import ConfigError

NORM_KEY = "optim.fixed_norm"
METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")
TRAJECTORY_METRICS = ("param_norm", *METRICS)
# Per-member hyperparameters that may legitimately differ between members averaged at one w.
_AVERAGED_OVER = ("seed", NORM_KEY)
DEFAULT_KNEE_FACTOR = 10.0  # l_knee's default factor


def _whole_set(frame: pd.DataFrame) -> pd.DataFrame:
    """Whole-set metrics only (per-subtask rows carry subtask >= 0)."""
    return frame[frame["subtask"] == -1] if "subtask" in frame.columns else frame


def _wide(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (member, step), one column per metric."""
    rows = _whole_set(frame)
    wide = rows.pivot_table(index=["member", "step"], columns="metric", values="value", aggfunc="last",
                            observed=True)
    wide.columns = [str(c) for c in wide.columns]
    return wide.reset_index()


def norm_of_members(frame: pd.DataFrame) -> pd.Series:
    """Each member's fixed norm w (NaN for ordinary members; all NaN without the column)."""
    if NORM_KEY not in frame.columns:
        return pd.Series(np.nan, index=pd.Index(np.unique(frame["member"]), name="member"), name=NORM_KEY)
    return frame.groupby("member")[NORM_KEY].first().astype(np.float64)


def final_by_member(frame: pd.DataFrame) -> pd.DataFrame:
    """Each member's metrics at its own last logged step (diverged members may stop early)."""
    wide = _wide(frame)
    last = wide.sort_values("step").groupby("member").tail(1).set_index("member").sort_index()
    for name in (*METRICS, "alive"):
        if name not in last.columns:
            last[name] = np.nan
    return last


def final_by_norm(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per fixed norm w (sorted): w, n (surviving members), n_diverged, and the mean and
    std over seeds (ddof 1; NaN for a single member) of the final train/test loss and accuracy.

    A member counts as diverged, and is left out of the means, if its final `alive` is 0 or its
    final train or test loss is not finite. A w whose members all diverged keeps a row (n = 0,
    NaN means) so the reader sees it.
    """
    w_M = norm_of_members(frame)
    fixed = w_M[np.isfinite(w_M)]
    if fixed.empty:
        raise ValueError(f"no member has a fixed norm ({NORM_KEY} is missing or NaN for every member): "
                         "not a fixed-norm run")
    if fixed.nunique() < 3:
        values = ", ".join(f"{w:g}" for w in sorted(fixed.unique()))
        raise ValueError(f"{fixed.nunique()} distinct {NORM_KEY} value(s) ({values}): an L and a U need at least 3")
    last = final_by_member(frame).reindex(fixed.index)
    diverged_M = (last["alive"] == 0) | ~np.isfinite(last["train_loss"]) | ~np.isfinite(last["test_loss"])
    last = last.assign(w=fixed, diverged=diverged_M.to_numpy())
    rows = []
    for w, group in last.groupby("w", sort=True):
        ok = group[~group["diverged"]]
        row = {"w": float(w), "n": len(ok), "n_diverged": int(group["diverged"].sum())}
        for name in METRICS:
            row[f"{name}_mean"] = float(ok[name].mean()) if len(ok) else np.nan
            row[f"{name}_std"] = float(ok[name].std(ddof=1)) if len(ok) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def mixed_keys(frame: pd.DataFrame) -> list[str]:
    """Per-member hyperparameters other than seed that differ among the members of one w: those
    members are averaged together all the same, so the caller should say so."""
    w_M = norm_of_members(frame)
    members = frame.drop_duplicates("member").set_index("member").loc[w_M[np.isfinite(w_M)].index]
    # hyperparameter columns are dotted (task.alpha, optim.lr, ...); seed is the one averaged over
    keys = [c for c in members.columns if "." in c and c not in _AVERAGED_OVER]
    return [k for k in keys if (members.groupby(NORM_KEY)[k].nunique(dropna=False) > 1).any()]


def critical_norm(w_G: np.ndarray, test_loss_G: np.ndarray) -> dict:
    """The critical norm w_c where test loss is least, from a grid of norms w.

    w_c is the vertex of the parabola in log w through the grid minimum and its two neighbours
    (exact for a loss quadratic in log w). At an end of the grid there is no such parabola: w_c is
    the grid minimum and at_edge is True. [w_lo, w_hi] are the grid neighbours of the minimum, the
    resolution the grid can honestly claim (0 or inf on an open side at an edge). Non-finite
    points (w's whose members all diverged) are left out.
    """
    w_G, loss_G = np.asarray(w_G, np.float64), np.asarray(test_loss_G, np.float64)
    ok = np.isfinite(w_G) & np.isfinite(loss_G) & (w_G > 0)
    order = np.argsort(w_G[ok])
    w_G, loss_G = w_G[ok][order], loss_G[ok][order]
    if len(w_G) == 0:
        raise ValueError("no finite test loss at any positive w: no critical norm")
    i = int(np.argmin(loss_G))
    at_edge = i == 0 or i == len(w_G) - 1
    w_lo = float(w_G[i - 1]) if i > 0 else 0.0
    w_hi = float(w_G[i + 1]) if i < len(w_G) - 1 else np.inf
    w_c = float(w_G[i]) if at_edge else float(np.exp(_vertex(np.log(w_G[i - 1:i + 2]), loss_G[i - 1:i + 2])))
    return {"w_c": w_c, "w_grid_min": float(w_G[i]), "w_lo": w_lo, "w_hi": w_hi, "at_edge": bool(at_edge),
            "test_loss_min": float(loss_G[i])}


def _vertex(x_3: np.ndarray, y_3: np.ndarray) -> float:
    """x of the vertex of the parabola through three points (the middle one lowest, so it opens
    upwards and the vertex lies between the outer two)."""
    a, b, _ = np.polyfit(x_3, y_3, 2)
    if not a > 0:  # three equal losses: no curvature, the middle point is as good as any
        return float(x_3[1])
    return float(np.clip(-b / (2 * a), x_3[0], x_3[2]))


def l_knee(w_G: np.ndarray, train_loss_G: np.ndarray, factor: float = 10.0, floor: float = 1e-3) -> float:
    """Where the L bends: the smallest grid w whose final training loss is within `factor` times
    max(its grid minimum, `floor` times its grid maximum). The floor counts losses below a
    thousandth of the largest (the near-chance loss at small w) as zero, so a noisy floor (MSE
    between 1e-8 and 1e-6) does not move the knee. The first crossing, not "flat from there on":
    at a large fixed norm a finite budget may leave the training loss creeping up again, which is
    the L's far end, not its knee. NaN if there is no finite loss."""
    w_G, loss_G = np.asarray(w_G, np.float64), np.asarray(train_loss_G, np.float64)
    ok = np.isfinite(w_G) & np.isfinite(loss_G)
    order = np.argsort(w_G[ok])
    w_G, loss_G = w_G[ok][order], loss_G[ok][order]
    if len(w_G) == 0:
        return np.nan
    within_G = loss_G <= factor * max(loss_G.min(), floor * loss_G.max())
    return float(w_G[np.argmax(within_G)])


def trajectory(frame: pd.DataFrame, member: int) -> pd.DataFrame:
    """One member's step, param_norm and train/test loss and accuracy over training (NaN columns
    for metrics it did not log), sorted by step."""
    members = np.unique(frame["member"])
    if member not in members:
        raise ValueError(f"member {member} is not in the run (members {', '.join(map(str, members))})")
    wide = _wide(frame[frame["member"] == member]).sort_values("step")
    for name in TRAJECTORY_METRICS:
        if name not in wide.columns:
            wide[name] = np.nan
    return wide[["step", *TRAJECTORY_METRICS]].reset_index(drop=True)


def default_member(frame: pd.DataFrame) -> int:
    """The member with the largest model.init_scale (the one that starts farthest out on the flat
    part of the L; Omnigrok's alpha = 8); the first such, or the first member without the column."""
    per_member = frame.drop_duplicates("member").sort_values("member")
    if "model.init_scale" not in per_member.columns or per_member["model.init_scale"].isna().all():
        return int(per_member["member"].iloc[0])
    return int(per_member.loc[per_member["model.init_scale"].idxmax(), "member"])


def below_step(traj: pd.DataFrame, w: float) -> float:
    """The first step at which the trajectory's norm is below w; NaN if it never is."""
    below = traj["param_norm"].to_numpy() < w
    return float(traj["step"].to_numpy()[np.argmax(below)]) if below.any() else np.nan


# --- a job's LU: reading, labels, the ordinary run's trajectory, writing --------------------------

def trajectory_summary(traj: pd.DataFrame, w_hi: float, label: str | None = None) -> dict[str, Any]:
    """The trajectory's first and last step and norm, and the first step its norm is below w_hi
    (None if never; at the first step if it starts below)."""
    norm_L = traj["param_norm"].to_numpy()
    return {"label": label, "initial_step": int(traj["step"].iloc[0]), "final_step": int(traj["step"].iloc[-1]),
            "initial_norm": float(norm_L[0]), "final_norm": float(norm_L[-1]),
            "step_below_w_hi": below_step(traj, w_hi)}


def write_lu(frame: pd.DataFrame, out_dir: Path, title: str, trajectory: pd.DataFrame | None = None,
             trajectory_label: str | None = None, knee_factor: float = DEFAULT_KNEE_FACTOR,
             loss_label: str = "loss") -> dict[str, Any]:
    """lu.png, lu.csv and lu.json into out_dir from a fixed-norm job's metrics table; returns the
    JSON-safe headline (raises ValueError for a frame without at least 3 fixed norms)."""
    from toy_quanta.plots import lu as lu_plots

    table = final_by_norm(frame)
    crit = critical_norm(table["w"], table["test_loss_mean"])
    knee = l_knee(table["w"], table["train_loss_mean"], knee_factor)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lu_plots.plot_lu(table, crit, out_dir / "lu.png", title, trajectory, trajectory_label, knee=knee,
                     loss_label=loss_label)
    results.atomic_write(out_dir / "lu.csv", lambda p: table.to_csv(p, index=False))
    head = {"w": table["w"].tolist(), **crit, "l_knee": knee, "knee_factor": knee_factor,
            "n_members": int(table["n"].sum() + table["n_diverged"].sum()),
            "n_diverged": int(table["n_diverged"].sum()), "mixed_keys": mixed_keys(frame),
            "rows": table.to_dict(orient="records"),
            "trajectory": None if trajectory is None else trajectory_summary(trajectory, crit["w_hi"],
                                                                             trajectory_label)}
    head = results.json_safe(head)
    results.write_json(out_dir / "lu.json", head)
    return head


def load_job(run_dir: Path, what: str = "RUN_DIR") -> tuple[DictConfig, pd.DataFrame]:
    """A job directory's raw config (only task.name, task.loss and name are read, so configs with
    keys this version does not know still load) and metrics table."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{what} {run_dir} is not a directory")
    for name in ("config.yaml", results.METRICS_FILE):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: {run_dir} is not the output directory of a "
                                    "finished toy-quanta job")
    return results.read(run_dir / "config.yaml", OmegaConf.load, "config.yaml"), results.read_metrics(run_dir / results.METRICS_FILE)


def task_of(cfg: DictConfig) -> tuple[str, str | None]:
    """(task.name, task.loss); the loss is None for tasks with only one (cross-entropy)."""
    task = cfg.get("task", {})
    return str(task.get("name", "sparse_parity")), task.get("loss", None)


def loss_label(cfg: DictConfig) -> str:
    """The y label of the run's loss: its task's (Task.loss_label); cross-entropy for a task this
    version does not know or a config without the keys the task reads."""
    name, _ = task_of(cfg)
    try:
        return registry.task(name).loss_label(cfg)
    except (ConfigError, AttributeError, KeyError):
        return "cross-entropy (nats)"


def pick_trajectory(cfg: DictConfig, other_cfg: DictConfig, other: pd.DataFrame, member: int | None,
                    where: Path) -> tuple[pd.DataFrame, str, int]:
    """The ordinary run's trajectory for `member` (default: largest init scale), its label and
    member index; ConfigError if it trained another task or loss or the member is not in it."""
    if task_of(other_cfg) != task_of(cfg):
        show = lambda t: f"task.name={t[0]}" + (f", task.loss={t[1]}" if t[1] else "")  # noqa: E731
        raise ConfigError("--trajectory", str(where), f"a run of the same task and loss as RUN_DIR "
                          f"({show(task_of(cfg))}; this one trained {show(task_of(other_cfg))})")
    members = sorted(int(m) for m in np.unique(other["member"]))
    if member is None:
        member = default_member(other)
    elif member not in members:
        raise ConfigError("--member", member, f"a member of the trajectory run ({', '.join(map(str, members))})")
    traj = trajectory(other, member)
    if not np.isfinite(traj["param_norm"]).any():
        raise ConfigError("--trajectory", str(where), "a run that logged param_norm")
    row = other[other["member"] == member].iloc[0]
    details = [f"{k.split('.')[-1]} {row[k]:g}" for k in ("model.init_scale", "optim.weight_decay")
               if k in row.index and pd.notna(row[k])]
    label = f"{other_cfg.get('name', where.name)} member {member}" + (f" ({', '.join(details)})" if details else "")
    return traj, label, member
