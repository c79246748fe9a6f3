"""Binary operations mod p (Power et al. 2022): grokking on a table of all pairs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from toy_quanta import checks, registry
from toy_quanta.checks import ensemble_list
from toy_quanta.analysis.milestones import final_milestones, step_or_never
from toy_quanta.data import modular
from toy_quanta.data.sparse_parity import LN2
from toy_quanta.engine import losses
from toy_quanta.engine.program import EvalContext, Program
from toy_quanta.errors import ConfigError
from toy_quanta.registry import register_task
from toy_quanta.tasks.base import Task


@dataclass
class ModularConfig:
    """Binary operation mod p (Power et al. 2022): all pairs (a, b), a training fraction of them.

    Ops (toy_quanta.data.modular.OPS): add, sub, mul, div, sq_add, quad, quad_a, cube_ab,
    cube_ab2, mixed. div and mixed need a prime p.
    """

    name: str = "modular"
    p: int = 97
    op: str = "div"
    train_fraction: float = 0.5
    split_seed: int = 0  # which pairs are in the training set (nested across fractions)
    full_batch: bool = False  # every step on the whole training set; else train.batch_size pairs drawn from it
    # cross_entropy (softmax) or stablemax (Prieto et al. 2025), computed in loss_dtype (float32 or
    # float64: softmax collapse sets in far later in float64)
    loss: str = "cross_entropy"
    loss_dtype: str = "float32"


class Data(NamedTuple):
    """A member's constants on the device; the table itself is shared by every member."""

    train_mask: jax.Array  # (N,) bool
    order: jax.Array  # (N,) int32: pair indices by split rank, so order[:n_train] is the training set
    n_train: jax.Array  # () int32


def token_loss(kind: str = "cross_entropy", dtype: str = "float32") -> Callable:
    """(model, (tokens, labels)) -> (loss_B, correct_B): the task's loss (losses.classification_loss)."""
    def loss(model: Any, batch: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        tokens_BxS, labels_B = batch
        logits_BxO = model.logits(tokens_BxS)
        loss_B = losses.classification_loss(logits_BxO, labels_B, kind, dtype)
        return loss_B, (jnp.argmax(logits_BxO, -1) == labels_B).astype(jnp.float32)

    return loss


def token_eval(kind: str, dtype: str) -> Callable:
    """(model, (tokens, labels)) -> (loss_B, correct_B, collapsed_B, zero_B), one forward pass: the
    loss, and whether the float32 softmax collapsed and the loss is exactly 0 (in its own dtype)."""
    def evaluate(model: Any, batch: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, ...]:
        tokens_BxS, labels_B = batch
        logits_BxO = model.logits(tokens_BxS)
        loss_B, zero_B = losses.classification_loss(logits_BxO, labels_B, kind, dtype, with_zero=True)
        return (loss_B, (jnp.argmax(logits_BxO, -1) == labels_B).astype(jnp.float32),
                losses.collapsed(logits_BxO).astype(jnp.float32), zero_B.astype(jnp.float32))

    return evaluate


class TableTask(Task):
    """A task on a small table of (a, b) pairs, all on the device: a member's training set is a
    mask over it (the pairs whose split rank is below round(fraction * N)), so members may differ
    in training fraction (and seed, learning rate, weight decay, init scale) in one program."""

    models: tuple[str, ...] = ("transformer", "embed_mlp", "onehot_mlp")
    after_run_name = "progress"  # what after_run adds to summary.json
    member_keys = {"task.train_fraction": ("train_fraction", float)}
    headline = ("steps_to_train_99", "steps_to_val_99", "gap_99", "test_acc")

    def table(self, t: Any) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (N, 4), answers (N,))."""
        raise NotImplementedError

    def validate_loss(self, cfg: Any) -> None:
        checks.choice(cfg, "task.loss", losses.LOSSES)
        checks.choice(cfg, "task.loss_dtype", losses.DTYPES)

    def extra_metrics(self, cfg: Any, tokens_NxS: np.ndarray) -> Any:
        """(model, train_mask_N) -> metrics of the representation, or None."""
        return None

    def member_inputs(self, cfg: Any, members: Sequence[dict[str, Any]]) -> np.ndarray:
        """(M, N): every member's split rank; one split shared by the members, so their training
        sets are nested by fraction."""
        n_pairs = len(self.table(cfg.task)[1])
        return np.broadcast_to(modular.split_rank(n_pairs, cfg.task.split_seed), (len(members), n_pairs))

    def program(self, cfg: Any, members: Sequence[dict[str, Any]]) -> Program:
        """Full batch runs on the largest member's training fraction of the pairs."""
        t, tr = cfg.task, cfg.train
        tokens_NxS, c_N = self.table(t)
        n_pairs = len(c_N)
        tokens, labels = jnp.asarray(tokens_NxS), jnp.asarray(c_N)
        # Full batch runs on the first n_max pairs in split order (the largest member's training
        # set), each member weighting its own n_train of them: not the whole table.
        n_max = modular.n_train(n_pairs, max(m["task.train_fraction"] for m in members))
        extra = self.extra_metrics(cfg, tokens_NxS)

        def init(hyper, rank_N, key) -> Data:
            mask_N = modular.train_mask(rank_N, hyper["task.train_fraction"])
            return Data(train_mask=mask_N, order=jnp.argsort(rank_N).astype(jnp.int32),
                        n_train=jnp.sum(mask_N).astype(jnp.int32))

        def batch(data: Data, hyper, key, step):
            if t.full_batch:
                idx_B = data.order[:n_max]
                return (tokens[idx_B], labels[idx_B]), (jnp.arange(n_max) < data.n_train) / data.n_train
            idx_B = data.order[jax.random.randint(key, (tr.batch_size,), 0, data.n_train)]
            return (tokens[idx_B], labels[idx_B]), None

        eval_fn = token_eval(t.loss, t.loss_dtype)

        def evaluate(ctx: EvalContext, data: Data, hyper) -> dict[str, jax.Array]:
            loss_N, correct_N, collapsed_N, zero_N = ctx.blocked(lambda b: eval_fn(ctx.model, b), (tokens, labels))
            train, val = data.train_mask, ~data.train_mask
            n_val = n_pairs - data.n_train
            mean = lambda x, m, n: jnp.sum(jnp.where(m, x, 0.0)) / n  # noqa: E731
            return {
                "train_loss": mean(loss_N, train, data.n_train),
                "train_acc": mean(correct_N, train, data.n_train),
                "test_loss": mean(loss_N, val, n_val),
                "test_acc": mean(correct_N, val, n_val),
                # Prieto et al.'s softmax collapse, over the training pairs
                "softmax_collapse": mean(collapsed_N, train, data.n_train),
                "zero_loss": mean(zero_N, train, data.n_train),
                **(extra(ctx.model, train) if extra is not None else {}),
            }

        return Program(init=init, batch=batch, loss=token_loss(t.loss, t.loss_dtype), evaluate=evaluate,
                       batch_rows=n_max if t.full_batch else tr.batch_size,
                       train_accuracy=False)

    def summarize(self, steps_L: np.ndarray, logs: dict[str, np.ndarray]) -> dict[str, Any]:
        return {"test_loss_bits": float(logs["test_loss"][-1]) / LN2,
                **final_milestones(steps_L, logs["train_acc"], logs["test_acc"])}

    def report_line(self, member: dict[str, Any]) -> str:
        f = member["final"]
        return (f"train acc {f['train_acc']:.4f}, validation acc {f['test_acc']:.4f}; 99% train at "
                f"{step_or_never(f, 'steps_to_train_99')}, 99% validation at {step_or_never(f, 'steps_to_val_99')}")


