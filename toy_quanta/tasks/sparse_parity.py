"""Multitask sparse parity (Michaud et al. 2023): the quantization model's testbed."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from toy_quanta import checks
from toy_quanta.checks import ensemble_list
from toy_quanta.data import sparse_parity as sp
from toy_quanta.engine.program import EvalContext, Program
from toy_quanta.errors import ConfigError
from toy_quanta.models.mlp import binary_cross_entropy
from toy_quanta.registry import register_task
from toy_quanta.tasks.base import Task

TRAIN_BLOCK = 1024  # a finite training set is drawn in blocks of this many samples
log = logging.getLogger("toy_quanta")

LEARNED_BITS = 0.1  # a subtask counts as learned below this loss (the paper's threshold)
LEARNED_ACC = 0.99  # ... or, with the hinge and squared losses (no loss in bits), at this accuracy
# cross_entropy: two logits (the paper's). hinge (Barak et al. 2022) and mse (Nam et al. 2024: half
# the squared error to targets +-task.target_scale): one real output f, the label y = +-1.
LOSSES = ("cross_entropy", "hinge", "mse")


@dataclass
class SparseParityConfig:
    """Multitask sparse parity. `alpha` is the paper's alpha: subtask i has p_i ∝ i^-(alpha+1).

    The paper's headline exponent 1.4 is `task.alpha=0.4`.
    """

    name: str = "sparse_parity"
    n_tasks: int = 500
    n: int = 100
    k: int = 3
    alpha: float = 0.4
    D: Optional[int] = None  # None: online (fresh samples every step); else a fixed training set of D samples
    test_size: int = 20_000  # evaluation set drawn from the task distribution
    per_task_test: int = 200  # points per subtask in the per-subtask evaluation set
    subset_seed: Optional[int] = None  # None: subsets drawn from the top-level seed
    subsets: str = "distinct"  # distinct (any two differ), or disjoint (no bit shared: Nam et al.'s; n_tasks * k <= n)
    encoding: str = "zero_one"  # the model's inputs: zero_one (the bits), or plus_minus (2 b - 1: Barak et al.'s ±1)
    loss: str = "cross_entropy"  # cross_entropy (two logits); hinge or mse (one output: Barak et al., Nam et al.)
    target_scale: float = 1.0  # S: mse's targets are +-S (Nam et al.: 5)
    progress: bool = False  # log each subtask's weight on its relevant bits (subtask_relevant_weight)


class Batch(NamedTuple):
    task: jax.Array  # (B,) int32 subtask index
    bits: jax.Array  # (B, n) uint8
    label: jax.Array  # (B,) int32


class Data(NamedTuple):
    """A member's constants on the device."""

    subsets: jax.Array  # (n_tasks, k)
    train: Batch | None  # the fixed training set (finite mode), else None
    test: Batch  # from the task distribution
    per_task: Batch  # per_task_test points per subtask, subtask = index % n_tasks


def subsets_for(cfg: Any, members: Sequence[dict]) -> np.ndarray:
    """(M, n_tasks, k): each member's subsets, from task.subset_seed or else the member's seed."""
    t = cfg.task
    seeds = [t.subset_seed if t.subset_seed is not None else m["seed"] for m in members]
    cache = {s: sp.draw_subsets(t.n_tasks, t.n, t.k, s, t.subsets) for s in set(seeds)}
    return np.stack([cache[s] for s in seeds])


def train_capacity(members: Sequence[dict[str, Any]]) -> int | None:
    """Length of the shared training-set array: the largest member's D; None when online.
    Members must be all finite or all online (one program cannot hold both)."""
    sizes = [m["task.D"] for m in members]
    if all(d is None for d in sizes):
        return None
    if any(d is None for d in sizes):
        raise ValueError("one program cannot train online (task.D=null) and finite-data members together")
    return int(max(sizes))


def loss_and_acc(model: Any, batch: Batch) -> tuple[jax.Array, jax.Array]:
    margin_B = model.margin(batch.task, batch.bits)
    loss_B = binary_cross_entropy(margin_B, batch.label)
    # argmax of the two logits, ties to class 0
    correct_B = ((margin_B > 0) == (batch.label == 1)).astype(jnp.float32)
    return loss_B, correct_B


