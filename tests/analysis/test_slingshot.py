"""Slingshot spikes (toy_quanta.analysis.slingshot) on planted loss curves."""

from __future__ import annotations

import numpy as np

from toy_quanta.analysis import slingshot


def test_planted_spikes_are_found_with_their_norm_growth():
    steps = np.arange(0, 200, 10)
    loss = np.geomspace(1.0, 1e-6, 20)
    loss[5:7] = 1.0    # a spike over 10 x the running minimum (about 5.4e-2 at step 40), steps 50-60
    loss[12] = 5e-4    # after the minimum ~3.4e-4 at step 110: 1.5x, not a spike
    loss[15:] = 1e-2   # a spike that never ends
    norm = np.linspace(10, 20, 20)
    norm[7:] *= 2      # the norm doubles across the first spike
    found = slingshot.spikes(steps, loss, norm)
    assert [(s["start"], s["end"]) for s in found] == [(50, 70), (150, None)]
    np.testing.assert_allclose(found[0]["peak_over_min"], 1.0 / loss[4])
    np.testing.assert_allclose(found[0]["readout_growth_across"], norm[7] / norm[4])
    np.testing.assert_allclose(found[0]["readout_growth_before"], norm[4] / norm[0])
    assert slingshot.spikes(steps, np.geomspace(1, 1e-6, 20)) == []
