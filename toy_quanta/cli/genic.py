"""`toy-quanta-genic SOURCE [SOURCE ...]`: monogenic against polygenic samples across model scales.

SOURCE is a multirun sweep directory (or several job directories) of toy-quanta, or one .npy file
holding a samples x scales array of per-sample losses (e.g. per-token losses of a family of
language models; --scales gives the G scales, default 1..G). For a sweep, every model of one seed
is evaluated on the same samples of its task: the scale is model.width where widths differ between
jobs (a params sweep), else task.D where the members' D differ (a data sweep).

Writes genic.json, curves.npz and genic.png into --out (default SOURCE/genic/ for a directory,
<stem>_genic/ beside a .npy file), prints a table, and ends with one line of JSON: the fractions.
The criterion is toy_quanta.analysis.genic's.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from toy_quanta.analysis import genic
from toy_quanta.analysis.genic import (FLAT, LABELS, MIN_DROP, N_SAMPLES, SWEEP_LEARNED_BELOW, THRESHOLD, WINDOW,
                                       GenicResult)
from toy_quanta.results import atomic_write, json_safe, write_json


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy-quanta-genic", description=__doc__.splitlines()[0])
    parser.add_argument("sources", type=Path, nargs="+", metavar="SOURCE",
                        help="a multirun sweep directory, job directories, or one .npy file (samples x scales)")
    parser.add_argument("--scales", type=Path, default=None,
                        help="with a .npy SOURCE: a .npy of the G scales (default 1..G)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default SOURCE/genic, or <stem>_genic beside a .npy)")
    parser.add_argument("--n-samples", type=int, default=N_SAMPLES,
                        help=f"samples drawn from the sweep's task (default {N_SAMPLES})")
    parser.add_argument("--seed", type=int, default=None,
                        help="the seed of the models to compare (default: the smallest present)")
    parser.add_argument("--min-drop", type=float, default=MIN_DROP,
                        help=f"smallest fall that is not flat, in the curves' units (default {MIN_DROP})")
    parser.add_argument("--window", type=int, default=WINDOW,
                        help=f"adjacent scale intervals that hold a sharp fall (default {WINDOW})")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"sharpness from which a curve is monogenic (default {THRESHOLD})")
    parser.add_argument("--learned-below", default=None, metavar="X|none",
                        help="flat unless the loss is below X at some but not every scale (default: "
                             f"{SWEEP_LEARNED_BELOW} bits for a sweep, none for a .npy)")
    parser.add_argument("--examples", type=int, default=6, help="example curves per class in the figure (default 6)")
    return parser


def _learned_below(args: argparse.Namespace, is_npy: bool) -> float | None:
    """--learned-below: a number, none, or the default (SWEEP_LEARNED_BELOW for a sweep, none for a .npy)."""
    if args.learned_below is None:
        return None if is_npy else SWEEP_LEARNED_BELOW
    try:
        return None if args.learned_below.lower() == "none" else float(args.learned_below)
    except ValueError:
        raise ValueError(f"--learned-below={args.learned_below} is not allowed: a number, or none") from None


def _check(args: argparse.Namespace) -> float | None:
    """Every argument, before anything is loaded or evaluated (ValueError naming it); --learned-below."""
    sources, is_npy = args.sources, args.sources[0].suffix == ".npy"
    if len(sources) > 1 and any(s.suffix == ".npy" for s in sources):
        raise ValueError("give one .npy file, or sweep/job directories, not both or several .npy files")
    for s in sources:
        if not s.exists():
            raise ValueError(f"{s}: no such file or directory")
    if args.scales is not None and not is_npy:
        raise ValueError("--scales goes with a .npy SOURCE (a sweep's scales come from its configs)")
    if args.n_samples < 1:
        raise ValueError(f"--n-samples={args.n_samples} is not allowed: an integer >= 1")
    if args.examples < 0:
        raise ValueError(f"--examples={args.examples} is not allowed: an integer >= 0")
    learned_below = _learned_below(args, is_npy)
    genic.check_params(args.min_drop, args.window, args.threshold, learned_below=learned_below)
    return learned_below


def plot(result: GenicResult, loss_NxG: np.ndarray, path: Path, scale_label: str, loss_label: str, n_examples: int,
         subtask_N: np.ndarray | None = None) -> None:
    """Example curves of each class (spread over the class) and the histogram of sharpness."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    scales = result.scales_G
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    for ax, label in zip(axes.ravel()[:3], LABELS):
        idx = np.flatnonzero(result.labels_N == label)
        # Examples evenly spread over the class: by sharpness, or for flat curves by mean loss (from
        # always learned to never learned).
        key = loss_NxG[idx].mean(axis=1) if label == FLAT else result.sharpness_N[idx]
        ranked = idx[np.argsort(key, kind="stable")]
        shown = ranked[np.unique(np.linspace(0, len(idx) - 1, min(n_examples, len(idx))).round().astype(int))]
        colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(shown), 1)))
        for c, s in zip(colors, shown):
            tag = f"sample {s}" + (f", subtask {subtask_N[s] + 1}" if subtask_N is not None else "")
            if label != FLAT:
                tag += f", sharpness {result.sharpness_N[s]:.2f}"
            ax.plot(scales, loss_NxG[s], "o-", color=c, ms=3, lw=1.2, label=tag if len(shown) <= 8 else None)
        if not len(idx):
            ax.text(0.5, 0.5, f"no {label} samples", ha="center", va="center", transform=ax.transAxes)
        elif len(shown) <= 8:
            ax.legend(fontsize=7)
        share = len(idx) / len(result.labels_N)
        ax.set(title=f"{label}: {len(idx)} samples ({share:.1%}), {len(shown)} shown", xlabel=scale_label,
               ylabel=loss_label)
        if scales.min() > 0:
            ax.set_xscale("log")
        ax.set_xlim(scales[0], scales[-1])
    ax = axes[1, 1]
    sharp = result.sharpness_N[result.labels_N != FLAT]
    ax.hist(sharp, bins=np.linspace(0, 1, 41), color="0.5")
    ax.axvline(result.threshold, color="r", ls="--", label=f"threshold {result.threshold:g}")
    uniform = result.window / (len(scales) - 1)
    ax.axvline(uniform, color="b", ls=":", label=f"a decline uniform across the scales ({uniform:.2f})")
    ax.set(xlabel=f"sharpness (largest fall within {result.window} interval(s) / total fall)", ylabel="samples",
           title=f"sharpness of the {len(sharp)} non-flat samples", xlim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.suptitle("\n".join(textwrap.wrap(result.criterion, 150)), fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:  # a file object: np.savez would add .npz to the temporary name
        np.savez(fh, **arrays)


def write(out: Path, report: dict[str, Any], result: GenicResult, curves: genic.Curves, examples: int) -> None:
    """genic.json, curves.npz and genic.png into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "genic.json", json_safe(report))
    arrays = {"loss_SxK": curves.loss_NxG, "scales_K": result.scales_G, "labels_S": result.labels_N,
              "sharpness_S": result.sharpness_N, "fall_S": result.fall_N}
    if curves.subtask_N is not None:
        arrays["subtask_S"] = curves.subtask_N
    atomic_write(out / "curves.npz", lambda p: _savez(p, arrays))
    plot(result, curves.loss_NxG, out / "genic.png", genic.SCALE_LABELS[curves.scale_kind],
         "loss (bits)" if curves.unit == "bits" else "loss", examples, curves.subtask_N)


def _error(msg: str) -> int:
    print(f"toy-quanta-genic: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    src = args.sources[0]
    try:
        learned_below = _check(args)
        curves, result, report = genic.analyse(args.sources, args.scales, args.n_samples, args.seed,
                                               min_drop=args.min_drop, window=args.window, threshold=args.threshold,
                                               learned_below=learned_below)
    except (OSError, ValueError) as exc:
        return _error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    out = args.out or (src.parent / f"{src.stem}_genic" if src.suffix == ".npy" else src / "genic")
    write(out, report, result, curves, args.examples)
    print("\n".join([*genic.report_lines(result, report), f"output directory: {out}"]))
    print(json.dumps(json_safe(genic.headline(result, curves.scale_kind, out)), allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
