"""A sweep's jobs composed from a template (hydra_plugins/toy_quanta_vmap_launcher/_compose.py)
are the configs Hydra composes for them, down to the hydra node; what a template cannot make is
left to Hydra."""

from __future__ import annotations

import pytest
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from hydra_plugins.toy_quanta_vmap_launcher._compose import SweepComposer

JOBS = [
    ["seed=0", "task.n_tasks=4", "optim.lr=0.001"],
    ["seed=7", "task.n_tasks=4", "optim.lr=0.003"],  # from the first's template
    ["seed=3", "task.n_tasks=5", "optim.lr=0.01"],
    ["seed=1", "task.n_tasks=4", "optim.lr=0.1"],
]


class Counting:
    def __init__(self, load):
        self.load, self.calls = load, 0

    def __call__(self, master, overrides):
        self.calls += 1
        return self.load(master, overrides)


@pytest.fixture
def loader_and_master(hydra_compose):
    master = compose("config", overrides=["task.n=8", "name=sweep"], return_hydra_config=True)
    return GlobalHydra.instance().config_loader(), master


def _yaml(cfg) -> str:
    return OmegaConf.to_yaml(cfg)  # unresolved: interpolations (hydra.run.dir's ${now:...}) compare as written


def test_alike_jobs_come_from_one_template_and_equal_hydras(loader_and_master):
    loader, master = loader_and_master
    hydra = Counting(loader.load_sweep_config)
    composer = SweepComposer(hydra)
    for overrides in JOBS:
        assert _yaml(composer.load(master, overrides)) == _yaml(loader.load_sweep_config(master, overrides))
    assert hydra.calls == 1  # the first job composed; the other three from its template


@pytest.mark.parametrize("first, second", [
    (["seed=0", "ensemble.lr=[0.1,0.2]"], ["seed=1", "ensemble.lr=[0.3]"]),  # a list value replaces the list
    (["seed=0", "task=modular", "model=transformer", "~experiment"], ["seed=0", "task=sparse_parity", "~experiment"]),
    (["seed=0", "+ensemble.noise=[0.1]"], ["seed=0", "+ensemble.noise=[0.2]"]),  # `+`: Hydra's
    (["seed=0", "ensemble.alpha=[0.2]"], ["seed=2", "ensemble.alpha=[0.4,0.6]"]),  # a task's own list
])
def test_what_a_template_makes_or_leaves_to_hydra_is_hydras_config(loader_and_master, first, second):
    loader, master = loader_and_master
    composer = SweepComposer(loader.load_sweep_config)
    for overrides in (first, second):
        assert _yaml(composer.load(master, overrides)) == _yaml(loader.load_sweep_config(master, overrides))


def test_a_bad_value_is_hydras_error(loader_and_master):
    """A value the schema refuses is not set on a template copy: Hydra composes the job and raises."""
    loader, master = loader_and_master
    composer = SweepComposer(loader.load_sweep_config)
    composer.load(master, ["seed=0"])
    with pytest.raises(ConfigCompositionException):
        composer.load(master, ["seed=abc"])


def test_the_sweepers_configs_are_the_launchers(loader_and_master):
    """What the sweeper composed (its batch check) is handed to the launcher, not composed again."""
    loader, master = loader_and_master
    hydra = Counting(loader.load_sweep_config)
    composer = SweepComposer(hydra)
    checked = [composer(master, overrides) for overrides in JOBS]  # the sweeper's validate_batch_is_legal
    calls = hydra.calls
    taken = [composer.take(master, overrides) for overrides in JOBS]
    assert hydra.calls == calls and all(a is b for a, b in zip(checked, taken))
    assert not composer.kept
