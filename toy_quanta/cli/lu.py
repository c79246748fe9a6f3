"""`toy-quanta-lu RUN_DIR`: Omnigrok's LU mechanism from a fixed-norm job.

    toy-quanta-lu outputs/DATE/TIME                                  # a fixed-norm job
    toy-quanta-lu outputs/DATE/TIME --trajectory outputs/OTHER/RUN   # overlay an ordinary run's norm

Final training loss against the fixed weight norm w (optim.fixed_norm) is L-shaped, test loss
U-shaped, best near a critical norm w_c (Liu, Michaud, Tegmark 2023). Writes lu.png, lu.csv (one
row per w: mean and std over seeds of the final losses and accuracies) and lu.json into
RUN_DIR/lu/DATE_TIME (or --out), prints the table and w_c, and one line of JSON last. With
--trajectory, an ordinary run of the same task and loss (by default its member with the largest
init scale) is overlaid: its losses and accuracies against its weight norm over training.
The analysis and the writing: toy_quanta.analysis.lu.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from toy_quanta.analysis.lu import DEFAULT_KNEE_FACTOR, final_by_norm, load_job, loss_label, pick_trajectory, write_lu
from toy_quanta.errors import ConfigError


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
        final_by_norm(frame)  # a run without fixed norms fails here, before any file is written
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
