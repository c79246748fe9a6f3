"""Fixed-norm training (Omnigrok's LU runs): engine.train.fix_norm and guarded_update, the members' fixed
norms, and the dataset trainer (task=teacher_student) keeping every fixed-norm member at its norm w
while a free member next to them trains as if alone.

Every task trains through the same engine (sparse parity at fixed norms below); modular arithmetic's fixed norms are checked on a real
run in tests/cli/test_experiments.py (lu_modadd: param_norm equals each member's w at every log step), which
saves compiling another program here (each costs seconds on a 2-core CPU)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig
from toy_quanta.models.dense_mlp import DenseMLPConfig
from toy_quanta.models.embed_mlp import EmbedMLPConfig
from toy_quanta.tasks.symbol_add import SymbolAddConfig
from toy_quanta.tasks.teacher_student import TeacherStudentConfig
from toy_quanta.engine.loop import fit
from toy_quanta.engine.members import expand, stack
from toy_quanta.engine.train import fix_norm, guarded_update

NORMS = (2.0, 5.0, 11.0)
_fix_norm = jax.jit(fix_norm)  # one compile for every call below (eager dispatch is slow on CPU)


def _tree(seed: int) -> dict:
    """A random nested parameter tree of assorted shapes (float32)."""
    rng = np.random.default_rng(seed)
    shapes = {"a": (3, 4), "b": (5,), "c": {"d": (2, 2, 3), "e": ()}, "f": [(7,), (1, 6)]}
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s) * rng.uniform(0.1, 10), jnp.float32), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))


def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree))))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("w", [0.3, 4.0, 250.0])
def test_fix_norm_rescales_the_whole_tree_to_norm_w(seed, w):
    params = _tree(seed)
    fixed = _fix_norm(params, w)
    assert jax.tree.structure(fixed) == jax.tree.structure(params)
    assert _norm(fixed) == pytest.approx(w, rel=1e-5)
    scale = w / _norm(params)  # one factor for every leaf: the direction is kept
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(fixed)):
        assert y.dtype == x.dtype
        np.testing.assert_allclose(np.asarray(y), scale * np.asarray(x), rtol=2e-5, atol=1e-7)


def test_a_free_norm_leaves_the_parameters_unchanged():
    params = _tree(3)
    assert fix_norm(params, None) is params
    for f in (_fix_norm,):
        for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(f(params, jnp.float32(0.0)))):
            np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_fix_norm_per_member_under_vmap():
    """As the trainers use it: each member its own norm, 0 for a free member."""
    trees = [_tree(s) for s in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
    norms = jnp.asarray([0.0, 2.5, 70.0], jnp.float32)
    fixed = jax.jit(jax.vmap(fix_norm))(stacked, norms)
    member = lambda tree, i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
    for x, y in zip(jax.tree.leaves(trees[0]), jax.tree.leaves(member(fixed, 0))):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    assert _norm(member(fixed, 1)) == pytest.approx(2.5, rel=1e-5)
    assert _norm(member(fixed, 2)) == pytest.approx(70.0, rel=1e-5)


def test_guarded_update_projects_after_the_step_and_keeps_a_diverged_member():
    params, grads = _tree(4), _tree(5)
    tx = optax.sgd(0.1)
    opt_state = tx.init(params)
    alive, step, never = jnp.asarray(True), jnp.asarray(7, jnp.int32), jnp.asarray(-1, jnp.int32)
    update = jax.jit(lambda loss, norm: guarded_update(tx, params, opt_state, grads, loss, alive, step, never, norm))
    new, _, ok, diverged = update(jnp.float32(1.0), jnp.float32(3.0))
    assert bool(ok) and int(diverged) == -1
    assert _norm(new) == pytest.approx(3.0, rel=1e-5)
    stepped = jax.tree.map(lambda p, g: np.asarray(p, np.float64) - 0.1 * np.asarray(g, np.float64), params, grads)
    scale = 3.0 / _norm(stepped)  # the step first, then the projection
    for y, s in zip(jax.tree.leaves(new), jax.tree.leaves(stepped)):
        np.testing.assert_allclose(np.asarray(y), scale * s, rtol=2e-5, atol=1e-6)
    # a free member (norm 0) takes the plain step
    free, *_ = update(jnp.float32(1.0), jnp.float32(0.0))
    for y, s in zip(jax.tree.leaves(free), jax.tree.leaves(stepped)):
        np.testing.assert_allclose(np.asarray(y), s, rtol=1e-5, atol=1e-6)
    # a non-finite loss: the member keeps its parameters and records the step
    kept, _, ok, diverged = update(jnp.float32(np.nan), jnp.float32(3.0))
    assert not bool(ok) and int(diverged) == 7
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(kept)):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


# ------------------------------------------------------------------------------------------------
# Members

def _symbol_add_cfg(**ensemble) -> Config:
    return Config(task=SymbolAddConfig(p=6, train_fraction=0.7),
                  model=EmbedMLPConfig(d_embed=4, width=8, depth=1, activation="tanh"),
                  optim=OptimConfig(name="adamw", lr=1e-2, weight_decay=0.0),
                  train=TrainConfig(steps=8, log_every=4, progress=False),
                  ensemble=EnsembleConfig(**ensemble))


def _teacher_cfg(**ensemble) -> Config:
    return Config(task=TeacherStudentConfig(d_in=4, d_out=2, teacher_width=6, n_train=24, n_test=40),
                  model=DenseMLPConfig(width=8, depth=1),
                  optim=OptimConfig(name="adamw", lr=1e-2, weight_decay=0.0),
                  train=TrainConfig(steps=8, log_every=4, progress=False),
                  ensemble=EnsembleConfig(**ensemble))


def test_members_carry_their_fixed_norm():
    cfg = _symbol_add_cfg(fixed_norm=list(NORMS), seeds=2)
    members = expand(cfg)
    assert [(m["optim.fixed_norm"], m["seed"]) for m in members] == [(w, s) for w in NORMS for s in (0, 1)]
    np.testing.assert_array_equal(stack(members, "symbol_add")["optim.fixed_norm"], np.repeat(NORMS, 2).astype(np.float32))
    # optim.fixed_norm: every member; none set: a free norm, stacked as 0
    one = dataclasses.replace(_teacher_cfg(), optim=dataclasses.replace(_teacher_cfg().optim, fixed_norm=7.5))
    assert [m["optim.fixed_norm"] for m in expand(one)] == [7.5]
    free = expand(_teacher_cfg())
    assert free[0]["optim.fixed_norm"] is None
    stacked = stack(free, "teacher_student")["optim.fixed_norm"]
    assert stacked.tolist() == [0.0] and stacked.dtype == np.float32


# ------------------------------------------------------------------------------------------------
# Training at fixed norms, with a free member alongside

def _with_free(cfg: Config) -> list[dict]:
    """The config's fixed-norm members, then one free member (seed 0, no fixed norm)."""
    members = expand(cfg)
    return [*members, {**members[0], "optim.fixed_norm": None}]


