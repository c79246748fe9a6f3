"""The mechanism of a grokking run, over training (the logic of `toy-quanta-progress RUN_DIR`,
toy_quanta.cli.progress, and of the app's progress measures after a modular job).

For one member, at every log step it saved: the Fourier norms of the residue embeddings, their
Gini coefficient, the key frequencies (those of the final embedding), the restricted loss (the
logits with only the key frequencies' directions, on every pair) and the excluded loss (the
logits without them, on the training pairs), RQI and the ring's RQI, and the weight norm
(Nanda et al. 2023; Liu et al. 2022). Writes progress.png, fourier.png, embedding_ring.png,
progress.csv and report.json. A run without snapshots gets
the same measures for its final parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx

from toy_quanta import registry, results
from toy_quanta.analysis import fourier, rqi
from toy_quanta.config import Config
from toy_quanta.data import modular
from toy_quanta.engine.members import expand
from toy_quanta.engine.train import make_model
from toy_quanta.errors import ConfigError
from toy_quanta.plots import grok as grok_plots

DEFAULT_TOL = 0.01  # Liu et al.'s tolerance on the squared distance
DEFAULT_KEY_FACTOR = 4.0  # key: squared norm >= 4 x the median's (norm >= 2 x)


@dataclass
class Progress:
    """One member's progress measures at each of L saved steps (F = p // 2 frequencies)."""

    name: str
    op: str
    p: int
    member: dict[str, Any]
    steps_L: np.ndarray
    train_loss_L: np.ndarray  # nats, recomputed from the saved parameters
    test_loss_L: np.ndarray
    train_acc_L: np.ndarray
    test_acc_L: np.ndarray
    weight_norm_L: np.ndarray
    norms_LxF: np.ndarray  # Fourier norm of the residue embeddings per frequency k = 1 .. F
    gini_L: np.ndarray
    keys: np.ndarray  # key frequencies of the final embedding, largest first
    embed_PxD: np.ndarray  # the final residue embeddings
    tol: float
    key_factor: float
    # Defined for add and sub only (they need the parallelograms and the directions of a +- b):
    restricted_loss_L: np.ndarray | None = None
    excluded_loss_L: np.ndarray | None = None
    rqi_L: np.ndarray | None = None
    ring_rqi_L: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        cols = {"step": self.steps_L, "train_loss": self.train_loss_L, "test_loss": self.test_loss_L,
                "train_acc": self.train_acc_L, "test_acc": self.test_acc_L, "weight_norm": self.weight_norm_L,
                "gini": self.gini_L, "restricted_loss": self.restricted_loss_L, "excluded_loss": self.excluded_loss_L,
                "rqi": self.rqi_L, "ring_rqi": self.ring_rqi_L}
        frame = pd.DataFrame({k: v for k, v in cols.items() if v is not None})
        for k in range(self.norms_LxF.shape[1]):
            frame[f"fourier_norm_{k + 1}"] = self.norms_LxF[:, k]
        return frame

    def headline(self) -> dict[str, Any]:
        """The final values, and when the Gini coefficient first came within 10% of its final value."""
        last = lambda x: None if x is None else float(x[-1])  # noqa: E731
        near = np.flatnonzero(self.gini_L >= 0.9 * self.gini_L[-1])
        return {
            "name": self.name, "op": self.op, "p": self.p, "member": self.member,
            "steps": int(self.steps_L[-1]), "n_snapshots": len(self.steps_L),
            "key_frequencies": [int(k) for k in self.keys],
            "key_share": float(np.sum(self.norms_LxF[-1, self.keys - 1] ** 2) / np.sum(self.norms_LxF[-1] ** 2)),
            "gini": last(self.gini_L), "gini_90pct_step": int(self.steps_L[near[0]]),
            "rqi": last(self.rqi_L), "ring_rqi": last(self.ring_rqi_L), "tol": self.tol,
            "train_loss": last(self.train_loss_L), "test_loss": last(self.test_loss_L),
            "restricted_loss": last(self.restricted_loss_L), "excluded_loss": last(self.excluded_loss_L),
            "train_acc": last(self.train_acc_L), "test_acc": last(self.test_acc_L),
            "notes": self.notes,
        }


def _member_params(params: dict, member: int) -> list[dict]:
    """Per saved step, the member's pure-dict parameters (params leaves are (L, M, ...))."""
    n_steps = jax.tree.leaves(params)[0].shape[0]
    return [jax.tree.map(lambda x: x[i, member], params) for i in range(n_steps)]


