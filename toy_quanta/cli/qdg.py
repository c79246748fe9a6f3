"""`toy-quanta-qdg RUN_DIR [key=value ...]`: quanta discovery from gradients (Michaud et al. 2023)
on a trained member of a toy-quanta job, scored against the true subtasks.

    toy-quanta-qdg outputs/demo/2026-11-24_10-00-00
    toy-quanta-qdg RUN_DIR n_clusters=20 params=[control,bits,out] affinity=cosine

Draws samples from the task distribution, keeps those the model predicts well, computes their
per-sample gradient cosine similarities (toy_quanta.analysis.qdg), clusters the affinity at every
count (toy_quanta.analysis.clusters), and writes into RUN_DIR/qdg/<time>/: assignments.parquet
(the cluster of every sample), samples.npz, rank_frequency.png, similarity.png, report.md and
report.json. The last line of stdout is JSON with ari, nmi, envelope_slope and its interval.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from toy_quanta.analysis import clusters, qdg
from toy_quanta.config import QDGConfig, register_configs, validate_qdg
from toy_quanta.data.sparse_parity import LN2, encode, sample
from toy_quanta.errors import ConfigError, RunFileError
from toy_quanta.models.mlp import MLP
from toy_quanta.plots import qdg as qdg_plots
from toy_quanta.results import atomic_write, json_safe, load_run, write_json

log = logging.getLogger("toy_quanta.qdg")
DRAW_BLOCK = 8192


def select_samples(model: MLP, subsets_TxK: np.ndarray, alpha: float, n: int, cfg: QDGConfig,
                   encoding: str = "zero_one"):
    """Samples of the task distribution (every subtask equally often if cfg.balanced) whose loss is
    below the threshold, drawn in blocks until n_samples are found:
    (task_N, bits_NxI, label_N, loss_bits_N, n_drawn); the bits as drawn, {0, 1}."""
    alpha = -1.0 if cfg.balanced else alpha  # p_i ∝ i^-(alpha+1) = 1
    loss_fn = jax.jit(lambda t, b, y: optax.softmax_cross_entropy_with_integer_labels(model(t, encode(b, encoding)), y)
                      / LN2)
    subsets = jnp.asarray(subsets_TxK)
    key = jax.random.key(cfg.seed)
    parts, found, drawn = [], 0, 0
    while found < cfg.n_samples and drawn < cfg.max_draws:
        key, sub = jax.random.split(key)
        task, bits, label = sample(sub, subsets, alpha, DRAW_BLOCK, n)
        loss = loss_fn(task, bits, label)
        keep = np.flatnonzero(np.asarray(loss) < cfg.loss_threshold_bits)
        parts.append([np.asarray(x)[keep] for x in (task, bits, label, loss)])
        found += len(keep)
        drawn += DRAW_BLOCK
    task, bits, label, loss = (np.concatenate(xs)[: cfg.n_samples] for xs in zip(*parts))
    return task, bits, label, loss, drawn


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


def run_qdg(cfg: QDGConfig, out_dir: Path) -> dict[str, Any]:
    validate_qdg(cfg)
    run = load_run(Path(cfg.run_dir))
    model = run.model(cfg.member)
    t = run.cfg.task
    alpha = float(run.members[cfg.member]["task.alpha"])
    subsets_TxK = run.subsets[cfg.member]
    counts = sorted(set([*cfg.envelope_counts, cfg.n_clusters]))
    timings: dict[str, float] = {}

    start = time.perf_counter()
    task, bits, label, loss_bits, drawn = select_samples(model, subsets_TxK, alpha, t.n, cfg, t.encoding)
    timings["select_s"] = time.perf_counter() - start
    if len(task) <= max(counts):
        raise ConfigError("loss_threshold_bits", cfg.loss_threshold_bits,
                          f"a threshold that more samples pass: only {len(task)} of {drawn} draws had a loss below it, "
                          f"fewer than the largest cluster count {max(counts)} (the model has learned too little; "
                          "raise the threshold, lower the counts, or train longer)")
    if len(task) < cfg.n_samples:
        log.warning("only %d of %d draws below %g bits: clustering %d samples, not n_samples=%d",
                    len(task), drawn, cfg.loss_threshold_bits, len(task), cfg.n_samples)
    log.info("%d samples below %g bits (of %d drawn) from %d subtasks", len(task), cfg.loss_threshold_bits, drawn,
             len(np.unique(task)))

    start = time.perf_counter()
    factors = qdg.layer_factors(model, jnp.asarray(task), encode(jnp.asarray(bits), t.encoding), jnp.asarray(label),
                                tuple(cfg.params),
                                margin=cfg.gradient == "margin")
    cos_NxN = qdg.cosine_similarity(factors, cfg.block)
    del factors
    timings["similarity_s"] = time.perf_counter() - start

    start = time.perf_counter()
    aff_NxN = qdg.affinity(cos_NxN, cfg.affinity)
    labels = clusters.cluster_many(aff_NxN, counts, cfg.n_init, cfg.seed)  # scales aff_NxN in place
    del aff_NxN
    timings["clustering_s"] = time.perf_counter() - start

    pattern = relevant_pattern(task, bits, subsets_TxK)
    piece = task.astype(np.int64) * (1 << t.k) + pattern
    per_count = [{"n_clusters": k, **clusters.scores(labels[k], task),
                  "ari_subtask_pattern": float(clusters.scores(labels[k], piece)["ari"])} for k in counts]
    main = labels[cfg.n_clusters]
    main_scores = next(r for r in per_count if r["n_clusters"] == cfg.n_clusters)
    size, major, frac = clusters.purity(main, task)

    sizes = {k: clusters.rank_frequency(labels[k]) for k in counts}
    env = clusters.envelope(list(sizes.values()))
    env_fit = clusters.fit_envelope(env, cfg.envelope_min_size)
    expected = 0.0 if cfg.balanced else -(alpha + 1.0)  # balanced samples: equal sizes
    true_sizes = clusters.rank_frequency(task)
    true_fit = clusters.fit_envelope(true_sizes, cfg.envelope_min_size)
    similarity = {"subtask": mean_similarity(cos_NxN, task, seed=cfg.seed),
                  "subtask_pattern": mean_similarity(cos_NxN, piece, seed=cfg.seed)}

    figures = {
        "rank_frequency": qdg_plots.plot_rank_frequency(out_dir / "rank_frequency.png", sizes, env, env_fit, true_sizes,
                                                        expected),
        "similarity": qdg_plots.plot_similarity(out_dir / "similarity.png", cos_NxN, main, task, cfg.seed),
    }
    del cos_NxN

    frame = pd.DataFrame({"sample": np.arange(len(task)), "subtask": task, "label": label, "loss_bits": loss_bits,
                          "pattern": pattern, "cluster": main, **{f"cluster_k{k}": labels[k] for k in counts}})
    atomic_write(out_dir / "assignments.parquet", lambda p: frame.to_parquet(p, index=False))
    atomic_write(out_dir / "samples.npz", lambda p: np.savez_compressed(open(p, "wb"), task=task, bits=bits, label=label))

    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    report = {
        "run_dir": str(Path(cfg.run_dir).resolve()),
        "member": cfg.member,
        "alpha": alpha,
        "width": run.cfg.model.width,
        "settings": OmegaConf.to_container(OmegaConf.structured(cfg)),
        "n_samples": int(len(task)),
        "n_drawn": int(drawn),
        "subtasks_in_samples": int(len(np.unique(task))),
        "n_clusters": cfg.n_clusters,
        **{k: main_scores[k] for k in ("ari", "nmi", "purity", "ari_subtask_pattern")},
        "per_count": per_count,
        "clusters": [{"cluster": int(c), "size": int(s), "majority_subtask": int(m), "purity": float(f)}
                     for c, s, m, f in zip(np.unique(main), size, major, frac)],
        "envelope": env.tolist(),
        "envelope_fit": env_fit.as_dict(),
        "expected_slope": expected,
        "true_subtask_sizes_fit": true_fit.as_dict(),
        "mean_cosine": similarity,
        "timings": timings,
        "peak_rss_gib": peak_gib,
        "device": jax.devices()[0].platform,
        "figures": figures,
    }
    write_json(out_dir / "report.json", json_safe(report))
    atomic_write(out_dir / "report.md", lambda p: p.write_text(report_markdown(report)))
    return report


def report_markdown(r: dict[str, Any]) -> str:
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
    f = report["envelope_fit"]
    return json_safe({"ari": report["ari"], "nmi": report["nmi"], "purity": report["purity"],
                   "n_clusters": report["n_clusters"], "n_samples": report["n_samples"],
                   "envelope_slope": f["slope"], "envelope_slope_interval": f["interval"],
                   "expected_slope": report["expected_slope"]})


@hydra.main(version_base=None, config_path="pkg://toy_quanta.conf", config_name="qdg")
def _hydra_main(dcfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        cfg: QDGConfig = OmegaConf.to_object(dcfg)
        report = run_qdg(cfg, out_dir)
    except (ConfigError, FileNotFoundError, RunFileError) as exc:
        print(f"toy-quanta-qdg: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"ARI {report['ari']:.3f}  NMI {report['nmi']:.3f}  purity {report['purity']:.3f} at {report['n_clusters']} "
          f"clusters; envelope slope {report['envelope_fit']['slope']:.2f} (expected {report['expected_slope']:.2f})")
    print(f"output directory: {out_dir}")
    print(json.dumps(headline(report)), flush=True)


def main() -> None:
    """A first argument without '=' is RUN_DIR (made absolute, so the output lands inside it)."""
    args = sys.argv[1:]
    if args and "=" not in args[0] and not args[0].startswith("-"):
        run_dir = Path(args[0]).resolve()
        if not run_dir.is_dir():
            print(f"toy-quanta-qdg: error: RUN_DIR {args[0]!r} is not a directory", file=sys.stderr)
            sys.exit(2)
        quoted = str(run_dir).replace("\\", "\\\\").replace("'", "\\'")
        # Hydra takes its overrides as one run of positional arguments: -m goes first, then run_dir.
        multirun = [a for a in args[1:] if a in ("-m", "--multirun")]
        rest = [a for a in args[1:] if a not in ("-m", "--multirun")]
        sys.argv = [sys.argv[0], *multirun, f"run_dir='{quoted}'", *rest]
    elif not any(a.startswith("run_dir=") for a in args) and not any(a in ("-h", "--help", "--cfg", "-c") for a in args):
        print("usage: toy-quanta-qdg RUN_DIR [key=value ...]  (keys: toy-quanta-qdg RUN_DIR --cfg job)", file=sys.stderr)
        sys.exit(2)
    register_configs()  # conf/qdg.yaml's defaults name the qdg_config schema
    _hydra_main()


if __name__ == "__main__":
    main()
