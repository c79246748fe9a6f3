"""Hidden progress (toy_quanta.analysis.hidden_progress) on planted curves, planted exponents and a
planted first layer, each against a direct computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toy_quanta.analysis import hidden_progress as hp

STEPS_L = np.unique(np.round(np.geomspace(1, 20_000, 120))).astype(np.int64)
STEPS_L = np.concatenate([[0], STEPS_L])


def _sigmoid_acc(at: float | None) -> np.ndarray:
    """Accuracy 0.5 until a jump centred on `at` (None: never), reaching 1."""
    if at is None:
        return np.full(len(STEPS_L), 0.5)
    return 0.5 + 0.5 / (1 + np.exp(-(STEPS_L - at) / (0.05 * at)))


def test_steps_to_learn_interpolates_between_log_steps_and_censors_the_rest():
    acc_LxM = np.stack([_sigmoid_acc(500), _sigmoid_acc(3000), _sigmoid_acc(None)], axis=1)
    got_M = hp.steps_to_learn(acc_LxM, STEPS_L, 0.99)
    for m in range(2):  # a direct computation: the crossing of the straight line between log steps
        i = int(np.argmax(acc_LxM[:, m] >= 0.99))
        s0, s1, a0, a1 = STEPS_L[i - 1], STEPS_L[i], acc_LxM[i - 1, m], acc_LxM[i, m]
        assert got_M[m] == pytest.approx(s0 + (0.99 - a0) / (a1 - a0) * (s1 - s0))
        assert s0 < got_M[m] <= s1
    # the sigmoid crosses 0.99 at at * (1 + 0.05 ln 49): interpolation lands within the log spacing
    assert got_M[0] == pytest.approx(500 * (1 + 0.05 * np.log(49)), rel=0.02)
    assert np.isnan(got_M[2])
    # reached at step 0: step 0; a NaN accuracy (a diverged member) never counts
    assert hp.steps_to_learn(np.array([[1.0], [1.0]]), np.array([0, 10]))[0] == 0
    assert np.isnan(hp.steps_to_learn(np.array([[0.5], [np.nan]]), np.array([0, 10]))[0])


@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0])
def test_the_fit_recovers_a_planted_exponent_and_its_interval_covers_it(exponent):
    rng = np.random.default_rng(int(exponent * 10))
    n_N = np.repeat([16, 32, 64, 128, 256], 8)
    steps_N = 30.0 * n_N ** exponent * np.exp(rng.normal(0, 0.15, n_N.size))
    fit = hp.fit_exponent(n_N, steps_N, n_resamples=1000)
    slope, intercept = np.polyfit(np.log(n_N), np.log(steps_N), 1)  # numpy's least squares
    assert fit.exponent == pytest.approx(slope) and fit.prefactor == pytest.approx(np.exp(intercept))
    assert fit.ci_low < exponent < fit.ci_high and fit.ci_high - fit.ci_low < 0.25
    assert (fit.n_points, fit.n_values, fit.n_censored) == (40, 5, 0)


def test_the_fit_leaves_censored_members_out_and_counts_them():
    n_N = np.repeat([10, 20, 40], 4).astype(float)
    steps_N = 5.0 * n_N ** 1.5
    steps_N[[1, 11]] = np.nan
    fit = hp.fit_exponent(n_N, steps_N, n_resamples=200)
    assert fit.exponent == pytest.approx(1.5) and fit.ci_low == pytest.approx(1.5) and fit.ci_high == pytest.approx(1.5)
    assert (fit.n_points, fit.n_censored) == (10, 2)
    with pytest.raises(ValueError, match="2 or more n"):
        hp.fit_exponent([10, 10, 20], [5.0, 6.0, np.nan])


def test_plateau_and_progress_on_a_planted_member():
    """Loss flat at 1 (one blip up) until step 1000, then down; the ratio rising all along; the
    distance growing: the plateau ends at the last log step before the loss is 5% down."""
    steps_L = STEPS_L.astype(float)
    loss_L = np.where(steps_L < 1000, 1.0, np.exp(-(steps_L - 1000) / 300))
    loss_L[5] = 1.3
    ratio_L = 1.0 + steps_L / 500
    distance_L = np.sqrt(steps_L)
    end = hp.plateau_end(loss_L)
    assert steps_L[end] < 1000 + 300 * -np.log(0.95) < steps_L[end + 1]
    got = hp.plateau_progress(steps_L, loss_L, ratio_L, distance_L)
    assert got["plateau_end_step"] == steps_L[end] and got["plateau_log_steps"] == end + 1
    assert got["loss_max_ratio"] == pytest.approx(1.3) and got["loss_left_plateau"]
    assert got["ratio_gain"] == pytest.approx(ratio_L[end] / ratio_L[0]) and got["hidden_progress"]
    assert got["ratio_share"] == pytest.approx(np.log(ratio_L[end]) / np.log(ratio_L[-1]))
    rises = np.diff(ratio_L[: end + 1]) > 0
    assert got["ratio_rise_fraction"] == pytest.approx(rises.mean())
    assert got["ratio_spearman"] == pytest.approx(1.0) and got["distance_spearman"] == pytest.approx(1.0)
    assert got["distance_end_fraction"] == pytest.approx(np.sqrt(steps_L[end] / steps_L[-1]))
    # a loss that never leaves: the whole run is the plateau; no ratio logged: NaN and None
    flat = hp.plateau_progress(steps_L, np.ones_like(steps_L), None, None)
    assert flat["plateau_log_steps"] == len(steps_L) and not flat["loss_left_plateau"]
    assert np.isnan(flat["ratio_gain"]) and flat["hidden_progress"] is None


def _table(planted: dict[tuple[int, int], list[float | None]]) -> pd.DataFrame:
    """A collected sweep: one job per (k, n), members learning at the planted steps (None: never)."""
    rows = []
    for job, ((k, n), at) in enumerate(planted.items()):
        for member, a in enumerate(at):
            acc = _sigmoid_acc(a)
            loss = 1.0 - 1.5 * (acc - 0.5)  # 1 on the plateau, 0.25 once learned
            ratio = 1 + 3 * STEPS_L / (a or 1e9)  # x3 or more by the plateau's end; flat if never learned
            for metric, subtask, v in (("test_acc", -1, acc), ("test_loss", -1, loss),
                                       ("init_distance", -1, np.sqrt(STEPS_L)), ("subtask_relevant_weight", 0, ratio)):
                rows.append(pd.DataFrame({"job": str(job), "member": member, "step": STEPS_L, "metric": metric,
                                          "subtask": subtask, "value": v, "seed": member, "task.k": k, "task.n": n}))
    table = pd.concat(rows, ignore_index=True)
    table["metric"] = table["metric"].astype("category")
    return table


def test_a_sweep_table_gives_per_k_fits_and_per_n_numbers():
    rng = np.random.default_rng(3)
    planted = {(k, n): [float(c * n ** e * np.exp(rng.normal(0, 0.1))) for _ in range(4)]
               for k, c, e in ((2, 5.0, 0.7), (3, 2.0, 1.4)) for n in (16, 32, 64)}
    planted[(3, 64)][0] = None
    members = hp.member_table(hp.sweep_curves(_table(planted), "task.n"))
    assert len(members) == 24 and members["censored"].sum() == 1
    result = hp.analyse(members)
    assert list(result["k"]) == ["2", "3"]
    for k, e in ((2, 0.7), (3, 1.4)):
        entry = result["k"][str(k)]
        fit = entry["fit"]
        # 4 seeds per n and log steps 7% apart: near the planted exponent, with an informative interval
        assert abs(fit["exponent"] - e) < 0.15 and fit["ci_low"] < fit["exponent"] < fit["ci_high"]
        assert fit["ci_high"] - fit["ci_low"] < 0.5
        assert entry["predicted"]["fixed_batch_steps"] == k - 1 and entry["predicted"]["sq_queries"] == k
        # the sigmoid reaches 0.99 at 1 + 0.05 ln 49 times its centre
        at16 = np.array(planted[(k, 16)]) * (1 + 0.05 * np.log(49))
        assert entry["n"]["16"]["geomean"] == pytest.approx(np.exp(np.mean(np.log(at16))), rel=0.03)
        assert [(e["n_from"], e["n_to"]) for e in entry["local_exponents"]] == [(16, 32), (32, 64)]
        assert all(abs(x["exponent"] - e) < 0.3 for x in entry["local_exponents"])
        # each local exponent is the log of the geometric means' ratio, inside its own interval
        for x in entry["local_exponents"]:
            a, b = (entry["n"][str(int(v))]["geomean"] for v in (x["n_from"], x["n_to"]))
            assert x["exponent"] == pytest.approx(np.log(b / a) / np.log(x["n_to"] / x["n_from"]), rel=1e-9)
            assert x["ci_low"] < x["exponent"] < x["ci_high"] and x["ci_high"] - x["ci_low"] < 0.6
        assert entry["hidden_progress"] == {"members": 4 * 3 - (k == 3), "of": 12}
    assert result["k"]["3"]["fit"]["n_censored"] == 1 and result["k"]["3"]["n"]["64"]["learned"] == 3
    assert any("k=3" in line and "1 censored" in line for line in hp.lines(result))


def test_a_key_that_is_not_swept_is_refused_by_name():
    table = _table({(3, 16): [100.0], (3, 32): [300.0]})
    with pytest.raises(ValueError, match="task.m: not a column"):
        hp.sweep_curves(table, "task.m")
    with pytest.raises(ValueError, match="task.k: not a column"):
        hp.sweep_curves(table.drop(columns="task.k"), "task.n")
    with pytest.raises(ValueError, match="needs numbers"):
        hp.sweep_curves(table.assign(**{"task.n": "wide"}), "task.n")


def test_config_values_fill_a_key_the_command_line_did_not_set(tmp_path):
    table = _table({(3, 16): [100.0], (3, 32): [300.0]}).drop(columns="task.k")
    for job in ("0", "1"):
        (tmp_path / job).mkdir()
        (tmp_path / job / "config.yaml").write_text(f"task:\n  k: {2 + int(job)}\n  loss: hinge\n")
    filled = hp.with_config_values(table, tmp_path, ("task.k", "task.loss", "task.nothing"))
    assert filled.groupby("job")["task.k"].first().to_dict() == {"0": 2, "1": 3}
    assert set(filled["task.loss"]) == {"hinge"} and "task.nothing" not in filled
