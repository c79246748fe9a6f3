"""Quanta discovery from gradients (Michaud et al. 2023) on a trained member of a job: samples the
model predicts well, the cosine similarities of their per-sample loss gradients, spectral clusters
at every count, scored against the true subtasks (`run_qdg`: what toy-quanta-qdg runs; docs/qdg.md).

The samples and their losses are the task's own: drawn by its program's sampler and scored by
the loss it trains with (Program.sample, Program.loss, Program.inputs; results.TrainedRun.program).
A task that declares "qdg" (Task.analyses) is of sparse parity's kind: its batches name each
sample's subtask (`task`, the true quantum), its `bits` and `label`, its member input is the
subtasks' subsets, its members have a `task.alpha`, and it trains the MLP (models.mlp).

Similarities without materialising the gradients. A dense layer's per-sample gradient is an
outer product: dL/dW = a ⊗ δ (input activation, gradient at the layer's output) and dL/db = δ.
So the inner product of two samples' gradients is, summed over layers, (a_i · a_j + 1)(δ_i · δ_j).
For 10,000 samples of a width-500 MLP the gradients would take 12 GB (300k parameters each); the
Gram matrix takes 400 MB, built in row blocks. `per_sample_gradients` is the direct vmap(grad)
computation, for checks and small models.

Parameter groups (which gradients count):
- "control": the first layer's control rows. They play the part of embeddings (the paper left
  those out): their gradient is nonzero only in the sample's own subtask row, so including them
  makes samples of one subtask similar by construction.
- "bits": the first layer's rows for the n bits, and its bias.
- "hidden": the hidden-to-hidden layers (depth > 1).
- "out": the output layer.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import OmegaConf

from toy_quanta.analysis import clusters
from toy_quanta.config import QDG_PARAMS as PARAM_GROUPS
from toy_quanta.config import QDGConfig, validate_qdg
from toy_quanta.engine.program import Program
from toy_quanta.errors import ConfigError
from toy_quanta.models.mlp import MLP
from toy_quanta.results import TrainedRun, atomic_write, json_safe, load_run, write_json

log = logging.getLogger("toy_quanta.qdg")
DEFAULT_GROUPS = ("bits", "hidden", "out")
DRAW_BLOCK = 8192  # candidates drawn at once from the task distribution
LN2 = math.log(2.0)  # nats per bit
Loss = Callable[[Any, Any], tuple[jax.Array, ...]]  # Program.loss: (model, batch) -> (loss_B, ...)


class Factor(NamedTuple):
    """One dense layer's part of the per-sample gradients: a_NxI ⊗ δ_NxO, plus δ itself when the
    layer's bias counts."""

    a_NxI: jax.Array
    d_NxO: jax.Array
    bias: bool


def check_groups(groups: Sequence[str]) -> None:
    bad = [g for g in groups if g not in PARAM_GROUPS]
    if bad or not groups or len(set(groups)) != len(groups):
        raise ValueError(f"parameter groups {list(groups)}: need a non-empty list of distinct names from {list(PARAM_GROUPS)}")


def _is_out_bias(path: tuple, _: Any) -> bool:
    return path == ("out", "bias")


def _float64(state: Any) -> Any:
    return jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)


def loss_cotangent(model: MLP, loss: Loss, batch: Any) -> jax.Array:
    """(B, O): each sample's loss gradient at the model's outputs, dL_i/dz_i, scaled to a largest
    component of 1 (only its direction counts: each gradient is normalised). Autodiff of the
    task's own loss, through the output layer's bias one sample at a time (dL/db = dL/dz), in
    float64: in float32 the cross-entropy's gradient underflows to 0 past a margin of about 87
    (441 of the 10,000 samples of the qdg_model job); in float64 past about 745. For two logits
    the result is exactly ±(1, -1), the direction however confident the sample."""
    graphdef, bias, rest = nnx.split(model, _is_out_bias, ...)
    with jax.enable_x64(True):
        rest64 = _float64(rest)

        def one(bias_O, row):
            return loss(nnx.merge(graphdef, bias_O, rest64), jax.tree.map(lambda x: x[None], row))[0][0]

        grad = jax.vmap(jax.grad(one), in_axes=(None, 0))(_float64(bias), batch)
        g_BxO = jax.tree.leaves(grad)[0]
        scale_Bx1 = jnp.max(jnp.abs(g_BxO), axis=1, keepdims=True)
        return (g_BxO / jnp.where(scale_Bx1 > 0, scale_Bx1, 1.0)).astype(jnp.float32)


