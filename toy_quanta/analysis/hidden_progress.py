"""Hidden progress on a single sparse parity (Barak, Edelman, Goel, Kakade, Malach, Zhang 2022):
steps to learn each member, their power law in n per k, and how far the progress measures moved
while the loss sat on its plateau.

The rules (stated once, here, and copied into hidden_progress.json):
- steps to learn: the first log step at which the test accuracy is >= LEVEL, linearly interpolated
  between that log step and the one before (accuracy linear in step between log steps); a member
  that never reaches LEVEL is censored (None): it is counted, and left out of the fit.
- the fit, per k: least squares of log(steps to learn) on log(n) over the members that learned;
  the interval is a percentile bootstrap that resamples members within each n (every n keeps its
  count of seeds, so every resample spans the same n), N_RESAMPLES resamples.
- the plateau of a member: its log steps before the first one at which the test loss is below
  (1 - PLATEAU_DROP) x its value at step 0 (the loss "leaves its initial level"). The loss on the
  plateau never fell that far by construction; how far it rose is reported (loss_max_ratio).
- hidden progress of a member: the relevant-weight ratio (task.progress's subtask_relevant_weight,
  1 for a random first layer) at the plateau's last log step is at least HIDDEN_GAIN x its value
  at step 0. Beside it: the fraction of plateau log steps at which the ratio rose over the previous
  one, its Spearman correlation with the step, the share of its whole rise (log ratio, step 0 to the
  end of training) made on the plateau, and init_distance (how far all parameters had moved from
  their initial values) at the plateau's end, also as a fraction of its final value.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from toy_quanta import results
from toy_quanta.analysis.milestones import crossings

LEVEL = 0.99  # test accuracy at which a parity counts as learned
PLATEAU_DROP = 0.05  # the plateau ends when the test loss falls 5% below its step-0 value
HIDDEN_GAIN = 1.5  # relevant-weight ratio at the plateau's end / at step 0 that counts as hidden progress
CONFIDENCE = 0.95
N_RESAMPLES = 2000
GROUP_KEY = "task.k"  # one fit per value of this key
ACC, LOSS, RATIO, DISTANCE = "test_acc", "test_loss", "subtask_relevant_weight", "init_distance"
FILES = {"json": "hidden_progress.json", "csv": "hidden_progress.csv", "figure": "hidden_progress.png"}

RULES = {
    "steps_to_learn": f"first log step with test accuracy >= {LEVEL:g}, linearly interpolated from the log step "
                      "before; never: censored (None), left out of the fit and counted",
    "fit": f"least squares of log(steps to learn) on log(n) per k, members that learned; {CONFIDENCE:.0%} percentile "
           f"bootstrap resampling members within each n ({N_RESAMPLES} resamples); a censored member would have "
           "learned after the budget, so censoring at the largest n biases the exponent low",
    "plateau": f"log steps before the first at which the test loss is below (1 - {PLATEAU_DROP:g}) x its step-0 value",
    "hidden_progress": f"relevant-weight ratio at the plateau's last log step >= {HIDDEN_GAIN:g} x its step-0 value",
    "local_exponents": "slope of log(steps to learn) between consecutive n (the log of the geometric means' ratio, "
                       "where one power law bends), with the fit's bootstrap interval over the two n's members",
}


def predictions(k: int) -> dict[str, Any]:
    """What theory says about the exponent of steps to learn in n, for an (n, k) parity."""
    return {
        "paper": "n^O(k) iterations (Barak et al. 2022: near the SQ lower bound)",
        "sq_queries": float(k),  # an SQ learner needs ~n^k queries: C(n, k) candidate subsets
        "fixed_batch_steps": float(k - 1),  # ~n^(k-1) samples (Kou et al. 2024's sign SGD matches it), so steps at a fixed batch
    }


@dataclass(frozen=True)
class ExponentFit:
    exponent: float  # steps to learn ∝ n^exponent
    ci_low: float
    ci_high: float
    prefactor: float  # steps = prefactor * n^exponent
    n_points: int  # members in the fit (censored ones left out)
    n_values: int  # distinct n in the fit
    n_censored: int

    def as_dict(self) -> dict:
        return asdict(self)


def steps_to_learn(acc_LxM: np.ndarray, steps_L: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """(M,) the step at which each member's accuracy first reached `level`, interpolated linearly
    from the log step before; NaN where it never did (a NaN accuracy never counts)."""
    return crossings(acc_LxM, steps_L, level, "linear")


def _slopes(log_n_RxN: np.ndarray, log_s_RxN: np.ndarray) -> np.ndarray:
    """(R,) least-squares slope of each row's points."""
    dx = log_n_RxN - log_n_RxN.mean(axis=1, keepdims=True)
    dy = log_s_RxN - log_s_RxN.mean(axis=1, keepdims=True)
    return (dx * dy).sum(axis=1) / (dx * dx).sum(axis=1)