@pytest.fixture(scope="module")
def teacher_runs():
    cfg = _teacher_cfg(fixed_norm=list(NORMS))
    members = _with_free(cfg)
    return fit(cfg, members), fit(cfg, members[-1:])


def _check_norms(result) -> None:
    assert result.steps == [0, 4, 8]
    norm_LxM = result.log_array("param_norm")
    for m, w in enumerate(NORMS):
        np.testing.assert_allclose(norm_LxM[:, m], w, rtol=1e-5, err_msg=f"member {m} (w={w})")
        # it trained all the same: the loss moved
        loss_L = result.log_array("train_loss")[:, m]
        assert abs(loss_L[-1] - loss_L[0]) > 1e-4 * abs(loss_L[0])
    # the final parameters themselves have norm w
    for m, w in enumerate(NORMS):
        assert _norm(jax.tree.map(lambda x: x[m], result.params)) == pytest.approx(w, rel=1e-5)
    # the free member's norm is its own (free to move), not one of the fixed ones
    free = norm_LxM[:, len(NORMS)]
    assert not np.allclose(free[0], free[-1], rtol=1e-6) and not np.isin(np.round(free, 3), NORMS).any()
    assert np.asarray(result.alive).all()


def test_dataset_trainer_keeps_each_member_at_its_norm(teacher_runs):
    _check_norms(teacher_runs[0])
    # members at different norms learn differently
    final = teacher_runs[0].log_array("train_loss")[-1, : len(NORMS)]
    assert len(np.unique(np.round(final, 6))) == len(NORMS)


def test_a_free_member_next_to_fixed_norms_equals_the_member_trained_alone(teacher_runs):
    together, alone = teacher_runs
    free = len(NORMS)
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "param_norm"):
        np.testing.assert_allclose(together.log_array(key)[:, free], alone.log_array(key)[:, 0], rtol=2e-5, atol=1e-7,
                                   err_msg=key)
    for x, y in zip(jax.tree.leaves(together.params), jax.tree.leaves(alone.params)):
        np.testing.assert_allclose(np.asarray(x)[free], np.asarray(y)[0], rtol=2e-5, atol=1e-6)


def test_sparse_parity_trains_at_a_fixed_norm_through_the_same_engine():
    """One engine for every task: sparse parity members at fixed norms 3 and 5 log exactly that
    parameter norm at every log step, and still learn (the test loss falls)."""
    from conftest import tiny_config
    from toy_quanta.engine.loop import fit

    cfg = tiny_config(ensemble={"fixed_norm": [3.0, 5.0]}, train={"steps": 40})
    r = fit(cfg, expand(cfg))
    np.testing.assert_allclose(r.log_array("param_norm"), np.broadcast_to([3.0, 5.0], (len(r.steps), 2)), rtol=1e-5)
    loss = r.log_array("test_loss")
    assert np.all(loss[-1] < loss[0])