def margin_cotangent(n: int, n_out: int) -> jax.Array:
    """(n, 2): the gradient of the logit margin z_1 - z_0 at the outputs, for every sample. For two
    classes a loss gradient is ± this, the sign set by the label (gradient=margin removes it)."""
    if n_out != 2:
        raise ValueError(f"gradient=margin needs a model with two outputs, this one has {n_out}")
    return jnp.tile(jnp.array([-1.0, 1.0], jnp.float32), (n, 1))


def layer_factors(model: MLP, task_B: jax.Array, x_BxI: jax.Array, cotangent_BxO: jax.Array,
                  groups: Sequence[str] = DEFAULT_GROUPS) -> list[Factor]:
    """The selected parameter groups' factors for the model's inputs (task_B, x_BxI) (what the
    task feeds it: Program.inputs) and each sample's gradient at the outputs (loss_cotangent or
    margin_cotangent; a positive factor per sample does not matter). Each sample's δ is the
    gradient of its own output (a sample's output depends on no other sample's)."""
    check_groups(groups)
    batch = task_B.shape[0]
    n_out = [layer.kernel.shape[1] for layer in [model.inp, *model.hidden, model.out]]

    def forward(eps):
        z_BxW = model.first_layer(task_B, x_BxI) + eps[0]
        inputs = []
        h_BxW = model.act(z_BxW)
        for i, layer in enumerate(model.hidden, start=1):
            inputs.append(h_BxW)
            h_BxW = model.act(layer(h_BxW) + eps[i])
        inputs.append(h_BxW)
        return model.out(h_BxW) + eps[-1], inputs

    eps = [jnp.zeros((batch, w), jnp.float32) for w in n_out]
    _, backward, inputs = jax.vjp(forward, eps, has_aux=True)
    (deltas,) = backward(cotangent_BxO)
    factors = []
    first = []
    if "control" in groups:
        first.append(jax.nn.one_hot(task_B, model.n_control, dtype=jnp.float32))
    if "bits" in groups:
        first.append(x_BxI.astype(jnp.float32))
    if first:
        factors.append(Factor(jnp.concatenate(first, axis=1), deltas[0], "bits" in groups))
    if "hidden" in groups:
        factors += [Factor(a, d, True) for a, d in zip(inputs[:-1], deltas[1:-1])]
    if "out" in groups:
        factors.append(Factor(inputs[-1], deltas[-1], True))
    if not factors:
        raise ValueError(f"parameter groups {list(groups)} select no parameters of a depth-{len(model.hidden) + 1} MLP")
    return factors


def gradient_factors(program: Program, model: MLP, batch: Any, groups: Sequence[str] = DEFAULT_GROUPS,
                     gradient: str = "loss") -> list[Factor]:
    """layer_factors of a batch of the task: its per-sample loss gradients (gradient="loss", the
    paper's) or logit-margin gradients ("margin")."""
    task_B, x_BxI = program.inputs(batch)
    cotangent_BxO = (margin_cotangent(task_B.shape[0], model.out.kernel.shape[1]) if gradient == "margin"
                     else loss_cotangent(model, program.loss, batch))
    return layer_factors(model, task_B, x_BxI, cotangent_BxO, groups)


def sq_norms(factors: list[Factor]) -> jax.Array:
    return sum((jnp.sum(a * a, 1) + float(bias)) * jnp.sum(d * d, 1) for a, d, bias in factors)


