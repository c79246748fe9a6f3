"""Nam et al. 2024's exactly solvable model of emergence, against a trained network's skills.

Their multilinear model learns skill k (frequency p_k, target strength S) as a logistic in time,

    R_k(T) = S / (1 + (S / R_0 - 1) exp(-2 eta S p_k T)),

so every skill has the same shape, stretched in time by 1 / p_k. As they do, the model is
calibrated on the first skill of a run: a logistic fitted to its measured strength gives the rate
c_1 = 2 eta S p_1 and the midpoint T_1 = ln(S / R_0 - 1) / c_1; then skill k is predicted with
c_k = c_1 p_k / p_1 and midpoint T_1 p_1 / p_k. A skill's strength in the network is the projection
of its output on the skill's parity, the mean of f(x) y over that skill's points (the task's
`subtask_strength`); it has emerged when it reaches S / 2 (EMERGED).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import optimize

from toy_quanta.analysis.milestones import crossings

EMERGED = 0.5  # a skill has emerged when its strength reaches this fraction of S
RULE = (f"a skill has emerged at the first step its strength R_k (the mean of f(x) y over its points) "
        f"reaches {EMERGED:g} S, interpolated in log step between log steps; the model is calibrated by a "
        f"logistic least-squares fit to skill 1's R_1(T) / S")


def strength(T: np.ndarray | float, p: float, S: float, R0: float, eta: float) -> np.ndarray:
    """R_k(T), the closed form."""
    return S / (1.0 + (S / R0 - 1.0) * np.exp(-2.0 * eta * S * p * np.asarray(T, np.float64)))


def emergence_time(p: float, S: float, R0: float, eta: float, level: float = EMERGED) -> float:
    """The T at which the closed form reaches level * S."""
    return math.log((S / R0 - 1.0) / (1.0 / level - 1.0)) / (2.0 * eta * S * p)


def loss(T: np.ndarray | float, p_K: np.ndarray, S: float, R0: float, eta: float) -> np.ndarray:
    """The model's loss, half the squared error: sum_k p_k (S - R_k(T))^2 / 2."""
    T = np.asarray(T, np.float64)
    R_KxT = np.stack([strength(T, p, S, R0, eta) for p in p_K])
    return 0.5 * np.tensordot(p_K, (S - R_KxT) ** 2, axes=1)


def loss_data(D: np.ndarray | float, p_K: np.ndarray, S: float) -> np.ndarray:
    """Their data law: trained to convergence on D samples, the model has learned exactly the skills
    it saw, so L(D) = (S^2 / 2) sum_k p_k (1 - p_k)^D."""
    D = np.asarray(D, np.float64)
    return 0.5 * S**2 * np.sum(p_K[:, None] * (1.0 - p_K[:, None]) ** D.reshape(1, -1), axis=0).reshape(D.shape)


def exponents(alpha: float) -> dict[str, float]:
    """The power laws their model gives for many skills (p_k ∝ k^-(alpha+1)): L ∝ X^-exponent for
    training time T, data D, parameters N (skills the model can hold) and compute C."""
    return {"time": alpha / (alpha + 1), "data": alpha / (alpha + 1), "parameters": alpha, "compute": alpha / (alpha + 2)}


def crossing_step(steps_L: np.ndarray, value_L: np.ndarray, level: float) -> float | None:
    """The first step at which value_L reaches level, interpolated linearly in log(1 + step)
    between the log steps around it; None if it never does."""
    at = crossings(np.asarray(value_L, np.float64)[:, None], steps_L, level, "log")[0]
    return None if np.isnan(at) else float(at)


