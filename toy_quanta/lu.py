"""`toy-quanta-lu RUN_DIR`: Omnigrok's LU mechanism from a fixed-norm job.

    toy-quanta-lu outputs/DATE/TIME                                  # a fixed-norm job
    toy-quanta-lu outputs/DATE/TIME --trajectory outputs/OTHER/RUN   # overlay an ordinary run's norm

Final training loss against the fixed weight norm w (optim.fixed_norm) is L-shaped, test loss
U-shaped, best near a critical norm w_c (Liu, Michaud, Tegmark 2023). Writes lu.png, lu.csv (one
row per w: mean and std over seeds of the final losses and accuracies) and lu.json into
RUN_DIR/lu/DATE_TIME (or --out), prints the table and w_c, and one line of JSON last. With
--trajectory, an ordinary run of the same task and loss (by default its member with the largest
init scale) is overlaid: its losses and accuracies against its weight norm over training.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from toy_quanta import lu_plots, results
from toy_quanta.analysis import lu
from toy_quanta.config import ConfigError

DEFAULT_KNEE_FACTOR = 10.0


def trajectory_summary(traj: pd.DataFrame, w_hi: float, label: str | None = None) -> dict[str, Any]:
    """The trajectory's first and last step and norm, and the first step its norm is below w_hi
    (None if never; at the first step if it starts below)."""
    norm_L = traj["param_norm"].to_numpy()
    return {"label": label, "initial_step": int(traj["step"].iloc[0]), "final_step": int(traj["step"].iloc[-1]),
            "initial_norm": float(norm_L[0]), "final_norm": float(norm_L[-1]),
            "step_below_w_hi": lu.below_step(traj, w_hi)}


def write_lu(frame: pd.DataFrame, out_dir: Path, title: str, trajectory: pd.DataFrame | None = None,
             trajectory_label: str | None = None, knee_factor: float = DEFAULT_KNEE_FACTOR,
             loss_label: str = "loss") -> dict[str, Any]:
    """lu.png, lu.csv and lu.json into out_dir from a fixed-norm job's metrics table; returns the
    JSON-safe headline (raises ValueError for a frame without at least 3 fixed norms)."""
    table = lu.final_by_norm(frame)
    crit = lu.critical_norm(table["w"], table["test_loss_mean"])
    knee = lu.l_knee(table["w"], table["train_loss_mean"], knee_factor)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lu_plots.plot_lu(table, crit, out_dir / "lu.png", title, trajectory, trajectory_label, knee=knee,
                     loss_label=loss_label)
    results.atomic_write(out_dir / "lu.csv", lambda p: table.to_csv(p, index=False))
    head = {"w": table["w"].tolist(), **crit, "l_knee": knee, "knee_factor": knee_factor,
            "n_members": int(table["n"].sum() + table["n_diverged"].sum()),
            "n_diverged": int(table["n_diverged"].sum()), "mixed_keys": lu.mixed_keys(frame),
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
    return OmegaConf.load(run_dir / "config.yaml"), pd.read_parquet(run_dir / results.METRICS_FILE)


def task_of(cfg: DictConfig) -> tuple[str, str | None]:
    """(task.name, task.loss); the loss is None for tasks with only one (cross-entropy)."""
    task = cfg.get("task", {})
    return str(task.get("name", "sparse_parity")), task.get("loss", None)


def loss_label(cfg: DictConfig) -> str:
    name, loss = task_of(cfg)
    if name == "teacher_student":
        return "MSE (targets standardised)"
    if name != "mnist":
        return "cross-entropy (nats)"
    return "MSE against one-hot targets" if loss == "mse" else "cross-entropy (nats)"


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
        member = lu.default_member(other)
    elif member not in members:
        raise ConfigError("--member", member, f"a member of the trajectory run ({', '.join(map(str, members))})")
    traj = lu.trajectory(other, member)
    if not np.isfinite(traj["param_norm"]).any():
        raise ConfigError("--trajectory", str(where), "a run that logged param_norm")
    row = other[other["member"] == member].iloc[0]
    details = [f"{k.split('.')[-1]} {row[k]:g}" for k in ("model.init_scale", "optim.weight_decay")
               if k in row.index and pd.notna(row[k])]
    label = f"{other_cfg.get('name', where.name)} member {member}" + (f" ({', '.join(details)})" if details else "")
    return traj, label, member


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="toy-quanta-lu", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a fixed-norm job's output directory (optim.fixed_norm per member)")
    ap.add_argument("--trajectory", type=Path, default=None,
                    help="an ordinary run of the same task whose weight-norm trajectory to overlay")
    ap.add_argument("--member", type=int, default=None,
                    help="the trajectory run's member (default: the one with the largest model.init_scale)")
    ap.add_argument("--knee-factor", type=float, default=DEFAULT_KNEE_FACTOR,
                    help="the L is flat from the smallest w on which the training loss stays within this many "
                         "times its minimum (or a thousandth of its maximum, if more) (2)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default RUN_DIR/lu/DATE_TIME)")
    return ap.parse_args(argv)


def _print_table(head: dict[str, Any], label: str) -> None:
    print(f"  {'w':>9} {'n':>3} {'div':>3}  {'train ' + label:>20}  {'test ' + label:>20}  "
          f"{'train acc':>9}  {'test acc':>8}")
    fmt = lambda x: "nan" if x is None else f"{x:.3g}"  # noqa: E731
    for r in head["rows"]:
        train = f"{fmt(r['train_loss_mean'])} ± {fmt(r['train_loss_std'])}"
        test = f"{fmt(r['test_loss_mean'])} ± {fmt(r['test_loss_std'])}"
        print(f"  {r['w']:>9.4g} {r['n']:>3} {r['n_diverged']:>3}  {train:>20}  {test:>20}  "
              f"{fmt(r['train_acc_mean']):>9}  {fmt(r['test_acc_mean']):>8}")


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    try:
        if not args.knee_factor >= 1:
            raise ConfigError("--knee-factor", args.knee_factor, "a number >= 1")
        if args.member is not None and args.trajectory is None:
            raise ConfigError("--member", args.member, "only with --trajectory (it picks that run's member)")
        cfg, frame = load_job(args.run_dir)
        lu.final_by_norm(frame)  # a run without fixed norms fails here, before any file is written
        traj = label = member = None
        if args.trajectory is not None:
            other_cfg, other = load_job(args.trajectory, "--trajectory")
            traj, label, member = pick_trajectory(cfg, other_cfg, other, args.member, args.trajectory)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"toy-quanta-lu: error: {exc}", file=sys.stderr)
        sys.exit(2)
    name = cfg.get("name", args.run_dir.name)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out_dir = args.out or args.run_dir / "lu" / stamp
    title = f"{name}: final loss and accuracy at fixed weight norm w (Omnigrok's LU)"
    head = write_lu(frame, out_dir, title, traj, label, args.knee_factor, loss_label(cfg))
    head = {"name": name, "run_dir": str(args.run_dir), **head,
            "trajectory_dir": None if args.trajectory is None else str(args.trajectory), "member": member,
            "out_dir": str(out_dir)}
    print(f"{name}: {head['n_members']} fixed-norm members at {len(head['w'])} norms, {head['n_diverged']} diverged")
    _print_table(head, "loss")
    edge = "  (at the edge of the grid: the minimum may lie beyond it)" if head["at_edge"] else ""
    w_hi = "inf" if head["w_hi"] is None else f"{head['w_hi']:.4g}"
    print(f"  w_c = {head['w_c']:.4g} in [{head['w_lo']:.4g}, {w_hi}] (grid minimum {head['w_grid_min']:.4g}, "
          f"test loss {head['test_loss_min']:.3g}){edge}")
    knee = "none" if head["l_knee"] is None else f"{head['l_knee']:.4g}"
    print(f"  knee of the L: w = {knee} (the smallest w whose training loss is within {args.knee_factor:g} x "
          "max(its minimum, 1e-3 x its maximum))")
    if head["mixed_keys"]:
        print(f"  note: members at one w differ in {', '.join(head['mixed_keys'])}; they are averaged together")
    if traj is not None:
        t = head["trajectory"]
        below = "never" if t["step_below_w_hi"] is None else f"from step {t['step_below_w_hi']:.0f}"
        print(f"  trajectory {label}: norm {t['initial_norm']:.4g} at step {t['initial_step']} -> "
              f"{t['final_norm']:.4g} at step {t['final_step']}; below w_hi = {w_hi} {below}")
    print(f"output directory: {out_dir}")
    print(json.dumps(head))


if __name__ == "__main__":
    main()
