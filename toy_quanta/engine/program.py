"""The contract between a task and the engine: what one compiled program needs from its task.

A task (toy_quanta.tasks) builds a `Program` from a config; the engine (train.make_train) runs it
for any task and never asks which one it is. Every function is pure and works on one member;
the engine vmaps them over the ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

import jax
from flax import nnx

Hyper = dict[str, jax.Array]  # one member's scalars by config key (seed, optim.lr, task.alpha, ...)
Batch = Any  # a task's pytree of arrays with a leading batch axis


class EvalContext(NamedTuple):
    """What a task's `evaluate` gets from the engine at a log step."""

    model: nnx.Module  # the member's model at its current parameters
    per_sample: Callable[[Batch], tuple[jax.Array, jax.Array]]  # (loss_N, correct_N), blocked by eval_batch_size
    blocked: Callable[[Callable[[Batch], tuple[jax.Array, ...]], Batch], tuple[jax.Array, ...]]  # any fn, blocked so
    train_loss: jax.Array  # mean minibatch loss of the steps since the last log (meaningful when has_train)
    train_acc: jax.Array
    has_train: jax.Array  # () bool: a step was taken since the last log
    params: Any = None  # the member's parameters (an nnx State)
    bind: Callable[[Any], nnx.Module] | None = None  # the member's model at other parameters (as `model`)


@dataclass(frozen=True)
class Program:
    """One task's side of a compiled program.

    - init(hyper, member_input, key) -> data: the member's constants on the device (test sets, its
      training set or mask...). `key` is the member's root key; the engine uses fold_in(key, 0) for
      the parameters and fold_in(key, 1) for the batches, so a task folds in 2 and above.
    - batch(data, hyper, key, step) -> (batch, weight_B or None): the step's training batch, and
      per-sample weights summing to 1 (None: the plain mean).
    - loss(model, batch) -> (loss_B, correct_B): per-sample loss and correctness (0/1 floats).
    - evaluate(ctx, data, hyper) -> metrics: train_loss, train_acc, test_loss, test_acc first, then
      anything else (scalars or (T,) vectors per member).
    - sample, inputs (optional): what the analyses of a trained model evaluate it with (QDG and
      genic, toy_quanta.analysis): fresh samples of the task distribution, and the inputs `loss`
      feeds the model.
    """

    init: Callable[[Hyper, Any, jax.Array], Any]
    batch: Callable[[Any, Hyper, jax.Array, jax.Array], tuple[Batch, jax.Array | None]]
    loss: Callable[[nnx.Module, Batch], tuple[jax.Array, jax.Array]]
    evaluate: Callable[[EvalContext, Any, Hyper], dict[str, jax.Array]]
    batch_rows: int  # rows of a training batch (micro-batches split it)
    # the sizes the model is built for, where they depend on what the program loaded (a dataset's
    # input width); None: the task's model_io(cfg)
    model_io: Optional[dict[str, int]] = None
    cpu_microbatch: bool = False  # split large batches into micro-batches on the CPU by default
    # whether evaluate reads ctx.train_acc (the running accuracy of the minibatches); if not, the
    # step skips computing it (an argmax over the outputs every step: 8-17% of a table task's step)
    train_accuracy: bool = True
    # sample(hyper, member_input, key, n) -> a batch of n fresh samples of the member's task
    # distribution, for `loss` (hyper: the member's values, as `init` gets them); None: no distribution
    sample: Callable[[Hyper, Any, jax.Array, int], Batch] | None = None
    # inputs(batch) -> the model's positional inputs for a batch, as `loss` feeds them (per-sample
    # gradients factorise through the first layer's input); None: not given
    inputs: Callable[[Batch], tuple] | None = None