def measure(cfg: Config, steps_L: np.ndarray, params: dict, member: int, tol: float = DEFAULT_TOL,
            key_factor: float = DEFAULT_KEY_FACTOR) -> Progress:
    """Progress measures of member `member` from its parameters at steps_L (leaves (L, M, ...))."""
    t = cfg.task
    members = expand(cfg)
    if not 0 <= member < len(members):
        raise ConfigError("--member", member, f"an index of the run's {len(members)} members (0..{len(members) - 1})")
    a_N, b_N, c_N = modular.table(t.op, t.p)
    tokens = jnp.asarray(modular.sequences(a_N, b_N, t.p))
    n_pairs = len(c_N)
    fraction = members[member]["task.train_fraction"]
    train_N = modular.split_rank(n_pairs, t.split_seed) < modular.n_train(n_pairs, fraction)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: make_model(cfg, jax.random.key(0))))

    @jax.jit
    def logits_of(pure: dict) -> jax.Array:
        state = jax.tree.map(lambda x: x, abstract)
        nnx.replace_by_pure_dict(state, pure)
        return nnx.merge(graphdef, state).logits(tokens)

    additive = t.op in rqi.SIGNS
    quads = rqi.parallelograms(t.p, t.op, modulus=t.p) if additive else None
    s_N = (a_N + rqi.SIGNS[t.op] * b_N) % t.p if additive else None
    snaps = _member_params(params, member)
    embeds = [np.asarray(s["embed"]["embedding"], np.float64)[: t.p] for s in snaps]
    norms_LxF = np.stack([fourier.frequency_norms(e) for e in embeds])
    keys = fourier.key_frequencies(norms_LxF[-1], key_factor)
    cols: dict[str, list[float]] = {}
    for snap, embed in zip(snaps, embeds):
        logits_NxO = np.asarray(logits_of(snap), np.float64)
        loss_N = fourier.cross_entropy(logits_NxO, c_N)
        correct_N = logits_NxO.argmax(1) == c_N
        row = {"train_loss": loss_N[train_N].mean(), "test_loss": loss_N[~train_N].mean(),
               "train_acc": correct_N[train_N].mean(), "test_acc": correct_N[~train_N].mean(),
               "weight_norm": np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in jax.tree.leaves(snap)))}
        if additive:
            restricted, excluded = fourier.restricted_excluded(logits_NxO, s_N, t.p, keys)
            row["restricted_loss"] = fourier.cross_entropy(restricted, c_N).mean()
            row["excluded_loss"] = fourier.cross_entropy(excluded[train_N], c_N[train_N]).mean()
            row["rqi"] = rqi.rqi(embed, quads, t.op, tol)
            row["ring_rqi"] = rqi.ring_rqi(embed, quads, t.op, tol)
        for k, v in row.items():
            cols.setdefault(k, []).append(float(v))
    arr = {k: np.asarray(v) for k, v in cols.items()}
    notes = []
    if not additive:
        notes.append(f"task.op={t.op}: restricted and excluded loss and RQI are defined for add and sub only")
    if len(keys) == 0:
        notes.append(f"no frequency's squared norm reaches {key_factor:g} x the median's: no key frequencies, so the "
                     "restricted loss keeps only each output's mean")
    return Progress(
        name=cfg.name, op=t.op, p=t.p, member=members[member], steps_L=np.asarray(steps_L)[: len(snaps)],
        train_loss_L=arr["train_loss"], test_loss_L=arr["test_loss"], train_acc_L=arr["train_acc"],
        test_acc_L=arr["test_acc"], weight_norm_L=arr["weight_norm"], norms_LxF=norms_LxF,
        gini_L=np.array([fourier.gini(n) for n in norms_LxF]), keys=keys, embed_PxD=embeds[-1], tol=tol,
        key_factor=key_factor, restricted_loss_L=arr.get("restricted_loss"), excluded_loss_L=arr.get("excluded_loss"),
        rqi_L=arr.get("rqi"), ring_rqi_L=arr.get("ring_rqi"), notes=notes)


def load(run_dir: Path) -> tuple[Config, np.ndarray, dict, bool]:
    """(config, steps, params with leaves (L, M, ...), whether they are snapshots over training)."""
    cfg = results.load_config(run_dir)
    if "progress" not in registry.task(cfg.task.name).analyses:
        raise ConfigError("RUN_DIR", str(run_dir), f"a modular arithmetic run (this one trained task={cfg.task.name})")
    if (run_dir / results.SNAPSHOTS_FILE).is_file():
        steps, params = results.load_snapshots(run_dir)
        return cfg, steps, params, True
    ckpt = run_dir / results.CHECKPOINT_FILE
    if not ckpt.is_file():
        raise FileNotFoundError(f"{run_dir} holds neither {results.SNAPSHOTS_FILE} nor {results.CHECKPOINT_FILE}: "
                                "re-run the job with train.snapshots=true")
    final = jax.tree.map(lambda x: x[None], results.load_checkpoint(ckpt))
    return cfg, np.array([cfg.train.steps]), final, False


def write(progress: Progress, out_dir: Path, ring: bool = True) -> dict[str, Any]:
    """Figures, the table and report.json into out_dir; returns the headline figures. `ring`:
    also the final embedding ring (the app's job directory has it already)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{progress.name}: {progress.op} mod {progress.p}"
    if len(progress.steps_L) > 1:
        grok_plots.plot_progress(progress, out_dir / "progress.png", title=title)
    grok_plots.plot_fourier(progress, out_dir / "fourier.png", title=title)
    if ring:
        grok_plots.plot_embedding_ring(progress.embed_PxD, out_dir / "embedding_ring.png",
                                       title=f"{title}: residue embeddings at step {progress.steps_L[-1]}")
    results.atomic_write(out_dir / "progress.csv", lambda p: progress.table().to_csv(p, index=False))
    head = progress.headline()
    results.write_json(out_dir / "report.json", head)
    return head
