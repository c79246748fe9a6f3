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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from omegaconf import OmegaConf

from toy_quanta.analysis.genic import (FLAT, LABELS, MIN_DROP, MONOGENIC, POLYGENIC, THRESHOLD, WINDOW, GenicResult,
                                       by_group, check_params, classify, validate_curves)
from toy_quanta.analysis.collect import job_dirs
from toy_quanta.data.sparse_parity import LN2, encode, sample, zipf_probs
from toy_quanta.job import flatten
from toy_quanta.results import CHECKPOINT_FILE, SUMMARY_FILE, atomic_write, json_safe, load_run, write_json

# The evaluation samples' key: fixed, and apart from the seeds the jobs drew their own data from.
SAMPLE_KEY = 0x6E41C
N_SAMPLES = 10_000
# A sweep's samples count as learned below the paper's 0.1 bits (as summary.json's "subtasks learned").
SWEEP_LEARNED_BELOW = 0.1


@dataclass
class SweepCurves:
    """Per-sample losses (bits) of one seed's models on one sample set, columns sorted by scale."""

    loss_NxG: np.ndarray
    scales_G: np.ndarray
    scale_kind: str  # "width" (a params sweep) or "D" (a data sweep)
    subtask_N: np.ndarray  # 0-based subtask (frequency rank - 1) of each sample
    probs_T: np.ndarray  # each subtask's frequency
    seed: int
    models: list[dict[str, Any]]  # job directory and member of each column
    skipped: list[dict[str, str]] = field(default_factory=list)


