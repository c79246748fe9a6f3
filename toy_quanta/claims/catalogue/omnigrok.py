"""Claims of Omnigrok (Liu, Michaud and Tegmark 2023): grokking on MNIST from a large initialisation,
and the LU mechanism behind it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toy_quanta.analysis.milestones import crossings
from toy_quanta.claims import verdicts
from toy_quanta.claims.catalogue.papers import OMNIGROK
from toy_quanta.claims.catalogue.read import copy_figure, curve, metrics, summary
from toy_quanta.claims.ledger import Experiment, Measured, Runs, claim

MNIST = Experiment("omnigrok_mnist", ("experiment=omnigrok_mnist",), cost_s=330)
LU = Experiment("lu_modadd", ("experiment=lu_modadd",), cost_s=110)
_checks_judge, _checks_rule = verdicts.checks(partly_at_least=1)


def _mnist(runs: Runs) -> Measured:
    frame = metrics(runs[MNIST.id])
    steps_L, test_LxM = curve(frame, "test_acc")
    _, train_LxM = curve(frame, "train_acc")
    scale = frame.drop_duplicates("member").set_index("member")["model.init_scale"].sort_index().to_numpy()
    big, small = int(np.argmax(scale)), int(np.argmin(scale))
    train_100 = crossings(train_LxM[:, [big]], steps_L, 1.0)[0]
    test_50 = crossings(test_LxM[:, [big]], steps_L, 0.5)[0]
    small_80 = crossings(test_LxM[:, [small]], steps_L, 0.8)[0]
    at_1e4 = float(np.interp(1e4, steps_L, test_LxM[:, big]))
    final = float(test_LxM[-1, big])
    checks = {"init x8: 100% training accuracy within 5,000 steps (paper: about 2,000)": bool(train_100 <= 5000),
              "init x8: test accuracy at most 30% at step 10,000 (paper: 15-25%)": at_1e4 <= 0.30,
              "init x8: 50% test accuracy between 1e4 and 4e4 steps (paper: about 2e4)": bool(1e4 <= test_50 <= 4e4),
              "init x8: 85% test accuracy or more at 1e5 steps (paper: about 89%)": final >= 0.85,
              "init x1: 80% test accuracy within 1,000 steps (no delay)": bool(small_80 <= 1000)}
    text = (f"init x8: 100% train at step {train_100:,.0f}, test {at_1e4:.0%} at 1e4, 50% at step {test_50:,.0f}, "
            f"{final:.1%} at {steps_L[-1]:,}; init x1: 80% test at step {small_80:,.0f}")
    return Measured(test_50, None, text, checks, {"train_100": train_100, "test_50": test_50, "test_at_1e4": at_1e4,
                                                  "final": final, "small_80": small_80},
                    copy_figure(Path(runs[MNIST.id]) / "curves.png"))


claim(id="omnigrok-mnist", paper=OMNIGROK, section="Section 3.1 (MNIST), Figure 1",
      claim="An MLP trained on 1,000 MNIST images from a large initialisation (x8) with weight decay fits the "
            "training set fast and generalises much later; from the standard initialisation it does not delay.",
      paper_value="init x8: 100% train by about 2e3 steps, test 15-25% until about 1e4, 50% at about 2e4, about "
                  "89% at 1e5; init x1: no delay",
      experiments=(MNIST,), measure=_mnist, judge=_checks_judge, rule=_checks_rule, page="omnigrok.md#omnigrok-on-mnist")


def _lu(runs: Runs) -> Measured:
    lu = summary(runs[LU.id])["lu"]
    rows = lu["rows"]
    w = np.array([r["w"] for r in rows])
    train = np.array([r["train_loss_mean"] for r in rows])
    test = np.array([r["test_loss_mean"] for r in rows])
    i = int(np.nanargmin(test))
    knee = lu["l_knee"]
    checks = {"training loss is L-shaped: high at the smallest norm, 100x lower from the knee on": bool(
                  train[0] >= 100 * np.nanmin(train[w >= knee])),
              "test loss is U-shaped: its minimum lies inside the grid, at least 10x below both ends": bool(
                  0 < i < len(w) - 1 and test[0] >= 10 * test[i] and test[-1] >= 10 * test[i])}
    return Measured(lu["w_c"], (lu["w_lo"], lu["w_hi"]),
                    f"w_c = {lu['w_c']:.3g} (grid [{lu['w_lo']:g}, {lu['w_hi']:g}]); knee of the L at w = {knee:g}; "
                    f"test loss {test[0]:.3g} -> {test[i]:.3g} -> {test[-1]:.3g}", checks, {"rows": rows},
                    copy_figure(Path(runs[LU.id]) / "lu.png"))


claim(id="omnigrok-lu", paper=OMNIGROK, section="Section 2 (the LU mechanism)",
      claim="At a fixed weight norm w, the final training loss against w is L-shaped and the test loss U-shaped, "
            "best near a critical norm w_c: large initialisation starts on the flat of the L, far from w_c.",
      paper_value="training loss L-shaped, test loss U-shaped in w (their modular addition and MNIST runs)",
      experiments=(LU,), measure=_lu, judge=_checks_judge, rule=_checks_rule,
      page="omnigrok.md#the-lu-mechanism-training-at-a-fixed-weight-norm")
