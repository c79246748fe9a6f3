"""Omnigrok's LU analysis (toy_quanta.analysis.lu, toy_quanta.cli.lu) on synthetic metrics tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from toy_quanta.analysis import lu
from toy_quanta.cli import lu as lu_cli

W_GRID = np.array([5.0, 10, 20, 40, 80, 160, 320])
W0 = 20.0  # where the L bends
W_STAR = 33.0  # the planted minimum of the U (between grid points)


def l_shape(w):
    return 0.09 / (1 + (np.asarray(w) / W0) ** 4)


def u_shape(w):
    """Quadratic in log w with its minimum at W_STAR: the parabola fit recovers it exactly."""
    return 0.02 + 0.01 * (np.log(np.asarray(w)) - np.log(W_STAR)) ** 2


def _rows(member: int, steps, metrics: dict[str, np.ndarray], hyper: dict) -> pd.DataFrame:
    parts = [pd.DataFrame({"member": member, "step": steps, "metric": name, "subtask": -1, "value": values})
             for name, values in metrics.items()]
    frame = pd.concat(parts, ignore_index=True)
    for key, value in hyper.items():
        frame[key] = value
    return frame


def _hyper(seed, w=np.nan, init_scale=1.0, weight_decay=0.0) -> dict:
    return {"seed": seed, "task.alpha": np.nan, "task.D": pd.NA, "task.train_fraction": np.nan,
            "model.init_scale": init_scale, "optim.lr": 1e-3, "optim.weight_decay": weight_decay,
            "optim.fixed_norm": w}


def fixed_norm_frame(w_grid=W_GRID, seeds=3, diverged=(), noise=0.1) -> pd.DataFrame:
    """Members (w, seed) over 3 log steps; the final losses are the planted shapes times
    1 + noise * (seed - mean seed), so the mean over seeds is the shape exactly. `diverged`:
    member indices whose alive drops to 0 (and losses to NaN) at the end."""
    steps = np.array([0, 50, 100])
    parts, member = [], 0
    for w in w_grid:
        for seed in range(seeds):
            scale = 1 + noise * (seed - (seeds - 1) / 2)
            train, test = l_shape(w) * scale, u_shape(w) * scale
            dead = member in diverged
            metrics = {
                "train_loss": np.array([0.1, 0.5 * (0.1 + train), np.nan if dead else train]),
                "test_loss": np.array([0.1, 0.5 * (0.1 + test), np.nan if dead else test]),
                "train_acc": np.array([0.1, 0.5, 1 - train]),
                "test_acc": np.array([0.1, 0.5, 1 - test]),
                "param_norm": np.full(3, w),
                "alive": np.array([1.0, 1.0, 0.0 if dead else 1.0]),
            }
            parts.append(_rows(member, steps, metrics, _hyper(seed, w)))
            member += 1
    frame = pd.concat(parts, ignore_index=True)
    frame["metric"] = frame["metric"].astype("category")
    return frame


def ordinary_frame() -> pd.DataFrame:
    """An omnigrok_mnist-like run: init scales 1 and 8, weight decay pulling member 1's norm down
    from 150 to 25 (below 80 from step 1000, below 40 from step 10000)."""
    steps = np.array([0, 10, 100, 1000, 10000, 100000])
    parts = []
    for member, (scale, norm_L) in enumerate([(1.0, np.linspace(12, 27, 6)),
                                              (8.0, np.array([150.0, 140, 120, 60, 30, 25]))]):
        metrics = {"param_norm": norm_L, "train_loss": l_shape(norm_L), "test_loss": u_shape(norm_L),
                   "train_acc": 1 - l_shape(norm_L), "test_acc": 1 - u_shape(norm_L), "alive": np.ones(6)}
        hyper = _hyper(0, init_scale=scale, weight_decay=0.01)
        del hyper["optim.fixed_norm"]  # like the real omnigrok job, whose table predates the column
        parts.append(_rows(member, steps, metrics, hyper))
    return pd.concat(parts, ignore_index=True)


def job_dir(path: Path, frame: pd.DataFrame, name: str, task: str = "mnist", loss: str = "mse") -> Path:
    path.mkdir(parents=True)
    task_cfg = {"name": task, "loss": loss} if task == "mnist" else {"name": task, "p": 97}
    OmegaConf.save(OmegaConf.create({"name": name, "task": task_cfg, "optim": {"weight_decay": 0.0}}),
                   path / "config.yaml")
    frame.to_parquet(path / "metrics.parquet", index=False)
    return path


# --- final_by_norm ---------------------------------------------------------------------------

def test_final_by_norm_means_and_stds_over_seeds():
    table = lu.final_by_norm(fixed_norm_frame())
    np.testing.assert_array_equal(table["w"], W_GRID)
    assert (table["n"] == 3).all() and (table["n_diverged"] == 0).all()
    np.testing.assert_allclose(table["train_loss_mean"], l_shape(W_GRID), rtol=1e-12)
    np.testing.assert_allclose(table["test_loss_mean"], u_shape(W_GRID), rtol=1e-12)
    np.testing.assert_allclose(table["test_acc_mean"], 1 - u_shape(W_GRID), rtol=1e-12)
    # scales 0.9, 1.0, 1.1: sample std 0.1 x the shape
    np.testing.assert_allclose(table["train_loss_std"], 0.1 * l_shape(W_GRID), rtol=1e-9)


def test_final_by_norm_excludes_and_counts_diverged_members():
    # members 0..2 are w = 5; members 3, 4, 5 all of w = 10
    table = lu.final_by_norm(fixed_norm_frame(diverged=(0, 3, 4, 5)))
    first, second = table.iloc[0], table.iloc[1]
    assert (first["n"], first["n_diverged"]) == (2, 1)
    np.testing.assert_allclose(first["test_loss_mean"], u_shape(5.0) * 1.05)  # seeds 1 and 2: scales 1.0, 1.1
    assert (second["n"], second["n_diverged"]) == (0, 3) and np.isnan(second["test_loss_mean"])
    crit = lu.critical_norm(table["w"], table["test_loss_mean"])  # the empty w is skipped
    assert np.isclose(crit["w_c"], W_STAR)


def test_final_by_norm_takes_each_members_own_last_step():
    frame = fixed_norm_frame()
    # member 0 stopped logging after step 50: its final values are those of step 50
    frame = frame[~((frame["member"] == 0) & (frame["step"] == 100))]
    table = lu.final_by_norm(frame)
    expected = np.mean([0.5 * (0.1 + u_shape(5.0) * 0.9), u_shape(5.0) * 1.0, u_shape(5.0) * 1.1])
    np.testing.assert_allclose(table["test_loss_mean"].iloc[0], expected)


def test_final_by_norm_refuses_runs_without_enough_fixed_norms():
    with pytest.raises(ValueError, match="no member has a fixed norm"):
        lu.final_by_norm(ordinary_frame())
    with pytest.raises(ValueError, match="at least 3"):
        lu.final_by_norm(fixed_norm_frame(w_grid=[10.0, 20.0]))


def test_mixed_keys_names_hyperparameters_averaged_together_at_one_w():
    frame = fixed_norm_frame()
    assert lu.mixed_keys(frame) == []
    frame.loc[frame["seed"] == 1, "optim.lr"] = 3e-3
    assert lu.mixed_keys(frame) == ["optim.lr"]


# --- critical_norm, l_knee ---------------------------------------------------------------------

def test_critical_norm_recovers_a_planted_parabola_in_log_w():
    crit = lu.critical_norm(W_GRID, u_shape(W_GRID))
    assert np.isclose(crit["w_c"], W_STAR, rtol=1e-9)
    assert crit["w_grid_min"] == 40 and (crit["w_lo"], crit["w_hi"]) == (20, 80) and not crit["at_edge"]
    assert np.isclose(crit["test_loss_min"], u_shape(40.0))


def test_critical_norm_at_an_edge_of_the_grid():
    low = lu.critical_norm(W_GRID[::-1], np.linspace(1, 2, 7)[::-1])  # unsorted input; minimum at the smallest w
    assert low["at_edge"] and low["w_c"] == 5 and low["w_lo"] == 0 and low["w_hi"] == 10
    high = lu.critical_norm(W_GRID, np.linspace(2, 1, 7))
    assert high["at_edge"] and high["w_c"] == 320 and high["w_lo"] == 160 and high["w_hi"] == np.inf


def test_l_knee_on_a_planted_l():
    w_W = np.array([1.0, 2, 4, 8, 16, 32])
    loss_W = np.array([1.0, 0.5, 0.09, 0.011, 0.010, 0.012])
    assert lu.l_knee(w_W, loss_W, factor=2) == 8 and lu.l_knee(w_W, loss_W) == 4
    assert lu.l_knee(w_W, loss_W, factor=1.05) == 16  # the minimum itself
    # the first crossing: a loss creeping up again at the largest w does not move the knee
    assert lu.l_knee(w_W, np.r_[loss_W[:-1], 0.5], factor=2) == 8
    assert np.isnan(lu.l_knee(w_W, np.full(6, np.nan)))


def test_l_knee_ignores_a_noisy_floor_far_below_the_chance_level_loss():
    w_W = np.array([1.0, 2, 4, 8, 16, 32])
    loss_W = np.array([0.09, 0.05, 1e-5, 3e-8, 2e-6, 4e-7])
    assert lu.l_knee(w_W, loss_W, factor=2) == 4  # within 2 x max(3e-8, 1e-3 x 0.09)
    assert lu.l_knee(w_W, loss_W, factor=2, floor=0) == 8  # by the minimum alone: only 3e-8 itself is within 2 x 3e-8


# --- trajectory ------------------------------------------------------------------------------

def test_trajectory_of_one_member_and_the_default_member():
    frame = ordinary_frame()
    assert lu.default_member(frame) == 1  # init scale 8
    traj = lu.trajectory(frame, 1)
    assert list(traj.columns) == ["step", "param_norm", "train_loss", "test_loss", "train_acc", "test_acc"]
    np.testing.assert_array_equal(traj["param_norm"], [150, 140, 120, 60, 30, 25])
    np.testing.assert_allclose(traj["test_loss"], u_shape(traj["param_norm"]))
    assert lu.below_step(traj, 40.0) == 10000 and np.isnan(lu.below_step(traj, 20.0))
    with pytest.raises(ValueError, match="member 5"):
        lu.trajectory(frame, 5)


# --- write_lu and the CLI --------------------------------------------------------------------

def test_write_lu_writes_the_figure_and_table(tmp_path):
    traj = lu.trajectory(ordinary_frame(), 1)
    head = lu.write_lu(fixed_norm_frame(diverged=(0,)), tmp_path, "synthetic", traj, "ordinary")
    for name in ("lu.png", "lu.csv", "lu.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert len(pd.read_csv(tmp_path / "lu.csv")) == len(W_GRID)
    assert np.isclose(head["w_c"], W_STAR) and head["w_hi"] == 80 and head["n_diverged"] == 1
    assert head["trajectory"]["step_below_w_hi"] == 1000 and head["trajectory"]["initial_norm"] == 150
    json.dumps(head, allow_nan=False)  # strict JSON


def test_cli_prints_the_table_and_json_last_with_a_trajectory(tmp_path, capsys):
    run = job_dir(tmp_path / "fixed", fixed_norm_frame(), "lu_mnist")
    other = job_dir(tmp_path / "ordinary", ordinary_frame(), "omnigrok_mnist")
    lu_cli.main([str(run), "--trajectory", str(other), "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().out.strip().splitlines()
    head = json.loads(lines[-1])
    assert np.isclose(head["w_c"], W_STAR) and head["member"] == 1 and head["name"] == "lu_mnist"
    assert head["trajectory"]["final_norm"] == 25 and "omnigrok_mnist member 1" in head["trajectory"]["label"]
    assert any(line.lstrip().startswith("w_c = ") for line in lines)
    assert (tmp_path / "out" / "lu.png").is_file()
    lu_cli.main([str(run), "--trajectory", str(other), "--member", "0", "--out", str(tmp_path / "out0")])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["trajectory"]["initial_norm"] == 12


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        lu_cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("toy-quanta-lu: error: "), err
    return err


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    run = job_dir(tmp_path / "fixed", fixed_norm_frame(), "lu_mnist")
    ordinary = job_dir(tmp_path / "ordinary", ordinary_frame(), "omnigrok_mnist")
    modular = job_dir(tmp_path / "modular", ordinary_frame(), "grok", task="modular")
    cross_entropy = job_dir(tmp_path / "ce", ordinary_frame(), "omnigrok_ce", loss="cross_entropy")
    assert "not a directory" in _error([str(tmp_path / "missing")], capsys)
    (run / "metrics.parquet").rename(tmp_path / "aside.parquet")
    assert "metrics.parquet not found" in _error([str(run)], capsys)
    (tmp_path / "aside.parquet").rename(run / "metrics.parquet")
    assert "no member has a fixed norm" in _error([str(ordinary)], capsys)
    assert "task.name=modular" in _error([str(run), "--trajectory", str(modular)], capsys)
    assert "task.loss=cross_entropy" in _error([str(run), "--trajectory", str(cross_entropy)], capsys)
    assert "--member=7" in _error([str(run), "--trajectory", str(ordinary), "--member", "7"], capsys)
