"""Nam et al.'s solvable model (toy_quanta.analysis.solvable): the closed form against a direct
integration of their multilinear model's gradient flow, and the calibration on planted curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from toy_quanta.analysis import solvable


def test_closed_form_equals_the_integrated_multilinear_gradient_flow():
    """f = sum_k a_k b_k g_k on orthogonal skills with <g_k, g_k> = p_k and loss
    sum_k p_k (S - a_k b_k)^2 / 2: gradient flow da = eta p b (S - ab), db = eta p a (S - ab),
    from a = b = sqrt(R0). R_k = a_k b_k matches the closed form at every time."""
    S, R0, eta = 5.0, 1e-3, 0.05
    p_K = np.array([0.5, 0.3, 0.2])
    T = np.linspace(0, 400, 81)

    def flow(_, ab):
        a, b = ab[:3], ab[3:]
        err = S - a * b
        return np.concatenate([eta * p_K * b * err, eta * p_K * a * err])

    sol = solve_ivp(flow, (0, T[-1]), np.full(6, math.sqrt(R0)), t_eval=T, rtol=1e-10, atol=1e-12)
    R_KxT = sol.y[:3] * sol.y[3:]
    for k, p in enumerate(p_K):
        np.testing.assert_allclose(solvable.strength(T, p, S, R0, eta), R_KxT[k], rtol=1e-5, atol=1e-8)
        T_half = solvable.emergence_time(p, S, R0, eta)
        np.testing.assert_allclose(solvable.strength(T_half, p, S, R0, eta), S / 2, rtol=1e-9)
    # the model's loss is the weighted squared error of those strengths
    np.testing.assert_allclose(solvable.loss(T, p_K, S, R0, eta), 0.5 * p_K @ (S - R_KxT) ** 2, rtol=1e-4, atol=1e-8)


def test_crossing_step_interpolates_in_log_step():
    steps = np.array([0, 10, 100, 1000])
    assert solvable.crossing_step(steps, np.array([0, 0.2, 0.4, 0.9]), 0.5) == pytest.approx(
        math.expm1(math.log1p(100) + 0.2 * (math.log1p(1000) - math.log1p(100))))
    assert solvable.crossing_step(steps, np.array([0, 0.2, 0.4, 0.45]), 0.5) is None
    assert solvable.crossing_step(steps, np.array([0.6, 0.2, 0.4, 0.45]), 0.5) == 0.0


def _planted(p_K, S=5.0, R0=2e-4, eta=0.003, steps=None, noise=0.0, seed=0):
    steps = np.unique(np.round(np.geomspace(1, 20_000, 90))) if steps is None else steps
    rng = np.random.default_rng(seed)
    R = np.stack([solvable.strength(steps, p, S, R0, eta) for p in p_K], 1)
    return steps, R + noise * S * rng.standard_normal(R.shape)


def test_calibration_recovers_planted_parameters_and_predicts_the_other_skills():
    """Curves drawn from the closed form (with 1% noise): the fit on skill 1 recovers eta and R0,
    and every other skill's predicted emergence step equals its measured one within 2%."""
    p_K = np.array([0.5, 0.25, 0.15, 0.1])
    steps, R = _planted(p_K, noise=0.01)
    cal = solvable.calibrate(steps, R[:, 0], 5.0, p_K[0])
    assert cal.eta == pytest.approx(0.003, rel=0.03)
    assert math.log(cal.R0) == pytest.approx(math.log(2e-4), rel=0.03)
    out = solvable.compare_member(steps, R, p_K, 5.0)
    for s, p in zip(out["skills"], p_K):
        assert s["predicted_step"] == pytest.approx(solvable.emergence_time(p, 5.0, 2e-4, 0.003), rel=0.03)
        assert s["ratio"] == pytest.approx(1.0, abs=0.02)
        assert s["measured_rise"] == pytest.approx(s["predicted_rise"], rel=0.1)


def test_a_skill_that_has_not_emerged_is_a_bound_and_skill_1_must_emerge():
    p_K = np.array([0.6, 0.3, 0.005])  # skill 3 emerges long after the last step
    steps, R = _planted(p_K)
    skills = solvable.compare_member(steps, R, p_K, 5.0)["skills"]
    assert skills[2]["measured_step"] is None and skills[2]["ratio"] is None
    assert skills[2]["bound"].startswith("> 20000")
    with pytest.raises(ValueError, match="never reached"):
        solvable.calibrate(steps, np.zeros_like(steps), 5.0, 0.6)


def test_summary_over_seeds_and_the_log_lines():
    """Two seeds whose skill 2 comes 10% late and 10% early: geometric mean ratio 1 (up to the
    product 0.99), the bootstrap interval inside [0.9, 1.1]."""
    p_K = np.array([0.6, 0.4])
    members = []
    for eta in (0.003, 0.004):
        steps, R = _planted(p_K, eta=eta)
        out = solvable.compare_member(steps, R, p_K, 5.0)
        members.append(out)
    late, early = 1.1, 0.9
    members[0]["skills"][1]["ratio"], members[1]["skills"][1]["ratio"] = late, early
    rows = solvable.summarize(members)
    assert rows[1]["ratio"]["value"] == pytest.approx(math.sqrt(late * early))
    lo, hi = rows[1]["ratio"]["interval"]
    assert 0.9 - 1e-9 <= lo <= hi <= 1.1 + 1e-9
    assert rows[1]["not_emerged"] == 0
    assert "skill 2 (p=0.400)" in solvable.lines(rows)[1]


