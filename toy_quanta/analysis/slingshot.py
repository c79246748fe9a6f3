"""Slingshot spikes (Thilak et al. 2022): with Adam and no weight decay the training loss spikes
again and again late in training, the last layer's weight norm jumping at each spike.

A spike starts at the first logged step whose training loss exceeds FACTOR times the lowest
training loss logged before it, and ends at the first logged step back below that bound. For each
spike: its start and end, the peak loss over the running minimum, and the last layer's norm growth
over the LEAD logged steps before it and across it (readout_norm ratios).
"""

from __future__ import annotations

from typing import Any

import numpy as np

FACTOR = 10.0
LEAD = 5
RULE = (f"a spike starts at the first logged step whose training loss exceeds {FACTOR:g} x the lowest logged before "
        f"it and ends when the loss is back below that bound; readout_growth_before: the last layer's norm just before "
        f"the spike over {LEAD} logged steps earlier; readout_growth_across: after the spike over just before it")


def spikes(steps_L: np.ndarray, train_loss_L: np.ndarray, readout_L: np.ndarray | None = None,
           factor: float = FACTOR) -> list[dict[str, Any]]:
    """The spikes of one member's curves (see the module's rule)."""
    loss = np.asarray(train_loss_L, np.float64)
    out, start, bound, peak = [], None, None, 0.0
    lowest = np.inf
    for i in range(len(loss)):
        if not np.isfinite(loss[i]):
            break
        if start is None:
            if i > 0 and loss[i] > factor * lowest:
                start, bound, peak = i, factor * lowest, loss[i]
            else:
                lowest = min(lowest, loss[i])
            continue
        peak = max(peak, loss[i])
        if loss[i] <= bound:
            out.append(_spike(steps_L, readout_L, start, i, peak, bound / factor))
            start, lowest = None, min(lowest, loss[i])
    if start is not None:
        out.append(_spike(steps_L, readout_L, start, None, peak, bound / factor))
    return out


def _spike(steps_L, readout_L, start: int, end: int | None, peak: float, lowest: float) -> dict[str, Any]:
    spike = {"start": int(steps_L[start]), "end": None if end is None else int(steps_L[end]),
             "peak_over_min": float(peak / lowest) if lowest > 0 else float("inf")}
    if readout_L is not None:
        before = readout_L[start - 1]
        spike["readout_growth_before"] = float(before / readout_L[max(start - 1 - LEAD, 0)])
        spike["readout_growth_across"] = float(readout_L[end if end is not None else -1] / before)
    return spike
