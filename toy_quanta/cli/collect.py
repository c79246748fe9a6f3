"""`toy-quanta-collect DIR`: one tidy table from every job of a multirun directory.

Writes DIR/collected.parquet (every job's metrics, with `job` and the job's swept values as
columns), reports jobs that are missing (expected from the sweep but without a directory) or
failed, and prints a one-line JSON summary last. The collecting: toy_quanta.analysis.collect.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toy_quanta.analysis.collect import COLLECTED_FILE, collect
from toy_quanta.errors import RunFileError
from toy_quanta.files import atomic_write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toy-quanta-collect", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (multirun/NAME/DATE_TIME)")
    parser.add_argument("--out", type=Path, default=None, help=f"table path (default: DIR/{COLLECTED_FILE})")
    parser.add_argument("--arms", metavar="KEY", default=None,
                        help="also compare the jobs as arms named by their value of the swept KEY (e.g. collapse_fix): "
                             "DIR/arms.json, arms.csv and arms.png (analysis/arms.py)")
    parser.add_argument("--steps-to-learn", metavar="KEY", default=None,
                        help="also fit steps to learn against the swept KEY (task.n) per task.k, with the hidden-progress "
                             "numbers of each member's plateau: DIR/hidden_progress.json, .csv and .png "
                             "(analysis/hidden_progress.py)")
    parser.add_argument("--solvable", action="store_true",
                        help="also predict each skill's emergence with Nam et al.'s calibration (R_0 from the "
                             "initialisation, the rate from the sweep's task.n_tasks=1 jobs) and with ours (skill 1 of "
                             "the same network): DIR/solvable.json and solvable_calibrations.png (analysis/solvable.py)")
    args = parser.parse_args(argv)
    try:
        table, report = collect(args.sweep_dir)
    except (FileNotFoundError, RunFileError) as exc:
        print(f"toy-quanta-collect: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.sweep_dir / COLLECTED_FILE
    if len(table):
        atomic_write(out, lambda p: table.to_parquet(p, index=False))
        report["table"] = str(out)
    print(f"{report['jobs_completed']} completed, {report['jobs_failed']} failed, {report['jobs_missing']} missing"
          f" of {report['jobs_expected'] if report['jobs_expected'] is not None else '?'} jobs; {report['rows']} rows")
    for f in report["failed"]:
        print(f"  failed  job {f['job']}: {f['reason']}")
    for m in report["missing"]:
        print(f"  missing job {m}")
    for d in report["diverged"]:
        print(f"  diverged members {d['members']} of job {d['job']} (at steps {d['steps']})")
    if len(table) and "test_loss" in set(table["metric"]):
        final = table[(table["metric"] == "test_loss")]
        final = final[final["step"] == final.groupby("job")["step"].transform("max")]
        cols = ["job", "member", *[c for c in final.columns if "." in c or c == "seed"]]
        print(final[cols + ["value"]].rename(columns={"value": "final_test_loss"}).to_string(index=False))
    if args.arms is not None and len(table):
        from toy_quanta.analysis import arms  # the analyses (and JAX) load only when asked for

        try:
            comparison = arms.write_arms(arms.sweep_frame(table, args.arms), args.sweep_dir,
                                         f"{args.sweep_dir}: jobs by {args.arms}")
        except ValueError as exc:
            print(f"toy-quanta-collect: {exc}", file=sys.stderr)
            return 2
        atomic_write(args.sweep_dir / "arms.json", lambda p: p.write_text(json.dumps(comparison, indent=1)))
        print(f"arms by {args.arms}, steps to validation accuracy (geometric mean [95% CI] (reached/seeds), "
              f"speed-up over {comparison['baseline']}):")
        for line in arms.lines(comparison):
            print(f"  {line}")
        report["arms"] = str(args.sweep_dir / "arms.json")
    if args.steps_to_learn is not None and len(table):
        from toy_quanta.analysis import hidden_progress
        from toy_quanta.plots.hidden_progress import plot_hidden_progress

        key = args.steps_to_learn
        try:
            result, curves, members = hidden_progress.write(table, args.sweep_dir, key)
        except ValueError as exc:
            print(f"toy-quanta-collect: {exc}", file=sys.stderr)
            return 2
        plot_hidden_progress(curves, members, result, args.sweep_dir / hidden_progress.FILES["figure"],
                             f"{args.sweep_dir}: steps to learn against {key}")
        print(f"steps to learn against {key}, per k (geometric mean x/÷ geometric s.d. over seeds):")
        for line in hidden_progress.lines(result):
            print(f"  {line}")
        report["hidden_progress"] = str(args.sweep_dir / hidden_progress.FILES["json"])
    if args.solvable and len(table):
        from toy_quanta.analysis import solvable
        from toy_quanta.plots.solvable import plot_calibrations

        try:
            result, steps_L, R_MxLxK = solvable.write_calibrations(args.sweep_dir)
        except ValueError as exc:
            print(f"toy-quanta-collect: {exc}", file=sys.stderr)
            return 2
        plot_calibrations(result, steps_L, R_MxLxK, args.sweep_dir / solvable.SWEEP_FILES["figure"],
                          f"{args.sweep_dir.name}: both calibrations")
        for name, what in (("theirs", "their calibration (R_0 from the initialisation, the rate from the one-skill "
                                      "network)"), ("ours", "ours (skill 1 of the same network)")):
            print(f"{what}, measured / predicted emergence step (geometric mean over seeds [95% CI]):")
            for line in solvable.lines(result[name]["skills"]):
                print(f"  {line}")
        report["solvable"] = str(args.sweep_dir / solvable.SWEEP_FILES["json"])
    print(json.dumps(report, default=str))
    return 1 if report["jobs_failed"] or report["jobs_missing"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