def test_data_law_equals_a_simulation_of_which_skills_were_seen():
    """L(D) = (S^2 / 2) sum_k p_k (1 - p_k)^D: the expected loss of a model that learned exactly the
    skills among D draws, against 4,000 simulated training sets."""
    rng = np.random.default_rng(0)
    p_K = np.arange(1, 21, dtype=float) ** -1.4
    p_K /= p_K.sum()
    S = 5.0
    for D in (1, 10, 100):
        seen = np.zeros((4000, p_K.size), bool)
        draws = rng.choice(p_K.size, size=(4000, D), p=p_K)
        np.put_along_axis(seen, draws, True, axis=1)
        simulated = 0.5 * S**2 * ((~seen) @ p_K).mean()
        assert solvable.loss_data(D, p_K, S) == pytest.approx(simulated, rel=0.03)


def test_the_data_law_approaches_its_exponent_for_many_skills():
    """With 10^5 skills, the local slope of log L(D) against log D nears -alpha / (alpha + 1)."""
    alpha = 0.5
    p_K = np.arange(1, 100_001, dtype=float) ** -(alpha + 1)
    p_K /= p_K.sum()
    D = np.array([1e3, 1e4])
    slope = np.diff(np.log(solvable.loss_data(D, p_K, 1.0))) / np.diff(np.log(D))
    assert slope[0] == pytest.approx(-solvable.exponents(alpha)["data"], abs=0.03)


def test_their_calibration_recovers_the_rate_with_r0_fixed_and_predicts_every_skill():
    """Nam et al.'s calibration: the rate of a planted one-skill curve (p = 1) with R_0 known, then
    each skill of a planted several-skill network predicted with rate x p_k and the same R_0."""
    S, eta, std = 5.0, 0.002, 0.01
    R0 = solvable.their_R0(std)
    assert R0 == pytest.approx(std**2 / 3.6)
    steps, one = _planted(np.array([1.0]), S=S, R0=R0, eta=eta, noise=0.005)
    rate, se = solvable.fit_rate(steps, one[:, 0], S, R0)
    assert rate == pytest.approx(2 * eta * S, rel=0.02) and 0 < se < 0.01 * rate
    p_K = np.array([0.55, 0.25, 0.12, 0.08])
    steps, R = _planted(p_K, S=S, R0=R0, eta=eta, noise=0.005)
    cal = solvable.their_calibration(rate, R0, S, p_K[0])
    out = solvable.compare_member(steps, R, p_K, S, cal)
    for s, p in zip(out["skills"], p_K):
        assert s["predicted_step"] == pytest.approx(solvable.emergence_time(p, S, R0, eta), rel=0.03)
        assert s["ratio"] == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ValueError, match="never reached"):
        solvable.fit_rate(steps, np.zeros_like(steps), S, R0)


def test_calibrations_of_a_sweep_of_one_skill_and_several_skill_jobs():
    """calibrations() on jobs as the metrics tables hold them: one-skill jobs give the rate, every
    several-skill member gets both predictions; a several-skill network whose skills follow the
    closed form is predicted within 3% by either."""
    import pandas as pd
    from types import SimpleNamespace

    S, eta, std, alpha = 5.0, 0.002, 0.01, 0.6
    R0 = solvable.their_R0(std)

    def job(n_tasks: int, members: int) -> tuple:
        from toy_quanta.data.sparse_parity import zipf_probs

        p_K = zipf_probs(n_tasks, alpha)
        rows = []
        for m in range(members):
            steps, R = _planted(p_K, S=S, R0=R0, eta=eta, noise=0.003, seed=m)
            for i, step in enumerate(steps):
                for k in range(n_tasks):
                    rows.append({"member": m, "step": int(step), "metric": "subtask_strength", "subtask": k,
                                 "value": R[i, k]})
        cfg = SimpleNamespace(task=SimpleNamespace(n_tasks=n_tasks, alpha=alpha, target_scale=S),
                              model=SimpleNamespace(init_std=std))
        return cfg, pd.DataFrame(rows)

    result = solvable.calibrations([job(5, 2), job(1, 2)])
    assert result["R0"] == pytest.approx(R0) and result["rate_single"] == pytest.approx(2 * eta * S, rel=0.02)
    assert len(result["one_skill"]) == 2 and len(result["theirs"]["members"]) == 2
    for name in ("theirs", "ours"):
        for row in result[name]["skills"]:
            assert row["ratio"]["value"] == pytest.approx(1.0, abs=0.03), (name, row)
    with pytest.raises(ValueError, match="n_tasks=1"):
        solvable.calibrations([job(5, 1)])