def fit_exponent(n_N: np.ndarray, steps_N: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 confidence: float = CONFIDENCE) -> ExponentFit:
    """steps ∝ n^exponent by least squares in log-log over the members that learned (steps not NaN),
    with a percentile bootstrap interval resampling members within each n."""
    n_N, steps_N = np.asarray(n_N, np.float64), np.asarray(steps_N, np.float64)
    learned = np.isfinite(steps_N)
    n_in, s_in = n_N[learned], steps_N[learned]
    if np.any(n_in <= 0) or np.any(s_in <= 0):
        raise ValueError("fitting steps ∝ n^exponent needs positive n and steps")
    values = np.unique(n_in)
    if len(values) < 2:
        raise ValueError(f"fitting steps ∝ n^exponent needs members that learned at 2 or more n, got n in {values.tolist()}")
    log_n, log_s = np.log(n_in), np.log(s_in)
    slope = float(_slopes(log_n[None], log_s[None])[0])
    intercept = float(log_s.mean() - slope * log_n.mean())
    rng = np.random.default_rng(seed)
    # (R, N) indices: each n's members drawn with replacement from that n's members only
    idx_RxN = np.concatenate([rng.choice(np.flatnonzero(n_in == v), (n_resamples, int(np.sum(n_in == v))))
                              for v in values], axis=1)
    q = (1 - confidence) / 2
    lo, hi = np.quantile(_slopes(log_n[idx_RxN], log_s[idx_RxN]), [q, 1 - q])
    return ExponentFit(exponent=slope, ci_low=float(lo), ci_high=float(hi), prefactor=float(np.exp(intercept)),
                       n_points=int(learned.sum()), n_values=len(values), n_censored=int((~learned).sum()))


def plateau_end(loss_L: np.ndarray, drop: float = PLATEAU_DROP) -> int:
    """Index of the plateau's last log step: the one before the loss first falls below
    (1 - drop) x its step-0 value; the last log step if it never does."""
    below_L = np.asarray(loss_L) < (1 - drop) * loss_L[0]
    return int(np.argmax(below_L)) - 1 if below_L.any() else len(loss_L) - 1


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def plateau_progress(steps_L: np.ndarray, loss_L: np.ndarray, ratio_L: np.ndarray | None,
                     distance_L: np.ndarray | None, drop: float = PLATEAU_DROP,
                     gain: float = HIDDEN_GAIN) -> dict[str, Any]:
    """One member's plateau and how far its progress measures moved on it (NaN: not logged)."""
    steps_L, loss_L = np.asarray(steps_L, np.float64), np.asarray(loss_L, np.float64)
    end = plateau_end(loss_L, drop)
    on = slice(0, end + 1)
    out: dict[str, Any] = {
        "plateau_end_step": float(steps_L[end]),
        "plateau_log_steps": end + 1,
        "loss_left_plateau": end < len(loss_L) - 1,
        "loss_start": float(loss_L[0]),
        "loss_max_ratio": float(np.max(loss_L[on]) / loss_L[0]),  # how far the loss rose on the plateau
        "loss_end_ratio": float(loss_L[end] / loss_L[0]),
    }
    nan = float("nan")
    if ratio_L is not None:
        ratio_L = np.asarray(ratio_L, np.float64)
        rises = np.diff(ratio_L[on])
        total = np.log(ratio_L[-1] / ratio_L[0])
        out.update(ratio_start=float(ratio_L[0]), ratio_end=float(ratio_L[end]), ratio_final=float(ratio_L[-1]),
                   ratio_gain=float(ratio_L[end] / ratio_L[0]),
                   # the share of the ratio's whole rise (on a log scale) made before the loss moved
                   ratio_share=float(np.log(ratio_L[end] / ratio_L[0]) / total) if total > 0 else nan,
                   ratio_rise_fraction=float(np.mean(rises > 0)) if len(rises) else nan,
                   ratio_spearman=_spearman(steps_L[on], ratio_L[on]))
        out["hidden_progress"] = bool(out["ratio_gain"] >= gain)
    else:
        out.update(ratio_start=nan, ratio_end=nan, ratio_final=nan, ratio_gain=nan, ratio_share=nan,
                   ratio_rise_fraction=nan, ratio_spearman=nan, hidden_progress=None)
    if distance_L is not None:
        distance_L = np.asarray(distance_L, np.float64)
        out.update(distance_end=float(distance_L[end]),
                   distance_end_fraction=float(distance_L[end] / distance_L[-1]) if distance_L[-1] > 0 else nan,
                   distance_spearman=_spearman(steps_L[on], distance_L[on]))
    else:
        out.update(distance_end=nan, distance_end_fraction=nan, distance_spearman=nan)
    return out


