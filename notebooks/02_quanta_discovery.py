# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quanta discovery from gradients
#
# If a network's skills come in discrete quanta, samples that use the same quantum should pull
# on the parameters in the same direction. *Quanta discovery from gradients* (QDG, Michaud et
# al. 2023) takes samples the model predicts well, computes each one's loss gradient, and
# clusters them by the angle between gradients (spectral clustering). On a language model
# nobody knows the true quanta; on multitask sparse parity we do (each subtask is one), so the
# clusters can be scored against them.
#
# **What to look for.** The final figure is the matrix of gradient cosine similarities between
# samples, sorted by the clusters QDG found (left) and by the true subtask (right). Sorted by
# subtask it is block-diagonal: same-subtask samples do share gradient directions. But each
# block has structure inside it, and the clusters are *pieces* of subtasks: with two classes a
# loss gradient carries the label's sign, and a sample's gradient depends on which pattern its
# subtask's 3 bits take. Watch the scores: clusters are pure (each mostly one subtask), yet the
# adjusted Rand index against the subtasks is low, and higher against (subtask, pattern). The
# rank-frequency slope of the cluster sizes is compared with the Zipf exponent -(alpha+1).

# %% tags=["parameters"]
QUICK = False  # True: a tiny version (the test suite runs every notebook this way)
OUT = "runs/qdg"  # where the jobs write their results

# %%
# Sizes: experiment=qdg_model trains width 500 for 30k steps (46 s) and the paper's QDG uses
# 10,000 samples (52 s more); here a width-256 model for 10k steps and 3,000 samples.
WIDTH = 64 if QUICK else 256
STEPS = 1_500 if QUICK else 10_000
LOG_COUNT = 5 if QUICK else 40  # log-spaced evaluations (the experiment's 40)
N_SAMPLES = 300 if QUICK else 3_000
COUNTS = [5, 10] if QUICK else [10, 20, 50, 100]  # cluster counts for the rank-frequency envelope
N_CLUSTERS = 10 if QUICK else 50  # the clustering that is scored
N_INIT = 2 if QUICK else 10  # k-means restarts (the paper: 30)

# %%
from pathlib import Path

from IPython.display import Image, display

from toy_quanta import api
from toy_quanta.analysis.qdg import run_qdg
from toy_quanta.config import QDGConfig

# %% [markdown]
# ## Train a model that has learned many subtasks
#
# The same as `toy-quanta experiment=qdg_model model.width=... train.steps=...`.

# %%
run = api.run("experiment=qdg_model", f"model.width={WIDTH}", f"train.steps={STEPS}", f"train.log_count={LOG_COUNT}",
              "train.progress=false", out_dir=f"{OUT}/qdg_model")
final = run.summary["members"][0]["final"]
print(f"test loss {final['test_loss_bits']:.4f} bits; {final['subtasks_learned']} of 64 subtasks learned")

# %% [markdown]
# ## Cluster the per-sample gradients
#
# `run_qdg` is what `toy-quanta-qdg RUN_DIR key=value ...` runs: draw samples whose loss is
# below 0.1 bits, take each one's gradient (all parameters but the first layer's control rows,
# the embedding-like part the paper left out), normalise, compute the cosine similarities, turn
# them into the affinity 1 - arccos(C)/pi, and cluster at every count.


# %%
def qdg(name: str, **settings) -> dict:
    """One QDG analysis of the run into OUT/name (the keys of `toy-quanta-qdg RUN_DIR key=value`)."""
    out = Path(OUT) / name
    out.mkdir(parents=True, exist_ok=True)
    cfg = QDGConfig(run_dir=str(run.dir), n_samples=N_SAMPLES, n_clusters=N_CLUSTERS, envelope_counts=COUNTS,
                    n_init=N_INIT, **settings)
    report = run_qdg(cfg, out)
    report["dir"] = out
    return report


def scores(report: dict) -> None:
    print(f"{report['n_samples']} samples from {report['subtasks_in_samples']} subtasks "
          f"({report['settings']['gradient']} gradients)")
    print("clusters   ARI    NMI  purity   ARI vs (subtask, pattern)")
    for row in report["per_count"]:
        print(f"{row['n_clusters']:>8} {row['ari']:6.3f} {row['nmi']:6.3f} {row['purity']:7.3f}"
              f" {row['ari_subtask_pattern']:10.3f}")
    cos = report["mean_cosine"]
    print(f"mean gradient cosine: same subtask {cos['subtask']['same']:.3f}, different subtasks "
          f"{cos['subtask']['different']:.3f}; same (subtask, pattern) {cos['subtask_pattern']['same']:.3f}")


paper = qdg("loss_gradients")  # the paper's settings: loss gradients, angular affinity
scores(paper)

# %% [markdown]
# ## Sizes of the clusters against their rank
#
# If clusters were quanta, their sizes would follow the Zipf law of the subtasks, a slope of
# -(alpha+1) = -1.4 on log-log axes. The *envelope* takes the largest size at each rank over all
# the cluster counts, and is fitted over the middle ranks.

# %%
fit, true_fit = paper["envelope_fit"], paper["true_subtask_sizes_fit"]
print(f"envelope slope {fit['slope']:.2f} [{fit['interval'][0]:.2f}, {fit['interval'][1]:.2f}] over ranks "
      f"{fit['ranks'][0]}-{fit['ranks'][1]}; expected -(alpha+1) = {paper['expected_slope']:.2f} "
      "(the paper measured about -1.1 on its width-500 MLP)")
print(f"the true subtask sizes of the same samples, fitted the same way: {true_fit['slope']:.2f}")
display(Image(filename=str(paper["dir"] / "rank_frequency.png")))

# %% [markdown]
# ## Without the label's sign
#
# `gradient=margin` takes the gradient of the logit margin z_1 - z_0 instead of the loss: the
# same direction up to the sign the label gives it. Does the similarity within a subtask rise?

# %%
margin = qdg("margin_gradients", gradient="margin")
scores(margin)

# %% [markdown]
# ## The figure: gradient similarity, sorted by cluster and by true subtask
#
# Margin gradients (red: similar directions; blue: opposite). Lines mark the group boundaries
# (largest group first; subtask 1 holds about 40% of the samples).

# %%
Image(filename=str(margin["dir"] / "similarity.png"))

# %% [markdown]
# ## Questions for a student
#
# 1. In the right panel, are the blocks along the diagonal uniform? What would make one
#    subtask's block split into smaller squares?
# 2. Purity is high but ARI against the subtasks is low. Explain how both can be true (hint:
#    compare with the ARI against (subtask, pattern)).
# 3. The mean cosine between same-subtask samples changed between loss and margin gradients.
#    Why does the label's sign matter for a two-class problem?
# 4. Re-run `qdg(...)` with `balanced=True` (every subtask drawn equally often). Which score
#    changes most, and what does that say about the Zipf imbalance?
# 5. The envelope is shallower than -1.4. Would more samples or more cluster counts fix that,
#    or is it the pieces again?
