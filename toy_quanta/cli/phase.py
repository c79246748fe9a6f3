"""`toy-quanta-phase RUN_DIR`: the grokking phase diagram of a job's ensemble (Liu et al. 2022).

    toy-quanta-phase outputs/DATE/TIME                        # axes from the run's `phase` config node
    toy-quanta-phase outputs/DATE/TIME --x optim.lr --y optim.weight_decay --threshold 0.95 --gap 2000

Classifies every member from its training and validation accuracy curves as comprehension,
grokking, memorisation or confusion (toy_quanta.analysis.phase), takes the majority phase over
the members at each (x, y) grid point, and writes phase.png, phase.csv (one row per member) and
phase_grid.csv (one row per grid point) into --out (default RUN_DIR/phase/DATE_TIME). Prints the
grid as a table and, last, one line of JSON. The writing: toy_quanta.analysis.phase.write_phase.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from toy_quanta import results
from toy_quanta.analysis import phase
from toy_quanta.errors import ConfigError
from toy_quanta.plots import phase as phase_plots

PROG = "toy-quanta-phase"


def grid_text(grid: pd.DataFrame, x: str, y: str) -> list[str]:
    """The grid as lines of text: rows y (largest first, as in the figure), columns x, the majority
    phase's initial; '*' where the members at a point disagree, '.' where none ran."""
    xs, ys = sorted(grid[x].dropna().unique()), sorted(grid[y].dropna().unique(), reverse=True)
    cells = {}
    for _, row in grid.iterrows():
        split = row[f"n_{row['phase']}"] < row["n_members"]
        cells[row[x], row[y]] = phase.INITIALS[row["phase"]] + ("*" if split else "")
    labels_y = [phase_plots.compact(v) for v in ys]
    width_y = max(len(y), *map(len, labels_y))
    labels_x = [phase_plots.compact(v) for v in xs]
    width = max(3, *map(len, labels_x))
    lines = [f"{y:>{width_y}}"]
    for label, yv in zip(labels_y, ys):
        lines.append(f"{label:>{width_y}} " + " ".join(f"{cells.get((xv, yv), '.'):>{width}}" for xv in xs))
    lines.append(f"{'':>{width_y}} " + " ".join(f"{lab:>{width}}" for lab in labels_x) + f"   <- {x}")
    lines.append("  " + ", ".join(f"{i} {p}" for p, i in phase.INITIALS.items()) + "; * members disagree")
    return lines


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a job's output directory (config.yaml, metrics.parquet)")
    ap.add_argument("--x", default=None, help="the horizontal axis, a member key such as optim.lr (default phase.x)")
    ap.add_argument("--y", default=None, help="the vertical axis, e.g. optim.weight_decay (default phase.y)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="accuracy that counts as reached, in (0, 1] "
                    f"(default phase.threshold, else {phase.DEFAULT_THRESHOLD})")
    ap.add_argument("--gap", type=float, default=None, help="largest validation-minus-training step gap that is "
                    f"still comprehension (default phase.gap_steps, else {phase.DEFAULT_GAP_STEPS})")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default RUN_DIR/phase/DATE_TIME)")
    return ap.parse_args(argv)


def _resolve(args: argparse.Namespace, settings: dict[str, Any]) -> tuple[str, str, float, float]:
    """x, y, threshold and gap: the command line's, else the run config's phase node, else defaults."""
    axes = []
    for name in ("x", "y"):
        key = getattr(args, name) or settings.get(name)
        if not key:
            raise ConfigError(f"--{name}", key, f"a member key such as optim.lr (required: {args.run_dir}/config.yaml "
                              f"sets no phase.{name})")
        axes.append(str(key))
    threshold = args.threshold if args.threshold is not None else settings.get("threshold", phase.DEFAULT_THRESHOLD)
    gap = args.gap if args.gap is not None else settings.get("gap_steps", phase.DEFAULT_GAP_STEPS)
    try:
        threshold, gap = phase.validate(threshold, gap)
    except ConfigError as exc:  # name the flag the user can change
        raise ConfigError({"threshold": "--threshold", "gap_steps": "--gap"}[exc.key], exc.value, exc.allowed) from None
    return axes[0], axes[1], threshold, gap


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    try:
        if not args.run_dir.is_dir():
            raise FileNotFoundError(f"RUN_DIR {args.run_dir} is not a directory")
        settings, name = phase.run_settings(args.run_dir)
        x, y, threshold, gap = _resolve(args, settings)
        metrics = args.run_dir / results.METRICS_FILE
        if not metrics.is_file():
            raise FileNotFoundError(f"{metrics} not found: the job has not logged any metrics yet")
        members, grid = phase.tables(pd.read_parquet(metrics), x, y, threshold, gap)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    out_dir = args.out or args.run_dir / "phase" / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    title = f"{name}: phases at accuracy {threshold:g}, gap {gap:g} steps"
    report = phase.write_tables(members, grid, out_dir, x, y, threshold, gap, title)
    counts = report["counts"]
    print(f"{name}: {report['n_members']} members to step {report['budget']}; accuracy threshold {threshold:g}, "
          f"comprehension gap <= {gap:g} steps")
    for line in grid_text(grid, x, y):
        print(f"  {line}")
    print("  members: " + ", ".join(f"{p} {n}" for p, n in counts.items()))
    print(f"output directory: {out_dir}")
    print(json.dumps({"x": x, "y": y, "threshold": threshold, "gap_steps": gap, "n_members": report["n_members"],
                      "counts": counts, "goldilocks": counts["comprehension"] + counts["grokking"],
                      "out_dir": str(out_dir)}))


if __name__ == "__main__":
    main()
