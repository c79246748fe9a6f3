"""task=sparse_parity (toy_quanta.tasks.sparse_parity): each member's subsets come from its own seed,
or from task.subset_seed when set. The task through the engine is tests/engine/test_train.py's
vehicle (evaluation against NumPy, finite training sets, ensembles over alpha and D)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_config
from toy_quanta.engine.members import expand
from toy_quanta.tasks.sparse_parity import subsets_for


def test_subsets_follow_member_seed_or_subset_seed():
    cfg = tiny_config(ensemble={"seeds": 2})
    s = subsets_for(cfg, expand(cfg))
    assert s.shape == (2, cfg.task.n_tasks, cfg.task.k)
    assert not np.array_equal(s[0], s[1])
    fixed = tiny_config(ensemble={"seeds": 2}, task={"subset_seed": 9})
    s = subsets_for(fixed, expand(fixed))
    np.testing.assert_array_equal(s[0], s[1])


def test_the_subset_count_check_is_quick_for_a_huge_n():
    """C(2^30, 2^29) has about 3e8 digits: the check stops as soon as the count reaches n_tasks."""
    import time

    from toy_quanta.tasks.sparse_parity import _comb_up_to

    t0 = time.perf_counter()
    assert _comb_up_to(2**30, 2**29, 20) >= 20
    assert time.perf_counter() - t0 < 1.0
    for n, k in ((30, 3), (8, 8), (10, 0), (12, 6)):
        import math
        assert _comb_up_to(n, k, 10**9) == math.comb(n, k)


# --- the hinge and squared losses (one real output), skill strength, relevant weight -------------

def _numpy_f(params: dict, task, bits) -> np.ndarray:
    """The one-output depth-1 MLP on [one-hot | bits], float64 NumPy."""
    p = {k: {n: np.asarray(v, np.float64) for n, v in layer.items()} for k, layer in params.items()}
    n_control = p["inp"]["kernel"].shape[0] - bits.shape[1]
    x = np.concatenate([np.eye(n_control)[np.asarray(task)], np.asarray(bits, np.float64)], axis=1)
    h = np.maximum(x @ p["inp"]["kernel"] + p["inp"]["bias"], 0)
    return (h @ p["out"]["kernel"] + p["out"]["bias"])[:, 0]


@pytest.mark.parametrize("loss", ["hinge", "mse"])
def test_real_output_losses_strength_and_relevant_weight_equal_numpy(loss):
    """task.loss hinge / mse: one output f; the logged test loss, per-subtask strength (mean f y)
    and accuracy, and subtask_relevant_weight at the last step equal a NumPy evaluation of the
    final parameters on the engine's own sets."""
    import jax
    from flax import nnx

    from toy_quanta.engine.loop import fit, make_trainer, trainer_inputs

    cfg = tiny_config(task={"loss": loss, "target_scale": 3.0, "progress": True}, train={"steps": 40})
    members = expand(cfg)
    r = fit(cfg, members)
    trainer = make_trainer(cfg, members)
    _, data = jax.device_get(jax.jit(jax.vmap(trainer.init))(*trainer_inputs(cfg, trainer, members)))
    params = jax.tree.map(lambda x: np.asarray(x)[0], nnx.to_pure_dict(r.params))
    assert params["out"]["kernel"].shape == (cfg.model.width, 1)

    task, bits, label = (np.asarray(x)[0] for x in data.task.test)
    f, y = _numpy_f(params, task, bits), 2.0 * label - 1
    want = np.maximum(0, 1 - y * f) if loss == "hinge" else 0.5 * (f - 3.0 * y) ** 2
    np.testing.assert_allclose(r.log_array("test_loss")[-1, 0], want.mean(), rtol=1e-4)

    task, bits, label = (np.asarray(x)[0] for x in data.task.per_task)
    f, y = _numpy_f(params, task, bits), 2.0 * label - 1
    T = cfg.task.n_tasks
    np.testing.assert_allclose(r.log_array("subtask_strength")[-1, 0], [np.mean((f * y)[task == t]) for t in range(T)],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r.log_array("subtask_acc")[-1, 0], [np.mean(((f > 0) == (y > 0))[task == t])
                                                                   for t in range(T)], atol=1.5 / cfg.task.per_task_test)

    rows = np.asarray(params["inp"]["kernel"], np.float64)[T:] ** 2
    subsets = np.asarray(data.task.subsets)[0]
    want = [rows[s].sum(1).mean() / rows.sum(1).mean() for s in subsets]
    np.testing.assert_allclose(r.log_array("subtask_relevant_weight")[-1, 0], want, rtol=1e-4)
    assert r.log_array("test_loss")[-1, 0] < r.log_array("test_loss")[0, 0]  # it learns


def test_relevant_weight_of_a_planted_and_a_random_first_layer():
    """Weight on one subset's rows only: n / k for it (all the weight is there), 0 for a subset
    sharing none of them; a random first layer drawn as the model draws it: near 1, and equal to
    NumPy's ratio."""
    import jax.numpy as jnp

    from toy_quanta.tasks.sparse_parity import relevant_weight

    n, k = 24, 3
    rng = np.random.default_rng(0)
    subsets = np.array([[2, 11, 19], [0, 1, 3]])
    planted = np.zeros((n, 100))
    planted[subsets[0]] = rng.normal(size=(k, 100))
    np.testing.assert_allclose(relevant_weight(jnp.asarray(planted), jnp.asarray(subsets)), [n / k, 0.0], rtol=1e-6)

    # the model's initialisation: U(+-1/sqrt(fan_in)), fan_in = the control bit and the n bits
    kernel = rng.uniform(-1, 1, (n, 400)) / np.sqrt(n + 1)
    sq = (kernel.astype(np.float64) ** 2).sum(axis=1)
    for s in (subsets[0], np.array([5, 17, 23])):
        got = float(relevant_weight(jnp.asarray(kernel), jnp.asarray(s[None]))[0])
        assert got == pytest.approx(sq[s].mean() / sq.mean(), rel=1e-5)
        # a row's squared norm over 400 uniform weights varies by about 4.5%, a mean of 3 rows by 2.6%
        assert abs(got - 1) < 0.15


