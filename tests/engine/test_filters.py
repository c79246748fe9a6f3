"""Gradient filters (toy_quanta.engine.filters) against NumPy references written from the papers' definitions."""

from __future__ import annotations

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toy_quanta.config import OptimConfig
from toy_quanta.engine import filters
from toy_quanta.engine.optim import Grokfast, make_optimizer

SHAPES = {"w": (3, 4), "b": (4,)}


def _grads(n_steps, seed=0):
    rng = np.random.default_rng(seed)
    return [{k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()} for _ in range(n_steps)]


def _params(seed=1):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def _apply(tx, grads, params=None):
    params = params if params is not None else _params()
    state, out = tx.init(params), []
    update = jax.jit(tx.update)
    for g in grads:
        u, state = update(g, state, params)
        out.append(jax.tree.map(np.asarray, u))
    return out


def _ema_reference(grads, alpha, lamb):
    """Grokfast's gradfilter_ema: the EMA starts at the first gradient."""
    out, ema = [], None
    for g in grads:
        ema = {k: g[k].astype(np.float64) for k in g} if ema is None else ema
        ema = {k: alpha * ema[k] + (1 - alpha) * g[k] for k in g}
        out.append({k: g[k] + lamb * ema[k] for k in g})
    return out


def _ma_reference(grads, window, lamb, warmup):
    """Grokfast's gradfilter_ma (mean): a deque of the last `window` gradients."""
    out, queue = [], deque(maxlen=window)
    for g in grads:
        queue.append({k: v.astype(np.float64) for k, v in g.items()})
        if not warmup or len(queue) == window:
            out.append({k: g[k] + lamb * np.mean([q[k] for q in queue], 0) for k in g})
        else:
            out.append(dict(g))
    return out


def _close(got, want, rtol=1e-5, atol=1e-6):
    for step, (a, b) in enumerate(zip(got, want)):
        for k in SHAPES:
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=f"step {step}, {k}")


def test_ema_filter_matches_grokfast_definition():
    grads = _grads(12)
    got = _apply(filters.grokfast(filters.EMA, 0.9, 2.0, kinds=frozenset({filters.EMA})), grads)
    _close(got, _ema_reference(grads, 0.9, 2.0))


@pytest.mark.parametrize("warmup", [True, False])
def test_ma_filter_matches_grokfast_definition_across_ring_wraps(warmup):
    """Window 4 over 15 steps: the ring wraps three times (the running sum is re-summed on each)."""
    grads = _grads(15, seed=2)
    got = _apply(filters.grokfast(filters.MA, 0.0, 5.0, kinds=frozenset({filters.MA}), window=4, warmup=warmup), grads)
    _close(got, _ma_reference(grads, 4, 5.0, warmup))


def test_per_member_kinds_in_one_program_equal_each_alone():
    """One vmapped program of kinds none, ema, ma (and an ema member at lambda 0): each member's
    updates equal its filter alone; none and lambda 0 pass the gradients through bit for bit."""
    grads = _grads(9, seed=3)
    kinds = frozenset({filters.NONE, filters.EMA, filters.MA})
    kind_M = jnp.array([filters.NONE, filters.EMA, filters.MA, filters.EMA])
    alpha_M, lamb_M = jnp.array([0.5, 0.8, 0.0, 0.8]), jnp.array([3.0, 2.0, 4.0, 0.0])
    params = _params()

    def run(kind, alpha, lamb):
        tx = filters.grokfast(kind, alpha, lamb, kinds=kinds, window=3)
        state = tx.init(params)
        outs = []
        for g in grads:
            u, state = tx.update(g, state, params)
            outs.append(u)
        return outs

    outs = jax.jit(jax.vmap(run))(kind_M, alpha_M, lamb_M)
    member = lambda i: [jax.tree.map(lambda x: np.asarray(x[i]), o) for o in outs]  # noqa: E731
    for i in (0, 3):
        for a, g in zip(member(i), grads):
            for k in SHAPES:
                np.testing.assert_array_equal(a[k], g[k])
    _close(member(1), _ema_reference(grads, 0.8, 2.0))
    _close(member(2), _ma_reference(grads, 3, 4.0, warmup=True))


def test_orthogonal_gradient_is_perpendicular_to_the_weights_with_the_gradient_norm():
    grads, params = _grads(1, seed=4), _params(5)
    (got,) = _apply(filters.orthogonal(), grads, params)
    for k in SHAPES:
        w, g = params[k].astype(np.float64).ravel(), grads[0][k].astype(np.float64).ravel()
        perp = g - (w @ g) / (w @ w) * w
        want = perp * np.linalg.norm(g) / np.linalg.norm(perp)
        np.testing.assert_allclose(got[k].ravel(), want, rtol=1e-5, atol=1e-6)
        assert abs(got[k].ravel() @ w) < 1e-4 * np.linalg.norm(w) * np.linalg.norm(g)