def real_output_loss(kind: str, target_scale: float):
    """(model, batch) -> (loss_B, correct_B, strength_B) for a one-output model f: the hinge loss
    max(0, 1 - y f) or half the squared error (f - S y)^2 / 2, and f y, whose mean over a subtask's
    points is its skill strength R_k (Nam et al.: the projection of f on the subtask's parity)."""
    def loss(model: Any, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
        f_B = model.margin(batch.task, batch.bits)
        y_B = (2 * batch.label - 1).astype(f_B.dtype)
        loss_B = jax.nn.relu(1.0 - y_B * f_B) if kind == "hinge" else 0.5 * jnp.square(f_B - target_scale * y_B)
        return loss_B, ((f_B > 0) == (batch.label == 1)).astype(jnp.float32), f_B * y_B

    return loss


def relevant_weight(bits_kernel_IxW: jax.Array, subsets_TxK: jax.Array) -> jax.Array:
    """(T,): each subtask's mean squared first-layer row over its k relevant bits, over the mean
    over all n bits (1 at a random start; it grows as the network finds the subset)."""
    sq_I = jnp.sum(jnp.square(bits_kernel_IxW), axis=1)
    return sq_I[subsets_TxK].mean(1) / jnp.maximum(sq_I.mean(), 1e-30)


def _comb_up_to(n: int, k: int, cap: int) -> int:
    """C(n, k), or the first partial product that reaches `cap` (enough to compare with it)."""
    c = 1
    for i in range(min(k, n - k)):
        c = c * (n - i) // (i + 1)
        if c >= cap:
            return c
    return c


class SparseParity(Task):
    name = "sparse_parity"
    config = SparseParityConfig
    models = ("mlp",)
    after_run_name = "solvable"  # what after_run adds to summary.json
    member_keys = {"task.alpha": ("alpha", float), "task.D": ("D", int)}
    headline = ("test_loss_bits", "test_acc", "subtasks_learned")
    analyses = frozenset({"qdg", "genic"})

    def validate(self, cfg: Any) -> None:
        checks.choice(cfg, "task.loss", LOSSES)
        checks.finite(cfg, "task.target_scale", positive=True)
        checks.boolean(cfg, "task.progress")
        for key in ("task.n_tasks", "task.n", "task.test_size", "task.per_task_test"):
            checks.positive_int(cfg, key)
        n, k, n_tasks = checks.get(cfg, "task.n"), checks.get(cfg, "task.k"), checks.get(cfg, "task.n_tasks")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
            raise ConfigError("task.k", k, f"an integer with 1 <= k <= task.n={n}")
        checks.choice(cfg, "task.subsets", sp.SUBSETS)
        checks.choice(cfg, "task.encoding", sp.ENCODINGS)
        if checks.get(cfg, "task.subsets") == "disjoint":
            if n_tasks * k > n:
                raise ConfigError("task.n_tasks", n_tasks, f"at most task.n / task.k = {n // k} subtasks with "
                                                           f"task.subsets=disjoint (n={n}, k={k})")
        else:
            n_subsets = _comb_up_to(n, k, n_tasks)  # math.comb(n, k) of a huge n would take minutes
            if n_tasks > n_subsets:
                raise ConfigError("task.n_tasks", n_tasks, f"at most C(task.n={n}, task.k={k}) = {n_subsets} distinct subsets")
        checks.finite(cfg, "task.alpha", nonneg=True)
        if checks.get(cfg, "task.D") is not None:
            checks.positive_int(cfg, "task.D")
        subset_seed = checks.get(cfg, "task.subset_seed")
        if subset_seed is not None and (isinstance(subset_seed, bool) or not isinstance(subset_seed, int) or subset_seed < 0):
            raise ConfigError("task.subset_seed", subset_seed, "an integer >= 0, or null (use the member's seed)")

    def model_io(self, cfg: Any) -> dict[str, int]:
        return {"n_control": cfg.task.n_tasks, "n_bits": cfg.task.n, "n_out": 2 if cfg.task.loss == "cross_entropy" else 1}

    def member_inputs(self, cfg: Any, members: Sequence[dict[str, Any]]) -> np.ndarray:
        return subsets_for(cfg, members)

    def group_key(self, cfg: Any) -> dict[str, Any]:
        # D is per member, but online and finite-data members cannot share a program.
        return {"finite_data": cfg.task.D is not None or ensemble_list(cfg, "D") is not None}

    def program(self, cfg: Any, members: Sequence[dict[str, Any]]) -> Program:
        """In finite mode the members' training sets share one array of the largest member's D
        rows; each member uses its own D of them."""
        t, tr = dataclasses.replace(cfg.task, D=train_capacity(members)), cfg.train
        finite = t.D is not None
        batch_len = tr.batch_size if not finite else min(tr.batch_size, t.D)

        def training_set(key, subsets_TxK, alpha) -> Batch:
            """t.D samples drawn in fixed blocks, each from its own key: the first D samples are the
            same whatever t.D is, so a member's data does not depend on its ensemble's largest D."""
            n_blocks = -(-t.D // TRAIN_BLOCK)
            keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(n_blocks))
            blocks = jax.vmap(lambda k: Batch(*sp.sample(k, subsets_TxK, alpha, TRAIN_BLOCK, t.n)))(keys)
            return jax.tree.map(lambda x: x.reshape(n_blocks * TRAIN_BLOCK, *x.shape[2:])[:t.D], blocks)

        def init(hyper, subsets_TxK, key) -> Data:
            k_train, k_test, k_task = (jax.random.fold_in(key, i) for i in (2, 3, 4))
            return Data(subsets=subsets_TxK,
                        train=training_set(k_train, subsets_TxK, hyper["task.alpha"]) if finite else None,
                        test=Batch(*sp.sample(k_test, subsets_TxK, hyper["task.alpha"], t.test_size, t.n)),
                        per_task=Batch(*sp.per_task_set(k_task, subsets_TxK, t.per_task_test, t.n)))

        def batch(data: Data, hyper, key, step) -> tuple[Batch, jax.Array]:
            """The step's batch and per-sample weights (summing to 1)."""
            if not finite:
                return Batch(*sp.sample(key, data.subsets, hyper["task.alpha"], tr.batch_size, t.n)), jnp.full(
                    (tr.batch_size,), 1.0 / tr.batch_size)
            # A member whose D fits in a batch trains on all of its D samples (full batch: the first
            # batch_len rows, those past D weighted 0); a larger D is sampled with replacement.
            D = hyper["task.D"]
            full = D <= tr.batch_size
            pos_B = jnp.arange(batch_len)
            idx_B = jnp.where(full, pos_B, jax.random.randint(key, (batch_len,), 0, D))
            weight_B = jnp.where(full, (pos_B < D) / D, 1.0 / batch_len).astype(jnp.float32)
            return jax.tree.map(lambda x: x[idx_B], data.train), weight_B

        real = t.loss != "cross_entropy"
        encoded = lambda b: b._replace(bits=sp.encode(b.bits, t.encoding))  # noqa: E731  (the model's inputs)
        real_loss = lambda model, b: real_output_loss(t.loss, t.target_scale)(model, encoded(b))  # noqa: E731

        def evaluate(ctx: EvalContext, data: Data, hyper) -> dict[str, jax.Array]:
            test_loss, test_correct = ctx.per_sample(data.test)
            extra = {}
            if real:  # one pass gives the loss, the accuracy and each point's f y
                task_loss, task_correct, strength = ctx.blocked(lambda b: real_loss(ctx.model, b), data.per_task)
                extra["subtask_strength"] = strength.reshape(t.per_task_test, t.n_tasks).mean(0)
            else:
                task_loss, task_correct = ctx.per_sample(data.per_task)
            if t.progress:
                extra["subtask_relevant_weight"] = relevant_weight(ctx.model.bits_kernel, data.subsets)
            if finite:
                # The member's training set, or its first test_size samples.
                n_fit = min(t.D, t.test_size)
                train_loss, train_correct = ctx.per_sample(jax.tree.map(lambda x: x[:n_fit], data.train))
                mask = jnp.arange(n_fit) < hyper["task.D"]
                count = jnp.minimum(hyper["task.D"], n_fit)
                train_loss, train_acc = (jnp.sum(jnp.where(mask, v, 0.0)) / count for v in (train_loss, train_correct))
            else:
                # Online: fresh samples each step, so the mean minibatch loss since the last log
                # is an unbiased estimate of the loss on the training stream.
                train_loss = jnp.where(ctx.has_train, ctx.train_loss, test_loss.mean())
                train_acc = jnp.where(ctx.has_train, ctx.train_acc, test_correct.mean())
            return {
                "train_loss": train_loss,
                "train_acc": train_acc,
                "test_loss": test_loss.mean(),
                "test_acc": test_correct.mean(),
                "subtask_loss": task_loss.reshape(t.per_task_test, t.n_tasks).mean(0),
                "subtask_acc": task_correct.reshape(t.per_task_test, t.n_tasks).mean(0),
                **extra,
            }

        loss = (lambda model, b: real_loss(model, b)[:2]) if real else (lambda model, b: loss_and_acc(model, encoded(b)))
        # fresh draws from the member's distribution, for the analyses of a trained model (QDG, genic)
        sample = lambda hyper, subsets_TxK, key, n: Batch(  # noqa: E731
            *sp.sample(key, jnp.asarray(subsets_TxK), hyper["task.alpha"], n, t.n))
        return Program(init=init, batch=batch, loss=loss, evaluate=evaluate, batch_rows=batch_len, cpu_microbatch=True,
                       sample=sample, inputs=lambda b: (b.task, encoded(b).bits))

    def summarize(self, steps_L: np.ndarray, logs: dict[str, np.ndarray]) -> dict[str, Any]:
        if "subtask_strength" in logs:  # hinge or squared loss: not in bits, learned by accuracy
            return {"subtasks_learned": int(np.sum(logs["subtask_acc"][-1] >= LEARNED_ACC))}
        return {"test_loss_bits": float(logs["test_loss"][-1]) / sp.LN2,
                "subtasks_learned": int(np.sum(logs["subtask_loss"][-1] / sp.LN2 < LEARNED_BITS))}

    def report_line(self, member: dict[str, Any]) -> str:
        f = member["final"]
        loss = f"{f['test_loss_bits']:.4f} bits" if "test_loss_bits" in f else f"{f['test_loss']:.4g}"
        return f"test loss {loss}, test acc {f['test_acc']:.4f}, {f['subtasks_learned']} subtasks learned"

    def after_run(self, cfg: Any, result: Any, snapshots: Any, out_dir: Path) -> dict[str, Any]:
        """With the squared loss and several skills: Nam et al.'s solvable model, calibrated on each
        member's skill 1, against its other skills (analysis.solvable; solvable.png)."""
        t = cfg.task
        if t.loss != "mse" or t.n_tasks < 2:
            return {}
        from toy_quanta.analysis import solvable
        from toy_quanta.plots.solvable import plot_solvable

        steps_L = np.asarray(result.steps, np.float64)
        R_MxLxK = np.moveaxis(result.log_array("subtask_strength"), 1, 0)
        p_MxK = np.stack([sp.zipf_probs(t.n_tasks, m["task.alpha"]) for m in result.members])
        members: list[dict[str, Any] | None] = []
        for m in range(len(result.members)):
            try:
                members.append({"member": m, **solvable.compare_member(steps_L, R_MxLxK[m], p_MxK[m], t.target_scale)})
            except (ValueError, RuntimeError) as exc:  # not calibrated (skill 1 never emerged): said, not fatal
                members.append(None)
                log.warning("member %d: the solvable model is not calibrated (%s)", m, exc)
        done = [r for r in members if r is not None]
        out = {"rule": solvable.RULE, "S": t.target_scale, "members": members,
               "skills": solvable.summarize(done) if done else []}
        plot_solvable(steps_L, R_MxLxK, p_MxK, t.target_scale, members, out_dir / "solvable.png",
                      title=self.describe(cfg), loss_MxL=result.log_array("test_loss").T)
        return {"solvable": out}

    def report_lines(self, summary: dict[str, Any]) -> list[str]:
        solved = summary.get("solvable")
        if not solved or not solved["skills"]:
            return []
        from toy_quanta.analysis import solvable

        return ["the solvable model calibrated on skill 1 (geometric mean over seeds [95% CI]):"] + [
            "  " + line for line in solvable.lines(solved["skills"])]

    def loss_label(self, cfg: Any) -> str:
        return {"hinge": "hinge loss", "mse": "squared error / 2"}.get(cfg.task.loss, "cross-entropy (nats)")

    def figures(self, result: Any, cfg: Any, out_dir: Path, title: str) -> None:
        from toy_quanta.plots.curves import plot_curves

        plot_curves(result, out_dir / "curves.png", title=title, log_x=cfg.train.log_count is not None)

    def describe(self, cfg: Any) -> str:
        t, m = cfg.task, cfg.model
        sizes = ensemble_list(cfg, "D")
        data = f"D in {list(sizes)}" if sizes is not None else "online" if t.D is None else f"D={t.D}"
        loss = {"hinge": "; hinge loss", "mse": f"; MSE, targets ±{t.target_scale:g}"}.get(t.loss, "")
        loss += "; ±1 inputs" if t.encoding == "plus_minus" else ""
        loss += "; disjoint subsets" if t.subsets == "disjoint" else ""
        return (f"{t.n_tasks} subtasks, n={t.n}, k={t.k}, alpha={t.alpha:g} (p ∝ i^-{t.alpha + 1:g}), {data}{loss}; "
                f"width {m.width}, depth {m.depth}; {cfg.optim.name} lr={cfg.optim.lr:g}, batch {cfg.train.batch_size}")


register_task(SparseParity())