@dataclass
class Calibration:
    """The logistic fitted to skill 1: rate c = 2 eta S p_1 and midpoint T_half, with standard
    errors from the fit's covariance; R0 and eta follow."""

    rate: float
    midpoint: float
    rate_se: float
    midpoint_se: float
    S: float
    p1: float

    @property
    def R0(self) -> float:
        return self.S / (1.0 + math.exp(self.rate * self.midpoint))

    @property
    def eta(self) -> float:
        return self.rate / (2.0 * self.S * self.p1)

    def predict(self, T: np.ndarray | float, p: float) -> np.ndarray:
        """R_k(T) for a skill of frequency p."""
        return self.S / (1.0 + np.exp(-self.rate * p / self.p1 * (np.asarray(T, np.float64) - self.midpoint * self.p1 / p)))

    def emergence(self, p: float, level: float = EMERGED) -> float:
        """Predicted step at which a skill of frequency p reaches level * S."""
        return (self.midpoint + math.log(level / (1.0 - level)) / self.rate) * self.p1 / p


def calibrate(steps_L: np.ndarray, R_L: np.ndarray, S: float, p1: float) -> Calibration:
    """A least-squares logistic R / S = 1 / (1 + exp(-c (T - T_half))) through skill 1's curve.
    Raises ValueError if it never rises past EMERGED * S (nothing to calibrate on)."""
    steps_L, y_L = np.asarray(steps_L, np.float64), np.asarray(R_L, np.float64) / S
    t_half = crossing_step(steps_L, y_L, EMERGED)
    if t_half is None:
        raise ValueError(f"skill 1 never reached {EMERGED:g} S (its largest strength is {np.max(y_L) * S:.3g}): "
                         "nothing to calibrate on; train longer")
    # Start from the crossing and a rise over a tenth of it; fit the logistic's rate and midpoint.
    def logistic(T, rate, midpoint):
        return 1.0 / (1.0 + np.exp(np.clip(-rate * (T - midpoint), -500, 500)))

    guess = (8.0 / max(t_half, 1.0), t_half)
    (rate, midpoint), cov = optimize.curve_fit(logistic, steps_L, y_L, p0=guess, maxfev=20_000)
    se = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(2, np.nan)
    return Calibration(float(rate), float(midpoint), float(se[0]), float(se[1]), float(S), float(p1))


# Nam et al.'s own calibration (their plot_emergence_calibration_all.py and train1_time.py): R_0
# from the initialisation, and one rate constant fitted on a separate network trained on one skill
# alone; every skill k of a network is then predicted with rate c_single p_k.
THEIR_R0_RULE = ("R_0 = sigma^2 / 3.6 for weights and biases drawn from N(0, sigma^2) (their empirical formula); "
                 "the rate fitted on a network of one skill (p = 1) with R_0 fixed; skill k's rate is that times p_k")


def their_R0(init_std: float) -> float:
    """R_0 from the initialisation's standard deviation, as their code computes it."""
    return init_std**2 / 3.6


def fit_rate(steps_L: np.ndarray, R_L: np.ndarray, S: float, R0: float) -> tuple[float, float]:
    """(c, its standard error): the least-squares rate of R / S = 1 / (1 + (S / R0 - 1) exp(-c T))
    with R0 fixed, through one skill's measured strength. ValueError if it never reaches S / 2."""
    steps_L, y_L = np.asarray(steps_L, np.float64), np.asarray(R_L, np.float64) / S
    t_half = crossing_step(steps_L, y_L, EMERGED)
    if t_half is None:
        raise ValueError(f"the skill never reached {EMERGED:g} S (its largest strength is {np.max(y_L) * S:.3g}): "
                         "nothing to fit; train longer")
    log_c0 = math.log(S / R0 - 1.0)

    def logistic(T, rate):
        return 1.0 / (1.0 + np.exp(np.clip(log_c0 - rate * T, -500, 500)))

    (rate,), cov = optimize.curve_fit(logistic, steps_L, y_L, p0=(log_c0 / max(t_half, 1.0),), maxfev=20_000)
    return float(rate), float(np.sqrt(cov[0, 0])) if np.isfinite(cov[0, 0]) else float("nan")


def their_calibration(rate_single: float, R0: float, S: float, p1: float) -> Calibration:
    """The closed form for a network whose skill 1 has frequency p1, from a one-skill rate and R_0."""
    rate = rate_single * p1
    return Calibration(rate, math.log(S / R0 - 1.0) / rate, float("nan"), float("nan"), S, p1)


