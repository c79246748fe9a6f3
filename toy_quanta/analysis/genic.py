"""Monogenic against polygenic samples: how each sample's loss falls across a series of scales.

The quantization model says every sample of multitask sparse parity needs exactly one quantum
(*monogenic*): its loss across model scales drops sharply at one scale. In language models many
tokens improve gradually across scales (*polygenic*). Michaud et al. (2023) showed both kinds of
curve; this module labels each curve by one stated criterion.

Criterion, for one curve L[0..G-1] at ascending scales (losses in bits by default):

- fall F = max over i < j of L[i] - L[j], the largest fall going up in scale. Unlike
  L[first] - L[last], it is not undone by a larger model that failed to learn what a smaller one
  did (in sparse parity a rare subtask can be learned at one width and missed at the next); on a
  monotone curve the two are equal.
- flat if F < min_drop (default 0.1, in the curves' units) or, where a `learned_below` level is
  given, if the loss is below it at no scale or at every scale: nothing to classify, the sample
  was never learned, always learned, or got worse.
- sharpness = (largest fall L[i] - L[i+d] over d = 1..window adjacent scale intervals) / F, in
  (0, 1]; monogenic if sharpness >= threshold, else polygenic.

Defaults window = 1, threshold = 0.4: monogenic means at least 40% of the fall happens between
two adjacent scales. A step between two scales gives 1; a steep sigmoid gives at least 0.5
wherever its centre lies (exactly 0.5 when centred on a scale, where its fall splits in two), so
0.4 leaves a margin for noise. Sparse parity needs that margin: a width that caught a subtask
half-learned (a finite training budget) splits the fall into two near-equal steps, 0.44-0.5. A
decline uniform in log scale gives window / (G - 1) and a power law L ∝ s^-a on log-spaced
scales spanning a ratio R in steps r gives (1 - r^-a) / (1 - R^-a): over six widths 8..256
(r = 2, R = 32) 0.2 for a -> 0 and 0.36 for a = 0.5, so declines of power-law exponent below
about 0.6 are polygenic (the mean loss of Pythia models falls as N^-0.08). The window
counts intervals, so the defaults assume about a factor 2 between scales; for denser sweeps widen
it to span about a factor 2 (window ≈ log 2 / log step). With few scales the kinds cannot be told
apart: when window / (G - 1) >= threshold (G = 3 with the defaults) a uniform decline is itself
"monogenic", and `resolvable` is False.

Noise: a single noisy jump dominates a noise-only curve, so a curve that merely fluctuates by
more than min_drop comes out "monogenic". In sparse parity the per-sample loss of a subtask that
is not learned fluctuates around 1 bit by 0.1-0.5 bits between widths; `learned_below` (the
toy-quanta-genic default for sweeps: 0.1 bits, the paper's learned threshold) makes such samples
flat unless some model actually learned them. For other data raise min_drop above the noise.

The curves (`analyse`, what toy-quanta-genic runs): a user's samples x scales .npy, or a sweep of
toy-quanta models, one seed's models each evaluated per sample by its task's own loss on the same
samples of its task's own sampler (Program.loss, Program.sample). A task that declares "genic"
(Task.analyses) is of sparse parity's kind: its batches name each sample's subtask (`task`) and
its members have a `task.alpha` (the subtasks' Zipf frequencies, in the per-subtask table).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from omegaconf import OmegaConf

from toy_quanta.analysis.collect import job_dirs
from toy_quanta.data.sparse_parity import zipf_probs
from toy_quanta.results import CHECKPOINT_FILE, SUMMARY_FILE, TrainedRun

MONOGENIC, POLYGENIC, FLAT = "monogenic", "polygenic", "flat"
LABELS = (MONOGENIC, POLYGENIC, FLAT)
MIN_DROP, WINDOW, THRESHOLD = 0.1, 1, 0.4


@dataclass
class GenicResult:
    """Each sample's label, with the numbers that decided it."""

    labels_N: np.ndarray  # str: monogenic, polygenic or flat
    sharpness_N: np.ndarray  # NaN where flat
    fall_N: np.ndarray  # F, the largest fall going up in scale
    emerge_N: np.ndarray  # index of the scale at the end of the sharpest window (-1 where flat)
    scales_G: np.ndarray
    min_drop: float
    window: int
    threshold: float
    learned_below: float | None
    criterion: str

    @property
    def counts(self) -> dict[str, int]:
        return {label: int(np.sum(self.labels_N == label)) for label in LABELS}

    @property
    def fractions(self) -> dict[str, float | None]:
        """Share of all samples per label, and monogenic among the non-flat (None if all flat)."""
        c, n = self.counts, len(self.labels_N)
        nonflat = c[MONOGENIC] + c[POLYGENIC]
        return {**{label: c[label] / n for label in LABELS},
                "monogenic_of_nonflat": c[MONOGENIC] / nonflat if nonflat else None}

    @property
    def resolvable(self) -> bool:
        """Whether a decline uniform across the scales would come out polygenic."""
        return self.window / (len(self.scales_G) - 1) < self.threshold

    def summary(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "min_drop": self.min_drop, "window": self.window,
                "threshold": self.threshold, "learned_below": self.learned_below, "resolvable": self.resolvable,
                "n_samples": len(self.labels_N), "n_scales": len(self.scales_G), "counts": self.counts,
                "fractions": self.fractions}


