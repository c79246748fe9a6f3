"""`toy-quanta-figures DIR [DIR ...]`: a job's figures drawn from its files, when it ran without
them (a multirun's jobs do by default: train.figures) or to draw them again.

A job directory gets its task's figures (curves.png and the task's others) from metrics.parquet,
summary.json and checkpoint.msgpack; a sweep directory gets every job's and the sweep's one
figure, sweep.png (--sweep-only: that one alone).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from toy_quanta.errors import ConfigError, RunFileError

SWEEP_FIGURE = "sweep.png"


def draw_job(job_dir: Path) -> None:
    """The job's figures, as it would have drawn them at its end."""
    from toy_quanta import registry, results
    from toy_quanta.job import describe

    cfg, result = results.load_result(job_dir)
    registry.task(cfg.task.name).figures(result, cfg, Path(job_dir), f"{cfg.name}: {describe(cfg)}")


def draw_sweep(sweep_dir: Path) -> Path:
    """sweep.png of a multirun directory, from every job's metrics (toy-quanta-collect's table)."""
    from toy_quanta.analysis.collect import collect
    from toy_quanta.plots.sweep import plot_sweep

    table, _ = collect(sweep_dir)
    if not len(table):
        raise RunFileError(sweep_dir, "no job with a metrics table", "a multirun directory whose jobs have run")
    return Path(plot_sweep(table, Path(sweep_dir) / SWEEP_FIGURE, title=str(sweep_dir)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toy-quanta-figures", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", type=Path, nargs="+", help="job directories, or multirun (sweep) directories")
    parser.add_argument("--sweep-only", action="store_true", help="a sweep directory: only sweep.png")
    args = parser.parse_args(argv)
    from toy_quanta.analysis.collect import job_dirs

    for folder in args.dirs:
        try:
            if (folder / "config.yaml").is_file():
                draw_job(folder)
                print(f"{folder}: figures drawn")
                continue
            jobs = job_dirs(folder) if folder.is_dir() else []
            if not jobs:
                raise FileNotFoundError(f"{folder}: neither a job directory (config.yaml) nor a multirun directory")
            for job in [] if args.sweep_only else jobs:
                if (job / "metrics.parquet").is_file():
                    draw_job(job)
            print(f"{folder}: {'' if args.sweep_only else f'{len(jobs)} jobs drawn, '}{draw_sweep(folder)}")
        except (ConfigError, FileNotFoundError, RunFileError) as exc:
            print(f"toy-quanta-figures: error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
