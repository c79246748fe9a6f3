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
# # Emergence and the scaling laws
#
# The quantization model of neural scaling (Michaud et al. 2023) says that a task is made of
# discrete pieces of skill, *quanta*, used with Zipf-distributed frequencies p_k ∝ k^-(alpha+1).
# A network learns them one at a time, most frequent first, and each one appears abruptly (an
# *emergence*); averaged over many quanta, those small jumps add up to a smooth power law in
# the number of parameters N, with exponent alpha_N = alpha (and alpha/(alpha+1) in data or
# steps). Multitask sparse parity makes this testable: each subtask is one quantum by
# construction.
#
# **What to look for.** First, inside one network: each subtask's loss drops from 1 bit (a coin
# flip) to near 0 at its own step, and the order follows the frequency rank. Then, across
# widths: the final figure plots the mean test loss against N on log-log axes with a fitted
# exponent, its 95% bootstrap interval, the theory's slope alpha = 0.4, and the quantization
# model's own prediction from the subtasks actually learned (green). Expect the fit to be
# steeper than 0.4 and close to the green curve: with only 64 subtasks the Zipf tail is finite,
# and the law bends where the tail runs out (the README measures 0.76 [0.69, 0.83] at full
# size). A power law that comes from counting learned quanta is the point.

# %% tags=["parameters"]
QUICK = False  # True: a tiny version (the test suite runs every notebook this way)
OUT = "runs/emergence"  # where the jobs write their results

# %%
# Sizes: experiment=quanta_params (64 subtasks, n = 16 bits, k = 3, alpha = 0.4) with fewer
# widths, steps and seeds than its 10 widths x 20k steps x 3 seeds (10.5 min).
WIDTHS = "8,16" if QUICK else "8,16,32,64,128"
STEPS = 50 if QUICK else 6_000
SEEDS = 1 if QUICK else 2
LOG_COUNT = 5 if QUICK else 30  # log-spaced evaluations (the experiment's 30)
N_BOOT = 200 if QUICK else 2_000  # bootstrap resamples of the fits

# %%
from pathlib import Path

import numpy as np
from IPython.display import Image, display

from toy_quanta import api
from toy_quanta.analysis import emergence, scaling
from toy_quanta.analysis.sweep import load_sweeps
from toy_quanta.data.sparse_parity import LN2, zipf_probs
from toy_quanta.plots import scaling as scaling_plots

# %% [markdown]
# ## A sweep over widths
#
# One job per width, as `toy-quanta -m experiment=quanta_params model.width=... train.steps=...`
# would run them; `api.sweep` lays them out as a multirun directory, so the analysis of
# `toy-quanta-analyze` reads it as it is.

# %%
sweep = api.sweep("experiment=quanta_params", f"model.width={WIDTHS}", f"train.steps={STEPS}",
                  f"ensemble.seeds={SEEDS}", f"train.log_count={LOG_COUNT}", "train.progress=false",
                  out_dir=f"{OUT}/quanta_params")
for job in sweep.jobs:
    final = job.members
    print(f"width {job.summary['swept']['model.width']:>4}: N = {job.summary['n_params']:>6,} parameters, "
          f"test loss {final['test_loss_bits'].mean():.3f} bits, subtasks learned {final['subtasks_learned'].tolist()}")

# %% [markdown]
# ## Emergence inside one network
#
# The widest network's per-subtask test loss over training (lower left panel, coloured by
# frequency rank): every subtask is the parity of 3 hidden bits, equally hard, but the frequent
# ones get the most gradient and drop first.

# %%
widest = sweep.jobs[-1]
widest.show("curves.png")

# %% [markdown]
# When does each subtask stay below 0.1 bits (the paper's "learned")? Against its frequency:

# %%
loss_bits = widest.subtasks("subtask_loss", member=0) / LN2  # steps x subtasks
learned_step = emergence.learned_at(loss_bits.to_numpy(), loss_bits.index.to_numpy(), scaling.LEARNED_BITS)
p = zipf_probs(len(learned_step), widest.summary["members"][0]["task.alpha"])
for k in range(12):
    when = "not learned" if np.isnan(learned_step[k]) else f"step {learned_step[k]:,.0f}"
    print(f"subtask {k + 1:>2}: p = {p[k]:.3f}, {when}")
print(f"learned: {np.isfinite(learned_step).sum()} of {len(learned_step)}; Spearman(frequency rank, step learned) "
      f"= {emergence.order_correlation(learned_step):.2f} (1: in frequency order)")

# %% [markdown]
# ## The loss against parameters
#
# `toy_quanta.analysis.scaling` does what `toy-quanta-analyze` does: one point per member (the
# test loss at the end), a least-squares fit in log-log space over a range chosen by a stated
# rule, and a bootstrap interval over (seed, width) rows.

# %%
points = scaling.scale_points(load_sweeps([sweep.dir]))
analysis = scaling.analyse(points[0], n_boot=N_BOOT)
fit = analysis.fit
for n, loss, learned in zip(analysis.xs, analysis.mean_loss / LN2, analysis.n_learned):
    print(f"N = {n:>6,.0f}: mean test loss {loss:.3f} bits, subtasks learned {learned:.1f}")
print(f"\nalpha_N measured: {fit.exponent:.3f} [95% CI {fit.ci_low:.3f}, {fit.ci_high:.3f}] "
      f"over N = {fit.x_min:,.0f} to {fit.x_max:,.0f} ({fit.rule})")
print(f"quantization model, infinite tail: alpha_N = alpha = {analysis.predicted:.3f} "
      f"(and alpha_D = alpha_S = alpha/(alpha+1) = {analysis.points.alpha / (analysis.points.alpha + 1):.3f})")
print(f"quantization model, the 64 subtasks as learned here (finite-size slope): {analysis.finite_size_slope:.3f}")
print("verdict against alpha:", scaling.agreement(fit.exponent, fit.ci_low, fit.ci_high, analysis.predicted))
print(f"learning order against frequency rank, across widths: Spearman {analysis.spearman:.2f}")

# %% [markdown]
# Which subtasks each width learns (heatmap: subtask rank against N, red crosses where each is
# learned), and how many.

# %%
figures = Path(OUT) / "figures"
figures.mkdir(parents=True, exist_ok=True)
scaling_plots.plot_emergence(analysis, figures / "emergence_N.png")
display(Image(filename=str(figures / "emergence_N.png")))

# %% [markdown]
# ## The figure: loss against parameters
#
# Grey dots: each seed; blue: the mean over seeds; red: the fit over the shaded range with its
# exponent and interval; dashed: the theory slope alpha; green: the quantization model's loss
# from the number of subtasks each width actually learned (a learned subtask costs 0, an
# unlearned one 1 bit).

# %%
scaling_plots.plot_loss(analysis, figures / "loss_N.png")
Image(filename=str(figures / "loss_N.png"))

# %% [markdown]
# ## Questions for a student
#
# 1. Is the fitted exponent closer to the dashed theory slope or to the green finite-size
#    curve? What would you change in the task to make the two theory lines agree?
# 2. In the list of learned steps, is the order exactly the frequency order? Where does it
#    break, and why might two subtasks with nearly the same p_k swap?
# 3. Re-run the sweep with `task.alpha=0.8` (one more override). Should alpha_N go up or down,
#    and do more or fewer subtasks get learned at the largest width?
# 4. The smallest widths learn almost nothing. Why does the fit-range rule leave out points on
#    the initial plateau and near the floor?
# 5. Train longer (`train.steps=20000`, the experiment's own budget): which widths change most,
#    and what does that tell you about whether width or time limits them?
