"""A job's figures when asked for (train.figures, toy-quanta-figures): a multirun's jobs draw none
by default and their sweep gets one figure; toy-quanta-figures draws any job's from its files,
byte for byte the figures the job draws at its end."""

from __future__ import annotations

import shutil

import pytest

from conftest import tiny_config
from toy_quanta.cli import figures
from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig
from toy_quanta.job import draws_figures, run_job
from toy_quanta.models.embed_mlp import EmbedMLPConfig
from toy_quanta.tasks.modular import ModularConfig

PNG = b"\x89PNG\r\n\x1a\n"


def _modular() -> Config:  # its figures read the trained embeddings (checkpoint.msgpack)
    return Config(task=ModularConfig(p=7, op="add"), model=EmbedMLPConfig(d_embed=4, width=16),
                  optim=OptimConfig(name="adamw", lr=1e-2), train=TrainConfig(steps=20, log_every=10, progress=False),
                  ensemble=EnsembleConfig(seeds=2), name="figs")


@pytest.mark.parametrize("make, names", [(lambda: tiny_config(ensemble={"seeds": 2}), ("curves.png",)),
                                         (_modular, ("curves.png", "embedding_ring.png"))])
def test_figures_drawn_later_are_the_jobs_own(tmp_path, make, names):
    """The same job with its figures and without: toy-quanta-figures on the second draws the first's."""
    drawn, later = tmp_path / "drawn", tmp_path / "later"
    run_job(make(), drawn)
    cfg = make()
    cfg.train.figures = False
    run_job(cfg, later)
    assert all((drawn / n).read_bytes()[:8] == PNG for n in names)
    assert not any(p.suffix == ".png" for p in later.rglob("*"))
    assert figures.main([str(later)]) == 0
    for name in names:
        assert (later / name).read_bytes() == (drawn / name).read_bytes(), name


def test_whether_a_job_draws_its_figures():
    cfg = tiny_config()
    assert draws_figures(cfg, sweep=False) and not draws_figures(cfg, sweep=True)  # null: by where it runs
    for value in (True, False):
        cfg.train.figures = value
        assert draws_figures(cfg, sweep=False) is value and draws_figures(cfg, sweep=True) is value


def test_a_sweep_directory_gets_every_jobs_figures_and_its_own(vmap_sweep, tmp_path):
    """The vmap sweep's jobs drew none; toy-quanta-figures SWEEP draws each job's and sweep.png."""
    sweep = tmp_path / "sweep"
    shutil.copytree(vmap_sweep, sweep)
    (sweep / "sweep.png").unlink()
    assert not list(sweep.glob("*/curves.png"))
    assert figures.main([str(sweep)]) == 0
    assert (sweep / "sweep.png").read_bytes()[:8] == PNG
    assert sorted(p.parent.name for p in sweep.glob("*/curves.png")) == ["0", "1"]


def test_a_folder_that_is_neither_is_one_line(tmp_path, capsys):
    assert figures.main([str(tmp_path)]) == 2
    assert "neither a job directory" in capsys.readouterr().err
