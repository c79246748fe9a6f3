"""The effective theory's toy (Liu et al. 2022): i + j over the integers for p symbols."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from toy_quanta import checks
from toy_quanta.data import modular, symbol_add
from toy_quanta.errors import ConfigError
from toy_quanta.registry import register_task
from toy_quanta.tasks.modular import TableTask

SYMBOL_ADD_P_MAX = 1000
RQI_TOL = 0.01  # Liu et al.'s tolerance on the squared distance of normalised embeddings


@dataclass
class SymbolAddConfig:
    """The effective theory's toy (Liu et al. 2022): i + j over the integers for p symbols, on the
    unordered pairs i <= j (55 for p = 10), answers 0..2p-2 as classes. A training fraction of the
    pairs trains (0.82 of 55 rounds to the paper's 45), the rest validates."""

    name: str = "symbol_add"
    p: int = 10
    train_fraction: float = 0.82
    split_seed: int = 0
    full_batch: bool = True  # the paper's setting; else train.batch_size pairs drawn from the training set
    loss: str = "cross_entropy"  # or stablemax; computed in loss_dtype (as task=modular)
    loss_dtype: str = "float32"


class SymbolAdd(TableTask):
    name = "symbol_add"
    config = SymbolAddConfig
    models = ("embed_mlp",)
    headline = ("steps_to_train_90", "steps_to_val_90", "train_acc", "test_acc", "rqi", "eff_loss")

    def table(self, t: Any) -> tuple[np.ndarray, np.ndarray]:
        return symbol_add.sequences(t.p), symbol_add.table(t.p)[2]

    def validate(self, cfg: Any) -> None:
        p = checks.get(cfg, "task.p")
        if isinstance(p, bool) or not isinstance(p, int) or not 2 <= p <= SYMBOL_ADD_P_MAX:
            raise ConfigError("task.p", p, f"an integer in [2, {SYMBOL_ADD_P_MAX}] (the number of symbols)")
        self.validate_loss(cfg)
        n_pairs = p * (p + 1) // 2
        fractions = [("task.train_fraction", checks.get(cfg, "task.train_fraction"))]
        for key, f in fractions:
            ok = isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1
            if not ok or not 1 <= round(f * n_pairs) < n_pairs:
                raise ConfigError(key, f, f"a fraction in (0, 1) that leaves at least one of the {n_pairs} pairs for "
                                          "training and one for validation")
        checks.nonneg_int(cfg, "task.split_seed")

    def model_io(self, cfg: Any) -> dict[str, int]:
        p = cfg.task.p
        return {"vocab": modular.vocab_size(p), "n_out": symbol_add.n_classes(p), "seq_len": modular.SEQ_LEN,
                "n_symbols": p}

    def extra_metrics(self, cfg: Any, tokens_NxS: np.ndarray) -> Any:
        quads_Ax2 = jnp.asarray(symbol_add.parallelogram_pairs(cfg.task.p))
        a_N, b_N = jnp.asarray(tokens_NxS[:, 0]), jnp.asarray(tokens_NxS[:, 2])

        def representation(model: Any, train_N: jax.Array) -> dict[str, jax.Array]:
            """Liu et al.'s measures of the embedding: RQI (the fraction of parallelograms that the
            normalised embeddings satisfy within 0.01 on the squared distance) and the effective
            loss (over the parallelograms whose two pairs both train, divided by sum_k |E_k|^2)."""
            embed_PxD = model.embed_matrix
            r_A, s_A = quads_Ax2[:, 0], quads_Ax2[:, 1]
            centred_PxD = embed_PxD - embed_PxD.mean(0)
            unit_PxD = centred_PxD / jnp.sqrt(jnp.mean(jnp.sum(centred_PxD**2, -1)))
            pair_NxD = unit_PxD[a_N] + unit_PxD[b_N]
            rqi = jnp.mean(jnp.sum((pair_NxD[r_A] - pair_NxD[s_A]) ** 2, -1) <= RQI_TOL)
            raw_NxD = embed_PxD[a_N] + embed_PxD[b_N]
            in_train_A = train_N[r_A] & train_N[s_A]
            dist_A = jnp.sum((raw_NxD[r_A] - raw_NxD[s_A]) ** 2, -1)
            eff = jnp.sum(jnp.where(in_train_A, dist_A, 0.0)) / jnp.sum(embed_PxD**2)
            return {"rqi": rqi.astype(jnp.float32), "eff_loss": eff}

        return representation

    def figures(self, result: Any, cfg: Any, out_dir: Path, title: str) -> None:
        from toy_quanta.plots.grok import plot_grokking, plot_representation

        plot_grokking(result, out_dir / "curves.png", title=title)
        plot_representation(result, out_dir / "representation.png", title=title)

    def describe(self, cfg: Any) -> str:
        t, m, o = cfg.task, cfg.model, cfg.optim
        embed = (f"; embedding lr={o.embed_lr if o.embed_lr is not None else o.lr:g} "
                 f"wd={o.embed_weight_decay if o.embed_weight_decay is not None else o.weight_decay:g}")
        return (f"i + j for {t.p} symbols, {t.train_fraction:g} of the {t.p * (t.p + 1) // 2} pairs; {m.d_embed}-D "
                f"embedding, decoder {m.depth} x {m.width} {m.activation}; {o.name} decoder lr={o.lr:g} "
                f"wd={o.weight_decay:g}{embed}")


register_task(SymbolAdd())