def compare_member(steps_L: np.ndarray, R_LxK: np.ndarray, p_K: np.ndarray, S: float,
                   cal: Calibration | None = None) -> dict[str, Any]:
    """Calibrate on skill 1 (or use `cal`), then each skill's predicted and measured emergence step
    (None: not reached by the last step, reported as a bound) and the rise time, 10% to 90% of S."""
    cal = cal if cal is not None else calibrate(steps_L, R_LxK[:, 0], S, float(p_K[0]))
    last = float(steps_L[-1])
    skills = []
    for k in range(R_LxK.shape[1]):
        measured = crossing_step(steps_L, R_LxK[:, k] / S, EMERGED)
        predicted = cal.emergence(float(p_K[k]))
        lo, hi = (crossing_step(steps_L, R_LxK[:, k] / S, q) for q in (0.1, 0.9))
        skills.append({
            "skill": k + 1, "p": float(p_K[k]),
            "predicted_step": predicted,
            "measured_step": measured,  # None: below S/2 at the last step
            "ratio": None if measured is None else measured / predicted,
            "bound": None if measured is not None else f"> {last:g} (predicted / measured < {predicted / last:.3g})",
            "predicted_rise": math.log(81.0) / (cal.rate * p_K[k] / p_K[0]),
            "measured_rise": None if lo is None or hi is None else hi - lo,
            "final_strength": float(R_LxK[-1, k]),
        })
    return {"calibration": {"rate": cal.rate, "rate_se": cal.rate_se, "midpoint": cal.midpoint,
                            "midpoint_se": cal.midpoint_se, "R0": cal.R0, "eta": cal.eta},
            "skills": skills}


