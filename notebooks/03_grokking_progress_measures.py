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
# # Grokking and its progress measures
#
# A small network learns addition mod 53 from 40% of the table. It fits the training pairs
# almost at once, yet for a long while it gets the held-out pairs wrong; then, with no change in
# the data or the learning rate, validation accuracy jumps to 100%. This delayed generalisation
# is *grokking* (Power et al. 2022). Nanda et al. (2023) showed it is not sudden inside the
# network: the weight decay slowly swaps a memorising solution for a Fourier algorithm
# (embed each residue as cos/sin of a few *key frequencies*), and *progress measures* built
# from that algorithm move smoothly long before the accuracy jumps.
#
# **What to look for.** The final figure puts the accuracies beside the progress measures,
# against training step (log scale). Training accuracy reaches 99% within about 150 steps;
# validation accuracy follows about ten times later, after a long plateau. In between, the
# *restricted loss* (the model's logits kept only along the key frequencies) falls: the Fourier
# circuit is forming while the validation accuracy still looks flat. The *excluded loss* (those frequencies
# removed, on the training pairs) first falls with the training loss and then rises again: the
# memorising part is being cleaned away. The weight norm falls overall: weight decay is what
# drives the change. The three phases
# (memorisation, circuit formation, clean-up) are what matters: grokking is a slow, measurable
# process that the accuracy curve hides.

# %% tags=["parameters"]
QUICK = False  # True: a tiny version (the test suite runs every notebook this way)
OUT = "runs/grokking"  # where the jobs write their results

# %%
# Sizes. The default is experiment=grok_modadd_progress as it stands (grok_modadd's whole budget of
# 12,000 full-batch steps, about 30 s on 2 CPU cores: the clean-up after the milestone is the
# point); QUICK trains a few hundred steps, enough to run every cell.
STEPS = 150 if QUICK else 12_000
LOG_COUNT = 12 if QUICK else 60

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toy_quanta import api
from toy_quanta.analysis import milestones

# %% [markdown]
# ## Train
#
# The same job as `toy-quanta experiment=grok_modadd_progress train.steps=...` on the command line.
# It saves the parameters at every log step (`train.snapshots=true` in the experiment), so the job
# computes the progress measures of member 0 after training (`progress/` in its directory; the
# command `toy-quanta-progress RUN_DIR --member M` does the same for any member).

# %%
run = api.run("experiment=grok_modadd_progress", f"train.steps={STEPS}", f"train.log_count={LOG_COUNT}",
              "train.progress=false", out_dir=f"{OUT}/grok_modadd")
run.show("curves.png")

# %% [markdown]
# ## The grokking delay
#
# Milestones from the logged accuracies (`toy_quanta.analysis.milestones`): the first log step
# at which each curve reaches 90% and 99%, and the gap between training and validation. The
# job's own diagnosis (`summary.json`) says whether the member grokked, by the rule it states.

# %%
train_acc, val_acc = run.curve("train_acc"), run.curve("test_acc")
steps = train_acc.index.to_numpy()
found = milestones.grokking_summary(steps, train_acc.to_numpy(), val_acc.to_numpy())
for key in ("train_90", "train_99", "val_90", "val_99"):
    value = found[key][0]
    print(f"{key:>9}: {'never' if np.isnan(value) else f'step {value:,.0f}'}")
gap = found["gap_99"][0]
print(f"grokking gap at 99%: {'none (validation never got there)' if np.isnan(gap) else f'{gap:,.0f} steps'}")
member = run.summary["members"][0]
delay = member["grokking_delay"]
print(f"diagnosis: {member['diagnosis']}" + ("" if delay is None else f", delay at 90%: {delay:,.0f} steps"))
print(run.summary["diagnosis_rule"])

# %% [markdown]
# ## The mechanism: key frequencies
#
# Each residue a has a learned embedding vector. Its Fourier transform over a (frequencies
# k = 1 ... 26) shows which waves cos(2 pi k a / 53) the network uses. A generalising network
# concentrates the embedding on a few key frequencies (red bars); the Gini coefficient of the
# norms measures that sparsity (0: spread evenly, 1: one frequency).

# %%
head = run.summary["progress"]
print(f"key frequencies: {head['key_frequencies']} ({head['key_share']:.0%} of the embedding's Fourier power)")
print(f"Gini of the Fourier norms: {head['gini']:.2f}, within 10% of its final value from step "
      f"{head['gini_90pct_step']:,}")