def _is_job(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def find_jobs(sources: list[Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """(completed job directories with a checkpoint, the other jobs with why they were skipped)."""
    jobs, skipped = [], []
    for src in sources:
        if not src.exists():
            raise FileNotFoundError(f"{src}: no such file or directory")
        if not src.is_dir():
            raise ValueError(f"{src}: not a directory (give a multirun sweep directory, job directories, "
                             "or one .npy file)")
        candidates = [src] if _is_job(src) else job_dirs(src)
        if not candidates:
            raise ValueError(f"{src}: not a toy-quanta sweep or job directory (no job directories with .hydra/, "
                             "no config.yaml)")
        for job in candidates:
            summary_path = job / SUMMARY_FILE
            status = json.loads(summary_path.read_text()).get("status") if summary_path.is_file() else None
            if status != "completed":
                skipped.append({"job": str(job), "reason": f"status {status}" if status else "no summary.json"})
            elif not (job / CHECKPOINT_FILE).is_file():
                skipped.append({"job": str(job), "reason": "no checkpoint.msgpack (train.checkpoint=false)"})
            else:
                jobs.append(job)
    if not jobs:
        raise ValueError("no completed job with a checkpoint in " + ", ".join(map(str, sources))
                         + (f" ({len(skipped)} skipped: {skipped[0]['reason']}, ...)" if skipped else ""))
    return jobs, skipped


def _flat(cfg: Any) -> dict[str, Any]:
    return flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))


def _differences(a: tuple[Any, dict], b: tuple[Any, dict]) -> list[str]:
    """Config keys and member values that differ between two (cfg, member) models."""
    fa, fb = {**_flat(a[0]), **a[1]}, {**_flat(b[0]), **b[1]}
    skip = {"name", "ensemble.D", "ensemble.seeds", "ensemble.lr", "ensemble.weight_decay", "ensemble.init_scale",
            "ensemble.alpha"}
    return sorted(k for k in fa.keys() | fb.keys() if k not in skip and fa.get(k) != fb.get(k))


def sweep_curves(sources: list[Path], n_samples: int = N_SAMPLES, seed: int | None = None,
                 batch: int = 8192) -> SweepCurves:
    """Every completed model of one seed in `sources`, evaluated per sample on one sample set."""

    jobs, skipped = find_jobs(sources)
    runs = {job: load_run(job) for job in jobs}
    entries = []  # (job, member index, run, member dict)
    for job, run in runs.items():
        summary = json.loads((job / SUMMARY_FILE).read_text())
        diverged = {m["member"] for m in summary.get("members", []) if m.get("diverged")}
        for i, member in enumerate(run.members):
            if i in diverged:
                skipped.append({"job": str(job), "reason": f"member {i} diverged"})
            else:
                entries.append((job, i, run, member))
    seeds = sorted({m["seed"] for *_, m in entries})
    if seed is None:
        seed = seeds[0]
    elif seed not in seeds:
        raise ValueError(f"--seed {seed} is not allowed: the sweep's models have seeds {seeds}")
    entries = [e for e in entries if e[3]["seed"] == seed]

    widths = sorted({e[2].cfg.model.width for e in entries})
    sizes = sorted({e[3]["task.D"] for e in entries}, key=lambda d: -1 if d is None else d)
    if len(widths) > 1 and len(sizes) > 1:
        raise ValueError(f"both model.width ({widths}) and task.D ({sizes}) differ between the models: give the job "
                         "directories of one series")
    if len(widths) > 1:
        kind, scale_of = "width", (lambda e: e[2].cfg.model.width)
    elif len(sizes) > 1:
        if None in sizes:
            raise ValueError("task.D differs between the models but some are online (task.D=null): give the job "
                             "directories of one series")
        kind, scale_of = "D", (lambda e: e[3]["task.D"])
    else:
        raise ValueError(f"no scale axis: every model of seed {seed} has model.width={widths[0]} and task.D={sizes[0]} "
                         "(need a sweep over model.width, or over task.D / ensemble.D)")
    by_scale: dict[int, tuple] = {}
    for e in entries:
        s = scale_of(e)
        if s in by_scale:
            other = by_scale[s]
            diff = _differences((other[2].cfg, other[3]), (e[2].cfg, e[3]))
            raise ValueError(f"two models of seed {seed} at {kind}={s} ({other[0]} member {other[1]}, {e[0]} member "
                             f"{e[1]}; they differ in {', '.join(diff) or 'nothing'}): give the job directories of "
                             "one series")
        by_scale[s] = e
    scales = sorted(by_scale)
    if len(scales) < 3:
        raise ValueError(f"only {len(scales)} {kind} value(s) for seed {seed} ({scales}): need at least 3 scales")

    first = by_scale[scales[0]]
    task, subsets = first[2].cfg.task, first[2].subsets[first[1]]
    alpha = first[3]["task.alpha"]
    for s in scales[1:]:
        job, i, run, member = by_scale[s]
        t = run.cfg.task
        if (t.n_tasks, t.n, t.k) != (task.n_tasks, task.n, task.k) or member["task.alpha"] != alpha:
            raise ValueError(f"{job} has a different task (n_tasks, n, k, alpha) = ({t.n_tasks}, {t.n}, {t.k}, "
                             f"{member['task.alpha']}) from {first[0]}'s ({task.n_tasks}, {task.n}, {task.k}, {alpha})")
        if not np.array_equal(run.subsets[i], subsets):
            raise ValueError(f"{job} member {i} has other subtask subsets than {first[0]} member {first[1]} "
                             "(different task.subset_seed): their samples cannot be compared")

    task_B, bits_BxI, label_B = sample(jax.random.key(SAMPLE_KEY), jnp.asarray(subsets), alpha, n_samples, task.n)
    loss_NxG = np.zeros((n_samples, len(scales)))
    for k, s in enumerate(scales):
        _, i, run, _ = by_scale[s]
        model = run.model(i)
        for lo in range(0, n_samples, batch):
            rows = slice(lo, lo + batch)
            logits_Bx2 = model(task_B[rows], encode(bits_BxI[rows], run.cfg.task.encoding))
            nats_B = optax.softmax_cross_entropy_with_integer_labels(logits_Bx2.astype(jnp.float32), label_B[rows])
            loss_NxG[rows, k] = np.asarray(nats_B, np.float64) / LN2
    models = [{"scale": s, "job": str(by_scale[s][0]), "member": by_scale[s][1]} for s in scales]
    return SweepCurves(loss_NxG=loss_NxG, scales_G=np.asarray(scales, np.float64), scale_kind=kind,
                       subtask_N=np.asarray(task_B, np.int64), probs_T=zipf_probs(task.n_tasks, alpha), seed=seed,
                       models=models, skipped=skipped)


def per_subtask(result: GenicResult, curves: SweepCurves) -> list[dict[str, Any]]:
    """Per subtask: counts, the monogenic share of non-flat samples, and the scale where most of its
    monogenic samples drop (the subtask's emergence, if the quantization model holds)."""
    rows = []
    for row in by_group(result, curves.subtask_N, len(curves.probs_T)):
        g = row.pop("group")
        mono = (curves.subtask_N == g) & (result.labels_N == MONOGENIC)
        at = np.bincount(result.emerge_N[mono], minlength=len(result.scales_G))
        rows.append({"subtask": g, "p": float(curves.probs_T[g]), **row,
                     "emerge_scale": float(result.scales_G[np.argmax(at)]) if mono.any() else None})
    return rows


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


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a .npy file of numbers ({str(exc).splitlines()[0]})") from None


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:  # a file object: np.savez would add .npz to the temporary name
        np.savez(fh, **arrays)


def _error(msg: str) -> int:
    print(f"toy-quanta-genic: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)

    # Every argument is checked before anything is loaded or evaluated.
    sources = args.sources
    is_npy = [s.suffix == ".npy" for s in sources]
    if any(is_npy) and len(sources) > 1:
        return _error("give one .npy file, or sweep/job directories, not both or several .npy files")
    for s in sources:
        if not s.exists():
            return _error(f"{s}: no such file or directory")
    if args.scales is not None and not is_npy[0]:
        return _error("--scales goes with a .npy SOURCE (a sweep's scales come from its configs)")
    if args.n_samples < 1:
        return _error(f"--n-samples={args.n_samples} is not allowed: an integer >= 1")
    if args.examples < 0:
        return _error(f"--examples={args.examples} is not allowed: an integer >= 0")
    learned_below: float | None = None if is_npy[0] else SWEEP_LEARNED_BELOW
    if args.learned_below is not None:
        try:
            learned_below = None if args.learned_below.lower() == "none" else float(args.learned_below)
        except ValueError:
            return _error(f"--learned-below={args.learned_below} is not allowed: a number, or none")
    try:
        check_params(args.min_drop, args.window, args.threshold, learned_below=learned_below)
    except ValueError as exc:
        return _error(str(exc))

    subtask_N, curves = None, None
    try:
        if is_npy[0]:
            src = sources[0]
            loss = _load_npy(src)
            scales = None if args.scales is None else _load_npy(args.scales)
            try:
                loss_NxG, scales_G = validate_curves(loss, scales)
            except ValueError as exc:
                raise ValueError(f"{src}: {exc}") from None
            kind, unit = ("given", "loss units") if args.scales is not None else ("index", "loss units")
            scale_label = "scale" if args.scales is not None else "scale index"
            out = args.out or src.parent / f"{src.stem}_genic"
            provenance: dict[str, Any] = {"source": str(src), "scales_file": str(args.scales) if args.scales else None}
        else:
            curves = sweep_curves(sources, n_samples=args.n_samples, seed=args.seed)
            loss_NxG, scales_G, kind, unit = curves.loss_NxG, curves.scales_G, curves.scale_kind, "bits"
            subtask_N = curves.subtask_N
            scale_label = "model.width" if kind == "width" else "task.D (training samples)"
            out = args.out or sources[0] / "genic"
            provenance = {"sources": [str(s) for s in sources], "seed": curves.seed, "n_samples": args.n_samples,
                          "sample_key": SAMPLE_KEY, "models": curves.models, "skipped": curves.skipped}
        result = classify(loss_NxG, scales_G, min_drop=args.min_drop, window=args.window, threshold=args.threshold,
                          learned_below=learned_below, unit=unit)
    except (OSError, ValueError) as exc:
        return _error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    out.mkdir(parents=True, exist_ok=True)
    report = {**result.summary(), "scale_kind": kind, "scales": result.scales_G, **provenance}
    if curves is not None:
        report["per_subtask"] = per_subtask(result, curves)
    write_json(out / "genic.json", json_safe(report))
    arrays = {"loss_SxK": loss_NxG, "scales_K": result.scales_G, "labels_S": result.labels_N,
              "sharpness_S": result.sharpness_N, "fall_S": result.fall_N}
    if subtask_N is not None:
        arrays["subtask_S"] = subtask_N
    atomic_write(out / "curves.npz", lambda p: _savez(p, arrays))
    plot(result, loss_NxG, out / "genic.png", scale_label, "loss (bits)" if unit == "bits" else "loss", args.examples,
         subtask_N)

    c, f = result.counts, result.fractions
    print(f"{len(result.labels_N)} samples x {len(result.scales_G)} scales ({kind}: "
          + ", ".join(f"{s:g}" for s in result.scales_G) + ")")
    print(f"criterion: {result.criterion}")
    if not result.resolvable:
        print(f"note: with {len(result.scales_G)} scales a decline uniform across them has sharpness "
              f"{result.window / (len(result.scales_G) - 1):.2f} >= threshold: monogenic and polygenic are not "
              "resolvable")
    if kind != "index" and scales_G.min() > 0:  # 1..G says nothing about the spacing
        ratio = float(np.median(scales_G[1:] / scales_G[:-1]))
        spans = ratio ** result.window
        if spans < 1.5:
            print(f"note: the window spans a factor {spans:.2f} in scale; a sharp fall may spread over several "
                  f"intervals: consider --window {max(1, round(np.log(2) / np.log(ratio)))} (about a factor 2)")
    for label in LABELS:
        print(f"  {label:<10} {c[label]:>7}  {f[label]:7.1%}")
    mono = f["monogenic_of_nonflat"]
    print(f"  monogenic among non-flat: {'n/a' if mono is None else f'{mono:.1%}'}")
    if curves is not None:
        print("subtask  p       n     mono  poly  flat  mono/non-flat  emerges at")
        for row in report["per_subtask"]:
            share = "n/a" if row["monogenic_of_nonflat"] is None else f"{row['monogenic_of_nonflat']:.2f}"
            emerge = "-" if row["emerge_scale"] is None else f"{row['emerge_scale']:g}"
            print(f"{row['subtask'] + 1:>7}  {row['p']:.4f} {row['n']:>5} {row[MONOGENIC]:>6} {row[POLYGENIC]:>5} "
                  f"{row[FLAT]:>5}  {share:>13}  {emerge}")
    print(f"output directory: {out}")
    print(json.dumps(json_safe({"fractions": f, "counts": c, "scale_kind": kind, "n_scales": len(result.scales_G),
                              "resolvable": result.resolvable, "out": str(out)}), allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