def bootstrap_geomean(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Geometric mean of positive values with a 95% percentile bootstrap interval over them."""
    logs = np.log(np.asarray(values, np.float64))
    if logs.size == 0:
        return {"value": None, "interval": None, "n": 0}
    if logs.size == 1:
        return {"value": float(np.exp(logs[0])), "interval": None, "n": 1}
    rng = np.random.default_rng(seed)
    means = logs[rng.integers(0, logs.size, (n_boot, logs.size))].mean(1)
    return {"value": float(np.exp(logs.mean())), "interval": [float(np.exp(q)) for q in np.percentile(means, [2.5, 97.5])],
            "n": int(logs.size)}


def summarize(members: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per skill across members (those calibrated): measured over predicted emergence step,
    geometric mean with a bootstrap interval over seeds, and how many members had not got there."""
    n_skills = len(members[0]["skills"])
    rows = []
    for k in range(n_skills):
        entries = [m["skills"][k] for m in members]
        ratios = [e["ratio"] for e in entries if e["ratio"] is not None]
        measured = [e["measured_step"] for e in entries if e["measured_step"] is not None]
        rows.append({"skill": k + 1, "p": entries[0]["p"],
                     "predicted_step": bootstrap_geomean([e["predicted_step"] for e in entries])["value"],
                     "measured_step": bootstrap_geomean(measured)["value"],
                     "ratio": bootstrap_geomean(ratios), "not_emerged": len(entries) - len(measured)})
    return rows


def lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One log line per skill."""
    out = []
    for r in rows:
        ratio = r["ratio"]
        interval = f" [{ratio['interval'][0]:.2f}, {ratio['interval'][1]:.2f}]" if ratio["interval"] else ""
        measured = "not reached" if r["measured_step"] is None else f"{r['measured_step']:,.0f}"
        shown = "" if ratio["value"] is None else f", measured / predicted {ratio['value']:.2f}{interval}"
        late = f" ({r['not_emerged']} members not emerged)" if r["not_emerged"] else ""
        out.append(f"skill {r['skill']} (p={r['p']:.3f}): predicted step {r['predicted_step']:,.0f}, "
                   f"measured {measured}{shown}{late}")
    return out


def _strengths(frame: Any) -> tuple[np.ndarray, np.ndarray]:
    """(steps (L,), R (M, L, K)) from a job's metrics table (subtask_strength)."""
    rows = frame[frame["metric"] == "subtask_strength"]
    table = rows.pivot_table(index="step", columns=["member", "subtask"], values="value").sort_index()
    M, K = int(rows["member"].max()) + 1, int(rows["subtask"].max()) + 1
    return table.index.to_numpy(np.float64), table.to_numpy().reshape(len(table), M, K).transpose(1, 0, 2)


def calibrations(jobs: Sequence[tuple[Any, Any]]) -> dict[str, Any]:
    """Both calibrations of every several-skill member of a sweep of (config, metrics table) jobs:
    ours (skill 1 of the same network: compare_member) and theirs (THEIR_R0_RULE: the rate from its
    one-skill jobs, the geometric mean over their members). Per skill and calibration, measured over
    predicted emergence step across the members (summarize)."""
    from toy_quanta.data.sparse_parity import zipf_probs

    single, several = [], []
    for cfg, frame in jobs:
        steps_L, R_MxLxK = _strengths(frame)
        (single if cfg.task.n_tasks == 1 else several).append((cfg, steps_L, R_MxLxK))
    if not single or not several:
        raise ValueError("needs jobs with task.n_tasks=1 (the calibration network) and task.n_tasks > 1")
    S = float(several[0][0].task.target_scale)
    init_std = getattr(single[0][0].model, "init_std", None)
    rates, one_skill = [], []
    for cfg, steps_L, R_MxLxK in single:
        for m in range(R_MxLxK.shape[0]):
            if init_std is not None:
                rate, se = fit_rate(steps_L, R_MxLxK[m, :, 0], S, their_R0(init_std))
                R0 = their_R0(init_std)
            else:  # no N(0, sigma^2) initialisation to read R_0 from: fit it on the one-skill network too
                cal = calibrate(steps_L, R_MxLxK[m, :, 0], S, 1.0)
                rate, se, R0 = cal.rate, cal.rate_se, cal.R0
            rates.append(rate)
            one_skill.append({"rate": rate, "rate_se": se, "R0": R0,
                              "emerged_step": crossing_step(steps_L, R_MxLxK[m, :, 0] / S, EMERGED)})
    rate_single = float(np.exp(np.mean(np.log(rates))))
    R0 = their_R0(init_std) if init_std is not None else float(np.exp(np.mean(np.log([o["R0"] for o in one_skill]))))
    ours, theirs = [], []
    for cfg, steps_L, R_MxLxK in several:
        p_K = zipf_probs(cfg.task.n_tasks, cfg.task.alpha)
        for m in range(R_MxLxK.shape[0]):
            theirs.append(compare_member(steps_L, R_MxLxK[m], p_K, S, their_calibration(rate_single, R0, S, p_K[0])))
            try:
                ours.append(compare_member(steps_L, R_MxLxK[m], p_K, S))
            except (ValueError, RuntimeError):
                pass
    return {"rule": RULE, "their_rule": THEIR_R0_RULE, "S": S, "R0": R0, "rate_single": rate_single,
            "one_skill": one_skill, "p": [float(p) for p in p_K],
            "theirs": {"members": theirs, "skills": summarize(theirs)},
            "ours": {"members": ours, "skills": summarize(ours) if ours else []}}


SWEEP_FILES = {"json": "solvable.json", "figure": "solvable_calibrations.png"}


def write_calibrations(sweep_dir: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """calibrations() of a sweep directory's completed jobs, written to SWEEP_FILES["json"] there
    (`toy-quanta-collect DIR --solvable`); returns it with the first several-skill job's steps and
    strengths (L,), (M, L, K), for the figure."""
    from pathlib import Path

    from toy_quanta import results
    from toy_quanta.analysis.collect import job_dirs

    sweep_dir = Path(sweep_dir)
    jobs = []
    for job in job_dirs(sweep_dir):
        if (job / results.SUMMARY_FILE).is_file():
            jobs.append((results.load_config(job), results.read_metrics(job / results.METRICS_FILE)))
    result = calibrations(jobs)
    several = [frame for cfg, frame in jobs if cfg.task.n_tasks > 1][0]
    results.write_json(sweep_dir / SWEEP_FILES["json"], results.json_safe(result))
    return (result, *_strengths(several))