def with_config_values(table: pd.DataFrame, sweep_dir: Path | str, keys: tuple[str, ...]) -> pd.DataFrame:
    """The table with a column for each dotted key it lacks (a value the experiment file set, not
    the command line), read from each job's config.yaml; a key no job has is left out."""
    missing = [key for key in keys if key not in table.columns]
    if not missing or "job" not in table.columns:
        return table
    table = table.copy()
    for key in missing:
        values = {}
        for job in table["job"].unique():
            path = Path(sweep_dir) / str(job) / "config.yaml"
            node = yaml.safe_load(path.read_text()) if path.exists() else None
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            values[job] = node
        if any(v is not None for v in values.values()):
            table[key] = table["job"].map(values)
    return table


def sweep_curves(table: pd.DataFrame, key: str, group: str = GROUP_KEY) -> pd.DataFrame:
    """A collected sweep table (analysis.collect) as one row per (job, member, step): job, member,
    seed, k (the group key's value), n (the swept key's value), step, and the metrics test_acc,
    test_loss, subtask_relevant_weight (subtask 0), init_distance (those logged)."""
    swept = [c for c in table.columns if c not in ("job", "member", "step", "metric", "subtask", "value", "status")]
    for name, what in ((key, "--steps-to-learn"), (group, "the group key")):
        if name not in table.columns:
            raise ValueError(f"{what} {name}: not a column of the sweep's table (swept and member keys: {', '.join(swept)})")
    metrics = set(table["metric"].astype(str))
    for needed in (ACC, LOSS):
        if needed not in metrics:
            raise ValueError(f"the sweep logged no {needed} (metrics: {', '.join(sorted(metrics))})")
    rows = table[table["metric"].isin([m for m in (ACC, LOSS, RATIO, DISTANCE) if m in metrics])]
    rows = rows[rows["subtask"] <= 0]  # whole-distribution metrics (-1) and the one subtask (0)
    wide = rows.pivot_table(index=["job", "member", "step"], columns="metric", values="value", observed=True,
                            aggfunc="first").reset_index()
    wide.columns.name = None
    per_member = table.drop_duplicates(["job", "member"]).set_index(["job", "member"])
    for col, source in (("seed", "seed"), ("k", group), ("n", key)):
        values = per_member[source]
        bad = [v for v in values.unique() if not _is_number(v)]
        if bad:
            raise ValueError(f"{source}: needs numbers, the sweep has {source}={bad[0]!r}")
        wide[col] = values.loc[list(zip(wide["job"], wide["member"]))].to_numpy(np.float64)
    order = ["job", "member", "seed", "k", "n", "step"]
    return wide[order + [c for c in wide.columns if c not in order]].sort_values(["k", "n", "job", "member", "step"],
                                                                                  ignore_index=True)