def cosine_similarity(factors: list[Factor], block: int = 1024) -> np.ndarray:
    """(N, N) cosine similarity of the per-sample gradients, in blocks of `block` rows."""
    n = factors[0].a_NxI.shape[0]
    block = min(block, n)
    inv_N = 1.0 / jnp.sqrt(jnp.maximum(sq_norms(factors), 1e-30))
    arrays = [(f.a_NxI, f.d_NxO) for f in factors]
    biases = tuple(float(f.bias) for f in factors)
    out = np.empty((n, n), np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        out[start:stop] = np.asarray(_scaled_rows(arrays, biases, inv_N, start, block))[: stop - start]
    np.clip(out, -1.0, 1.0, out=out)
    return out


@partial(jax.jit, static_argnames=("biases", "block"))  # one compile per shape, kept across calls
def _scaled_rows(arrays, biases: tuple[float, ...], inv_N: jax.Array, start: jax.Array, block: int) -> jax.Array:
    """Rows start..start+block of the normalised Gram matrix. One shape for every block (the last
    wraps around to the first rows) so the product compiles once."""
    n = inv_N.shape[0]
    idx = (start + jnp.arange(block)) % n
    total = 0.0
    for (a_NxI, d_NxO), bias in zip(arrays, biases):
        total = total + (a_NxI[idx] @ a_NxI.T + bias) * (d_NxO[idx] @ d_NxO.T)
    return total * inv_N[idx, None] * inv_N[None, :]


def affinity(cos_NxN: np.ndarray, kind: str = "angular", out: np.ndarray | None = None) -> np.ndarray:
    """The clustering affinity of cosine similarities.

    angular: 1 - arccos(C)/pi, the paper's, in [0, 1]: 1 for parallel gradients, 1/2 for orthogonal.
    cosine: max(C, 0): orthogonal and opposite gradients get 0, so unrelated samples do not form
    the dense background of 1/2 that the angular affinity gives them.
    """
    out = np.empty_like(cos_NxN) if out is None else out
    if kind == "angular":
        np.clip(cos_NxN, -1.0, 1.0, out=out)
        np.arccos(out, out=out)
        out *= -1.0 / np.pi
        out += 1.0
    elif kind == "cosine":
        np.maximum(cos_NxN, 0.0, out=out)
    else:
        raise ValueError(f"affinity kind {kind!r}: allowed 'angular' or 'cosine'")
    return out


def per_sample_gradients(model: MLP, loss: Loss, batch: Any, groups: Sequence[str] = DEFAULT_GROUPS) -> np.ndarray:
    """(B, n_params): each sample's gradient of `loss` (the task's: Program.loss) by vmap(grad),
    flattened over the selected groups. The direct computation: n_params floats per sample, so
    for small models and checks."""
    check_groups(groups)
    graphdef, params = nnx.split(model)

    def loss_one(p, row):
        return loss(nnx.merge(graphdef, p), jax.tree.map(lambda x: x[None], row))[0].sum()

    grads = nnx.to_pure_dict(jax.vmap(jax.grad(loss_one), in_axes=(None, 0))(params, batch))
    parts = []
    first = grads["inp"]["kernel"]
    if "control" in groups:
        parts.append(first[:, : model.n_control])
    if "bits" in groups:
        parts += [first[:, model.n_control:], grads["inp"]["bias"]]
    if "hidden" in groups:
        for i in sorted(grads.get("hidden", {}), key=int):
            parts += [grads["hidden"][i]["kernel"], grads["hidden"][i]["bias"]]
    if "out" in groups:
        parts += [grads["out"]["kernel"], grads["out"]["bias"]]
    return np.concatenate([np.asarray(x).reshape(x.shape[0], -1) for x in parts], axis=1)


# --- the analysis of a trained member: samples, similarities, clusters, scores ---------------------


def trained_run(run_dir: Path, analysis: str = "qdg") -> TrainedRun:
    """A job's trained members for an analysis that reads per-sample losses in bits (qdg, genic):
    its task declares the analysis (results.load_run) and trained a cross-entropy in nats (a task
    without task.loss has only that one)."""

    def cross_entropy(cfg: Any) -> None:
        loss = getattr(cfg.task, "loss", "cross_entropy")
        if loss != "cross_entropy":
            raise ConfigError("run_dir", str(run_dir), f"a run trained with task.loss=cross_entropy ({analysis} reads the "
                                                       f"two-logit cross-entropy in bits; this one trained task.loss={loss})")

    return load_run(Path(run_dir), analysis, check=cross_entropy)


class Samples(NamedTuple):
    """The samples a QDG analysis clusters."""

    batch: Any  # the task's batch (host arrays): task, bits, label
    loss_bits_N: np.ndarray  # each one's loss (the task's), in bits
    n_drawn: int  # candidates drawn to find them


def select_samples(program: Program, model: MLP, hyper: dict[str, Any], member_input: Any, cfg: QDGConfig) -> Samples:
    """Samples of the member's task distribution (every subtask equally often if cfg.balanced)
    whose loss is below cfg.loss_threshold_bits, drawn in blocks until cfg.n_samples are found
    or cfg.max_draws are drawn."""
    if cfg.balanced:
        hyper = {**hyper, "task.alpha": -1.0}  # p_i ∝ i^-(alpha+1) = 1
    loss_bits = jax.jit(lambda batch: program.loss(model, batch)[0] / LN2)
    member_input = jnp.asarray(member_input)
    key = jax.random.key(cfg.seed)
    parts, found, drawn = [], 0, 0
    while found < cfg.n_samples and drawn < cfg.max_draws:
        key, sub = jax.random.split(key)
        batch = program.sample(hyper, member_input, sub, DRAW_BLOCK)
        loss_B = np.asarray(loss_bits(batch))
        keep = np.flatnonzero(loss_B < cfg.loss_threshold_bits)
        parts.append((jax.tree.map(lambda x: np.asarray(x)[keep], batch), loss_B[keep]))
        found += len(keep)
        drawn += DRAW_BLOCK
    batch = jax.tree.map(lambda *xs: np.concatenate(xs)[: cfg.n_samples], *[b for b, _ in parts])
    return Samples(batch, np.concatenate([loss for _, loss in parts])[: cfg.n_samples], drawn)


def check_enough(samples: Samples, counts: Sequence[int], cfg: QDGConfig) -> None:
    """ConfigError if fewer samples than the largest cluster count passed the threshold."""
    n = len(samples.loss_bits_N)
    if n <= max(counts):
        raise ConfigError("loss_threshold_bits", cfg.loss_threshold_bits,
                          f"a threshold that more samples pass: only {n} of {samples.n_drawn} draws had a loss below "
                          f"it, fewer than the largest cluster count {max(counts)} (the model has learned too little; "
                          "raise the threshold, lower the counts, or train longer)")


def relevant_pattern(task_N: np.ndarray, bits_NxI: np.ndarray, subsets_TxK: np.ndarray) -> np.ndarray:
    """The sample's bits at its subtask's subset, as a number in [0, 2^k): the piece of the
    subtask's input space a sample falls in (a finer partition than the subtask)."""
    rel_NxK = np.take_along_axis(bits_NxI, subsets_TxK[task_N], axis=1).astype(np.int64)
    return rel_NxK @ (1 << np.arange(rel_NxK.shape[1])[::-1])


def mean_similarity(cos_NxN: np.ndarray, truth_N: np.ndarray, max_rows: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean cosine similarity between distinct samples of the same group and of different groups
    (over up to max_rows rows, to bound the cost)."""
    rows = np.random.default_rng(seed).permutation(len(truth_N))[:max_rows]
    block = cos_NxN[rows]
    same = truth_N[rows, None] == truth_N[None, :]
    same[np.arange(len(rows)), rows] = False  # leave out each sample's similarity to itself
    diff = truth_N[rows, None] != truth_N[None, :]
    return {"same": float(block[same].mean()) if same.any() else float("nan"),
            "different": float(block[diff].mean()) if diff.any() else float("nan")}


class Clustering(NamedTuple):
    """Spectral clusters of the samples at every count, and the envelope of their sizes."""

    labels: dict[int, np.ndarray]  # count -> each sample's cluster
    sizes: dict[int, np.ndarray]  # count -> the clusters' sizes by rank
    envelope: np.ndarray  # the largest size at each rank over the counts
    fit: clusters.SlopeFit  # the envelope's power law


def cluster(cos_NxN: np.ndarray, counts: Sequence[int], cfg: QDGConfig) -> Clustering:
    """Cluster the similarities' affinity (cfg.affinity) at every count from one spectral embedding."""
    labels = clusters.cluster_many(affinity(cos_NxN, cfg.affinity), list(counts), cfg.n_init, cfg.seed)
    sizes = {k: clusters.rank_frequency(labels[k]) for k in sorted(counts)}
    env = clusters.envelope(list(sizes.values()))
    return Clustering(labels, sizes, env, clusters.fit_envelope(env, cfg.envelope_min_size))


def cluster_report(c: Clustering, task_N: np.ndarray, piece_N: np.ndarray, cfg: QDGConfig,
                   expected: float) -> dict[str, Any]:
    """ARI, NMI and purity against the subtasks at every count (and ARI against the pieces), the
    main clustering's clusters, and the envelope's fit against the expected slope and the true
    subtask sizes' (fitted the same way)."""
    per_count = [{"n_clusters": k, **clusters.scores(c.labels[k], task_N),
                  "ari_subtask_pattern": float(clusters.scores(c.labels[k], piece_N)["ari"])} for k in sorted(c.labels)]
    main = c.labels[cfg.n_clusters]
    main_scores = next(r for r in per_count if r["n_clusters"] == cfg.n_clusters)
    size, major, frac = clusters.purity(main, task_N)
    return {"n_clusters": cfg.n_clusters,
            **{k: main_scores[k] for k in ("ari", "nmi", "purity", "ari_subtask_pattern")},
            "per_count": per_count,
            "clusters": [{"cluster": int(i), "size": int(s), "majority_subtask": int(m), "purity": float(f)}
                         for i, s, m, f in zip(np.unique(main), size, major, frac)],
            "envelope": c.envelope.tolist(), "envelope_fit": c.fit.as_dict(), "expected_slope": expected,
            "true_subtask_sizes_fit": clusters.fit_envelope(clusters.rank_frequency(task_N),
                                                            cfg.envelope_min_size).as_dict()}


def run_qdg(cfg: QDGConfig, out_dir: Path) -> dict[str, Any]:
    """QDG on member cfg.member of the job in cfg.run_dir, written into out_dir (see `write`); the
    report, as report.json holds it."""
    validate_qdg(cfg)
    run = trained_run(Path(cfg.run_dir), "qdg")
    model, hyper = run.model(cfg.member), run.members[cfg.member]
    subsets_TxK = np.asarray(run.member_inputs[cfg.member])
    counts = sorted({*cfg.envelope_counts, cfg.n_clusters})
    timings: dict[str, float] = {}

    start = time.perf_counter()
    samples = select_samples(run.program, model, hyper, subsets_TxK, cfg)
    timings["select_s"] = time.perf_counter() - start
    check_enough(samples, counts, cfg)
    batch, n = samples.batch, len(samples.loss_bits_N)
    if n < cfg.n_samples:
        log.warning("only %d of %d draws below %g bits: clustering %d samples, not n_samples=%d",
                    n, samples.n_drawn, cfg.loss_threshold_bits, n, cfg.n_samples)
    log.info("%d samples below %g bits (of %d drawn) from %d subtasks", n, cfg.loss_threshold_bits, samples.n_drawn,
             len(np.unique(batch.task)))

    start = time.perf_counter()
    factors = gradient_factors(run.program, model, jax.tree.map(jnp.asarray, batch), tuple(cfg.params), cfg.gradient)
    cos_NxN = cosine_similarity(factors, cfg.block)
    del factors
    timings["similarity_s"] = time.perf_counter() - start

    start = time.perf_counter()
    clustering = cluster(cos_NxN, counts, cfg)
    timings["clustering_s"] = time.perf_counter() - start

    alpha = float(hyper["task.alpha"])
    pattern_N = relevant_pattern(batch.task, batch.bits, subsets_TxK)
    piece_N = batch.task.astype(np.int64) * (1 << subsets_TxK.shape[1]) + pattern_N  # (subtask, pattern)
    report = {"run_dir": str(Path(cfg.run_dir).resolve()), "member": cfg.member, "alpha": alpha,
              "width": run.cfg.model.width, "settings": OmegaConf.to_container(OmegaConf.structured(cfg)),
              "n_samples": n, "n_drawn": int(samples.n_drawn), "subtasks_in_samples": int(len(np.unique(batch.task))),
              **cluster_report(clustering, batch.task, piece_N, cfg, expected=0.0 if cfg.balanced else -(alpha + 1.0)),
              "mean_cosine": {"subtask": mean_similarity(cos_NxN, batch.task, seed=cfg.seed),
                              "subtask_pattern": mean_similarity(cos_NxN, piece_N, seed=cfg.seed)},
              "timings": timings}
    return write(report, out_dir, samples, clustering, pattern_N, cos_NxN)


def write(report: dict[str, Any], out_dir: Path, samples: Samples, c: Clustering, pattern_N: np.ndarray,
          cos_NxN: np.ndarray) -> dict[str, Any]:
    """Into out_dir: rank_frequency.png, similarity.png, assignments.parquet (every sample's subtask,
    label, loss, relevant-bit pattern and cluster at each count), samples.npz (the task's batch),
    report.json and report.md. Returns the report with its figures, peak memory and device."""
    import pandas as pd

    from toy_quanta.plots import qdg as qdg_plots

    batch, n_clusters, seed = samples.batch, report["n_clusters"], report["settings"]["seed"]
    main = c.labels[n_clusters]
    figures = {
        "rank_frequency": qdg_plots.plot_rank_frequency(out_dir / "rank_frequency.png", c.sizes, c.envelope, c.fit,
                                                        clusters.rank_frequency(batch.task), report["expected_slope"]),
        "similarity": qdg_plots.plot_similarity(out_dir / "similarity.png", cos_NxN, main, batch.task, seed),
    }
    frame = pd.DataFrame({"sample": np.arange(len(main)), "subtask": batch.task, "label": batch.label,
                          "loss_bits": samples.loss_bits_N, "pattern": pattern_N, "cluster": main,
                          **{f"cluster_k{k}": c.labels[k] for k in sorted(c.labels)}})
    atomic_write(out_dir / "assignments.parquet", lambda p: frame.to_parquet(p, index=False))
    atomic_write(out_dir / "samples.npz", lambda p: np.savez_compressed(open(p, "wb"), **batch._asdict()))
    report["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    report["device"] = jax.devices()[0].platform
    report["figures"] = figures
    write_json(out_dir / "report.json", json_safe(report))
    atomic_write(out_dir / "report.md", lambda p: p.write_text(report_markdown(report)))
    return report


def report_markdown(r: dict[str, Any]) -> str:
    """report.md: the report for reading."""
    f, tf = r["envelope_fit"], r["true_subtask_sizes_fit"]
    lines = [
        "# Quanta discovery from gradients", "",
        f"Run `{r['run_dir']}`, member {r['member']} (width {r['width']}, alpha {r['alpha']:g}).",
        f"{r['n_samples']} samples with loss below {r['settings']['loss_threshold_bits']:g} bits "
        f"(of {r['n_drawn']} drawn), from {r['subtasks_in_samples']} subtasks.",
        f"Gradients of {', '.join(r['settings']['params'])} ({r['settings']['gradient']}); affinity "
        f"{r['settings']['affinity']}; k-means with {r['settings']['n_init']} restarts.", "",
        f"At {r['n_clusters']} clusters: ARI {r['ari']:.3f}, NMI {r['nmi']:.3f}, purity {r['purity']:.3f} against the "
        f"true subtasks; ARI {r['ari_subtask_pattern']:.3f} against (subtask, pattern of its relevant bits).", "",
        "| clusters | ARI | NMI | purity | ARI vs (subtask, pattern) |", "|---:|---:|---:|---:|---:|",
        *[f"| {c['n_clusters']} | {c['ari']:.3f} | {c['nmi']:.3f} | {c['purity']:.3f} | {c['ari_subtask_pattern']:.3f} |"
          for c in r["per_count"]], "",
        f"Envelope slope {f['slope']:.2f} [{f['interval'][0]:.2f}, {f['interval'][1]:.2f}] over ranks "
        f"{f['ranks'][0]}-{f['ranks'][1]} ({f['rule']}); expected {r['expected_slope']:.2f} (-(alpha+1); 0 for balanced samples); the true "
        f"subtask sizes of these samples, fitted the same way: {tf['slope']:.2f} "
        f"[{tf['interval'][0]:.2f}, {tf['interval'][1]:.2f}] (the paper, width-500 MLP: about -1.1 against -1.4).", "",
        "Mean gradient cosine similarity between distinct samples: same subtask "
        f"{r['mean_cosine']['subtask']['same']:.3f}, different subtasks {r['mean_cosine']['subtask']['different']:.3f}; "
        f"same (subtask, pattern) {r['mean_cosine']['subtask_pattern']['same']:.3f}.", "",
        "Time: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in r["timings"].items())
        + f"; peak memory {r['peak_rss_gib']:.2f} GiB ({r['device']}).", "",
        "Figures: " + ", ".join(f"[{k}]({Path(v).name})" for k, v in r["figures"].items()), "",
    ]
    return "\n".join(lines)


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The last line toy-quanta-qdg prints, as JSON."""
    f = report["envelope_fit"]
    return json_safe({"ari": report["ari"], "nmi": report["nmi"], "purity": report["purity"],
                      "n_clusters": report["n_clusters"], "n_samples": report["n_samples"],
                      "envelope_slope": f["slope"], "envelope_slope_interval": f["interval"],
                      "expected_slope": report["expected_slope"]})


def summary_line(report: dict[str, Any]) -> str:
    """The scores in one line."""
    return (f"ARI {report['ari']:.3f}  NMI {report['nmi']:.3f}  purity {report['purity']:.3f} at {report['n_clusters']} "
            f"clusters; envelope slope {report['envelope_fit']['slope']:.2f} (expected {report['expected_slope']:.2f})")

