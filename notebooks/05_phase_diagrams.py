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
# # Phase diagrams of grokking
#
# Liu et al. (2022, "Towards understanding grokking: an effective theory of representation
# learning") reduce grokking to a toy: learn i + j for 10 symbols from 45 of the 55 pairs, with
# a learned 1-D embedding per symbol and an MLP decoder reading E_i + E_j. The network
# generalises exactly when the embedding becomes structured (E_i + E_j = E_m + E_n whenever
# i + j = m + n), and whether that happens before the decoder memorises depends on the
# hyperparameters. Over decoder learning rate x decoder weight decay they find four phases:
# **comprehension** (train and validation accuracy reach 90% together), **grokking** (validation
# much later), **memorisation** (only training) and **confusion** (not even training).
#
# **What to look for.** The final figure is the phase diagram: one coloured cell per (learning
# rate, weight decay) point. Comprehension should sit at small decoder learning rates (the
# embedding, at its own faster rate, finds the structure before the decoder can memorise),
# grokking beside it at larger weight decay, memorisation at large learning rates, and confusion
# (nothing fitted within the budget) at the smallest learning rate with weight decay and at the
# largest weight decay. The comprehension + grokking region is the "Goldilocks zone":
# generalisation needs representation learning to be fast relative to the decoder's
# memorising, and weight decay widens that window.

# %% tags=["parameters"]
QUICK = False  # True: a tiny version (the test suite runs every notebook this way)
OUT = "runs/phase"  # where the jobs write their results

# %%
# Sizes: experiment=phase_toy runs 8 learning rates x 5 weight decays (40 members, 2-3 min); a
# coarser 4 x 4 grid through its interesting region keeps the four phases in about a minute.
LRS = "[1e-4,1e-3]" if QUICK else "[1e-5,5e-5,1e-4,1e-3]"
WEIGHT_DECAYS = "[0,5]" if QUICK else "[0,2,5,10]"
STEPS = 100 if QUICK else 10_000

# %%
from toy_quanta import api
from toy_quanta.analysis import phase
from toy_quanta.cli.phase import grid_text

# %% [markdown]
# ## The grid, as one ensemble
#
# Every grid point is one member of one vmapped program (`ensemble.lr` x
# `ensemble.weight_decay`; the embedding keeps its own lr 1e-3). The experiment sets `phase.x`
# and `phase.y`, so the job classifies its members itself and writes phase.png.

# %%
run = api.run("experiment=phase_toy", f"ensemble.lr={LRS}", f"ensemble.weight_decay={WEIGHT_DECAYS}",
              f"train.steps={STEPS}", "train.progress=false", out_dir=f"{OUT}/phase_toy")
found = run.summary["phase"]
print(f"{found['n_members']} members, {found['budget']:,} steps; threshold {found['threshold']:g}, "
      f"gap {found['gap_steps']:g} steps; phases: {found['counts']}")

# %% [markdown]
# ## The phases as a table
#
# `toy_quanta.analysis.phase` classifies each member from its accuracy curves, then takes the
# majority at each point (one seed each here). The same grid as text, as `toy-quanta-phase
# RUN_DIR` prints it:

# %%
x, y = "optim.lr", "optim.weight_decay"
members, grid = phase.tables(run.metrics, x, y, found["threshold"], found["gap_steps"])
print("\n".join(grid_text(grid, x, y)))
print()
print(members[[x, y, "phase", "steps_train", "steps_val", "gap", "train_acc", "val_acc"]].to_string(index=False))

# %% [markdown]
# The classification depends on its two settings. A stricter reading, 100% accuracy and a gap
# of 2,000 steps (`toy-quanta-phase RUN_DIR --threshold 1.0 --gap 2000`), moves some points:

# %%
strict_members, strict_grid = phase.tables(run.metrics, x, y, threshold=1.0, gap_steps=2000)
print("\n".join(grid_text(strict_grid, x, y)))

# %% [markdown]
# ## Representations
#
# The job's representation.png: RQI (the fraction of parallelograms the embedding satisfies),
# the effective loss, and each member's 1-D embedding at the end. A generalising member's
# embedding is ordered (E_i roughly linear in i).

# %%
run.show("representation.png")

# %% [markdown]
# ## The figure: the phase diagram
#
# Each cell is coloured by its phase and annotated with the steps to 90% validation accuracy.

# %%
run.show("phase.png")

# %% [markdown]
# ## Questions for a student
#
# 1. Find the comprehension cells. Why would a *smaller* decoder learning rate help the model
#    generalise?
# 2. Along one learning rate, what does raising the weight decay do: which phases follow one
#    another?
# 3. The grokking cells have a large gap between training and validation. Re-run with
#    `ensemble.seeds=2` (two members per point): do the boundaries stay where they are?
# 4. Change the embedding's learning rate (`optim.embed_lr=1e-4`). Which phase should grow, and
#    why?
# 5. The paper's diagram has the same four phases. Which of its claims would you test next,
#    and with which single override?
