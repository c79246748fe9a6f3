"""Scientific check behind the `slow` marker (`pytest -m slow`, a few minutes on 2 cores): the
quanta_steps experiment (conf/experiment/quanta_steps.yaml through `toy-quanta`), shortened, learns subtasks abruptly and in frequency order, and the
number learned grows with steps as the quantization model predicts."""

from __future__ import annotations

import pytest

from conftest import run_app
from toy_quanta.analysis.scaling import analyse, convergence, scale_points
from toy_quanta.analysis.sweep import load_sweeps


@pytest.mark.slow
def test_quanta_steps_learns_in_frequency_order_at_the_predicted_rate(tmp_path_factory):
    root = tmp_path_factory.mktemp("quanta_steps")
    sweep = root / "sweep"
    proc = run_app(["-m", "experiment=quanta_steps", "train.steps=10000", "train.progress=false",
                    f"hydra.sweep.dir={sweep}"], cwd=root, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    s = load_sweeps([sweep])
    (points,) = scale_points(s)
    a = analyse(points, n_boot=500)
    assert points.quantity == "S"
    assert a.mean_loss.max() / a.mean_loss.min() > 10  # the loss falls more than tenfold
    assert a.spearman > 0.9  # learned in frequency order
    assert a.n_learned.max() >= 20
    growth, lo, hi = a.growth
    assert abs(growth - 1 / 1.4) < 0.2, a.growth  # n_learned ∝ S^(1/(alpha+1))
    (conv,) = convergence(s, n_boot=500)
    assert 0.6 < conv.fit.exponent < 1.3, conv.fit  # t_k ∝ p_k^-gamma, theory 1, paper 0.81