print(f"final loss (nats): train {head['train_loss']:.2g}, validation {head['test_loss']:.2g}, "
      f"restricted {head['restricted_loss']:.2g} (all pairs), excluded {head['excluded_loss']:.2g} (training pairs)")
run.show("progress/fourier.png")

# %% [markdown]
# The residue embeddings on their first two principal components: after grokking, the
# residues sit on a ring in the order of a circle (a at angle proportional to k a), the
# representation of a clock.

# %%
run.show("embedding_ring.png")

# %% [markdown]
# ## Progress measures over training
#
# The job wrote one row per saved step in `progress/progress.csv`: the losses recomputed from
# the saved parameters, the restricted and excluded losses, the Gini coefficient and the weight
# norm. When does each measure move, relative to the validation accuracy?

# %%
table = pd.read_csv(run.dir / "progress" / "progress.csv")


def first_step(column: str, below: float | None = None, above: float | None = None) -> str:
    hit = table[(table[column] < below) if below is not None else (table[column] > above)]
    return "never" if hit.empty else f"step {hit['step'].iloc[0]:,}"


print("restricted loss below 0.1 nats:      ", first_step("restricted_loss", below=0.1))
print("validation accuracy above 99%:       ", first_step("test_acc", above=0.99))
low = table.loc[table["excluded_loss"].idxmin()]
print(f"excluded loss: lowest {low['excluded_loss']:.2f} nats at step {low['step']:,.0f}, "
      f"then {table['excluded_loss'].iloc[-1]:.2f} at the end (rising again: the memorising part is removed)")
print(f"weight norm: {table['weight_norm'].iloc[0]:.1f} at step 0, {table['weight_norm'].min():.1f} at its lowest, "
      f"{table['weight_norm'].iloc[-1]:.1f} at the end")

# %% [markdown]
# ## The figure: accuracy against the progress measures
#
# Top: training and validation accuracy; the shaded band is the grokking delay, from 99%
# training to 99% validation accuracy. Bottom: validation loss beside the restricted and
# excluded losses (left axis) and the weight norm (right axis).

# %%
x = np.maximum(table["step"], 1)
fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, constrained_layout=True)
top.plot(x, table["train_acc"], color="tab:orange", ls=":", label="training")
top.plot(x, table["test_acc"], color="tab:blue", label="validation")
if not np.isnan(found["train_99"][0]) and not np.isnan(found["val_99"][0]):
    top.axvspan(max(found["train_99"][0], 1), found["val_99"][0], color="0.85", label="grokking delay (99%)")
top.set(ylabel="accuracy", title=f"{run.summary['name']}: addition mod 53 from 40% of the table")
top.legend(loc="center right")
bottom.plot(x, table["test_loss"], color="tab:blue", label="validation loss")
bottom.plot(x, table["restricted_loss"], color="tab:green", label="restricted loss (key frequencies only)")
bottom.plot(x, table["excluded_loss"], color="tab:red", label="excluded loss (key frequencies removed)")
bottom.set(xscale="log", yscale="log", xlabel="step", ylabel="cross-entropy (nats)")
norm_axis = bottom.twinx()
norm_axis.plot(x, table["weight_norm"], color="k", lw=1, ls="--", label="weight norm (right axis)")
norm_axis.set_ylabel("L2 norm of all parameters")
lines = bottom.get_legend_handles_labels()[0] + norm_axis.get_legend_handles_labels()[0]
bottom.legend(lines, [line.get_label() for line in lines], loc="lower left", fontsize=8)
plt.show()

# %% [markdown]
# ## Questions for a student
#
# 1. Read the delay off the top panel. Which progress measure in the bottom panel has already
#    moved most of the way when validation accuracy is still near its plateau?
# 2. The excluded loss rises while the validation accuracy climbs. What does a rising loss
#    *without* the key frequencies tell you about how the network fits the training pairs now?
# 3. Re-run with `optim.weight_decay=0.3` (one more override in the `api.run` call, and a new
#    `out_dir`). Does the delay get longer or shorter, and does the weight norm fall as fast?
# 4. Re-run with `task.train_fraction=0.7`. Is there still a delay? Why would more data make
#    the memorising solution less attractive?
# 5. The key frequencies are different for another `seed=...`. Why can any set of a few
#    frequencies implement addition mod 53?