class Modular(TableTask):
    name = "modular"
    config = ModularConfig
    analyses = frozenset({"progress"})

    def table(self, t: Any) -> tuple[np.ndarray, np.ndarray]:
        a_N, b_N, c_N = modular.table(t.op, t.p)
        return modular.sequences(a_N, b_N, t.p), c_N

    def validate(self, cfg: Any) -> None:
        # task.op first: modular.check looks it up in a dict, which raises TypeError on a list
        checks.choice(cfg, "task.op", tuple(modular.OPS))
        fraction = checks.get(cfg, "task.train_fraction")
        if isinstance(fraction, int) and not isinstance(fraction, bool):
            # no integer lies in (0, 1); and modular.check's math.isfinite overflows on a huge one (10**400)
            raise ConfigError("task.train_fraction", fraction, "a finite number in the open interval (0, 1)")
        modular.check(checks.get(cfg, "task.op"), checks.get(cfg, "task.p"), fraction)
        checks.nonneg_int(cfg, "task.split_seed")
        self.validate_loss(cfg)

    def model_io(self, cfg: Any) -> dict[str, int]:
        p = cfg.task.p
        return {"vocab": modular.vocab_size(p), "n_out": p, "seq_len": modular.SEQ_LEN, "n_symbols": p}

    def figures(self, result: Any, cfg: Any, out_dir: Path, title: str) -> None:
        from toy_quanta.plots.grok import job_figures

        job_figures(result, cfg.task.p, out_dir, cfg.name, title)

    def after_run(self, cfg: Any, result: Any, snapshots: Any, out_dir: Path) -> dict[str, Any]:
        """The teaching view of the mechanism, for member 0 (toy-quanta-progress does any member)."""
        if snapshots is None:
            return {}
        from toy_quanta.analysis import progress

        measures = progress.measure(cfg, np.asarray(result.steps), snapshots, member=0)
        return {"progress": progress.write(measures, out_dir / "progress", ring=False)}

    def describe(self, cfg: Any) -> str:
        t, m = cfg.task, cfg.model
        fractions = ensemble_list(cfg, "train_fraction")
        data = f"training fraction in {list(fractions)}" if fractions else f"{t.train_fraction:g} of the pairs"
        model = registry.model(m.name).describe(m)
        loss = "" if t.loss == "cross_entropy" and t.loss_dtype == "float32" else f"; {t.loss} in {t.loss_dtype}"
        return (f"{t.op} mod {t.p}, {data}; {model}{loss}; {cfg.optim.name} lr={cfg.optim.lr:g} "
                f"wd={cfg.optim.weight_decay:g}, " + ("full batch" if t.full_batch else f"batch {cfg.train.batch_size}"))


register_task(Modular())
