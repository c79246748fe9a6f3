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
# # Mechanisms of grokking: Grokfast and softmax collapse
#
# Two later papers claim to speed grokking up or to explain why it stalls. **Grokfast** (Lee et
# al. 2024) treats each parameter's gradient over time as a signal and amplifies its slow part
# (an exponential moving average, EMA, added back to the gradient), reporting ~50x faster
# grokking; its users asked whether the speed-up is the filter or the extra weight decay the
# filtered runs also got. **Softmax collapse** (Prieto et al. 2025) says that without weight
# decay grokking stops because the float32 softmax of the training samples rounds to exactly
# one-hot: their losses become exactly 0, their gradients vanish, and the weights only grow.
# Their fix, *orthogonal gradients* (remove each gradient's component along the weights), lets
# the model generalise with no weight decay at all.
#
# **What to look for.** The final figure has three panels. (a) Grokfast arms, x*y mod 97: the
# baseline without weight decay stays memorised; the same baseline given EMA's weight decay
# groks; EMA with that decay groks sooner. The honest speed-up of the filter is the gap between
# those two (about 1.5x at this scale), not the gap to the bare baseline. (b) a+b mod 113
# without weight decay: plain float32 softmax memorises, orthogonal gradients generalise within
# a few hundred steps. (c) The plain run's fraction of training pairs whose softmax has
# collapsed to exactly one-hot, rising while the training loss sinks towards 0: the stall the
# paper describes.
#
# Left out for time (each is one command): the MA filter and its fair baseline (the full
# `toy-quanta experiment=grokfast`, 2.6 min), float64 softmax and StableMax
# (`toy-quanta -m experiment=collapse`, 10 min), Slingshot's loss spikes and Adam's eps
# (`toy-quanta experiment=slingshot`, 7 min), and lazy-to-rich training by output scale
# (`toy-quanta experiment=lazy_rich`, 3 min). docs/grokking-mechanisms.md has their numbers.

# %% tags=["parameters"]
QUICK = False  # True: a tiny version (the test suite runs every notebook this way)
OUT = "runs/mechanisms"  # where the jobs write their results

# %%
# Sizes: experiment=grokfast has 5 arms x 3 seeds x 4,000 steps (155 s); here 3 arms x 2 seeds
# x 2,000 steps (EMA and its fair baseline reach 99% by then). experiment=collapse trains 3
# seeds x 3,000 steps per fix (150 s each); here one seed, 2,000 steps for the plain run (the
# collapse starts after ~1,500) and 400 for orthogonal gradients (generalised by ~125).
SEEDS = 1 if QUICK else 2
GROKFAST_STEPS = 40 if QUICK else 2_000
COLLAPSE_STEPS = 25 if QUICK else 2_000
ORTHOGONAL_STEPS = 25 if QUICK else 400

# %%
import matplotlib.pyplot as plt
import numpy as np

from toy_quanta import api
from toy_quanta.analysis import arms

# %% [markdown]
# ## Grokfast beside a fair baseline
#
# `ensemble.arms` trains unlike settings side by side in one program; the experiment's five
# arms are cut to three with `~ensemble.arms.NAME` (Hydra's delete), exactly as on the command
# line. Adam with PyTorch's coupled L2 weight decay, as in their code.

# %%
grokfast = api.run("experiment=grokfast", "~ensemble.arms.ma", "~ensemble.arms.baseline_ma_wd",
                   f"ensemble.seeds={SEEDS}", f"train.steps={GROKFAST_STEPS}", "train.progress=false",
                   out_dir=f"{OUT}/grokfast")
comparison = grokfast.summary["arms"]
print(comparison["rule"])
print("\n".join(arms.lines(comparison)))
fair = comparison["pairwise"]["ema"]["over baseline_ema_wd"]
for level, e in fair.items():
    lo, hi = e["interval"]
    print(f"EMA over the baseline with the same weight decay, to {level}%: x{e['speedup']:.2f} [{lo:.2f}, {hi:.2f}]"
          + (f" ({e['bound']})" if e["bound"] else ""))

# %% [markdown]
# The job's own comparison figure (arms.png): validation accuracy per arm, and the steps to
# 95% and 99% with their intervals (hatched: some seeds never got there, so a lower bound).

# %%
grokfast.show("arms.png")

