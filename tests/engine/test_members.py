"""Ensemble members (toy_quanta.engine.members): the product of the ensemble lists, times seeds."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_config
from toy_quanta.engine.members import expand, member_keys, stack, vector_keys
from toy_quanta.tasks.sparse_parity import train_capacity

VECTOR_KEYS = ("seed", *member_keys("sparse_parity"))  # a sparse-parity member's keys


def test_no_ensemble_is_one_member_with_the_config_values():
    """Without ensemble lists: one member carrying the config's own scalars, keyed by its task's
    and the engine's per-member keys: no other task's key (task.train_fraction) appears."""
    cfg = tiny_config(seed=7, task={"alpha": 0.3}, model={"init_scale": 0.5}, optim={"lr": 2e-3, "weight_decay": 1e-4})
    (m,) = expand(cfg)
    assert tuple(m) == VECTOR_KEYS and "task.train_fraction" in vector_keys()
    assert m == {"seed": 7, "task.alpha": 0.3, "task.D": None, "model.init_scale": 0.5,
                 "model.output_scale": 1.0, "optim.lr": 2e-3, "optim.weight_decay": 1e-4, "optim.eps": 1e-8,
                 "optim.fixed_norm": None, "optim.grokfast": "none", "optim.grokfast_alpha": 0.98,
                 "optim.grokfast_lambda": 2.0}


def test_product_of_lists_times_seeds():
    """Members = every combination of the lists, each with seeds seed, seed+1, ...; keys not in a
    list keep the config value."""
    lrs, alphas, wds = [1e-3, 1e-2], [0.2, 0.4, 0.8], [0.0, 1e-3]
    cfg = tiny_config(seed=10, ensemble={"seeds": 3, "lr": lrs, "alpha": alphas, "weight_decay": wds},
                      model={"init_scale": 1.5})
    members = expand(cfg)
    assert len(members) == len(lrs) * len(alphas) * len(wds) * 3
    expected = set()
    for lr in lrs:
        for a in alphas:
            for wd in wds:
                for s in (10, 11, 12):
                    expected.add((s, a, None, 1.5, 1.0, lr, wd, 1e-8, None, "none", 0.98, 2.0))
    got = [tuple(m[k] for k in VECTOR_KEYS) for m in members]
    assert len(set(got)) == len(got)  # no duplicates
    assert set(got) == expected


def test_init_scale_list_and_seeds_only():
    cfg = tiny_config(seed=0, ensemble={"seeds": 2, "init_scale": [0.5, 2.0]})
    members = expand(cfg)
    assert sorted((m["seed"], m["model.init_scale"]) for m in members) == [(0, 0.5), (0, 2.0), (1, 0.5), (1, 2.0)]
    assert {m["optim.lr"] for m in members} == {cfg.optim.lr}


def test_stack_gives_per_member_columns():
    """stack(): (M,) arrays by key (the task's and the engine's), int32 seeds and integer keys,
    float32 scalars, in member order; a key of another task is left out."""
    cfg = tiny_config(seed=3, ensemble={"seeds": 2, "lr": [1e-3, 5e-3]})
    members = expand(cfg)
    h = stack(members, "sparse_parity")
    assert set(h) == {"seed", "task.alpha", "task.D", "model.init_scale", "optim.lr", "optim.weight_decay",
                      "optim.fixed_norm", "optim.grokfast", "optim.grokfast_alpha", "optim.grokfast_lambda",
                      "optim.eps", "model.output_scale"}
    assert h["seed"].dtype == np.int32 and h["optim.grokfast"].dtype == np.int32
    for key, arr in h.items():
        assert arr.shape == (4,)
        if key in ("task.D", "optim.fixed_norm", "optim.grokfast"):  # online, free norms: null, 0 here; "none": 0
            assert not arr.any()
            continue
        np.testing.assert_allclose(arr, np.array([m[key] for m in members], np.float64), rtol=1e-7)
    assert h["task.D"].dtype == np.int32
    assert h["optim.lr"].dtype == np.float32 and h["task.alpha"].dtype == np.float32


def test_ensemble_D_list_gives_finite_members_and_the_longest_sets_the_capacity():
    cfg = tiny_config(seed=0, ensemble={"seeds": 2, "D": [100, 1000, 300]})
    members = expand(cfg)
    assert sorted((m["seed"], m["task.D"]) for m in members) == [(s, d) for s in (0, 1) for d in (100, 300, 1000)]
    assert train_capacity(members) == 1000
    np.testing.assert_array_equal(np.sort(stack(members, "sparse_parity")["task.D"]), [100, 100, 300, 300, 1000, 1000])
    assert train_capacity(expand(tiny_config())) is None
    with pytest.raises(ValueError, match="online"):
        train_capacity([{"task.D": None}, {"task.D": 5}])


def test_arms_multiply_the_lists_and_seeds_and_label_their_members():
    """Each arm (slowest) times the lists' product times the seeds; an arm's values override the
    config's, keys it leaves alone keep them; stack turns the filter's name into its index."""
    arms = {"base": {}, "ema": {"optim": {"grokfast": "ema", "weight_decay": 0.1}}, "ma": {"optim.grokfast": "ma"}}
    cfg = tiny_config(optim={"weight_decay": 0.01}, ensemble={"seeds": 2, "alpha": [0.2, 0.4], "arms": arms})
    members = expand(cfg)
    got = [(m["arm"], m["task.alpha"], m["seed"], m["optim.grokfast"], m["optim.weight_decay"]) for m in members]
    assert got == [(arm, a, s, kind, wd) for arm, kind, wd in (("base", "none", 0.01), ("ema", "ema", 0.1),
                                                               ("ma", "ma", 0.01))
                   for a in (0.2, 0.4) for s in (0, 1)]
    assert stack(members, "sparse_parity")["optim.grokfast"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert "arm" not in expand(tiny_config())[0]


def test_each_tasks_members_carry_its_own_keys_only():
    """A member of any task is keyed by seed, the task's own per-member keys and the engine's: no
    column of another task (task.alpha, task.D, task.train_fraction) reaches its summary or tables."""
    from toy_quanta import registry
    from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig

    for name, task in registry.tasks().items():
        model = registry.model(task.models[0])
        cfg = Config(task=task.config(), model=model.config(), optim=OptimConfig(), train=TrainConfig(),
                     ensemble=EnsembleConfig(seeds=2))
        members = expand(cfg)
        assert [tuple(m) for m in members] == [("seed", *member_keys(name))] * 2, name
        others = {k for k in vector_keys() if k.startswith("task.")} - set(task.member_keys)
        assert not others & set(members[0]), (name, others & set(members[0]))
