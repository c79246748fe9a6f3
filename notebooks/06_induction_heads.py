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
# # The induction-head phase change
#
# Small attention-only transformers learn to copy from their context: a token that appeared
# before is predicted to be followed by whatever followed it last time (`A B ... A -> B`).
# Olsson et al. (2022) found that this in-context learning appears abruptly, in a short window
# of training, together with *induction heads*: attention heads that look from a token back to
# the token after its previous occurrence, helped by a *previous-token head* in the layer below.
# Here the data makes copying the only way to predict: each sequence repeats a random block of
# 5-10 distinct tokens (vocabulary 128), so after the first copy every token is predictable, but
# only by looking back.
#
# **What to look for.** The final figure (the job's own) shows, per seed, the test loss over
# training (whole sequence, the repeated part, the unpredictable first copy) and every head's
# induction and previous-token scores. The loss falls quickly from chance (ln 128 = 4.85 nats)
# to about 4 (guessing some token of the context), creeps along a plateau, and then drops by
# about 2.5 nats within ~150 steps; at that same step the layer-1 heads' induction scores jump.
# A capability that arrives as a phase change, with a mechanism you can point to, is the
# quantization model's picture of a single quantum.

# %% tags=["parameters"]
QUICK = False  # True: a tiny version (the test suite runs every notebook this way)
OUT = "runs/induction"  # where the jobs write their results

# %%
# Sizes: experiment=induction as it stands, 5 seeds for 1,000 steps (about a minute on 2 cores);
# QUICK trains one seed for a few steps (no phase change: the cells still run).
SEEDS = 1 if QUICK else 5
STEPS = 25 if QUICK else 1_000

# %%
import numpy as np
import pandas as pd

from toy_quanta import api
from toy_quanta.analysis import induction
from toy_quanta.results import load_config

# %% [markdown]
# ## Train
#
# `toy-quanta experiment=induction`: a 2-layer attention-only transformer (width 48, 4 heads),
# AdamW lr 1e-3, weight decay 1, batch 32 of 48-token sequences, fresh data every step; every
# log step measures each head's attention on probe sequences. (The
# bracketed word in each member's line is the grokking diagnosis, which asks for 90% training
# accuracy: the unpredictable first copy keeps this task's accuracy near 85%, so it reads "not
# fitted" here; the phase-change step is the number to read.)

# %%
run = api.run("experiment=induction", f"ensemble.seeds={SEEDS}", f"train.steps={STEPS}", "train.progress=false",
              out_dir=f"{OUT}/induction")
found = run.summary["induction"]
print(f"chance: ln 128 = {found['chance_loss']:.2f} nats")
print("phase change:", found["phase_change_rule"])
for m, step, head_step in zip(run.summary["members"], found["phase_change_steps"], found["induction_steps"]):
    f = m["final"]
    print(f"seed {m['seed']}: phase change at {step or 'none'}, a head's induction score >= 0.5 at "
          f"{head_step or 'none'}; final loss {f['test_loss']:.2f} (repeated part {f['repeated_loss']:.2f}, "
          f"first copy {f['other_loss']:.2f}), ICL score {f['icl_score']:.2f}")
spread = found["phase_change_spread"]
if spread["found"]:
    print(f"phase-change step over seeds: median {spread['median']:.0f}, "
          f"range {spread['min']:.0f} to {spread['max']:.0f}")

# %% [markdown]
# ## Which heads?
#
# The final induction score (attention from a token to the token after its previous
# occurrence) and previous-token score (attention to the position just before) of every head,
# as the mean over seeds. A head that attended uniformly to the past would score about
# `uniform_previous_token_score` on the previous-token measure.

# %%
cfg = load_config(run.dir)
n_heads = cfg.model.n_heads
scores = run.metrics[run.metrics["metric"].isin(["induction_score", "previous_token_score"])]
last = scores[scores["step"] == scores["step"].max()]
table = last.pivot_table(index="subtask", columns="metric", values="value", aggfunc="mean")
table.index = [induction.head_name(int(h), n_heads) for h in table.index]
print(table.round(3).to_string())
print(f"uniform attention's previous-token score: {induction.uniform_previous_token_score(cfg.task.seq_len):.3f}")

# %% [markdown]
# How fast is the drop? The loss of the repeated part just before and just after each seed's
# phase-change step (log steps are 25 steps apart):

# %%
repeated = run.curve("repeated_loss")
best_head = {m["member"]: m["final"]["induction_head"] for m in run.summary["members"]}
best_induction = pd.DataFrame({m: run.curve("induction_score", subtask=h)[m] for m, h in best_head.items()})
for m, step in zip(repeated.columns, found["phase_change_steps"]):
    if step is None:
        print(f"member {m}: no phase change within {STEPS} steps")
        continue
    window = repeated.loc[max(0, step - 100):step + 100, m]
    print(f"member {m}: repeated-part loss {window.iloc[0]:.2f} at step {window.index[0]} -> {window.iloc[-1]:.2f} at "
          f"step {window.index[-1]}; best head's induction score {best_induction.loc[window.index[0], m]:.2f} -> "
          f"{best_induction.loc[window.index[-1], m]:.2f}")
print(f"largest one-interval fall of the repeated-part loss: {np.max(-np.diff(repeated.to_numpy(), axis=0)):.2f} nats")

# %% [markdown]
# ## The figure: loss and head scores over training
#
# Left: the test loss of the whole sequence (solid), the repeated part (dashed) and the first
# copy (dotted); dash-dotted: chance. Right: each head's induction (solid) and previous-token
# (dotted) score, layer 0 on top. Dashed verticals: each seed's phase-change step.

# %%
run.show("curves.png")

# %% [markdown]
# ## Questions for a student
#
# 1. Why can the first copy of the block never be predicted, and what loss does it keep?
# 2. Which layer's heads become induction heads? Why does an induction head need a head in the
#    layer below that attends to the previous token?
# 3. Re-run with `model.n_layers=1`. Can a one-layer attention-only model build an induction
#    head? What happens to the loss?
# 4. The phase-change step varies between seeds. Re-run with `optim.weight_decay=0`: does the
#    transition come earlier, later, or not at all?
# 5. The loss creeps down before the drop. What might the network be learning on the plateau
#    that the accuracy does not show?