# %% [markdown]
# ## Softmax collapse and orthogonal gradients
#
# Prieto et al.'s setting: a+b mod 113 from 40% of the pairs, an MLP on the one-hot pair, full
# batch, AdamW lr 0.01 with no weight decay. `+collapse_fix=none` is plain float32 softmax
# cross-entropy; `+collapse_fix=orthogonal` projects each gradient off its weights. Every log
# step records `softmax_collapse` (training pairs whose float32 softmax is exactly one-hot)
# and `zero_loss` (pairs whose loss is exactly 0).

# %%
plain = api.run("experiment=collapse", "+collapse_fix=none", "ensemble.seeds=1", f"train.steps={COLLAPSE_STEPS}",
                "train.progress=false", out_dir=f"{OUT}/collapse_none")
orthogonal = api.run("experiment=collapse", "+collapse_fix=orthogonal", "ensemble.seeds=1",
                     f"train.steps={ORTHOGONAL_STEPS}", "train.progress=false", out_dir=f"{OUT}/collapse_orthogonal")
for name, run in (("plain float32", plain), ("orthogonal gradients", orthogonal)):
    m = run.summary["members"][0]
    f = m["final"]
    reached = "never" if f["steps_to_val_99"] is None else f"step {f['steps_to_val_99']:,.0f}"
    print(f"{name}: validation accuracy {f['test_acc']:.3f} at step {run.summary['steps']:,}, 99% validation at "
          f"{reached}, parameter norm {f['param_norm']:.0f}, softmax collapse "
          f"{f['softmax_collapse']:.2f}, zero loss {f['zero_loss']:.2f}; diagnosis: {m['diagnosis']}")
collapse = plain.curve("softmax_collapse")[0]
rising = collapse[collapse > 0.1]
print("plain run: softmax collapse above 10% of the training pairs from",
      f"step {rising.index[0]:,}" if len(rising) else "no step in this budget")

# %% [markdown]
# ## The figure: what the filter adds, and why plain Adam stalls


# %%
def median_by_arm(run: api.Run, metric: str):
    rows = run.metrics[run.metrics["metric"] == metric]
    return rows.pivot_table(index="step", columns="arm", values="value", aggfunc="median")


fig, (ax_a, ax_b, ax_c) = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
by_arm = median_by_arm(grokfast, "test_acc")
for name in comparison["arms"]:
    ax_a.plot(np.maximum(by_arm.index, 1), by_arm[name], lw=2, label=name)
ax_a.set(xscale="log", xlabel="step", ylabel="validation accuracy (median over seeds)", ylim=(-0.02, 1.02),
         title="(a) Grokfast, x*y mod 97: EMA vs its fair baseline")
ax_a.legend(fontsize=8)
for name, run in (("plain float32 softmax", plain), ("orthogonal gradients", orthogonal)):
    acc = run.curve("test_acc")[0]
    ax_b.plot(np.maximum(acc.index, 1), acc, lw=2, label=name)
ax_b.set(xscale="log", xlabel="step", ylabel="validation accuracy", ylim=(-0.02, 1.02),
         title="(b) a+b mod 113, no weight decay")
ax_b.legend(fontsize=8)
ax_c.plot(collapse.index, collapse, color="tab:red", lw=2, label="softmax collapsed (fraction of training pairs)")
ax_c.set(xlabel="step", ylabel="fraction", ylim=(-0.02, 1.02), title="(c) the plain run: softmax collapse")
loss_axis = ax_c.twinx()
train_loss = plain.curve("train_loss")[0]
loss_axis.plot(train_loss.index, train_loss.clip(lower=1e-12), color="k", lw=1, ls="--",
               label="training loss (right; exactly 0 drawn at 1e-12)")
loss_axis.set(yscale="log", ylabel="training loss (nats)")
handles = ax_c.get_legend_handles_labels()[0] + loss_axis.get_legend_handles_labels()[0]
ax_c.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="center left")
plt.show()

# %% [markdown]
# ## Questions for a student
#
# 1. In panel (a), how much of EMA's lead over the bare baseline is weight decay? Read it off
#    the baseline with EMA's weight decay.
# 2. Add the MA arms back (drop the two `~ensemble.arms...` overrides). The docs report that MA's
#    weight decay alone (0.01) does not work without the filter: does that hold here?
# 3. In panel (c), why does a training loss of exactly 0 stop learning, even though the
#    validation accuracy is near 0?
# 4. Run `+collapse_fix=float64` (the softmax in float64) for 2,000 steps. Does the collapse
#    fraction (measured in float32) still rise, and do its gradients vanish?
# 5. Orthogonal gradients keep the weight norm from growing along the weights' own direction.
#    How does that connect to weight decay's role in the Omnigrok notebook?
