"""The training engine for modular arithmetic (grokking): `make_modular_train(cfg)` returns pure
functions of one member, as `make_train` does for sparse parity.

    trainer = make_modular_train(cfg)
    state, data = jax.vmap(trainer.init)(hyper, rank_MxN)
    state, logs = jax.vmap(trainer.chunk, (0, 0, None))(state, data, n_steps)

The whole table of pairs lives on the device. A member's training set is a mask over it: the
pairs whose split rank is below round(fraction * N), so members may differ in training fraction
(and seed, learning rate, weight decay, init scale) inside one compiled program.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from toy_quanta.config import Config
from toy_quanta.data import modular, symbol_add
from toy_quanta.engine.members import ModularHyper
from toy_quanta.engine.optim import make_optimizer
from toy_quanta.engine.train import StepState, fix_norm, guarded_chunks, has_fixed_norm, log_steps, start_state
from toy_quanta.models.embed_mlp import EmbedMLP
from toy_quanta.models.transformer import Transformer


class ModularData(NamedTuple):
    """Per-member constants on the device."""

    hyper: ModularHyper
    data_key: jax.Array
    train_mask: jax.Array  # (N,) bool
    order: jax.Array  # (N,) int32: pair indices by split rank, so order[:n_train] is the training set
    n_train: jax.Array  # () int32


class ModularTrainer(NamedTuple):
    init: Callable[[ModularHyper, jax.Array], tuple[StepState, ModularData]]
    chunk: Callable[[StepState, ModularData, jax.Array], tuple[StepState, dict]]
    train: Callable[[ModularHyper, jax.Array], tuple[StepState, dict]]
    log_steps: np.ndarray
    graphdef: Any
    tokens: np.ndarray  # (N, T) the table's sequences
    labels: np.ndarray  # (N,) answers


def split_ranks(n_pairs: int, split_seed: int, n_members: int) -> np.ndarray:
    """(M, N): every member's split rank; one split shared by the members, so their training sets
    are nested by fraction."""
    return np.broadcast_to(modular.split_rank(n_pairs, split_seed), (n_members, n_pairs))


def task_table(t: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """(tokens (N, 4), answers (N,), number of classes) of modular arithmetic or the toy's addition."""
    if t.name == "symbol_add":
        return symbol_add.sequences(t.p), symbol_add.table(t.p)[2], symbol_add.n_classes(t.p)
    a_N, b_N, c_N = modular.table(t.op, t.p)
    return modular.sequences(a_N, b_N, t.p), c_N, t.p


def make_modular_model(cfg: Config, key: jax.Array) -> nnx.Module:
    """The configured model with init_scale 1 (the trainer scales per member)."""
    t, m = cfg.task, cfg.model
    rngs = nnx.Rngs(key)
    n_out = symbol_add.n_classes(t.p) if t.name == "symbol_add" else t.p
    if m.name == "transformer":
        return Transformer(vocab=modular.vocab_size(t.p), n_out=n_out, seq_len=modular.SEQ_LEN, n_layers=m.n_layers,
                           d_model=m.d_model, n_heads=m.n_heads, d_mlp=m.d_mlp, activation=m.activation,
                           positions=m.positions, layer_norm=m.layer_norm, tied=m.tied, init_scale=1.0, rngs=rngs)
    if m.name == "embed_mlp":
        return EmbedMLP(n_symbols=t.p, d_embed=m.d_embed, combine=m.combine, width=m.width, depth=m.depth,
                        activation=m.activation, n_out=n_out, init_scale=1.0, rngs=rngs)
    raise ValueError(f"model.name={m.name!r}: modular arithmetic trains transformer or embed_mlp")


