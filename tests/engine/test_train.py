"""The training engine (toy_quanta.engine.train) and its host loop (toy_quanta.engine.loop)."""

from __future__ import annotations

import math

import jax
from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import member, tiny_config
from toy_quanta.engine.loop import FitResult, fit, make_trainer, trainer_inputs
from toy_quanta.engine.members import expand
from toy_quanta.engine.train import log_steps, n_microbatches

LOGGED = ("train_loss", "train_acc", "test_loss", "test_acc", "param_norm", "readout_norm", "init_distance", "alive",
          "subtask_loss", "subtask_acc")
COMPARED = ("test_loss", "train_loss", "subtask_loss", "param_norm", "test_acc")


# --- independent NumPy reference computations ------------------------------------------------

def numpy_parity(bits, subsets, task):
    return np.array([int(sum(int(bits[b, i]) for i in subsets[t])) % 2 for b, t in enumerate(task)])


def numpy_logits(params, task, bits):
    """The depth-1 MLP on [one-hot | bits] in float64 NumPy, from a pure dict of one member."""
    n_control = params["inp"]["kernel"].shape[0] - bits.shape[1]
    x = np.concatenate([np.eye(n_control)[np.asarray(task)], np.asarray(bits, np.float64)], axis=1)
    h = np.maximum(x @ np.asarray(params["inp"]["kernel"], np.float64) + np.asarray(params["inp"]["bias"], np.float64), 0)
    return h @ np.asarray(params["out"]["kernel"], np.float64) + np.asarray(params["out"]["bias"], np.float64)


def numpy_ce(logits, label):
    """Per-sample softmax cross-entropy (nats) and correctness."""
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(label)), np.asarray(label)], (logits.argmax(1) == np.asarray(label)).astype(float)


def member_params(result: FitResult, i: int) -> dict:
    from flax import nnx
    pure = nnx.to_pure_dict(result.params)
    return jax.tree.map(lambda x: np.asarray(x)[i], pure)


def trainer_for(cfg, members):
    """The engine's trainer for these members and its stacked inputs (hyperparameters, subsets)."""
    trainer = make_trainer(cfg, members)
    return trainer, trainer_inputs(cfg, trainer, members)


def run_data(cfg, members):
    """The evaluation / training sets that the engine builds for `members` (vmapped init)."""
    trainer, inputs = trainer_for(cfg, members)
    _, data = jax.jit(jax.vmap(trainer.init))(*inputs)
    return jax.device_get(data.task)


def take(batch, i):
    return [np.asarray(x)[i] for x in batch]


def assert_member_equal(a: FitResult, ia: int, b: FitResult, ib: int, rtol=1e-4, atol=1e-5):
    """Member ia of run a and member ib of run b: same logged metrics and final parameters."""
    assert a.steps == b.steps
    for name in COMPARED:
        np.testing.assert_allclose(a.log_array(name)[:, ia], b.log_array(name)[:, ib], rtol=rtol, atol=atol, err_msg=name)
    leaves_a, leaves_b = jax.tree.leaves(a.params), jax.tree.leaves(b.params)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x)[ia], np.asarray(y)[ib], rtol=rtol, atol=atol)
    assert bool(a.alive[ia]) == bool(b.alive[ib]) and a.diverged_step[ia] == b.diverged_step[ib]


# --- log_steps, microbatches (no compilation) ------------------------------------------------

@pytest.mark.parametrize("steps,every", [(100, 30), (100, 100), (60, 20), (7, 1), (5, 10), (1, 1)])
def test_log_steps_linear(steps, every):
    """0, every multiple of log_every up to steps, and steps itself; sorted, no duplicates."""
    s = log_steps(steps, every, None)
    expected = sorted(set(range(0, steps + 1, every)) | {0, steps})
    assert s.tolist() == expected
    assert s.dtype.kind == "i"