def test_orthogonal_gradient_of_zero_weights_is_the_gradient_and_of_a_parallel_gradient_is_zero():
    params = {"w": np.zeros((3, 4), np.float32), "b": np.ones(4, np.float32)}
    grads = [{"w": np.ones((3, 4), np.float32), "b": 2 * np.ones(4, np.float32)}]
    (got,) = _apply(filters.orthogonal(), grads, params)
    np.testing.assert_allclose(got["w"], grads[0]["w"], rtol=1e-6)
    assert np.all(np.isfinite(got["b"])) and np.abs(got["b"]).max() < 1e-6


def test_make_optimizer_filters_the_raw_gradients_before_adams_coupled_weight_decay():
    """optim=adam with grokfast ema: updates equal optax's Adam (with PyTorch's L2 term added after
    the filter, as Grokfast's code) fed the NumPy-filtered gradients."""
    grads, params = _grads(6, seed=6), _params(7)
    cfg = OptimConfig(name="adam", lr=1e-2, weight_decay=0.1, grokfast="ema")
    got = _apply(make_optimizer(cfg, cfg.lr, cfg.weight_decay, 100, Grokfast(filters.EMA, 0.7, 1.5,
                                                                             frozenset({filters.EMA}))), grads, params)
    reference = optax.chain(optax.add_decayed_weights(0.1), optax.scale_by_adam(0.9, 0.999, 1e-8),
                            optax.scale_by_learning_rate(1e-2))
    filtered = [{k: v.astype(np.float32) for k, v in g.items()} for g in _ema_reference(grads, 0.7, 1.5)]
    _close(got, _apply(reference, filtered, params))


def test_make_optimizer_default_is_the_configured_kind():
    """Without per-member values, optim.grokfast's kind, alpha and lambda apply; none adds no state."""
    grads = _grads(5, seed=8)
    cfg = OptimConfig(name="sgd", lr=1.0, grokfast="ma", grokfast_window=2, grokfast_lambda=3.0)
    got = _apply(make_optimizer(cfg, 1.0, 0.0, 10), grads)
    _close(got, [{k: -v for k, v in g.items()} for g in _ma_reference(grads, 2, 3.0, warmup=True)])
    plain = make_optimizer(OptimConfig(name="sgd", lr=1.0), 1.0, 0.0, 10)
    assert not any(isinstance(s, filters.GrokfastState) for s in jax.tree.leaves(
        plain.init(_params()), is_leaf=lambda x: isinstance(x, filters.GrokfastState)))


# --- in the engine: arms of unlike filters in one program ---------------------------------------

ARMS = {"baseline": {}, "baseline_wd": {"optim.weight_decay": 0.05},
        "ema": {"optim": {"grokfast": "ema", "grokfast_alpha": 0.8, "grokfast_lambda": 2.0}, "optim.weight_decay": 0.05},
        "ma": {"optim.grokfast": "ma", "optim.grokfast_lambda": 1.5}}


def _arms_cfg(arms):
    from conftest import tiny_config

    return tiny_config(optim={"grokfast_window": 3}, train={"steps": 30, "log_every": 10},
                       ensemble={"seeds": 2, "arms": arms})


def test_each_arm_in_one_ensemble_equals_its_settings_trained_alone():
    """Four arms x 2 seeds in one program (kinds none, ema, ma): the MA arm's second seed's metrics
    equal the same settings trained as a one-member job without arms (EMA's and none's: the
    per-member kinds test above)."""
    from toy_quanta.engine.loop import fit
    from toy_quanta.engine.members import expand

    together = fit(_arms_cfg(ARMS), expand(_arms_cfg(ARMS)))
    assert [m["arm"] for m in together.members] == [a for a in ARMS for _ in range(2)]
    for i, m in enumerate(together.members):
        if m["seed"] != 1 or m["arm"] != "ma":
            continue
        alone_cfg = _arms_cfg({m["arm"]: ARMS[m["arm"]]})
        alone_members = [x for x in expand(alone_cfg) if x["seed"] == m["seed"]]
        alone = fit(alone_cfg, alone_members)
        for name in ("train_loss", "test_loss", "param_norm"):
            np.testing.assert_allclose(together.log_array(name)[:, i], alone.log_array(name)[:, 0], rtol=2e-5,
                                       err_msg=f"{m['arm']} seed {m['seed']}: {name}")
    # the arms really differ: filtered and decayed members leave the baseline's path
    finals = together.log_array("param_norm")[-1].reshape(4, 2)
    assert len({round(float(x), 4) for x in finals[:, 0]}) == 4
