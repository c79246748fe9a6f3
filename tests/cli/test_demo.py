"""The default job (conf/experiment/demo.yaml, what a bare `toy-quanta` runs) shows what it is for: several subtasks learned one after
another, most frequent first. Trains the real demo config, composed by Hydra (about 15 s)."""

import math

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from scipy.stats import spearmanr

from toy_quanta.job import to_config
from toy_quanta.config import validate
from toy_quanta.engine.loop import fit
from toy_quanta.engine.members import expand


@pytest.fixture(scope="module")
def demo_run():
    with initialize_config_module(config_module="toy_quanta.conf", version_base=None):
        cfg = to_config(compose("config", overrides=["train.progress=false"]))
    validate(cfg)
    return cfg, fit(cfg, expand(cfg))


def test_demo_learns_several_subtasks_in_frequency_order(demo_run):
    cfg, result = demo_run
    loss_bits_LxT = result.log_array("subtask_loss")[:, 0, :] / math.log(2)
    steps = np.asarray(result.steps)
    learned = loss_bits_LxT < 0.1  # the paper's threshold
    ever = learned.any(axis=0)
    assert ever.sum() >= 5, f"only {ever.sum()} subtasks learned"
    assert not ever.all(), "every subtask learned: the demo no longer shows the rare ones still unlearned"
    first_step = steps[np.argmax(learned, axis=0)][ever]
    ranks = np.arange(1, cfg.task.n_tasks + 1)[ever]
    # One after another: the learned subtasks are not all learned at the same log step ...
    assert len(np.unique(first_step)) >= 4, first_step
    # ... and in order of frequency (rank 1 is the most frequent).
    rho = spearmanr(ranks, first_step).statistic
    assert rho > 0.8, f"learning order vs frequency rank: Spearman {rho:.2f}, steps {first_step}"


def test_demo_mean_loss_falls_and_never_diverges(demo_run):
    _, result = demo_run
    test_loss = result.log_array("test_loss")[:, 0]
    assert test_loss[0] > 0.6 and test_loss[-1] < 0.25 * test_loss[0]
    assert bool(result.alive[0])