@pytest.mark.parametrize("steps,count", [(1000, 4), (10_000, 20), (200_000, 100), (50, 200)])
def test_log_steps_log_spaced(steps, count):
    """log_count: starts at 0, ends at steps, increasing, at most count + 1 points, geometric spacing:
    each point is within rounding of 10^(j * log10(steps) / (count - 1))."""
    s = log_steps(steps, 10**9, count)
    assert s[0] == 0 and s[-1] == steps and np.all(np.diff(s) > 0)
    assert len(s) <= count + 1
    ideal = [10 ** (j * math.log10(steps) / (count - 1)) for j in range(count)]
    for x in ideal:
        assert np.min(np.abs(s[1:] - x)) <= 0.5 + 1e-9 * x  # its rounding is logged
    if count == 4 and steps == 1000:
        assert s.tolist() == [0, 1, 10, 100, 1000]


def test_log_count_ignores_log_every():
    assert log_steps(1000, 1, 4).tolist() == log_steps(1000, 500, 4).tolist()


@pytest.mark.parametrize("batch,micro", [(20_000, 4096), (120, 40), (128, 16), (97, 10), (64, 64), (64, 1000), (100, 30)])
def test_n_microbatches_divides_the_batch(batch, micro):
    """The number of micro-batches divides the batch; each fits within `microbatch` whenever an
    equal split within 4x of the fewest exists, else the batch is not split."""
    n = n_microbatches(batch, micro, "cpu")
    assert batch % n == 0
    fewest = -(-batch // micro)
    possible = [m for m in range(fewest, min(4 * fewest, batch) + 1) if batch % m == 0]
    if possible:
        assert n == possible[0] and batch // n <= micro
    else:
        assert n == 1


def test_n_microbatches_platform_default():
    """Default: 4096 per pass on CPU, the whole batch elsewhere."""
    assert n_microbatches(20_000, None, "cpu") == 5
    assert n_microbatches(20_000, None, "gpu") == 1
    assert n_microbatches(1000, None, "cpu") == 1


# --- one baseline run shared by several tests -------------------------------------------------

BASE = dict(train={"eval_batch_size": 100})  # evaluation in blocks that do not divide the sets


@pytest.fixture(scope="module")
def base():
    cfg = tiny_config(**BASE)
    members = expand(cfg)
    calls = []
    result = fit(cfg, members, on_log=lambda r: calls.append(list(r.steps)))
    return cfg, members, result, calls


def test_readout_norm_is_the_last_layers_norm(base):
    """readout_norm at the last step: the L2 norm of the output layer's kernel and bias (NumPy)."""
    _, _, r, _ = base
    out = nnx.to_pure_dict(r.params)["out"]
    want = np.sqrt(sum(np.sum(np.asarray(x, np.float64)[0] ** 2) for x in jax.tree.leaves(out)))
    np.testing.assert_allclose(r.log_array("readout_norm")[-1, 0], want, rtol=1e-5)
    assert r.log_array("readout_norm")[-1, 0] < r.log_array("param_norm")[-1, 0]


def test_init_distance_is_the_distance_from_the_initial_parameters(base):
    """init_distance: 0 at step 0, and at the end the L2 norm of final minus initial parameters
    (the initial ones from the trainer's own init, in NumPy float64)."""
    cfg, members, r, _ = base
    trainer, inputs = trainer_for(cfg, members)
    state, _ = jax.device_get(jax.jit(jax.vmap(trainer.init))(*inputs))
    start = jax.tree.map(lambda x: np.asarray(x, np.float64)[0], nnx.to_pure_dict(state.params))
    end = jax.tree.map(lambda x: np.asarray(x, np.float64), member_params(r, 0))
    want = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(end), jax.tree.leaves(start))))
    assert r.log_array("init_distance")[0, 0] == 0.0
    np.testing.assert_allclose(r.log_array("init_distance")[-1, 0], want, rtol=1e-5)
    assert want > 0.1