def criterion_text(min_drop: float, window: int, threshold: float, learned_below: float | None = None,
                   unit: str = "bits") -> str:
    learned = ("" if learned_below is None
               else f" or if the loss is below {learned_below:g} {unit} at no scale or at every scale")
    return (f"fall F = largest L[i] - L[j] over scales i < j; flat if F < {min_drop:g} {unit}{learned}; "
            f"else sharpness = largest fall within {window} adjacent scale interval{'s' if window > 1 else ''} / F; "
            f"monogenic if sharpness >= {threshold:g}, else polygenic")


def validate_curves(loss_NxG: Any, scales_G: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(loss_NxG, scales_G) as float64 arrays; ValueError for anything that is not a set of curves."""
    loss_NxG = np.asarray(loss_NxG)
    if loss_NxG.ndim != 2:
        raise ValueError(f"loss_NxG has shape {loss_NxG.shape}: need a 2-D array, samples x scales")
    if not (np.issubdtype(loss_NxG.dtype, np.floating) or np.issubdtype(loss_NxG.dtype, np.integer)):
        raise ValueError(f"loss_NxG has dtype {loss_NxG.dtype}: need real numbers")
    n_samples, n_scales = loss_NxG.shape
    if n_samples < 1:
        raise ValueError(f"loss_NxG has shape {loss_NxG.shape}: need at least 1 sample")
    if n_scales < 3:
        raise ValueError(f"loss_NxG has {n_scales} scale(s) (shape {loss_NxG.shape}): need at least 3 scales to "
                         "tell a sharp fall from a gradual one")
    loss_NxG = loss_NxG.astype(np.float64)
    if not np.isfinite(loss_NxG).all():
        bad = np.argwhere(~np.isfinite(loss_NxG))[0]
        raise ValueError(f"loss_NxG[{bad[0]}, {bad[1]}] = {loss_NxG[tuple(bad)]}: every loss must be finite")
    if scales_G is None:
        return loss_NxG, np.arange(1, n_scales + 1, dtype=np.float64)
    scales_G = np.asarray(scales_G)
    if scales_G.ndim != 1 or len(scales_G) != n_scales:
        raise ValueError(f"scales_G has shape {scales_G.shape}: need one scale per column of loss_NxG ({n_scales},)")
    scales_G = scales_G.astype(np.float64)
    if not np.isfinite(scales_G).all() or not (np.diff(scales_G) > 0).all():
        raise ValueError(f"scales_G = {scales_G.tolist()}: need finite, strictly increasing scales")
    return loss_NxG, scales_G


def check_params(min_drop: float, window: int, threshold: float, n_scales: int | None = None,
                 learned_below: float | None = None) -> None:
    """ConfigError (a ValueError) for a parameter that is not allowed; `window` against G if given."""
    from toy_quanta.errors import ConfigError

    def number(x: Any) -> bool:
        return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)

    if not number(min_drop) or min_drop <= 0:
        raise ConfigError("min_drop", min_drop, "a positive finite number (in the curves' units)")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ConfigError("window", window, "an integer >= 1")
    if n_scales is not None and window > n_scales - 2:
        raise ConfigError("window", window, f"an integer from 1 to G - 2 = {n_scales - 2} (G = {n_scales} scales; "
                          "a window spanning every interval would call every curve monogenic)")
    if not number(threshold) or not 0 < threshold <= 1:
        raise ConfigError("threshold", threshold, "a number in (0, 1]")
    if learned_below is not None and not number(learned_below):
        raise ConfigError("learned_below", learned_below, "a finite number, or None")


def classify(loss_NxG: Any, scales_G: Any = None, min_drop: float = MIN_DROP, window: int = WINDOW,
             threshold: float = THRESHOLD, learned_below: float | None = None, unit: str = "bits") -> GenicResult:
    """Label each row of loss_NxG (scales ascending along columns) by the module's criterion."""
    loss_NxG, scales_G = validate_curves(loss_NxG, scales_G)
    n_scales = loss_NxG.shape[1]
    check_params(min_drop, window, threshold, n_scales, learned_below)
    # Largest fall: each point's loss minus the lowest loss at any larger scale.
    later_min_NxG = np.minimum.accumulate(loss_NxG[:, ::-1], axis=1)[:, ::-1]
    fall_N = np.max(loss_NxG[:, :-1] - later_min_NxG[:, 1:], axis=1)
    # Largest fall within `window` intervals, and where it ends.
    best_N = np.full(len(loss_NxG), -np.inf)
    end_N = np.zeros(len(loss_NxG), np.int64)
    for d in range(1, window + 1):
        falls_NxG = loss_NxG[:, :-d] - loss_NxG[:, d:]
        i_N = np.argmax(falls_NxG, axis=1)
        f_N = falls_NxG[np.arange(len(i_N)), i_N]
        better = f_N > best_N
        best_N = np.where(better, f_N, best_N)
        end_N = np.where(better, i_N + d, end_N)
    flat_N = fall_N < min_drop
    if learned_below is not None:
        below_NxG = loss_NxG < learned_below
        flat_N |= ~below_NxG.any(axis=1) | below_NxG.all(axis=1)
    sharpness_N = np.where(flat_N, np.nan, best_N / np.where(flat_N, 1.0, fall_N))
    labels_N = np.where(flat_N, FLAT, np.where(sharpness_N >= threshold, MONOGENIC, POLYGENIC)).astype("<U9")
    return GenicResult(labels_N=labels_N, sharpness_N=sharpness_N, fall_N=fall_N,
                       emerge_N=np.where(flat_N, -1, end_N), scales_G=scales_G, min_drop=float(min_drop),
                       window=int(window), threshold=float(threshold),
                       learned_below=None if learned_below is None else float(learned_below),
                       criterion=criterion_text(min_drop, window, threshold, learned_below, unit))


def by_group(result: GenicResult, group_N: np.ndarray, n_groups: int | None = None) -> list[dict[str, Any]]:
    """Counts per group (e.g. sparse parity subtask) and its monogenic share among non-flat samples."""
    group_N = np.asarray(group_N)
    n_groups = int(group_N.max()) + 1 if n_groups is None else n_groups
    rows = []
    for g in range(n_groups):
        labels = result.labels_N[group_N == g]
        c = {label: int(np.sum(labels == label)) for label in LABELS}
        nonflat = c[MONOGENIC] + c[POLYGENIC]
        rows.append({"group": g, "n": int(len(labels)), **c,
                     "monogenic_of_nonflat": c[MONOGENIC] / nonflat if nonflat else None})
    return rows


# --- curves to classify: a user's .npy, or a sweep of toy-quanta models -----------------------------

# The evaluation samples' key: fixed, and apart from the seeds the jobs drew their own data from.
SAMPLE_KEY = 0x6E41C
N_SAMPLES = 10_000
# A sweep's samples count as learned below the paper's 0.1 bits (as summary.json's "subtasks learned").
SWEEP_LEARNED_BELOW = 0.1
SCALE_LABELS = {"width": "model.width", "D": "task.D (training samples)", "given": "scale", "index": "scale index"}


@dataclass
class Curves:
    """Per-sample losses across scales (columns sorted by scale), and where they came from."""

    loss_NxG: np.ndarray
    scales_G: np.ndarray
    scale_kind: str  # width or D (a sweep's axis), given (a .npy's --scales) or index (1..G)
    unit: str  # bits (a sweep), loss units (a .npy)
    provenance: dict[str, Any]  # what genic.json records of the source
    subtask_N: np.ndarray | None = None  # a sweep's: each sample's subtask (0-based frequency rank)
    probs_T: np.ndarray | None = None  # a sweep's: each subtask's frequency


def npy_curves(path: Path, scales_path: Path | None = None) -> Curves:
    """A user's samples x scales array of losses (.npy), with its scales (.npy) or 1..G."""
    scales = None if scales_path is None else _load_npy(scales_path)
    try:
        loss_NxG, scales_G = validate_curves(_load_npy(path), scales)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return Curves(loss_NxG, scales_G, "index" if scales_path is None else "given", "loss units",
                  {"source": str(path), "scales_file": str(scales_path) if scales_path else None})


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a .npy file of numbers ({str(exc).splitlines()[0]})") from None


def find_jobs(sources: list[Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """(completed job directories with a checkpoint, the other jobs with why they were skipped)."""
    jobs, skipped = [], []
    for src in sources:
        if not src.exists():
            raise FileNotFoundError(f"{src}: no such file or directory")
        if not src.is_dir():
            raise ValueError(f"{src}: not a directory (give a multirun sweep directory, job directories, "
                             "or one .npy file)")
        candidates = [src] if (src / "config.yaml").is_file() else job_dirs(src)
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


class Model(NamedTuple):
    """One trained member of a sweep: a column of its curves."""

    job: Path
    index: int  # the member's index in its job
    run: TrainedRun
    values: dict[str, Any]  # the member's values (seed, task.D, ...)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix[:-1]: tree} if prefix else {}
    return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}


def _differences(a: Model, b: Model) -> list[str]:
    """Config keys and member values that differ between two models."""
    fa, fb = ({**_flat(OmegaConf.to_container(OmegaConf.structured(m.run.cfg))), **m.values} for m in (a, b))
    skip = {"name", "ensemble.D", "ensemble.seeds", "ensemble.lr", "ensemble.weight_decay", "ensemble.init_scale",
            "ensemble.alpha"}
    return sorted(k for k in fa.keys() | fb.keys() if k not in skip and fa.get(k) != fb.get(k))


class Series(NamedTuple):
    """One seed's models of a sweep, one per scale, sorted by scale."""

    kind: str  # the scale: width (model.width differs between the models) or D (task.D does)
    scales: list[Any]
    models: list[Model]
    seed: int
    skipped: list[dict[str, str]]  # jobs and members left out, and why


def sweep_models(sources: list[Path], seed: int | None = None) -> Series:
    """Every completed model of one seed (default the smallest) in `sources`, one per scale."""
    from toy_quanta.analysis.qdg import trained_run  # here: QDG's similarity code is not needed to classify

    jobs, skipped = find_jobs(sources)
    models = []
    for job in jobs:
        run = trained_run(job, "genic")
        summary = json.loads((job / SUMMARY_FILE).read_text())
        diverged = {m["member"] for m in summary.get("members", []) if m.get("diverged")}
        for i, member in enumerate(run.members):
            if i in diverged:
                skipped.append({"job": str(job), "reason": f"member {i} diverged"})
            else:
                models.append(Model(job, i, run, member))
    seeds = sorted({m.values["seed"] for m in models})
    if seed is None:
        seed = seeds[0]
    elif seed not in seeds:
        raise ValueError(f"--seed {seed} is not allowed: the sweep's models have seeds {seeds}")
    models = [m for m in models if m.values["seed"] == seed]
    kind, scale_of = _scale_axis(models, seed)
    by_scale: dict[Any, Model] = {}
    for m in models:
        s = scale_of(m)
        if s in by_scale:
            other = by_scale[s]
            raise ValueError(f"two models of seed {seed} at {kind}={s} ({other.job} member {other.index}, {m.job} member "
                             f"{m.index}; they differ in {', '.join(_differences(other, m)) or 'nothing'}): give the "
                             "job directories of one series")
        by_scale[s] = m
    if len(by_scale) < 3:
        raise ValueError(f"only {len(by_scale)} {kind} value(s) for seed {seed} ({sorted(by_scale)}): need at least 3 "
                         "scales")
    scales = sorted(by_scale)
    return Series(kind, scales, [by_scale[s] for s in scales], seed, skipped)


def _scale_axis(models: list[Model], seed: int) -> tuple[str, Any]:
    """("width" or "D", the scale of a model): the one of model.width and task.D that differs."""
    widths = sorted({m.run.cfg.model.width for m in models})
    sizes = sorted({m.values["task.D"] for m in models}, key=lambda d: -1 if d is None else d)
    if len(widths) > 1 and len(sizes) > 1:
        raise ValueError(f"both model.width ({widths}) and task.D ({sizes}) differ between the models: give the job "
                         "directories of one series")
    if len(widths) > 1:
        return "width", lambda m: m.run.cfg.model.width
    if len(sizes) > 1:
        if None in sizes:
            raise ValueError("task.D differs between the models but some are online (task.D=null): give the job "
                             "directories of one series")
        return "D", lambda m: m.values["task.D"]
    raise ValueError(f"no scale axis: every model of seed {seed} has model.width={widths[0]} and task.D={sizes[0]} "
                     "(need a sweep over model.width, or over task.D / ensemble.D)")


def draw(m: Model, n_samples: int) -> Any:
    """The model's evaluation samples: n_samples of its member's task distribution (its task's
    sampler, Program.sample) from SAMPLE_KEY, as host arrays."""
    run = m.run
    batch = run.program.sample(m.values, run.member_inputs[m.index], jax.random.key(SAMPLE_KEY), n_samples)
    return jax.tree.map(np.asarray, batch)


def loss_bits(m: Model, batch: Any, block: int = 8192) -> np.ndarray:
    """(N,) float64: the model's per-sample loss (its task's, Program.loss) in bits, in blocks of rows."""
    model, loss = m.run.model(m.index), m.run.program.loss
    size = len(jax.tree.leaves(batch)[0])
    parts = [np.asarray(loss(model, jax.tree.map(lambda x: x[lo:lo + block], batch))[0], np.float64)
             for lo in range(0, size, block)]
    return np.concatenate(parts) / math.log(2.0)


def sweep_curves(sources: list[Path], n_samples: int = N_SAMPLES, seed: int | None = None,
                 block: int = 8192) -> Curves:
    """Every completed model of one seed in `sources` (sweep_models), each evaluated per sample by
    its task's loss, in bits, on the same samples. Models whose tasks draw other samples (another
    alpha, other subsets, ...) cannot be compared: a ValueError names them."""
    series = sweep_models(sources, seed)
    first = series.models[0]
    batch = draw(first, n_samples)
    for m in series.models[1:]:
        check_same_samples(first, batch, m, draw(m, n_samples))
    loss_NxG = np.stack([loss_bits(m, batch, block) for m in series.models], axis=1)
    described = [{"scale": s, "job": str(m.job), "member": m.index} for s, m in zip(series.scales, series.models)]
    provenance = {"sources": [str(s) for s in sources], "seed": series.seed, "n_samples": n_samples,
                  "sample_key": SAMPLE_KEY, "models": described, "skipped": series.skipped}
    # the per-subtask table: sparse parity's subtasks and their Zipf frequencies (the genic tasks')
    return Curves(loss_NxG, np.asarray(series.scales, np.float64), series.kind, "bits", provenance,
                  subtask_N=np.asarray(batch.task, np.int64),
                  probs_T=zipf_probs(first.run.cfg.task.n_tasks, first.values["task.alpha"]))


def check_same_samples(first: Model, batch: Any, other: Model, other_batch: Any) -> None:
    """ValueError unless two models' tasks drew the same samples (the same task distribution)."""
    if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(batch), jax.tree.leaves(other_batch))):
        diff = [k for k in _differences(first, other) if k.startswith("task.") and k != "task.D"]
        raise ValueError(f"{other.job} member {other.index} draws other samples than {first.job} member {first.index} "
                         f"(they differ in {', '.join(diff) or 'their member inputs'}): their losses cannot be compared")