def make_modular_train(cfg: Config) -> ModularTrainer:
    """Pure functions of one member. A member's training fraction must be at most the largest of
    ensemble.train_fraction (or task.train_fraction): full batch runs on that many pairs."""
    t, tr = cfg.task, cfg.train
    tokens_NxT, c_N, _ = task_table(t)
    n_pairs = len(c_N)
    tokens, labels = jnp.asarray(tokens_NxT), jnp.asarray(c_N)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: make_modular_model(cfg, jax.random.key(0))))

    def logits_of(params, tokens_BxT):
        return nnx.merge(graphdef, params).logits(tokens_BxT)

    def loss_acc_N(params):
        """Loss and correctness of every pair of the table (it is small: p^2 rows)."""
        logits_NxP = logits_of(params, tokens)
        loss_N = optax.softmax_cross_entropy_with_integer_labels(logits_NxP, labels)
        return loss_N, (jnp.argmax(logits_NxP, -1) == labels).astype(jnp.float32)

    def optimizer(hyper: ModularHyper):
        return make_optimizer(cfg.optim, hyper.lr, hyper.weight_decay, tr.steps)

    def init(hyper: ModularHyper, rank_N: jax.Array) -> tuple[StepState, ModularData]:
        key = jax.random.key(hyper.seed)
        k_init, k_data = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        params = nnx.split(make_modular_model(cfg, k_init))[1]
        params = fix_norm(jax.tree.map(lambda x: x * hyper.init_scale, params), hyper.fixed_norm)
        mask_N = modular.train_mask(rank_N, hyper.train_fraction)
        data = ModularData(hyper=hyper, data_key=k_data, train_mask=mask_N,
                           order=jnp.argsort(rank_N).astype(jnp.int32), n_train=jnp.sum(mask_N).astype(jnp.int32))
        return start_state(params, optimizer(hyper).init(params)), data

    # Full batch runs on the first n_max pairs in split order (the largest member's training set),
    # each member weighting its own n_train of them: not the whole table.
    fractions = cfg.ensemble.train_fraction or [t.train_fraction]
    n_max = modular.n_train(n_pairs, max(fractions))

    def batch_loss(params, data: ModularData, step: jax.Array):
        if t.full_batch:
            idx_B = data.order[:n_max]
            weight_B = (jnp.arange(n_max) < data.n_train) / data.n_train
            loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_of(params, tokens[idx_B]), labels[idx_B])
            return jnp.sum(weight_B * loss_B)
        key = jax.random.fold_in(data.data_key, step)
        idx_B = data.order[jax.random.randint(key, (tr.batch_size,), 0, data.n_train)]
        logits_BxP = logits_of(params, tokens[idx_B])
        return optax.softmax_cross_entropy_with_integer_labels(logits_BxP, labels[idx_B]).mean()

    def evaluate(state: StepState, data: ModularData) -> dict[str, jax.Array]:
        loss_N, correct_N = loss_acc_N(state.params)
        train, val = data.train_mask, ~data.train_mask
        n_val = n_pairs - data.n_train
        mean = lambda x, m, n: jnp.sum(jnp.where(m, x, 0.0)) / n  # noqa: E731
        return {
            "train_loss": mean(loss_N, train, data.n_train),
            "train_acc": mean(correct_N, train, data.n_train),
            "test_loss": mean(loss_N, val, n_val),
            "test_acc": mean(correct_N, val, n_val),
            "param_norm": optax.tree.norm(state.params),
            "alive": state.alive.astype(jnp.float32),
            **(representation(state.params, train) if t.name == "symbol_add" else {}),
        }

    quads_Qx2 = jnp.asarray(symbol_add.parallelogram_pairs(t.p)) if t.name == "symbol_add" else None

    def representation(params, train_N: jax.Array) -> dict[str, jax.Array]:
        """Liu et al.'s measures of the embedding: RQI (the fraction of parallelograms that the
        normalised embeddings satisfy within 0.01 on the squared distance) and the effective loss
        (over the parallelograms whose two pairs both train, divided by sum_k |E_k|^2)."""
        embed_PxE = nnx.merge(graphdef, params).embed_matrix
        a_N, b_N = tokens[:, 0], tokens[:, 2]
        r_Q, s_Q = quads_Qx2[:, 0], quads_Qx2[:, 1]
        centred_PxE = embed_PxE - embed_PxE.mean(0)
        unit_PxE = centred_PxE / jnp.sqrt(jnp.mean(jnp.sum(centred_PxE**2, -1)))
        pair_NxE = unit_PxE[a_N] + unit_PxE[b_N]
        rqi = jnp.mean(jnp.sum((pair_NxE[r_Q] - pair_NxE[s_Q]) ** 2, -1) <= RQI_TOL)
        raw_NxE = embed_PxE[a_N] + embed_PxE[b_N]
        in_train_Q = train_N[r_Q] & train_N[s_Q]
        dist_Q = jnp.sum((raw_NxE[r_Q] - raw_NxE[s_Q]) ** 2, -1)
        eff = jnp.sum(jnp.where(in_train_Q, dist_Q, 0.0)) / jnp.sum(embed_PxE**2)
        return {"rqi": rqi.astype(jnp.float32), "eff_loss": eff}

    steps_at = log_steps(tr.steps, tr.log_every, tr.log_count)
    chunk, train = guarded_chunks(init, batch_loss, optimizer, evaluate, steps_at, has_fixed_norm(cfg))

    return ModularTrainer(init, chunk, train, steps_at, graphdef, tokens_NxT, c_N)


RQI_TOL = 0.01  # Liu et al.'s tolerance on the squared distance of normalised embeddings


def steps_to(acc_LxM: np.ndarray, steps_L: np.ndarray, level: float) -> np.ndarray:
    """(M,) the first logged step at which accuracy reached `level`; NaN where it never did."""
    reached = acc_LxM >= level
    first = np.argmax(reached, axis=0)
    return np.where(reached.any(axis=0), steps_L[first].astype(np.float64), np.nan)


def grokking_summary(steps_L: np.ndarray, train_acc_LxM: np.ndarray, val_acc_LxM: np.ndarray) -> dict[str, np.ndarray]:
    """Per member: steps to 90% and 99% training and validation accuracy, the grokking gap at
    99% (validation step - training step) and whether validation reached 99% within the budget."""
    out = {}
    for level in (0.9, 0.99):
        tag = f"{round(level * 100)}"
        out[f"train_{tag}"] = steps_to(train_acc_LxM, steps_L, level)
        out[f"val_{tag}"] = steps_to(val_acc_LxM, steps_L, level)
    out["gap_99"] = out["val_99"] - out["train_99"]
    out["grokked"] = ~np.isnan(out["val_99"])
    return out