def test_fit_logs_every_metric_at_the_log_steps(base):
    """fit logs all metrics at log_steps (0 ... steps) with (M,) or (M, n_tasks) shapes; on_log runs
    after each chunk with the steps reached so far."""
    cfg, members, r, calls = base
    assert r.steps == log_steps(cfg.train.steps, cfg.train.log_every, None).tolist() == [0, 20, 40, 60]
    assert calls == [r.steps[: i + 1] for i in range(len(r.steps))]
    assert set(r.logs) == set(LOGGED)
    for name in LOGGED:
        shape = (len(r.steps), 1, cfg.task.n_tasks) if name.startswith("subtask") else (len(r.steps), 1)
        assert r.log_array(name).shape == shape, name
        assert np.all(np.isfinite(r.log_array(name))), name
    assert r.steps_done == cfg.train.steps and r.compile_s > 0 and r.train_s > 0
    assert r.alive.tolist() == [True] and r.diverged_step.tolist() == [-1]
    loss = r.log_array("test_loss")[:, 0]
    assert loss[0] > 0.6 and loss[-1] < loss[0]  # it learns


def test_evaluation_equals_numpy_on_the_engines_sets(base):
    """The logged final test loss/accuracy, per-subtask loss/accuracy and parameter norm equal a NumPy
    evaluation of the final parameters on the engine's test and per-subtask sets (whose labels are
    themselves checked against NumPy parity)."""
    cfg, members, r, _ = base
    data = run_data(cfg, members)
    subsets = np.asarray(data.subsets)[0]
    params = member_params(r, 0)

    task, bits, label = take(data.test, 0)
    assert len(task) == cfg.task.test_size
    np.testing.assert_array_equal(label, numpy_parity(bits, subsets, task))
    loss, correct = numpy_ce(numpy_logits(params, task, bits), label)
    np.testing.assert_allclose(r.log_array("test_loss")[-1, 0], loss.mean(), rtol=1e-4)
    np.testing.assert_allclose(r.log_array("test_acc")[-1, 0], correct.mean(), atol=1.5 / len(label))

    task, bits, label = take(data.per_task, 0)
    np.testing.assert_array_equal(label, numpy_parity(bits, subsets, task))
    loss, correct = numpy_ce(numpy_logits(params, task, bits), label)
    per_task_loss = np.array([loss[task == t].mean() for t in range(cfg.task.n_tasks)])
    per_task_acc = np.array([correct[task == t].mean() for t in range(cfg.task.n_tasks)])
    np.testing.assert_allclose(r.log_array("subtask_loss")[-1, 0], per_task_loss, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r.log_array("subtask_acc")[-1, 0], per_task_acc, atol=1.5 / cfg.task.per_task_test)

    norm = math.sqrt(sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in jax.tree.leaves(params)))
    np.testing.assert_allclose(r.log_array("param_norm")[-1, 0], norm, rtol=1e-5)


def test_online_train_loss_at_step_0_is_the_test_loss(base):
    """Before any step the online train loss has no minibatches and reports the test loss."""
    _, _, r, _ = base
    assert r.log_array("train_loss")[0, 0] == r.log_array("test_loss")[0, 0]
    assert r.log_array("train_acc")[0, 0] == r.log_array("test_acc")[0, 0]
    assert r.log_array("train_loss")[-1, 0] != r.log_array("test_loss")[-1, 0]


