"""Arms compared (toy_quanta.analysis.arms) on planted accuracy curves with known milestones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toy_quanta.analysis import arms

STEPS = np.arange(0, 2001, 10)


def _frame(milestones: dict[str, list[float | None]]) -> pd.DataFrame:
    """Validation accuracy jumping from 0.5 to 1 at each member's planted step (None: never)."""
    rows, member = [], 0
    for arm, steps in milestones.items():
        for seed, at in enumerate(steps):
            acc = np.where(STEPS >= (at if at is not None else np.inf), 1.0, 0.5)
            rows.append(pd.DataFrame({"member": member, "step": STEPS, "metric": "test_acc", "subtask": -1,
                                      "value": acc, "seed": seed, "arm": arm}))
            member += 1
    return pd.concat(rows, ignore_index=True)


def test_geometric_means_and_speedups_match_a_direct_computation():
    planted = {"baseline": [1000, 1600, 1200], "fast": [100, 200, 150], "same": [1000, 1600, 1200]}
    c = arms.compare(_frame(planted))
    assert c["baseline"] == "baseline" and list(c["arms"]) == list(planted) and c["budget"] == 2000
    for name, steps in planted.items():
        e = c["arms"][name]["95"]
        assert e["steps"] == steps and e["reached"] == 3 and not e["censored"]
        assert e["geomean"] == pytest.approx(np.exp(np.mean(np.log(steps))))
        lo, hi = e["interval"]
        assert min(steps) * (1 - 1e-9) <= lo <= e["geomean"] <= hi <= max(steps) * (1 + 1e-9)
    fast = c["arms"]["fast"]["95"]
    assert fast["speedup"] == pytest.approx(np.exp(np.mean(np.log(planted["baseline"])) - np.mean(np.log(planted["fast"]))))
    lo, hi = fast["speedup_interval"]
    assert lo <= fast["speedup"] <= hi and lo > 4  # every resample of these seeds is at least ~5x faster
    assert fast["speedup_bound"] is None
    assert c["arms"]["same"]["95"]["speedup"] == pytest.approx(1.0)


def test_censored_members_count_at_the_budget_and_bound_the_ratio():
    c = arms.compare(_frame({"baseline": [None, None, 1500], "filter": [300, 400, 500], "slow": [None, 800, 900]}))
    base = c["arms"]["baseline"]["95"]
    assert base["reached"] == 1 and base["censored"] and base["steps"] == [None, None, 1500]
    assert base["geomean"] == pytest.approx(np.exp(np.mean(np.log([2000, 2000, 1500]))))
    assert c["arms"]["filter"]["95"]["speedup_bound"] == "lower bound (baseline censored)"
    assert c["arms"]["slow"]["95"]["speedup_bound"] == "both censored: not a ratio"
    lines = arms.lines(c)
    assert len(lines) == 3 and "1/3" in lines[0] and "lower bound" in lines[1]


def test_pairwise_speedups_are_the_ratio_of_geometric_means_both_ways():
    c = arms.compare(_frame({"baseline": [1000, 1600, 1200], "wd": [400, 500, 600], "filter": [200, 250, 300]}))
    over_wd = c["pairwise"]["filter"]["over wd"]["95"]
    assert over_wd["speedup"] == pytest.approx(np.exp(np.mean(np.log([400, 500, 600])) - np.mean(np.log([200, 250, 300]))))
    assert over_wd["interval"][0] <= over_wd["speedup"] <= over_wd["interval"][1] and over_wd["bound"] is None
    assert c["pairwise"]["wd"]["over filter"]["95"]["speedup"] == pytest.approx(1 / over_wd["speedup"])
    assert c["pairwise"]["filter"]["over baseline"]["99"]["speedup"] == pytest.approx(c["arms"]["filter"]["99"]["speedup"])
    censored = arms.compare(_frame({"a": [100, None], "b": [300, 400]}))["pairwise"]
    assert censored["b"]["over a"]["95"]["bound"] == "lower bound (baseline censored)"
    assert censored["a"]["over b"]["95"]["bound"] == "upper bound (arm censored)"


def test_a_sweeps_jobs_become_arms_with_members_numbered_across_jobs():
    one, two = _frame({"x": [100, 200]}), _frame({"x": [300, 400]})
    table = pd.concat([one.assign(job="0", fix="none"), two.assign(job="1", fix="ortho")], ignore_index=True)
    frame = arms.sweep_frame(table.drop(columns="arm"), "fix")
    assert sorted(frame["member"].unique()) == [0, 1, 2, 3]
    c = arms.compare(frame)
    assert list(c["arms"]) == ["none", "ortho"] and c["arms"]["ortho"]["95"]["steps"] == [300, 400]
    with pytest.raises(ValueError, match="not a column"):
        arms.sweep_frame(table, "nope")


def test_other_levels_find_their_own_milestones():
    """Accuracy 0.5, then 0.85 at the first planted step and 1 at 1.5x it: at levels 0.8 and 0.9
    the milestones are those two steps (keys "80" and "90")."""
    rows = []
    for member, at in enumerate([200, 400, 600]):
        acc = np.where(STEPS >= 1.5 * at, 1.0, np.where(STEPS >= at, 0.85, 0.5))
        rows.append(pd.DataFrame({"member": member, "step": STEPS, "metric": "test_acc", "subtask": -1,
                                  "value": acc, "seed": member, "arm": "only"}))
    c = arms.compare(pd.concat(rows, ignore_index=True), levels=(0.8, 0.9))
    assert c["levels"] == [0.8, 0.9]
    assert c["arms"]["only"]["80"]["steps"] == [200, 400, 600]
    assert c["arms"]["only"]["90"]["steps"] == [300, 600, 900]
