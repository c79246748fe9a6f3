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
# # Omnigrok and the LU mechanism
#
# Grokking is not special to modular arithmetic. Omnigrok (Liu, Michaud and Tegmark 2022)
# makes any network grok by starting it with large weights (every parameter times 8) and
# training with weight decay: it fits the training data at once, generalises only much later.
# Their explanation is the *LU mechanism*: train at a fixed weight norm w, and the final
# training loss against w is L-shaped (low once w is large enough) while the test loss is
# U-shaped, best near a critical norm w_c. A large initialisation starts far out on the flat
# part of the L, where test loss is bad; weight decay slowly walks the norm down to w_c, and
# generalisation arrives when it gets there.
#
# **What to look for.** The final figure draws the fixed-norm runs' final training and test loss
# against w (the L and the U, with w_c and its grid interval), and on top of them the
# trajectory of the ordinary large-init run with weight decay: its loss and accuracy over
# training plotted against its own norm. The trajectory should start on the right, fitting the
# training set at once, and move left along the U, its test loss falling as its norm approaches
# the U's bottom (on this task a broad one, from w of about 5 to 20). That the free run follows
# the fixed-norm curves is the evidence: the norm, not the step count, decides when it
# generalises.

# %% tags=["parameters"]
QUICK = False  # True: a tiny version (the test suite runs every notebook this way)
OUT = "runs/omnigrok"  # where the jobs write their results

# %%
# Sizes: experiment=omnigrok_teacher_student as it stands (2e4 full-batch steps, about 30 s);
# the LU grids at fewer steps than lu_mnist / lu_modadd (4.2 and 1.7 min).
STEPS = 100 if QUICK else 20_000
LOG_COUNT = 10 if QUICK else 100  # log-spaced evaluations (the experiment's 100)
LU_NORMS = "[5,20,100]" if QUICK else "[3,5,8,12,18,27,40,60,100]"
LU_STEPS = 100 if QUICK else 5_000
MODADD_NORMS = "[15,45,90]" if QUICK else "[15,30,45,60,90]"
MODADD_STEPS = 50 if QUICK else 2_500

# %%
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Image

from toy_quanta import api
from toy_quanta.analysis import lu

# %% [markdown]
# ## Omnigrok on a teacher-student regression
#
# A random teacher MLP (10 inputs, 20 tanh units) labels 100 training samples; a student MLP
# (two ReLU layers of 200) learns them with MSE and AdamW weight decay 0.1, at initialisation
# scale 8 and 1, as one ensemble. A prediction counts as correct within half a target standard
# deviation, so accuracies read as for classification. The override `phase.threshold=0.8`
# only changes the diagnosis in `summary.json`: this task tops out near 82% test accuracy, so
# "generalised" is judged at 80%.

# %%
omni = api.run("experiment=omnigrok_teacher_student", f"train.steps={STEPS}", f"train.log_count={LOG_COUNT}",
               "phase.threshold=0.8", "train.progress=false", out_dir=f"{OUT}/teacher_student")
def step(value) -> str:
    return "never" if value is None else f"step {value:,.0f}"


for m in omni.summary["members"]:
    f = m["final"]
    print(f"init scale {m['model.init_scale']:g}: 100% train at {step(f['steps_to_train_100'])}, "
          f"60% test at {step(f['steps_to_val_60'])}, 80% test at {step(f['steps_to_val_80'])}; final test accuracy "
          f"{f['test_acc']:.1%}, weight norm {f['param_norm']:.1f}; diagnosis: {m['diagnosis']}"
          + (f" (delay {m['grokking_delay']:,.0f} steps)" if m["diagnosis"] == "grokked" else ""))
omni.show("curves.png")

# %% [markdown]
# The weight norm of each member over training (`run.curve` gives steps x members):