def test_context_train_loss_before_any_step_is_the_first_batchs_loss():
    """A task that logs ctx.train_loss as it is (a user's task) gets at step 0, before any step, the
    loss and accuracy of the batch step 0 trains on (NumPy on the engine's own batch), not 0; the
    next log's train loss is the mean over the steps taken (the first batch counted once)."""
    cfg = tiny_config(optim={"name": "sgd"})
    members = [member(seed=0, lr=0.1)]
    trainer, inputs = trainer_for(cfg, members)
    state0, data = jax.jit(jax.vmap(trainer.init))(*inputs)
    program = trainer.program
    denom = np.maximum(np.asarray(state0.count), 1)
    first_loss, first_acc = np.asarray(state0.loss_sum) / denom, np.asarray(state0.acc_sum) / denom
    assert int(state0.count[0]) == 0
    one = jax.tree.map(lambda x: x[0], jax.device_get(data))
    batch, _ = program.batch(one.task, one.hyper, jax.random.fold_in(one.data_key, 0), jnp.zeros((), jnp.int32))
    params = jax.tree.map(lambda x: np.asarray(x)[0], nnx.to_pure_dict(jax.device_get(state0.params)))
    bits, task, label = (np.asarray(x) for x in (batch.bits, batch.task, batch.label))
    loss_np, correct_np = numpy_ce(numpy_logits(params, task, bits), label)
    np.testing.assert_allclose(first_loss[0], loss_np.mean(), rtol=1e-5)
    np.testing.assert_allclose(first_acc[0], correct_np.mean(), rtol=1e-6)
    assert first_loss[0] > 0.1

    chunk = jax.jit(jax.vmap(trainer.chunk, in_axes=(0, 0, None)))
    state, one_step = state0, []
    for _ in range(2):
        state, logs = chunk(state, data, np.int32(1))
        one_step.append(float(logs["train_loss"][0]))
    np.testing.assert_allclose(one_step[0], loss_np.mean(), rtol=1e-5)  # step 0 trained on that batch
    _, logs2 = chunk(state0, data, np.int32(2))
    np.testing.assert_allclose(float(logs2["train_loss"][0]), np.mean(one_step), rtol=1e-5)


def test_same_config_and_seed_are_bit_identical(base):
    """The same config and seed, fitted again: every logged metric and parameter bit-identical; a
    different seed gives a different run (so the comparison can fail)."""
    cfg, members, r, _ = base
    again = fit(cfg, expand(tiny_config(**BASE)))
    for name in LOGGED:
        assert np.array_equal(r.log_array(name), again.log_array(name)), name
    for x, y in zip(jax.tree.leaves(r.params), jax.tree.leaves(again.params)):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    other_cfg = tiny_config(seed=1, **BASE)
    other = fit(other_cfg, expand(other_cfg))
    assert not np.array_equal(r.log_array("test_loss"), other.log_array("test_loss"))


def test_microbatch_accumulation_gives_the_same_run(base):
    """batch 64 in 4 micro-batches of 16: the same run up to float rounding."""
    cfg, members, r, _ = base
    split_cfg = tiny_config(train={**BASE["train"], "microbatch": 16})
    split = fit(split_cfg, expand(split_cfg))
    assert_member_equal(r, 0, split, 0, rtol=2e-4, atol=2e-5)