@pytest.mark.parametrize("override, key", [({"loss": "l1"}, "task.loss"), ({"target_scale": 0.0}, "task.target_scale"),
                                           ({"progress": "yes"}, "task.progress")])
def test_bad_loss_keys_are_refused(override, key):
    from toy_quanta.config import validate
    from toy_quanta.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        validate(tiny_config(task=override))


def test_squared_loss_summary_counts_subtasks_learned_by_accuracy():
    from toy_quanta.tasks.sparse_parity import SparseParity

    logs = {"test_loss": np.array([1.0, 0.2]), "subtask_loss": np.array([[1, 1, 1.0], [0.1, 3, 0.0]]),
            "subtask_acc": np.array([[0.5, 0.5, 0.5], [0.995, 0.7, 1.0]]), "subtask_strength": np.zeros((2, 3))}
    assert SparseParity().summarize(np.array([0, 10]), logs) == {"subtasks_learned": 2}


def test_squared_loss_run_calibrates_the_solvable_model(tmp_path):
    """A tiny regression run whose first skills emerge: after_run calibrates on skill 1 (whose own
    prediction then matches it), predicts the others, and draws solvable.png."""
    from toy_quanta.engine.loop import fit
    from toy_quanta.tasks.sparse_parity import SparseParity

    cfg = tiny_config(task={"n_tasks": 3, "n": 8, "k": 2, "alpha": 1.0, "loss": "mse", "target_scale": 2.0,
                            "per_task_test": 64},
                      model={"width": 32}, optim={"name": "sgd", "lr": 0.2},
                      train={"steps": 600, "batch_size": 128, "log_count": 30})
    task = SparseParity()
    result = fit(cfg, expand(cfg))
    out = task.after_run(cfg, result, None, tmp_path)["solvable"]
    assert (tmp_path / "solvable.png").stat().st_size > 10_000
    skills = out["skills"]
    assert [s["skill"] for s in skills] == [1, 2, 3]
    assert skills[0]["ratio"]["value"] == pytest.approx(1.0, abs=0.15)
    assert skills[0]["predicted_step"] < skills[1]["predicted_step"] < skills[2]["predicted_step"]
    cal = out["members"][0]["calibration"]
    assert cal["rate"] > 0 and 0 < cal["R0"] < 2.0
    assert any("skill 2" in line for line in task.report_lines({"solvable": out}))


@pytest.mark.parametrize("loss", ["hinge", "cross_entropy"])
def test_plus_minus_inputs_reach_the_model_as_plus_minus_one(loss):
    """task.encoding=plus_minus: the logged test loss equals a NumPy evaluation of the final
    parameters on 2 b - 1 (and not on the {0, 1} bits)."""
    import jax
    from flax import nnx

    from toy_quanta.engine.loop import fit, make_trainer, trainer_inputs

    cfg = tiny_config(task={"loss": loss, "encoding": "plus_minus"}, train={"steps": 40})
    members = expand(cfg)
    r = fit(cfg, members)
    trainer = make_trainer(cfg, members)
    _, data = jax.device_get(jax.jit(jax.vmap(trainer.init))(*trainer_inputs(cfg, trainer, members)))
    params = jax.tree.map(lambda x: np.asarray(x)[0], nnx.to_pure_dict(r.params))
    task, bits, label = (np.asarray(x)[0] for x in data.task.test)
    y = 2.0 * label - 1

    def mean_loss(inputs):
        p = {k: {n: np.asarray(v, np.float64) for n, v in layer.items()} for k, layer in params.items()}
        n_control = p["inp"]["kernel"].shape[0] - inputs.shape[1]
        x = np.concatenate([np.eye(n_control)[task], inputs], axis=1)
        out = np.maximum(x @ p["inp"]["kernel"] + p["inp"]["bias"], 0) @ p["out"]["kernel"] + p["out"]["bias"]
        if loss == "hinge":
            return np.mean(np.maximum(0, 1 - y * out[:, 0]))
        margin = out[:, 1] - out[:, 0]
        return np.mean(np.logaddexp(0, -y * margin))

    logged = r.log_array("test_loss")[-1, 0]
    np.testing.assert_allclose(logged, mean_loss(2.0 * bits - 1), rtol=1e-4)
    assert abs(logged - mean_loss(bits.astype(np.float64))) > 1e-3


def test_disjoint_subsets_and_encoding_are_validated():
    from toy_quanta.config import validate
    from toy_quanta.errors import ConfigError

    validate(tiny_config(task={"subsets": "disjoint", "n_tasks": 2, "n": 8, "k": 3}))
    for task, key in (({"subsets": "disjoint", "n_tasks": 3, "n": 8, "k": 3}, "task.n_tasks"),
                      ({"subsets": "apart"}, "task.subsets"), ({"encoding": "pm1"}, "task.encoding")):
        with pytest.raises(ConfigError) as info:
            validate(tiny_config(task=task))
        assert info.value.key == key
    cfg = tiny_config(task={"subsets": "disjoint", "n_tasks": 2, "n": 8, "k": 3}, ensemble={"seeds": 3})
    for s in subsets_for(cfg, expand(cfg)):
        assert len(np.unique(s)) == 6
