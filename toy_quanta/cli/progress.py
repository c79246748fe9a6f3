"""`toy-quanta-progress RUN_DIR`: the mechanism of a grokking run, over training.

    toy-quanta experiment=grok_modadd_progress   # saves snapshots.msgpack (train.snapshots=true)
    toy-quanta-progress outputs/DATE/TIME        # -> outputs/DATE/TIME/progress/DATE_TIME/

For one member, at every log step it saved: the Fourier norms of the residue embeddings, their
Gini coefficient, the key frequencies (those of the final embedding), the restricted loss (the
logits with only the key frequencies' directions, on every pair) and the excluded loss (the
logits without them, on the training pairs), RQI and the ring's RQI, and the weight norm
(Nanda et al. 2023; Liu et al. 2022). Writes progress.png, fourier.png, embedding_ring.png,
progress.csv and report.json, and prints one line of JSON last. A run without snapshots gets
the same measures for its final parameters only. The measures: toy_quanta.analysis.progress.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from toy_quanta import results
from toy_quanta.analysis.progress import DEFAULT_KEY_FACTOR, DEFAULT_TOL, load, measure, write
from toy_quanta.errors import ConfigError, RunFileError


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="toy-quanta-progress", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a grokking job's output directory")
    ap.add_argument("--member", type=int, default=0, help="which member of the job's ensemble (default 0)")
    ap.add_argument("--tol", type=float, default=DEFAULT_TOL, help="RQI's tolerance on the squared distance (0.01)")
    ap.add_argument("--key-factor", type=float, default=DEFAULT_KEY_FACTOR,
                    help="a key frequency's squared norm is at least this many times the median's (4)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default RUN_DIR/progress/DATE_TIME)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    try:
        if not args.tol > 0:
            raise ConfigError("--tol", args.tol, "a positive number")
        if not args.key_factor > 0:
            raise ConfigError("--key-factor", args.key_factor, "a positive number")
        if not args.run_dir.is_dir():
            raise FileNotFoundError(f"RUN_DIR {args.run_dir} is not a directory")
        cfg, steps, params, over_training = load(args.run_dir)
        progress = measure(cfg, steps, params, args.member, args.tol, args.key_factor)
    except (ConfigError, FileNotFoundError, RunFileError) as exc:
        print(f"toy-quanta-progress: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if not over_training:
        progress.notes.append("no snapshots.msgpack: final parameters only (re-run with train.snapshots=true)")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out_dir = args.out or args.run_dir / "progress" / stamp
    head = write(progress, out_dir)
    keys = ", ".join(map(str, head["key_frequencies"])) or "none"
    print(f"{head['name']} member {args.member}: {head['n_snapshots']} snapshots to step {head['steps']}")
    print(f"  key frequencies {keys} ({head['key_share']:.0%} of the embedding's Fourier power); Gini {head['gini']:.3f}, "
          f"within 10% of it from step {head['gini_90pct_step']}")
    if head["restricted_loss"] is not None:
        print(f"  final loss (nats): train {head['train_loss']:.3g}, test {head['test_loss']:.3g}, restricted "
              f"{head['restricted_loss']:.3g} (all pairs), excluded {head['excluded_loss']:.3g} (training pairs)")
        print(f"  RQI {head['rqi']:.3f}, ring RQI {head['ring_rqi']:.3f} (tolerance {head['tol']:g})")
    for note in head["notes"]:
        print(f"  note: {note}")
    print(f"output directory: {out_dir}")
    print(json.dumps(results.json_safe(head)))


if __name__ == "__main__":
    main()
