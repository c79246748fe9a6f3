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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

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
