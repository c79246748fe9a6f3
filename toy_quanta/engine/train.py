"""The training engine: `make_train(cfg)` returns pure functions of one member.

    trainer = make_train(cfg)
    state, data = jax.vmap(trainer.init)(hyper, subsets)          # many members at once
    state, logs = jax.vmap(trainer.chunk, (0, 0, None))(state, data, n_steps)

`chunk` runs n_steps optimisation steps in a compiled loop (n_steps is a runtime value, so one
compiled program serves every chunk length) and then evaluates. `trainer.train` is the whole run
as one pure function, for `jax.jit(jax.vmap(trainer.train))`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from toy_quanta.config import Config
from toy_quanta.data import sparse_parity as sp
from toy_quanta.engine.members import Hyper
from toy_quanta.engine.optim import make_optimizer
from toy_quanta.models.mlp import MLP, binary_cross_entropy


class Batch(NamedTuple):
    task: jax.Array  # (B,) int32 subtask index
    bits: jax.Array  # (B, n) uint8
    label: jax.Array  # (B,) int32


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array
    alive: jax.Array  # False once loss or parameters became non-finite; the member then stops updating
    diverged_step: jax.Array  # step at which it diverged, -1 if never
    loss_sum: jax.Array  # running sums of minibatch loss and accuracy since the last log
    acc_sum: jax.Array
    count: jax.Array


class RunData(NamedTuple):
    """Per-member constants, on the device for the whole run."""

    hyper: Hyper
    subsets: jax.Array  # (n_tasks, k)
    data_key: jax.Array
    train: Batch | None  # the fixed training set (finite mode), else None
    test: Batch  # from the task distribution
    per_task: Batch  # per_task_test points per subtask, subtask = index % n_tasks


class Trainer(NamedTuple):
    init: Callable[[Hyper, jax.Array], tuple[TrainState, RunData]]
    chunk: Callable[[TrainState, RunData, jax.Array], tuple[TrainState, dict]]
    train: Callable[[Hyper, jax.Array], tuple[TrainState, dict]]
    log_steps: np.ndarray
    graphdef: Any


def log_steps(steps: int, log_every: int, log_count: int | None) -> np.ndarray:
    """Steps at which to evaluate: 0, then every log_every (or log_count log-spaced), and the last."""
    if log_count is None:
        points = np.arange(0, steps + 1, log_every)
    else:
        points = np.round(np.geomspace(1, steps, log_count)).astype(np.int64)
    return np.unique(np.concatenate([[0], points, [steps]])).astype(np.int64)


CPU_MICROBATCH = 4096
TRAIN_BLOCK = 1024  # a finite training set is drawn in blocks of this many samples


def n_microbatches(batch_size: int, microbatch: int | None, platform: str) -> int:
    """How many equal micro-batches to split a batch into: the fewest whose size is <= microbatch
    and divides the batch (no split if none does within 4x)."""
    if microbatch is None:
        microbatch = CPU_MICROBATCH if platform == "cpu" else batch_size
    least = -(-batch_size // microbatch)
    for n in range(least, min(4 * least, batch_size) + 1):
        if batch_size % n == 0:
            return n
    return 1


def _tree_where(cond: jax.Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def fix_norm(params: Any, norm: jax.Array | float | None) -> Any:
    """params rescaled to total L2 norm `norm` (Omnigrok's fixed-norm training); unchanged where
    norm is None or 0 (a free member)."""
    if norm is None:
        return params
    scale = jnp.where(norm > 0, norm / optax.tree.norm(params), 1.0)
    return jax.tree.map(lambda p: p * scale.astype(p.dtype), params)


def guarded_update(tx: optax.GradientTransformation, params: Any, opt_state: Any, grads: Any, loss: jax.Array,
                   alive: jax.Array, step: jax.Array, diverged_step: jax.Array,
                   norm: jax.Array | None = None) -> tuple[Any, Any, jax.Array, jax.Array]:
    """One optimiser update (then, if `norm` > 0, the projection back to that norm), taken only
    while the member's loss and parameters stay finite: (params, opt_state, alive, diverged_step).
    A member that diverges keeps its last finite parameters and stops; the others go on."""
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = fix_norm(optax.apply_updates(params, updates), norm)
    ok = alive & jnp.isfinite(loss) & _all_finite(new_params)
    return (_tree_where(ok, new_params, params), _tree_where(ok, new_opt_state, opt_state), ok,
            jnp.where(alive & ~ok, step, diverged_step))


class StepState(NamedTuple):
    """A member's training state in the grokking and dataset trainers."""

    params: Any
    opt_state: Any
    step: jax.Array
    alive: jax.Array  # False once loss or parameters became non-finite
    diverged_step: jax.Array  # -1 if never


def start_state(params: Any, opt_state: Any) -> StepState:
    return StepState(params, opt_state, jnp.zeros((), jnp.int32), jnp.ones((), bool), -jnp.ones((), jnp.int32))


def has_fixed_norm(cfg: Config) -> bool:
    """Whether any member trains at a fixed norm: only then does each step pay for the projection."""
    return cfg.optim.fixed_norm is not None or cfg.ensemble.fixed_norm is not None


def guarded_chunks(init: Callable, batch_loss: Callable, optimizer: Callable, evaluate: Callable,
                   steps_at: np.ndarray, fixed_norm: bool = False) -> tuple[Callable, Callable]:
    """(chunk, train) of a trainer whose per-member constants `data` carry `hyper` (with its
    fixed_norm, 0 for a free member): chunk(state, data, n) takes n guarded steps on
    batch_loss(params, data, step), each projected back to the member's fixed norm if
    `fixed_norm` (some member has one), then
    evaluate(state, data); train(hyper, task_data) is init and every chunk to the last log step."""

    def train_step(state: StepState, data: Any) -> StepState:
        loss, grads = jax.value_and_grad(batch_loss)(state.params, data, state.step)
        params, opt_state, ok, diverged_step = guarded_update(optimizer(data.hyper), state.params, state.opt_state,
                                                              grads, loss, state.alive, state.step, state.diverged_step,
                                                              data.hyper.fixed_norm if fixed_norm else None)
        return StepState(params, opt_state, state.step + 1, ok, diverged_step)

    def chunk(state: StepState, data: Any, n_steps: jax.Array) -> tuple[StepState, dict]:
        state = jax.lax.fori_loop(0, n_steps, lambda _, s: train_step(s, data), state)
        return state, evaluate(state, data)

    def train(hyper: Any, task_data: jax.Array) -> tuple[StepState, dict]:
        state, data = init(hyper, task_data)
        lengths = jnp.asarray(np.diff(steps_at, prepend=0), jnp.int32)
        return jax.lax.scan(lambda s, n: chunk(s, data, n), state, lengths)

    return chunk, train


def make_model(cfg: Config, key: jax.Array) -> MLP:
    m, t = cfg.model, cfg.task
    return MLP(t.n_tasks, t.n, m.width, m.depth, 2, m.activation, m.control_gather, rngs=nnx.Rngs(key))


def make_train(cfg: Config) -> Trainer:
    """Pure functions of one member. In finite mode the members' training sets share one array of
    task.D rows (the largest of ensemble.D when that is set); each member uses its own D of them."""
    t, tr = cfg.task, cfg.train
    if cfg.ensemble.D is not None:
        t = dataclasses.replace(t, D=max(cfg.ensemble.D))
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: make_model(cfg, jax.random.key(0))))

    def loss_and_acc(params, batch: Batch):
        margin_B = nnx.merge(graphdef, params).margin(batch.task, batch.bits)
        loss_B = binary_cross_entropy(margin_B, batch.label)
        # argmax of the two logits, ties to class 0
        correct_B = ((margin_B > 0) == (batch.label == 1)).astype(jnp.float32)
        return loss_B, correct_B

    def weighted_loss(params, batch: Batch, weight_B):
        loss_B, correct_B = loss_and_acc(params, batch)
        return jnp.sum(weight_B * loss_B), jnp.sum(weight_B * correct_B)

    finite = t.D is not None  # t.D is the training-set array's length: the largest member's D
    batch_len = tr.batch_size if not finite else min(tr.batch_size, t.D)
    n_micro = n_microbatches(batch_len, tr.microbatch, jax.default_backend())

    def loss_and_grads(params, batch: Batch, weight_B):
        """((loss, accuracy), gradients) of the weighted batch (weights sum to 1), accumulated
        over micro-batches."""
        grad_fn = jax.value_and_grad(weighted_loss, has_aux=True)
        if n_micro == 1:
            return grad_fn(params, batch, weight_B)
        micro = jax.tree.map(lambda x: x.reshape(n_micro, -1, *x.shape[1:]), (batch, weight_B))

        def add(total, mb):
            return jax.tree.map(jnp.add, total, grad_fn(params, *mb)), None

        zero = jnp.zeros((), jnp.float32)
        total, _ = jax.lax.scan(add, ((zero, zero), jax.tree.map(jnp.zeros_like, params)), micro)
        return total

    def per_sample(params, batch: Batch):
        """Loss and correctness of every sample, in blocks of eval_batch_size to bound memory."""
        size = batch.task.shape[0]
        block = min(tr.eval_batch_size, size)
        n_full = size // block * block
        blocks = jax.tree.map(lambda x: x[:n_full].reshape(size // block, block, *x.shape[1:]), batch)
        loss_NxB, correct_NxB = jax.lax.map(lambda b: loss_and_acc(params, b), blocks)
        loss, correct = loss_NxB.reshape(-1), correct_NxB.reshape(-1)
        if n_full < size:
            rest_loss, rest_correct = loss_and_acc(params, jax.tree.map(lambda x: x[n_full:], batch))
            loss, correct = jnp.concatenate([loss, rest_loss]), jnp.concatenate([correct, rest_correct])
        return loss, correct

    def optimizer(hyper: Hyper):
        return make_optimizer(cfg.optim, hyper.lr, hyper.weight_decay, tr.steps)

    def init(hyper: Hyper, subsets_TxK: jax.Array) -> tuple[TrainState, RunData]:
        key = jax.random.key(hyper.seed)
        k_init, k_data, k_train, k_test, k_task = (jax.random.fold_in(key, i) for i in range(5))
        params = nnx.split(make_model(cfg, k_init))[1]
        params = jax.tree.map(lambda p: p * hyper.init_scale, params)
        train = None
        if finite:
            train = training_set(k_train, subsets_TxK, hyper.alpha)
        data = RunData(
            hyper=hyper,
            subsets=subsets_TxK,
            data_key=k_data,
            train=train,
            test=Batch(*sp.sample(k_test, subsets_TxK, hyper.alpha, t.test_size, t.n)),
            per_task=Batch(*sp.per_task_set(k_task, subsets_TxK, t.per_task_test, t.n)),
        )
        zero = jnp.zeros((), jnp.float32)
        state = TrainState(params, optimizer(hyper).init(params), jnp.zeros((), jnp.int32),
                           jnp.ones((), bool), -jnp.ones((), jnp.int32), zero, zero, jnp.zeros((), jnp.int32))
        return state, data

    def training_set(key, subsets_TxK, alpha) -> Batch:
        """t.D samples drawn in fixed blocks, each from its own key: the first D samples are the
        same whatever t.D is, so a member's data does not depend on its ensemble's largest D."""
        n_blocks = -(-t.D // TRAIN_BLOCK)
        keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(n_blocks))
        blocks = jax.vmap(lambda k: Batch(*sp.sample(k, subsets_TxK, alpha, TRAIN_BLOCK, t.n)))(keys)
        return jax.tree.map(lambda x: x.reshape(n_blocks * TRAIN_BLOCK, *x.shape[2:])[:t.D], blocks)

    def batch_at(data: RunData, step: jax.Array) -> tuple[Batch, jax.Array]:
        """The step's batch and per-sample weights (summing to 1)."""
        key = jax.random.fold_in(data.data_key, step)
        if not finite:
            return Batch(*sp.sample(key, data.subsets, data.hyper.alpha, tr.batch_size, t.n)), jnp.full(
                (tr.batch_size,), 1.0 / tr.batch_size)
        # A member whose D fits in a batch trains on all of its D samples (full batch: the first
        # batch_len rows, those past D weighted 0); a larger D is sampled with replacement.
        D = data.hyper.D
        full = D <= tr.batch_size
        pos_B = jnp.arange(batch_len)
        idx_B = jnp.where(full, pos_B, jax.random.randint(key, (batch_len,), 0, D))
        weight_B = jnp.where(full, (pos_B < D) / D, 1.0 / batch_len).astype(jnp.float32)
        return jax.tree.map(lambda x: x[idx_B], data.train), weight_B

    def train_step(state: TrainState, data: RunData) -> TrainState:
        batch, weight_B = batch_at(data, state.step)
        (loss, acc), grads = loss_and_grads(state.params, batch, weight_B)
        params, opt_state, ok, diverged_step = guarded_update(optimizer(data.hyper), state.params, state.opt_state, grads,
                                                              loss, state.alive, state.step, state.diverged_step)
        return TrainState(
            params=params,
            opt_state=opt_state,
            step=state.step + 1,
            alive=ok,
            diverged_step=diverged_step,
            loss_sum=state.loss_sum + jnp.where(ok, loss, 0.0),
            acc_sum=state.acc_sum + jnp.where(ok, acc, 0.0),
            count=state.count + ok.astype(jnp.int32),
        )

    def evaluate(state: TrainState, data: RunData) -> dict[str, jax.Array]:
        test_loss, test_correct = per_sample(state.params, data.test)
        task_loss, task_correct = per_sample(state.params, data.per_task)
        if finite:
            # The member's training set, or its first test_size samples.
            n_fit = min(t.D, t.test_size)
            train_loss, train_correct = per_sample(state.params, jax.tree.map(lambda x: x[:n_fit], data.train))
            mask = jnp.arange(n_fit) < data.hyper.D
            count = jnp.minimum(data.hyper.D, n_fit)
            train_loss, train_acc = (jnp.sum(jnp.where(mask, v, 0.0)) / count for v in (train_loss, train_correct))
        else:
            # Online: fresh samples each step, so the mean minibatch loss since the last log
            # is an unbiased estimate of the loss on the training stream.
            has = state.count > 0
            denom = jnp.maximum(state.count, 1)
            train_loss = jnp.where(has, state.loss_sum / denom, test_loss.mean())
            train_acc = jnp.where(has, state.acc_sum / denom, test_correct.mean())
        return {
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss.mean(),
            "test_acc": test_correct.mean(),
            "param_norm": optax.tree.norm(state.params),
            "alive": state.alive.astype(jnp.float32),
            "subtask_loss": task_loss.reshape(t.per_task_test, t.n_tasks).mean(0),
            "subtask_acc": task_correct.reshape(t.per_task_test, t.n_tasks).mean(0),
        }

    def chunk(state: TrainState, data: RunData, n_steps: jax.Array) -> tuple[TrainState, dict]:
        state = jax.lax.fori_loop(0, n_steps, lambda _, s: train_step(s, data), state)
        logs = evaluate(state, data)
        zero = jnp.zeros((), jnp.float32)
        return state._replace(loss_sum=zero, acc_sum=zero, count=jnp.zeros((), jnp.int32)), logs

    steps_at = log_steps(tr.steps, tr.log_every, tr.log_count)

    def train(hyper: Hyper, subsets_TxK: jax.Array) -> tuple[TrainState, dict]:
        state, data = init(hyper, subsets_TxK)
        lengths = jnp.asarray(np.diff(steps_at, prepend=0), jnp.int32)
        return jax.lax.scan(lambda s, n: chunk(s, data, n), state, lengths)

    return Trainer(init=init, chunk=chunk, train=train, log_steps=steps_at, graphdef=graphdef)