def _is_number(v: Any) -> bool:
    try:
        return np.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def member_table(curves: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """One row per member: job, member, seed, k, n, budget, steps_to_learn (NaN: censored), censored,
    then its plateau_progress."""
    rows = []
    for (job, member), c in curves.groupby(["job", "member"], sort=False):
        c = c.sort_values("step")
        steps_L = c["step"].to_numpy(np.float64)
        learned = steps_to_learn(c[[ACC]].to_numpy(), steps_L, level)[0]
        progress = plateau_progress(steps_L, c[LOSS].to_numpy(),
                                    c[RATIO].to_numpy() if RATIO in c else None,
                                    c[DISTANCE].to_numpy() if DISTANCE in c else None)
        first = c.iloc[0]
        rows.append({"job": job, "member": int(member), "seed": int(first["seed"]), "k": int(first["k"]),
                     "n": int(first["n"]), "budget": float(steps_L[-1]), "steps_to_learn": learned,
                     "censored": bool(np.isnan(learned)), **progress})
    return pd.DataFrame(rows).sort_values(["k", "n", "job", "member"], ignore_index=True)


def _geo(steps: np.ndarray) -> dict[str, float | None]:
    """Geometric mean and geometric standard deviation (a factor) of the steps that are finite."""
    steps = steps[np.isfinite(steps)]
    if len(steps) == 0:
        return {"geomean": None, "gsd": None, "min": None, "max": None}
    logs = np.log(steps)
    return {"geomean": float(np.exp(logs.mean())), "gsd": float(np.exp(logs.std(ddof=1))) if len(steps) > 1 else None,
            "min": float(steps.min()), "max": float(steps.max())}


def local_exponents(members: pd.DataFrame, seed: int = 0) -> list[dict[str, float]]:
    """Between consecutive n (those some member learned at): the exponent of steps to learn, the
    least-squares slope over the two n's members, which is the log of their geometric means' ratio
    over log(n_to / n_from), with fit_exponent's bootstrap interval. Where one power law bends."""
    learned = members[np.isfinite(members["steps_to_learn"].to_numpy(np.float64))]
    ns = sorted(learned["n"].unique())
    out = []
    for a, b in zip(ns, ns[1:]):
        pair = learned[learned["n"].isin([a, b])]
        fit = fit_exponent(pair["n"].to_numpy(), pair["steps_to_learn"].to_numpy(), seed=seed)
        out.append({"n_from": float(a), "n_to": float(b), "exponent": fit.exponent, "ci_low": fit.ci_low,
                    "ci_high": fit.ci_high})
    return out


def _median(x: pd.Series) -> float | None:
    x = x.dropna()
    return float(x.median()) if len(x) else None


def analyse(members: pd.DataFrame, key: str = "task.n", seed: int = 0) -> dict[str, Any]:
    """Per k: per n the seeds' steps to learn (geometric mean and spread, how many learned) and the
    plateau's numbers (medians over seeds); the fitted exponent with its interval beside the
    predictions; and the hidden-progress count."""
    out: dict[str, Any] = {"key": key, "level": LEVEL, "plateau_drop": PLATEAU_DROP, "hidden_gain": HIDDEN_GAIN,
                           "rules": RULES, "k": {}}
    for k, mine in members.groupby("k"):
        entry: dict[str, Any] = {"n": {}, "predicted": predictions(int(k))}
        for n, at_n in mine.groupby("n"):
            steps = at_n["steps_to_learn"].to_numpy(np.float64)
            hidden = at_n["hidden_progress"].dropna()
            entry["n"][str(int(n))] = {
                "seeds": at_n["seed"].astype(int).tolist(),
                "steps_to_learn": [None if np.isnan(s) else float(s) for s in steps],
                "learned": int(np.isfinite(steps).sum()),
                "budget": float(at_n["budget"].max()),
                **_geo(steps),
                "plateau_end_step": _median(at_n["plateau_end_step"]),
                "loss_max_ratio": _median(at_n["loss_max_ratio"]),
                "ratio_gain": _median(at_n["ratio_gain"]),
                "ratio_share": _median(at_n["ratio_share"]),
                "ratio_rise_fraction": _median(at_n["ratio_rise_fraction"]),
                "ratio_spearman": _median(at_n["ratio_spearman"]),
                "distance_end_fraction": _median(at_n["distance_end_fraction"]),
                "hidden_progress": f"{int(hidden.sum())}/{len(hidden)}" if len(hidden) else None,
            }
        entry["local_exponents"] = local_exponents(mine, seed)
        try:
            fit = fit_exponent(mine["n"].to_numpy(), mine["steps_to_learn"].to_numpy(), seed=seed)
            entry["fit"] = fit.as_dict()
            entry["within_interval"] = [name for name in ("sq_queries", "fixed_batch_steps")
                                        if fit.ci_low <= entry["predicted"][name] <= fit.ci_high]
        except ValueError as exc:
            entry["fit"], entry["fit_error"] = None, str(exc)
        hidden = mine["hidden_progress"].dropna()
        entry["hidden_progress"] = {"members": int(hidden.sum()), "of": len(hidden)}
        out["k"][str(int(k))] = entry
    return out


def lines(result: dict[str, Any]) -> list[str]:
    """A plain-text summary of analyse's result, for the log and the docs."""
    out = []
    for k, entry in result["k"].items():
        p = entry["predicted"]
        fit = entry["fit"]
        if fit is None:
            out.append(f"k={k}: no fit ({entry['fit_error']})")
        else:
            out.append(f"k={k}: steps ∝ n^{fit['exponent']:.2f} [{fit['ci_low']:.2f}, {fit['ci_high']:.2f}] "
                       f"({fit['n_points']} members at {fit['n_values']} n, {fit['n_censored']} censored); "
                       f"predicted n^{p['fixed_batch_steps']:g} (samples at a fixed batch), n^{p['sq_queries']:g} "
                       f"(SQ queries); hidden progress in {entry['hidden_progress']['members']}/"
                       f"{entry['hidden_progress']['of']} members")
            if entry["local_exponents"]:
                out.append("  between consecutive n: " + ", ".join(
                    f"{e['n_from']:g}-{e['n_to']:g}: {e['exponent']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]"
                    for e in entry["local_exponents"]))
        for n, e in entry["n"].items():
            steps = "never" if e["geomean"] is None else (
                f"{e['geomean']:8.0f} (x/÷ {e['gsd']:.2f})" if e["gsd"] else f"{e['geomean']:8.0f}")
            gain = "" if e["ratio_gain"] is None else (
                f"; plateau to step {e['plateau_end_step']:.0f}: relevant weight x{e['ratio_gain']:.2f} "
                f"({e['ratio_share']:.0%} of its rise), up at {e['ratio_rise_fraction']:.0%} of log steps, "
                f"loss <= {e['loss_max_ratio']:.2f} x start, {e['distance_end_fraction']:.0%} of the distance")
            out.append(f"  n={n:>4}: steps to {result['level']:g} accuracy {steps} "
                       f"({e['learned']}/{len(e['seeds'])} learned){gain}")
    return out


def write(table: pd.DataFrame, sweep_dir: Path, key: str) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """A collected sweep's analysis into its directory: hidden_progress.csv (one row per member) and
    hidden_progress.json (analyse's result). Keys the command line did not set (the experiment
    file did) come from the jobs' config.yaml. Returns (result, curves, members) for the figure."""
    table = with_config_values(table, sweep_dir, (key, GROUP_KEY, "task.loss"))
    curves = sweep_curves(table, key)
    members = member_table(curves)
    result = analyse(members, key)
    if "task.loss" in table.columns:  # the loss the curves show (hinge: chance is 1)
        result["loss"] = ", ".join(sorted(map(str, table["task.loss"].dropna().unique())))
    result["files"] = list(FILES.values())
    results.atomic_write(sweep_dir / FILES["csv"], lambda p: members.to_csv(p, index=False))
    results.atomic_write(sweep_dir / FILES["json"],
                         lambda p: p.write_text(json.dumps(results.json_safe(result), indent=1) + "\n"))
    return result, curves, members
