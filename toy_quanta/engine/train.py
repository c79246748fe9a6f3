"""The training engine: `make_train(cfg, program, members)` returns pure functions of one member, for any task.

    trainer = make_train(cfg, program, members)
    state, data = jax.vmap(trainer.init)(hyper, member_inputs)      # many members at once
    state, logs = jax.vmap(trainer.chunk, (0, 0, None))(state, data, n_steps)

`chunk` runs n_steps guarded optimisation steps in a compiled loop (n_steps is a runtime value, so
one compiled program serves every chunk length) and then evaluates. `trainer.train` is the whole
run as one pure function, for `jax.jit(jax.vmap(trainer.train))`. The task (engine.program.Program)
supplies the data, the batches, the loss and the evaluation; the engine owns the parameters, the
optimiser, micro-batching, blocked evaluation, the fixed-norm projection and divergence flags.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from toy_quanta import registry
from toy_quanta.engine import filters
from toy_quanta.engine.optim import Grokfast, grokfast_of, make_optimizer
from toy_quanta.engine.program import EvalContext, Hyper, Program
from toy_quanta.engine.scaled import Scaled


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array
    alive: jax.Array  # False once the member diverged (divergence_limit); it then stops updating
    diverged_step: jax.Array  # step at which it diverged, -1 if never
    first_loss: jax.Array  # the training loss of the first step (NaN before it): divergence is measured from it
    loss_sum: jax.Array  # running sums of minibatch loss and accuracy since the last log (before step 0:
    # the first batch's, with count 0)
    acc_sum: jax.Array
    count: jax.Array


class RunData(NamedTuple):
    """Per-member constants, on the device for the whole run."""

    hyper: Hyper
    data_key: jax.Array  # the batches' stream: fold_in(data_key, step)
    task: Any  # the task's own constants (Program.init)
    reference: Any = ()  # the initial parameters: centred outputs (model.centred) and init_distance


class Trainer(NamedTuple):
    init: Callable[[Hyper, Any], tuple[TrainState, RunData]]
    chunk: Callable[[TrainState, RunData, jax.Array], tuple[TrainState, dict]]
    evaluate: Callable[[TrainState, RunData], dict]  # the metrics of a log step, without training
    train: Callable[[Hyper, Any], tuple[TrainState, dict]]
    log_steps: np.ndarray
    graphdef: Any
    program: Program


def log_steps(steps: int, log_every: int, log_count: int | None) -> np.ndarray:
    """Steps at which to evaluate: 0, then every log_every (or log_count log-spaced), and the last."""
    if log_count is None:
        points = np.arange(0, steps + 1, log_every)
    else:
        points = np.round(np.geomspace(1, steps, log_count)).astype(np.int64)
    return np.unique(np.concatenate([[0], points, [steps]])).astype(np.int64)


CPU_MICROBATCH = 4096


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


# The divergence rule: a member diverges at the first step whose training loss or updated
# parameters are not finite, or whose training loss exceeds DIVERGENCE_FACTOR times
# max(its first step's loss, 1). A member that blows up to a loss of 1e8 without reaching inf is
# caught by the second clause; a healthy run never comes near it (losses fall, or rise a little).
DIVERGENCE_FACTOR = 1e4
DIVERGENCE_RULE = (f"a non-finite training loss or parameters, or a training loss above {DIVERGENCE_FACTOR:g} x "
                   "max(the first step's training loss, 1)")


def divergence_limit(first_loss: jax.Array) -> jax.Array:
    """The training loss above which a member counts as diverged (inf until the first step)."""
    return jnp.where(jnp.isfinite(first_loss), DIVERGENCE_FACTOR * jnp.maximum(first_loss, 1.0), jnp.inf)


def global_norm(tree: Any) -> jax.Array:
    """The L2 norm of all leaves, without the float32 overflow of sum(x^2) (parameters near 1e19
    have a finite norm): each leaf is scaled by the largest magnitude first."""
    leaves = [jnp.asarray(x, jnp.float32) for x in jax.tree.leaves(tree)]
    peak = jnp.max(jnp.array([jnp.max(jnp.abs(x)) for x in leaves]))
    scale = jnp.where((peak > 0) & jnp.isfinite(peak), peak, 1.0)
    return scale * jnp.sqrt(sum(jnp.sum(jnp.square(x / scale)) for x in leaves))


def fix_norm(params: Any, norm: jax.Array | float | None) -> Any:
    """params rescaled to total L2 norm `norm` (Omnigrok's fixed-norm training); unchanged where
    norm is None or 0 (a free member)."""
    if norm is None:
        return params
    scale = jnp.where(norm > 0, norm / optax.tree.norm(params), 1.0)
    return jax.tree.map(lambda p: p * scale.astype(p.dtype), params)


def guarded_update(tx: optax.GradientTransformation, params: Any, opt_state: Any, grads: Any, loss: jax.Array,
                   alive: jax.Array, step: jax.Array, diverged_step: jax.Array,
                   norm: jax.Array | None = None, limit: jax.Array | float = jnp.inf) -> tuple[Any, Any, jax.Array, jax.Array]:
    """One optimiser update (then, if `norm` > 0, the projection back to that norm), taken only
    while the member has not diverged (DIVERGENCE_RULE; `limit` is its loss bound):
    (params, opt_state, alive, diverged_step). A member that diverges keeps its last parameters
    before the bad step and stops; the others go on."""
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = fix_norm(optax.apply_updates(params, updates), norm)
    ok = alive & jnp.isfinite(loss) & (loss <= limit) & _all_finite(new_params)
    return (_tree_where(ok, new_params, params), _keep_if(ok, new_opt_state, opt_state), ok,
            jnp.where(alive & ~ok, step, diverged_step))


def _keep_if(ok: jax.Array, new: Any, old: Any) -> Any:
    """The optimiser state where(ok, new, old); a grokfast ring by its one written slot."""
    is_ring = lambda x: isinstance(x, filters.GrokfastState)  # noqa: E731
    return jax.tree.map(lambda n, o: filters.keep_if(ok, n, o) if is_ring(n) else jnp.where(ok, n, o), new, old,
                        is_leaf=is_ring)



def has_fixed_norm(members: Sequence[dict[str, Any]]) -> bool:
    """Whether any member trains at a fixed norm: only then does each step pay for the projection."""
    return any(m["optim.fixed_norm"] is not None for m in members)


def has_output_scale(members: Sequence[dict[str, Any]]) -> bool:
    """Whether any member's outputs are scaled (model.output_scale != 1): only then does the step
    multiply them (a run without it stays bit for bit what it was)."""
    return any(m["model.output_scale"] not in (None, 1.0) for m in members)


def make_model(cfg: Any, key: jax.Array, model_io: dict[str, int] | None = None) -> nnx.Module:
    """The configured model at init scale 1, sized for its task (Task.model_io unless given)."""
    io = model_io if model_io is not None else registry.task(cfg.task.name).model_io(cfg)
    return registry.model(cfg.model.name).build(cfg.model, io, key)


def blocked(fn: Callable[[Any], tuple[jax.Array, ...]], batch: Any, block: int) -> tuple[jax.Array, ...]:
    """fn over a batch in blocks of at most `block` rows (bounded memory), outputs concatenated."""
    size = jax.tree.leaves(batch)[0].shape[0]
    block = min(block, size)
    n_full = size // block * block
    blocks = jax.tree.map(lambda x: x[:n_full].reshape(size // block, block, *x.shape[1:]), batch)
    out = tuple(x.reshape(-1, *x.shape[2:]) for x in jax.lax.map(fn, blocks))
    if n_full < size:
        rest = fn(jax.tree.map(lambda x: x[n_full:], batch))
        out = tuple(jnp.concatenate([a, b]) for a, b in zip(out, rest))
    return out


CORE_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def make_train(cfg: Any, program: Program, members: Sequence[dict[str, Any]]) -> Trainer:
    """Pure functions of one member, for the task's `program`, built for what `members` (see
    members.expand) need: a projection if any has a fixed norm, a filter state per grokfast kind
    they use, a per-member Adam eps if theirs differ."""
    tr = cfg.train
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: make_model(cfg, jax.random.key(0), program.model_io)))
    project = has_fixed_norm(members)

    scaled, centred = has_output_scale(members), bool(getattr(cfg.model, "centred", False))

    def bind(params, hyper, reference=None):
        """The member's model at `params`, its outputs scaled (engine.scaled) if any member's are."""
        model = nnx.merge(graphdef, params)
        if not (scaled or centred):
            return model
        return Scaled(model, hyper["model.output_scale"], nnx.merge(graphdef, reference) if centred else None)

    def sample_loss(params, batch, data):
        return program.loss(bind(params, data.hyper, data.reference), batch)

    def weighted_loss(params, batch, weight_B, data):
        loss_B, correct_B = sample_loss(params, batch, data)
        if not program.train_accuracy:
            correct_B = jnp.zeros_like(loss_B)  # never read: XLA drops what computed it
        if weight_B is None:
            return loss_B.mean(), correct_B.mean()
        return jnp.sum(weight_B * loss_B), jnp.sum(weight_B * correct_B)

    microbatch = tr.microbatch
    if microbatch is None and not program.cpu_microbatch:
        microbatch = program.batch_rows  # the task trains on whole batches unless asked
    n_micro = n_microbatches(program.batch_rows, microbatch, jax.default_backend())

    def loss_and_grads(params, batch, weight_B, data):
        """((loss, accuracy), gradients) of the batch, accumulated over micro-batches."""
        grad_fn = jax.value_and_grad(weighted_loss, has_aux=True)
        if n_micro == 1:
            return grad_fn(params, batch, weight_B, data)
        if weight_B is None:
            weight_B = jnp.full((program.batch_rows,), 1.0 / program.batch_rows)
        micro = jax.tree.map(lambda x: x.reshape(n_micro, -1, *x.shape[1:]), (batch, weight_B))

        def add(total, mb):
            return jax.tree.map(jnp.add, total, grad_fn(params, *mb, data)), None

        zero = jnp.zeros((), jnp.float32)
        total, _ = jax.lax.scan(add, ((zero, zero), jax.tree.map(jnp.zeros_like, params)), micro)
        return total

    def batch_loss(params, batch, weight_B, data):
        """(loss, accuracy) of a training batch without gradients, in training's micro-batches."""
        if n_micro == 1:
            return weighted_loss(params, batch, weight_B, data)
        if weight_B is None:
            weight_B = jnp.full((program.batch_rows,), 1.0 / program.batch_rows)
        micro = jax.tree.map(lambda x: x.reshape(n_micro, -1, *x.shape[1:]), (batch, weight_B))
        zero = jnp.zeros((), jnp.float32)
        total, _ = jax.lax.scan(lambda t, mb: (jax.tree.map(jnp.add, t, weighted_loss(params, *mb, data)), None),
                                (zero, zero), micro)
        return total

    kinds = grokfast_of(cfg.optim, {m["optim.grokfast"] for m in members}).kinds
    # Adam's eps as a constant unless members differ in it: a traced eps costs the step a few %
    eps_varies = len({m["optim.eps"] for m in members}) > 1

    def optimizer(hyper: Hyper):
        grokfast = Grokfast(hyper["optim.grokfast"], hyper["optim.grokfast_alpha"], hyper["optim.grokfast_lambda"], kinds)
        return make_optimizer(cfg.optim, hyper["optim.lr"], hyper["optim.weight_decay"], tr.steps, grokfast,
                              hyper["optim.eps"] if eps_varies else None)

    def init(hyper: Hyper, member_input: Any) -> tuple[TrainState, RunData]:
        key = jax.random.key(hyper["seed"])
        params = nnx.split(make_model(cfg, jax.random.fold_in(key, 0), program.model_io))[1]
        params = fix_norm(jax.tree.map(lambda p: p * hyper["model.init_scale"], params), hyper["optim.fixed_norm"])
        data = RunData(hyper=hyper, data_key=jax.random.fold_in(key, 1), task=program.init(hyper, member_input, key),
                       reference=params)
        # The sums start at the loss and accuracy of the batch step 0 trains on (count stays 0), so a
        # task that logs ctx.train_loss at step 0, before any step, logs that batch's loss, not 0.
        first_batch, first_weight_B = program.batch(data.task, hyper, jax.random.fold_in(data.data_key, 0),
                                                    jnp.zeros((), jnp.int32))
        loss_0, acc_0 = (v.astype(jnp.float32) for v in batch_loss(params, first_batch, first_weight_B, data))
        state = TrainState(params, optimizer(hyper).init(params), jnp.zeros((), jnp.int32), jnp.ones((), bool),
                           -jnp.ones((), jnp.int32), jnp.full((), jnp.nan, jnp.float32), loss_0, acc_0,
                           jnp.zeros((), jnp.int32))
        return state, data

    def train_step(state: TrainState, data: RunData) -> TrainState:
        key = jax.random.fold_in(data.data_key, state.step)
        batch, weight_B = program.batch(data.task, data.hyper, key, state.step)
        (loss, acc), grads = loss_and_grads(state.params, batch, weight_B, data)
        params, opt_state, ok, diverged_step = guarded_update(
            optimizer(data.hyper), state.params, state.opt_state, grads, loss, state.alive, state.step,
            state.diverged_step, data.hyper["optim.fixed_norm"] if project else None,
            divergence_limit(state.first_loss))
        return TrainState(
            params=params,
            opt_state=opt_state,
            step=state.step + 1,
            alive=ok,
            diverged_step=diverged_step,
            first_loss=jnp.where(state.step == 0, loss.astype(jnp.float32), state.first_loss),
            loss_sum=state.loss_sum + jnp.where(ok, loss, 0.0),
            acc_sum=state.acc_sum + jnp.where(ok, acc, 0.0),
            count=state.count + ok.astype(jnp.int32),
        )

    def evaluate(state: TrainState, data: RunData) -> dict[str, jax.Array]:
        denom = jnp.maximum(state.count, 1)
        ctx = EvalContext(
            model=bind(state.params, data.hyper, data.reference),
            per_sample=lambda batch: blocked(lambda b: sample_loss(state.params, b, data), batch, tr.eval_batch_size),
            blocked=lambda fn, batch: blocked(fn, batch, tr.eval_batch_size),
            params=state.params, bind=lambda p: bind(p, data.hyper, data.reference),
            train_loss=state.loss_sum / denom, train_acc=state.acc_sum / denom, has_train=state.count > 0)
        logs = program.evaluate(ctx, data.task, data.hyper)
        out = {name: logs.pop(name) for name in CORE_METRICS}
        out["param_norm"] = global_norm(state.params)
        # How far training has moved the parameters (a progress measure that moves while the loss
        # sits on a plateau: Barak et al. 2022's hidden progress)
        out["init_distance"] = global_norm(jax.tree.map(jnp.subtract, state.params, data.reference))
        # The last layer (Slingshot's norm cycles show there): the model's `readout` (the
        # transformer's unembedding) or its `out` layer (the MLPs'); none for a model with neither.
        readout = getattr(ctx.model, "readout", None) or getattr(ctx.model, "out", None)
        if readout is not None:
            out["readout_norm"] = global_norm(nnx.state(readout, nnx.Param))
        out["alive"] = state.alive.astype(jnp.float32)
        return {**out, **logs}

    def evaluated(state: TrainState, data: RunData) -> tuple[TrainState, dict]:
        logs = evaluate(state, data)
        zero = jnp.zeros((), jnp.float32)
        return state._replace(loss_sum=zero, acc_sum=zero, count=jnp.zeros((), jnp.int32)), logs

    def chunk(state: TrainState, data: RunData, n_steps: jax.Array,
              do_eval: jax.Array | bool = True) -> tuple[TrainState, dict]:
        """n_steps steps, then the evaluation if do_eval (a runtime flag: the host splits a long
        interval between log steps into short calls, to checkpoint and to stop on a signal
        between them; the skipped evaluation returns zeros)."""
        # With count 0 the sums hold the first batch's values (init), for a log before any step
        # only: steps start from 0 (once per call, outside the steps' loop)
        fresh = (state.count == 0) & (n_steps > 0)
        state = state._replace(loss_sum=jnp.where(fresh, 0.0, state.loss_sum),
                               acc_sum=jnp.where(fresh, 0.0, state.acc_sum))
        state = jax.lax.fori_loop(0, n_steps, lambda _, s: train_step(s, data), state)
        if isinstance(do_eval, bool):
            return evaluated(state, data) if do_eval else (state, eval_shape_zeros(state, data))
        return jax.lax.cond(do_eval, evaluated, lambda s, d: (s, eval_shape_zeros(s, d)), state, data)

    def eval_shape_zeros(state: TrainState, data: RunData) -> dict:
        return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(evaluate, state, data))

    steps_at = log_steps(tr.steps, tr.log_every, tr.log_count)

    def train(hyper: Hyper, member_input: Any) -> tuple[TrainState, dict]:
        state, data = init(hyper, member_input)
        lengths = jnp.asarray(np.diff(steps_at, prepend=0), jnp.int32)
        return jax.lax.scan(lambda s, n: chunk(s, data, n), state, lengths)

    return Trainer(init=init, chunk=chunk, evaluate=evaluate, train=train, log_steps=steps_at, graphdef=graphdef,
                   program=program)