def test_pure_train_function_matches_fit(base):
    """jit(vmap(trainer.train)) (the whole run as one pure function) logs what fit logs."""
    cfg, members, r, _ = base
    trainer, inputs = trainer_for(cfg, members)
    state, logs = jax.jit(jax.vmap(trainer.train))(*inputs)
    for name in ("test_loss", "subtask_loss", "param_norm", "train_loss"):
        np.testing.assert_allclose(np.moveaxis(np.asarray(logs[name]), 0, 1), r.log_array(name), rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_fit_result_select(base):
    """FitResult.select keeps the chosen members' logs, flags and parameters."""
    _, _, r, _ = base
    s = r.select([0, 0])
    assert len(s.members) == 2 and s.log_array("test_loss").shape == (len(r.steps), 2)
    np.testing.assert_array_equal(s.log_array("subtask_loss")[:, 1], r.log_array("subtask_loss")[:, 0])
    for x, y in zip(jax.tree.leaves(s.params), jax.tree.leaves(r.params)):
        np.testing.assert_array_equal(np.asarray(x)[1], np.asarray(y)[0])


# --- init ------------------------------------------------------------------------------------

def test_init_scale_multiplies_the_initial_parameters_and_seed_sets_the_data():
    """Same seed, init_scale 1 and 2.5: parameters in ratio 2.5, identical evaluation sets; another
    seed: other parameters, other subsets and sets."""
    cfg = tiny_config()
    members = [member(seed=0), member(seed=0, init_scale=2.5), member(seed=1)]
    trainer, inputs = trainer_for(cfg, members)
    state, data = jax.device_get(jax.jit(jax.vmap(trainer.init))(*inputs))
    for leaf in jax.tree.leaves(state.params):
        leaf = np.asarray(leaf)
        np.testing.assert_allclose(leaf[1], 2.5 * leaf[0], rtol=1e-6)
        assert not np.allclose(leaf[2], leaf[0])
    np.testing.assert_array_equal(np.asarray(data.task.test.bits)[0], np.asarray(data.task.test.bits)[1])
    assert not np.array_equal(np.asarray(data.task.test.bits)[0], np.asarray(data.task.test.bits)[2])
    assert not np.array_equal(np.asarray(data.task.subsets)[0], np.asarray(data.task.subsets)[2])
    assert data.task.train is None  # online mode keeps no training set


# --- ensembles -------------------------------------------------------------------------------

def test_ensemble_member_equals_member_trained_alone():
    """Three members differing in seed and lr (one also in weight decay and init scale), trained as
    one vmapped program: each logged metric and the final parameters of a member equal those of the
    same member trained alone."""
    cfg = tiny_config()
    members = [member(seed=0, lr=1e-2), member(seed=1, lr=3e-3, weight_decay=1e-2, init_scale=0.5),
               member(seed=2, lr=5e-3)]
    together = fit(cfg, members)
    alone = fit(cfg, [members[1]])
    assert_member_equal(together, 1, alone, 0)
    # the members really differ, so equality above is not trivial
    tl = together.log_array("test_loss")
    assert not np.allclose(tl[:, 0], tl[:, 1]) and not np.allclose(tl[:, 1], tl[:, 2])


def test_expanded_ensemble_member_equals_member_trained_alone():
    """An ensemble from cfg.ensemble lists (2 seeds x 2 lrs x 2 weight decays, adamw): a member equals
    the job configured with that member's own values."""
    cfg = tiny_config(optim={"name": "adamw"}, ensemble={"seeds": 2, "lr": [1e-2, 3e-3], "weight_decay": [0.0, 0.1]})
    members = expand(cfg)
    assert len(members) == 8
    together = fit(cfg, members)
    i = next(j for j, m in enumerate(members) if m["seed"] == 1 and m["optim.lr"] == 3e-3 and m["optim.weight_decay"] == 0.1)
    solo_cfg = tiny_config(seed=1, optim={"name": "adamw", "lr": 3e-3, "weight_decay": 0.1})
    (solo_member,) = expand(solo_cfg)
    assert solo_member == members[i]
    assert_member_equal(together, i, fit(solo_cfg, [solo_member]), 0)


def test_ensemble_over_alpha_gives_each_member_its_distribution():
    """Members differing in alpha draw their test sets from their own Zipf law."""
    cfg = tiny_config(task={"test_size": 4000, "n_tasks": 6}, ensemble={"alpha": [0.0, 2.0]})
    data = run_data(cfg, expand(cfg))
    share = (np.asarray(data.test.task) == 0).mean(1)
    p0 = [1 / sum(i ** -1.0 for i in range(1, 7)), 1 / sum(i ** -3.0 for i in range(1, 7))]
    np.testing.assert_allclose(share, p0, atol=0.03)


# --- divergence ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def divergent():
    """sgd with lr 0.5, 1e30 (absurd), 0.2, and 1e30 on parameters scaled by 1e10 (its first update
    overflows the parameters while the loss before it is still finite); and the two sane members
    trained without the bad ones."""
    cfg = tiny_config(optim={"name": "sgd"})
    members = [member(seed=0, lr=0.5), member(seed=1, lr=1e30), member(seed=2, lr=0.2),
               member(seed=3, lr=1e30, init_scale=1e10)]
    return cfg, members, fit(cfg, members), fit(cfg, [members[0], members[2]])


def test_divergent_member_is_flagged(divergent):
    """The absurd-lr members: alive False, diverged_step >= 0, their logged alive is 1 up to the
    divergence step and 0 after; their parameters are finite; the sane ones never diverged."""
    cfg, members, r, _ = divergent
    assert r.alive.tolist() == [True, False, True, False]
    assert r.diverged_step[0] == r.diverged_step[2] == -1
    for i in (1, 3):
        d = int(r.diverged_step[i])
        assert 0 <= d < cfg.train.steps
        alive_log = r.log_array("alive")[:, i]
        np.testing.assert_array_equal(alive_log, [1.0 if s <= d else 0.0 for s in r.steps])
        for leaf in jax.tree.leaves(r.params):
            assert np.all(np.isfinite(np.asarray(leaf)[i]))


def test_overflowing_update_is_caught_before_it_lands(divergent):
    """Member 3's loss at step 0 is finite but its first update makes the parameters infinite: it is
    flagged at step 0 and keeps its initial parameters (its parameter norm never changes)."""
    cfg, members, r, _ = divergent
    assert np.isfinite(r.log_array("test_loss")[0, 3])
    assert int(r.diverged_step[3]) == 0
    norms = r.log_array("param_norm")[:, 3]
    assert np.isfinite(norms[0]) and norms[0] > 1e9
    np.testing.assert_array_equal(norms, np.full_like(norms, norms[0]))


def test_other_members_train_normally_and_equal_runs_without_the_bad_one(divergent):
    cfg, members, r, healthy = divergent
    for i in (0, 2):
        loss = r.log_array("test_loss")[:, i]
        assert np.all(np.isfinite(loss)) and loss[-1] < loss[0]
        assert np.all(r.log_array("alive")[:, i] == 1.0)
    assert_member_equal(r, 0, healthy, 0)
    assert_member_equal(r, 2, healthy, 1)


def test_dead_member_stops_updating_and_train_loss_averages_the_chunk():
    """Through the engine's pure functions directly: once a member is dead its parameters and optimizer state stop
    changing; a live member's train_loss after an n-step chunk is the mean of the n one-step chunks'."""
    cfg = tiny_config(optim={"name": "sgd"})
    members = [member(seed=0, lr=0.5), member(seed=1, lr=1e30)]
    trainer, inputs = trainer_for(cfg, members)
    init = jax.jit(jax.vmap(trainer.init))
    chunk = jax.jit(jax.vmap(trainer.chunk, in_axes=(0, 0, None)))
    state0, data = init(*inputs)

    state, one_step = state0, []
    snapshots = []
    for _ in range(6):
        state, logs = chunk(state, data, np.int32(1))
        one_step.append(float(logs["train_loss"][0]))
        snapshots.append(jax.device_get(state))
    dead_at = int(snapshots[-1].diverged_step[1])
    assert not bool(snapshots[-1].alive[1]) and 0 <= dead_at < 5
    for later in snapshots[dead_at + 1:]:
        for a, b in zip(jax.tree.leaves(snapshots[dead_at].params), jax.tree.leaves(later.params)):
            np.testing.assert_array_equal(np.asarray(a)[1], np.asarray(b)[1])
            assert np.all(np.isfinite(np.asarray(b)[1]))
        for a, b in zip(jax.tree.leaves(snapshots[dead_at].opt_state), jax.tree.leaves(later.opt_state)):
            np.testing.assert_array_equal(np.asarray(a)[1], np.asarray(b)[1])
    assert [int(s.step[0]) for s in snapshots] == [1, 2, 3, 4, 5, 6]

    _, logs3 = chunk(state0, data, np.int32(3))
    np.testing.assert_allclose(float(logs3["train_loss"][0]), np.mean(one_step[:3]), rtol=1e-5)


def test_online_mode_draws_fresh_samples_every_step():
    """Online mode: a wide model with a small batch (8) cannot memorise its training stream, so its
    train loss stays with the test loss (reusing a few batches drives it to ~0.003 while the test
    loss rises above 2)."""
    cfg = tiny_config(task={"n": 16, "test_size": 512}, model={"width": 128},
                      train={"steps": 300, "batch_size": 8, "log_every": 100}, ensemble={"seeds": 2})
    r = fit(cfg, expand(cfg))
    train, test = r.log_array("train_loss")[-1], r.log_array("test_loss")[-1]
    assert np.all(train > 0.5) and np.all(np.abs(train - test) < 0.15), (train, test)


# --- finite data -----------------------------------------------------------------------------

FINITE = dict(task={"D": 32, "n": 10, "test_size": 512}, model={"width": 32},
              train={"steps": 300, "batch_size": 64, "log_every": 100})


@pytest.fixture(scope="module")
def finite():
    cfg = tiny_config(**FINITE)
    return cfg, fit(cfg, expand(cfg))


def test_finite_mode_train_loss_is_the_loss_on_the_training_set(finite):
    """D=32: the logged train loss/accuracy equal a NumPy evaluation of the final parameters on the
    engine's fixed training set, whose labels are true parities."""
    cfg, r = finite
    members = expand(cfg)
    data = run_data(cfg, members)
    task, bits, label = take(data.train, 0)
    assert len(task) == 32
    np.testing.assert_array_equal(label, numpy_parity(bits, np.asarray(data.subsets)[0], task))
    loss, correct = numpy_ce(numpy_logits(member_params(r, 0), task, bits), label)
    np.testing.assert_allclose(r.log_array("train_loss")[-1, 0], loss.mean(), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(r.log_array("train_acc")[-1, 0], correct.mean(), atol=1e-6)
    # the training set is not the test set
    assert not np.array_equal(np.asarray(data.test.bits)[0][:32], bits)


def test_finite_mode_memorises_a_small_training_set(finite):
    """With 32 samples and 300 full-batch steps the train loss falls far below the test loss."""
    _, r = finite
    train, test = r.log_array("train_loss")[:, 0], r.log_array("test_loss")[:, 0]
    assert train[-1] < 0.05, train
    assert test[-1] > 10 * train[-1], (train, test)


def test_full_batch_when_batch_size_reaches_D(finite):
    """batch_size >= D trains on the whole training set each step: batch 32 (= D) and batch 64
    give the same run (sampled minibatches would differ)."""
    cfg, r = finite
    same_cfg = tiny_config(**{**FINITE, "train": {**FINITE["train"], "batch_size": 32}})
    assert_member_equal(r, 0, fit(same_cfg, expand(same_cfg)), 0, rtol=1e-3, atol=1e-5)


def test_finite_minibatches_and_train_loss_on_the_first_test_size_samples():
    """D larger than the batch: minibatches are sampled (a different run from full batch), and the
    train loss is measured on the first test_size samples of the training set."""
    cfg = tiny_config(task={"D": 300, "test_size": 128}, train={"steps": 40, "batch_size": 16})
    members = expand(cfg)
    r = fit(cfg, members)
    data = run_data(cfg, members)
    task, bits, label = (x[:128] for x in take(data.train, 0))
    loss, _ = numpy_ce(numpy_logits(member_params(r, 0), task, bits), label)
    np.testing.assert_allclose(r.log_array("train_loss")[-1, 0], loss.mean(), rtol=1e-3)
    # the full training set gives a different mean (so the check above is specific)
    all_loss, _ = numpy_ce(numpy_logits(member_params(r, 0), *take(data.train, 0)[:2]), take(data.train, 0)[2])
    assert not np.isclose(all_loss.mean(), loss.mean(), rtol=1e-4)


@pytest.mark.slow  # 15 s; the finite-mode tests stay fast
def test_data_sizes_vectorize_each_member_equals_its_D_trained_alone():
    """ensemble.D: members with different D share one training-set array of the largest D, yet
    each trains exactly as a job with task.D = its own D: the first D samples of the array are
    the same whatever its length, D <= batch is full batch and D > batch draws from its own D."""
    base = dict(task={"n": 10, "test_size": 256}, model={"width": 16},
                train={"steps": 60, "batch_size": 64, "log_every": 30})
    cfg = tiny_config(**base, ensemble={"D": [40, 200, 3000]})
    r = fit(cfg, expand(cfg))
    for i, D in enumerate((40, 200, 3000)):
        alone = tiny_config(**{**base, "task": {**base["task"], "D": D}})
        assert_member_equal(r, i, fit(alone, expand(alone)), 0, rtol=2e-3, atol=2e-5)
    # the prefix property itself: D=200 alone holds the first 200 rows of the ensemble's array
    data_big = run_data(cfg, expand(cfg))
    small = tiny_config(**{**base, "task": {**base["task"], "D": 200}})
    data_small = run_data(small, expand(small))
    for big, little in zip(take(data_big.train, 1), take(data_small.train, 0)):
        np.testing.assert_array_equal(big[:200], little)
    # and D changes the run: the three members differ
    final = r.log_array("train_loss")[-1]
    assert len(np.unique(np.round(final, 5))) == 3


def test_every_task_accumulates_micro_batches():
    """One engine for every task: teacher-student's full batch of 24 samples split into 3
    micro-batches of 8 (train.microbatch=8) gives the metrics of the unsplit batch, up to float
    rounding; sparse parity is checked above."""
    from conftest import teacher

    cfg = teacher()
    cfg.task.n_train, cfg.task.n_test, cfg.train.steps = 24, 40, 20
    whole = fit(cfg, expand(cfg))
    cfg.train.microbatch = 8
    split = fit(cfg, expand(cfg))
    for name in ("train_loss", "test_loss", "param_norm"):
        np.testing.assert_allclose(split.log_array(name), whole.log_array(name), rtol=1e-4, atol=1e-6, err_msg=name)


def test_a_blow_up_without_inf_or_nan_is_flagged_and_its_norm_stays_finite():
    """sgd at lr 1e9 (the issue's `optim=sgd ensemble.lr=[0.1,1e9]`): member 1's loss jumps to a
    huge finite value; the divergence rule (loss above 1e4 x max(first loss, 1)) flags it at that
    step, it stops there, and its logged parameter norm stays finite; member 0 trains on."""
    from toy_quanta.engine.train import DIVERGENCE_FACTOR

    cfg = tiny_config(optim={"name": "sgd"})
    r = fit(cfg, [member(seed=0, lr=0.1), member(seed=0, lr=1e9)])
    assert r.alive.tolist() == [True, False]
    assert 0 <= int(r.diverged_step[1]) < cfg.train.steps
    assert np.all(np.isfinite(r.log_array("param_norm")))
    final_loss = float(r.log_array("test_loss")[-1, 1])
    assert np.isfinite(final_loss) and final_loss > DIVERGENCE_FACTOR  # a blow-up, not an inf or NaN
    assert r.log_array("test_loss")[-1, 0] < r.log_array("test_loss")[0, 0]


def test_global_norm_does_not_overflow_and_equals_numpy():
    from toy_quanta.engine.train import global_norm

    for scale in (1e-30, 1.0, 1e20, 1e30):
        tree = {"a": jnp.full((3, 4), 2.0 * scale, jnp.float32), "b": jnp.array([-scale, 0.0, 3 * scale], jnp.float32)}
        want = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree)))
        got = float(global_norm(tree))
        assert np.isfinite(got) and got == pytest.approx(want, rel=1e-6), scale
    assert float(global_norm({"z": jnp.zeros(3)})) == 0.0


def test_guarded_update_stops_a_member_whose_loss_passes_the_limit():
    """divergence_limit(first_loss): inf before the first step, 1e4 x max(first, 1) after; an update
    at a loss above it is not taken and the member is marked diverged at that step."""
    import optax

    from toy_quanta.engine.train import divergence_limit, guarded_update

    assert float(divergence_limit(jnp.float32(jnp.nan))) == np.inf
    assert float(divergence_limit(jnp.float32(0.5))) == 1e4 and float(divergence_limit(jnp.float32(3.0))) == 3e4
    tx = optax.sgd(0.1)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    grads = {"w": jnp.ones(3)}
    alive, step, never = jnp.bool_(True), jnp.int32(7), jnp.int32(-1)
    for loss, ok in ((9.9e3, True), (1.1e4, False)):
        new, _, alive_out, diverged = guarded_update(tx, params, state, grads, jnp.float32(loss), alive, step, never,
                                                     limit=divergence_limit(jnp.float32(0.5)))
        assert bool(alive_out) is ok and int(diverged) == (-1 if ok else 7)
        np.testing.assert_array_equal(new["w"], np.full(3, 0.9, np.float32) if ok else np.ones(3))
