"""Grokking phase diagrams (toy_quanta.analysis.phase, toy_quanta.plots.phase, toy_quanta.cli.phase): classification of planted accuracy curves, the grid, the files and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from toy_quanta.analysis import phase
from toy_quanta.cli import phase as phase_cli
from toy_quanta.plots import phase as phase_plots

STEPS_L = np.arange(0, 5001, 100)
NEVER = None


def curve(at: float | None, level: float = 1.0) -> np.ndarray:
    """(L,) accuracy: 0.1 before step `at`, `level` from it on (never if `at` is None)."""
    acc_L = np.full(len(STEPS_L), 0.1)
    if at is not None:
        acc_L[STEPS_L >= at] = level
    return acc_L


# name: (train reaches at, validation reaches at, expected phase at threshold 0.9 and gap 1000)
PLANTED = {
    "quick": (1000, 1500, "comprehension"),
    "boundary": (1000, 2000, "comprehension"),  # gap exactly gap_steps
    "just_over": (1000, 2100, "grokking"),
    "late": (500, 4500, "grokking"),
    "val_first": (2000, 1000, "comprehension"),  # negative gap: nothing was delayed
    "memorised": (800, NEVER, "memorisation"),
    "val_only": (NEVER, 1000, "confusion"),  # never fitted its training set
    "nothing": (NEVER, NEVER, "confusion"),
}


def planted_LxM() -> tuple[np.ndarray, np.ndarray]:
    train_LxM = np.stack([curve(t) for t, _, _ in PLANTED.values()], axis=1)
    val_LxM = np.stack([curve(v) for _, v, _ in PLANTED.values()], axis=1)
    return train_LxM, val_LxM


def test_classify_planted_curves():
    out = phase.classify(STEPS_L, *planted_LxM())
    assert list(out["phase"]) == [p for _, _, p in PLANTED.values()]
    nan = lambda v: np.nan if v is None else float(v)  # noqa: E731
    np.testing.assert_array_equal(out["steps_train"], [nan(t) for t, _, _ in PLANTED.values()])
    np.testing.assert_array_equal(out["steps_val"], [nan(v) for _, v, _ in PLANTED.values()])
    np.testing.assert_array_equal(out["gap"], [nan(v) - nan(t) if None not in (t, v) else np.nan
                                                for t, v, _ in PLANTED.values()])


def test_accuracy_exactly_at_the_threshold_counts_and_nan_never_does():
    train_LxM = np.stack([curve(1000, 0.9), np.full(len(STEPS_L), np.nan)], axis=1)
    out = phase.classify(STEPS_L, train_LxM, train_LxM)
    assert list(out["phase"]) == ["comprehension", "confusion"]
    assert out["steps_train"][0] == 1000 and np.isnan(out["steps_train"][1])


def test_a_single_curve_is_one_member():
    out = phase.classify(STEPS_L, curve(100), curve(3000))
    assert out["phase"].shape == (1,) and out["phase"][0] == "grokking"


def test_threshold_and_gap_change_the_classification():
    train_LxM = np.stack([curve(1000), curve(1000), curve(1000, 0.92)], axis=1)
    val_LxM = np.stack([curve(1500), curve(1000, 0.92), curve(1000, 0.92)], axis=1)
    assert list(phase.classify(STEPS_L, train_LxM, val_LxM)["phase"]) == ["comprehension"] * 3
    assert list(phase.classify(STEPS_L, train_LxM, val_LxM, gap_steps=300)["phase"])[0] == "grokking"
    assert list(phase.classify(STEPS_L, train_LxM, val_LxM, threshold=0.95)["phase"]) == [
        "comprehension", "memorisation", "confusion"]


@pytest.mark.parametrize("threshold, gap, key", [(0, 1000, "threshold"), (1.5, 1000, "threshold"),
                                                 (float("nan"), 1000, "threshold"), ("high", 1000, "threshold"),
                                                 (0.9, -1, "gap_steps"), (0.9, None, "gap_steps")])
def test_bad_threshold_or_gap_names_the_argument(threshold, gap, key):
    with pytest.raises(ValueError, match=rf"{key}=.*not allowed"):
        phase.classify(STEPS_L, curve(0), curve(0), threshold, gap)


def test_threshold_one_and_gap_zero_are_allowed():
    out = phase.classify(STEPS_L, curve(1000), curve(1100), threshold=1.0, gap_steps=0)
    assert out["phase"][0] == "grokking"


# A 2 x 2 grid (lr x weight decay, wd 0 included), 2 seeds each, with planted phases.
GRID = {  # (lr, wd): per seed (train at, validation at)
    (1e-3, 0.0): [(500, NEVER), (500, NEVER)],
    (1e-2, 0.0): [(500, 4000), (500, NEVER)],  # grokking and memorisation tie: grokking comes first
    (1e-3, 1.0): [(500, 3000), (500, 3500)],
    (1e-2, 1.0): [(500, 700), (NEVER, NEVER)],
}


def grid_frame() -> pd.DataFrame:
    """A tidy metrics table as the job writes it, for the GRID members."""
    parts, member = [], 0
    for (lr, wd), seeds in GRID.items():
        for seed, (t, v) in enumerate(seeds):
            for metric, acc_L in (("train_acc", curve(t)), ("test_acc", curve(v)), ("train_loss", 1 - curve(t))):
                parts.append(pd.DataFrame({
                    "member": np.int32(member), "step": STEPS_L, "metric": metric, "subtask": np.int32(-1),
                    "value": acc_L, "seed": seed, "task.alpha": np.nan,
                    "task.D": pd.array([pd.NA] * len(STEPS_L), "Int64"),
                    "task.train_fraction": 0.5, "model.init_scale": 1.0, "optim.lr": lr, "optim.weight_decay": wd,
                    "optim.fixed_norm": np.nan}))
            member += 1
    frame = pd.concat(parts, ignore_index=True)
    frame["metric"] = frame["metric"].astype("category")
    return frame


def test_member_phases_one_row_per_member():
    members = phase.member_phases(grid_frame(), "optim.lr", "optim.weight_decay")
    assert len(members) == 8 and list(members["member"]) == list(range(8))
    for col in ("seed", "optim.lr", "optim.weight_decay", "phase", "steps_train", "steps_val", "gap", "train_acc",
                "val_acc"):
        assert col in members.columns
    assert list(members["phase"]) == ["memorisation", "memorisation", "grokking", "memorisation", "grokking",
                                      "grokking", "comprehension", "confusion"]
    assert list(members["seed"]) == [0, 1] * 4
    assert members["train_acc"].iloc[0] == 1.0 and members["val_acc"].iloc[0] == pytest.approx(0.1)
    assert (members["budget"] == 5000).all()


def test_grid_majority_ties_and_counts():
    grid = phase.grid_table(phase.member_phases(grid_frame(), "optim.lr", "optim.weight_decay"),
                            "optim.lr", "optim.weight_decay")
    assert len(grid) == 4
    got = {(r["optim.lr"], r["optim.weight_decay"]): r for _, r in grid.iterrows()}
    assert got[(1e-3, 0.0)]["phase"] == "memorisation" and got[(1e-3, 0.0)]["n_memorisation"] == 2
    assert got[(1e-2, 0.0)]["phase"] == "grokking"
    assert (got[(1e-2, 0.0)]["n_grokking"], got[(1e-2, 0.0)]["n_memorisation"]) == (1, 1)
    assert got[(1e-2, 1.0)]["phase"] == "comprehension"  # comprehension beats confusion in a tie
    assert got[(1e-3, 1.0)]["median_steps_val"] == 3250  # the median over seeds
    assert got[(1e-2, 1.0)]["median_steps_val"] == 700  # over the members that reached it
    assert np.isnan(got[(1e-3, 0.0)]["median_steps_val"])
    n_cols = [f"n_{p}" for p in phase.PHASES]
    assert (grid[n_cols].sum(axis=1) == grid["n_members"]).all() and grid["n_members"].sum() == 8


def test_grid_majority_of_three():
    members = pd.DataFrame({"a": [1, 1, 1, 2], "b": [0, 0, 0, 0], "steps_val": [1.0, 2.0, np.nan, np.nan],
                            "gap": np.nan, "phase": ["memorisation", "grokking", "memorisation", "confusion"]})
    grid = phase.grid_table(members, "a", "b")
    assert list(grid["phase"]) == ["memorisation", "confusion"] and list(grid["n_members"]) == [2 + 1, 1]


@pytest.mark.parametrize("x, y, key", [("optim.nope", "optim.weight_decay", "optim.nope"),
                                       ("optim.lr", "model.init_scale", "model.init_scale"),  # one value only
                                       ("task.alpha", "optim.lr", "task.alpha"),  # all NaN: does not apply
                                       ("value", "optim.lr", "value"),  # not a hyperparameter
                                       ("optim.lr", "optim.lr", "optim.lr")])
def test_bad_axis_names_the_key(x, y, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        phase.member_phases(grid_frame(), x, y)


def test_missing_accuracy_metric_is_a_clear_error():
    frame = grid_frame()
    with pytest.raises(ValueError, match="test_acc"):
        phase.member_phases(frame[frame["metric"] != "test_acc"], "optim.lr", "optim.weight_decay")


def test_compact_tick_labels():
    assert [phase_plots.compact(v) for v in (0, 1e-3, 2.5e-4, 0.01, 0.3, 10, 1e5)] == [
        "0", "1e-3", "2.5e-4", "1e-2", "0.3", "10", "1e5"]
    assert [phase_plots.steps_label(v) for v in (800, 1200, 15000, 2e6)] == ["800", "1.2k", "15k", "2M"]


def test_write_phase_writes_files_and_a_json_safe_dict(tmp_path):
    report = phase.write_phase(grid_frame(), tmp_path / "out", "optim.lr", "optim.weight_decay", title="t")
    for name in ("phase.png", "phase.csv", "phase_grid.csv"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    json.dumps(report, allow_nan=False)
    assert (report["x"], report["y"], report["threshold"], report["gap_steps"]) == (
        "optim.lr", "optim.weight_decay", 0.9, 1000)
    assert report["counts"] == {"comprehension": 1, "grokking": 3, "memorisation": 3, "confusion": 1}
    assert len(report["grid"]) == 4 and report["grid"][0]["median_steps_val"] is None
    assert len(pd.read_csv(tmp_path / "out" / "phase.csv")) == 8
    assert len(pd.read_csv(tmp_path / "out" / "phase_grid.csv")) == 4


def job_dir(tmp_path: Path, phase_node: dict | None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"name": "grid", "task": {"name": "modular"}}
    if phase_node is not None:
        cfg["phase"] = phase_node
    OmegaConf.save(OmegaConf.create(cfg), run / "config.yaml")
    grid_frame().to_parquet(run / "metrics.parquet", index=False)
    return run


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        phase_cli.main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


NODE = {"x": "optim.lr", "y": "optim.weight_decay", "threshold": 0.9, "gap_steps": 1000}


def test_cli_uses_the_config_node_and_prints_json_last(tmp_path, capsys):
    run = job_dir(tmp_path, NODE)
    code, out, err = run_cli([str(run), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    head = json.loads(out.strip().splitlines()[-1])
    assert head["counts"] == {"comprehension": 1, "grokking": 3, "memorisation": 3, "confusion": 1}
    assert (head["x"], head["y"], head["out_dir"]) == ("optim.lr", "optim.weight_decay", str(tmp_path / "o"))
    assert "C comprehension" in out and (tmp_path / "o" / "phase.png").is_file()


def test_cli_gap_from_config_and_from_the_command_line(tmp_path, capsys):
    run = job_dir(tmp_path, {**NODE, "gap_steps": 0, "threshold": 0.9})
    _, out, _ = run_cli([str(run), "--out", str(tmp_path / "a")], capsys)
    # the comprehension member's 200-step gap is grokking when no gap is allowed
    assert json.loads(out.splitlines()[-1])["counts"]["comprehension"] == 0
    _, out, _ = run_cli([str(run), "--gap", "5000", "--out", str(tmp_path / "b")], capsys)
    assert json.loads(out.splitlines()[-1])["counts"] == {"comprehension": 4, "grokking": 0, "memorisation": 3,
                                                         "confusion": 1}


def test_cli_old_run_needs_x_and_y(tmp_path, capsys):
    run = job_dir(tmp_path, None)
    code, _, err = run_cli([str(run)], capsys)
    assert code == 2 and err.count("\n") == 1 and "--x" in err
    code, out, _ = run_cli([str(run), "--x", "optim.weight_decay", "--y", "optim.lr", "--out", str(tmp_path / "o")],
                           capsys)
    assert code == 0 and json.loads(out.splitlines()[-1])["x"] == "optim.weight_decay"


@pytest.mark.parametrize("extra, word", [(["--x", "optim.nope"], "optim.nope"), (["--threshold", "1.5"], "--threshold"),
                                         (["--gap", "-3"], "--gap")])
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, capsys, extra, word):
    code, out, err = run_cli([str(job_dir(tmp_path, NODE)), *extra], capsys)
    assert code == 2 and out == ""
    assert err.startswith("toy-quanta-phase: error: ") and err.count("\n") == 1 and word in err


def test_cli_missing_dir_and_missing_metrics(tmp_path, capsys):
    code, _, err = run_cli([str(tmp_path / "absent")], capsys)
    assert code == 2 and err.count("\n") == 1 and "not a directory" in err
    run = job_dir(tmp_path, NODE)
    (run / "metrics.parquet").unlink()
    code, _, err = run_cli([str(run)], capsys)
    assert code == 2 and err.count("\n") == 1 and "metrics.parquet" in err


def test_module_entry_point_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "toy_quanta.cli.phase", str(tmp_path / "absent")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("toy-quanta-phase: error:") and proc.stderr.count("\n") == 1


def test_diagnose_labels_planted_curves_by_the_stated_rule():
    """One planted member per label, at threshold 0.9 and gap 1000 over steps 0..5000."""
    from toy_quanta.analysis.phase import DIAGNOSES, diagnose, diagnosis_rule

    steps = np.arange(0, 5001, 500)
    up_at = lambda s: (steps >= s).astype(float)  # noqa: E731
    curves = {  # (train, val)
        "generalised": (up_at(500), up_at(1000)),
        "grokked": (up_at(500), up_at(3000)),
        "memorised": (up_at(500), 0.3 * up_at(1000)),
        "overfitting": (up_at(500), np.where((steps >= 1000) & (steps < 3000), 0.6, 0.05)),
        "not fitted": (0.5 * up_at(500), 0.4 * up_at(500)),
    }
    train = np.stack([c[0] for c in curves.values()], 1)
    val = np.stack([c[1] for c in curves.values()], 1)
    out = diagnose(steps, train, val, 0.9, 1000)
    assert list(out["diagnosis"]) == list(curves) and set(curves) == set(DIAGNOSES)
    np.testing.assert_array_equal(out["delay"][:2], [500, 2500])
    assert np.isnan(out["delay"][2:]).all()
    # a grokked run that later loses more than 0.1 of its validation accuracy is overfitting
    late_drop = up_at(3000) - 0.2 * up_at(4500)
    assert diagnose(steps, up_at(500), late_drop, 0.9, 1000)["diagnosis"][0] == "overfitting"
    assert "0.9" in diagnosis_rule(0.9, 1000) and "1000" in diagnosis_rule(0.9, 1000)


def test_the_diagnosis_scales_the_threshold_by_what_the_task_can_reach():
    """A task whose perfect model reaches 0.84 (an induction sequence's unpredictable first copy): a
    member at 0.83 has fitted it, at threshold 0.9 x 0.84; validation before training is no delay."""
    from toy_quanta.analysis.phase import diagnose, diagnosis_rule

    steps = np.arange(0, 5001, 500)
    up_at = lambda s, top: top * (steps >= s).astype(float)  # noqa: E731
    train, val = np.stack([up_at(500, 0.83), up_at(1000, 0.83)], 1), np.stack([up_at(3000, 0.83), up_at(500, 0.83)], 1)
    plain = diagnose(steps, train, val, 0.9, 1000)
    assert list(plain["diagnosis"]) == ["not fitted", "not fitted"]
    reach = {"train_acc": 0.84, "test_acc": 0.84}
    scaled = diagnose(steps, train, val, 0.9, 1000, reachable=reach)
    assert list(scaled["diagnosis"]) == ["grokked", "generalised"]
    assert scaled["delay"][0] == 2500 and np.isnan(scaled["delay"][1])  # validation first: no delay, not -500
    assert scaled["peak_val"][0] == pytest.approx(0.83)
    rule = diagnosis_rule(0.9, 1000, reachable=reach)
    assert "0.756" in rule and "0.84" in rule and rule != diagnosis_rule(0.9, 1000)