# %%
norm = omni.curve("param_norm")
norm.columns = [f"init x{m['model.init_scale']:g}" for m in omni.summary["members"]]
print(norm.iloc[[0, len(norm) // 4, len(norm) // 2, 3 * len(norm) // 4, -1]].round(1))

# %% [markdown]
# ## The LU at fixed weight norms
#
# The same task and model, weight decay 0, and every member's parameters rescaled to a fixed
# total norm w after every step (`ensemble.fixed_norm`, one member per w) - how lu_mnist is made
# from omnigrok_mnist. A job with three or more fixed norms finds w_c itself (`summary.json["lu"]`,
# lu.png).

# %%
fixed = api.run("experiment=omnigrok_teacher_student", "optim.weight_decay=0", "ensemble.init_scale=null",
                f"ensemble.fixed_norm={LU_NORMS}", f"train.steps={LU_STEPS}", f"train.log_count={LOG_COUNT}",
                "train.progress=false", out_dir=f"{OUT}/teacher_student_lu")
head = fixed.summary["lu"]
for row in head["rows"]:
    print(f"w = {row['w']:>5g}: final train MSE {row['train_loss_mean']:.2e}, test MSE {row['test_loss_mean']:.3g}, "
          f"test accuracy {row['test_acc_mean']:.1%}")
print(f"w_c = {head['w_c']:.3g} in the grid interval [{head['w_lo']:g}, {head['w_hi']:g}]; "
      f"knee of the L at w = {head['l_knee']:g}")

# %% [markdown]
# ## The same on modular addition
#
# experiment=lu_modadd (grok_modadd's task: a+b mod 53 from 40% of the table) at fewer norms
# and steps. The U is sharper there: cross-entropy punishes confident mistakes at large w.

# %%
modadd = api.run("experiment=lu_modadd", f"ensemble.fixed_norm={MODADD_NORMS}", f"train.steps={MODADD_STEPS}",
                 "train.progress=false", out_dir=f"{OUT}/lu_modadd")
mh = modadd.summary["lu"]
print(f"lu_modadd: w_c = {mh['w_c']:.3g} in [{mh['w_lo']:g}, {mh['w_hi']:g}], knee of the L at w = {mh['l_knee']:g} "
      "(the README, 8 norms x 12k steps: w_c = 52 in [45, 90])")
modadd.show("lu.png")

# %% [markdown]
# ## The figure: the large-init run walks down the U
#
# `toy_quanta.analysis.lu` is what `toy-quanta-lu FIXED_RUN --trajectory OMNIGROK_RUN` runs:
# the fixed-norm curves, and the ordinary run's member with the largest init scale, its loss
# and accuracy over training drawn against its own norm.

# %%
cfg, frame = lu.load_job(fixed.dir)
other_cfg, other = lu.load_job(omni.dir, "--trajectory")
trajectory, label, member = lu.pick_trajectory(cfg, other_cfg, other, None, omni.dir)
out = Path(OUT) / "lu_with_trajectory"
drawn = lu.write_lu(frame, out, "teacher-student: fixed-norm runs and the init x8 run's trajectory",
                    trajectory, label, loss_label=lu.loss_label(cfg))
t = drawn["trajectory"]
print(f"{label}: norm {t['initial_norm']:.1f} at step {t['initial_step']} -> {t['final_norm']:.1f} at step "
      f"{t['final_step']:,}")
# Does the free run's test accuracy match the fixed-norm runs' at the norm it has reached?
rows = pd.DataFrame(drawn["rows"])
print("  step   norm  its test accuracy  fixed-norm runs' test accuracy at that norm")
for w in (90, 60, 40, 27, 18):
    passed = trajectory[trajectory["param_norm"] < w]
    if passed.empty:
        continue
    here = passed.iloc[0]
    fixed_acc = np.interp(np.log(here["param_norm"]), np.log(rows["w"]), rows["test_acc_mean"])
    print(f"{here['step']:>6,.0f} {here['param_norm']:6.1f} {here['test_acc']:18.1%} {fixed_acc:30.1%}")
Image(filename=str(out / "lu.png"))

# %% [markdown]
# ## Questions for a student
#
# 1. Where does the trajectory start, and at which norm does its test accuracy cross 80%? Where
#    is that on the fixed-norm U?
# 2. Why does the standard-init member (x1) generalise at once? Where does its norm sit on the
#    U at step 0?
# 3. Omnigrok predicts a delay that scales like 1 / (learning rate x weight decay). Re-run the
#    first job with `optim.weight_decay=0.3`: does the 60% milestone come about 3 times sooner?
# 4. The L's left side: at small w the training loss stays high. Why can a network with a
#    small total norm not fit 100 random-looking targets?
# 5. Re-run the first job with `optim.weight_decay=0`. What does the LU picture predict, and
#    what happens?