# --- what toy-quanta-genic reports -------------------------------------------------------------------


def per_subtask(result: GenicResult, curves: Curves) -> list[dict[str, Any]]:
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


def genic_report(result: GenicResult, curves: Curves) -> dict[str, Any]:
    """genic.json: the classification's summary, the scales, the source, and (a sweep) per subtask."""
    report = {**result.summary(), "scale_kind": curves.scale_kind, "scales": result.scales_G, **curves.provenance}
    if curves.subtask_N is not None:
        report["per_subtask"] = per_subtask(result, curves)
    return report


def report_lines(result: GenicResult, report: dict[str, Any]) -> list[str]:
    """What toy-quanta-genic prints: the scales, the criterion, notes on the scales' spacing, the
    counts, and (a sweep) the per-subtask table."""
    scales_G, kind, c, f = result.scales_G, report["scale_kind"], result.counts, result.fractions
    shown = ", ".join(f"{s:g}" for s in scales_G)
    lines = [f"{len(result.labels_N)} samples x {len(scales_G)} scales ({kind}: {shown})", f"criterion: {result.criterion}"]
    if not result.resolvable:
        lines.append(f"note: with {len(scales_G)} scales a decline uniform across them has sharpness "
                     f"{result.window / (len(scales_G) - 1):.2f} >= threshold: monogenic and polygenic are not resolvable")
    if kind != "index" and scales_G.min() > 0:  # 1..G says nothing about the spacing
        ratio = float(np.median(scales_G[1:] / scales_G[:-1]))
        if ratio ** result.window < 1.5:
            lines.append(f"note: the window spans a factor {ratio ** result.window:.2f} in scale; a sharp fall may spread "
                         f"over several intervals: consider --window {max(1, round(np.log(2) / np.log(ratio)))} "
                         "(about a factor 2)")
    lines += [f"  {label:<10} {c[label]:>7}  {f[label]:7.1%}" for label in LABELS]
    mono = f["monogenic_of_nonflat"]
    lines.append(f"  monogenic among non-flat: {'n/a' if mono is None else f'{mono:.1%}'}")
    if "per_subtask" in report:
        lines.append("subtask  p       n     mono  poly  flat  mono/non-flat  emerges at")
        for row in report["per_subtask"]:
            share = "n/a" if row["monogenic_of_nonflat"] is None else f"{row['monogenic_of_nonflat']:.2f}"
            emerge = "-" if row["emerge_scale"] is None else f"{row['emerge_scale']:g}"
            lines.append(f"{row['subtask'] + 1:>7}  {row['p']:.4f} {row['n']:>5} {row[MONOGENIC]:>6} {row[POLYGENIC]:>5} "
                         f"{row[FLAT]:>5}  {share:>13}  {emerge}")
    return lines


def analyse(sources: list[Path], scales: Path | None = None, n_samples: int = N_SAMPLES, seed: int | None = None,
            **criterion: Any) -> tuple[Curves, GenicResult, dict[str, Any]]:
    """(curves, their labels, genic.json's report) of one .npy file (npy_curves) or of a sweep's
    job directories (sweep_curves), classified by `criterion` (classify's keywords)."""
    curves = (npy_curves(sources[0], scales) if sources[0].suffix == ".npy"
              else sweep_curves(sources, n_samples=n_samples, seed=seed))
    result = classify(curves.loss_NxG, curves.scales_G, unit=curves.unit, **criterion)
    return curves, result, genic_report(result, curves)


def headline(result: GenicResult, kind: str, out: Path) -> dict[str, Any]:
    """The last line toy-quanta-genic prints, as JSON: the fractions and counts."""
    return {"fractions": result.fractions, "counts": result.counts, "scale_kind": kind,
            "n_scales": len(result.scales_G), "resolvable": result.resolvable, "out": str(out)}
