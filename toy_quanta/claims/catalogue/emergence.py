"""Claims about emergence on sparse parities: hidden progress (Barak et al. 2022) and the exactly
solvable model (Nam et al. 2024)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from toy_quanta.analysis import hidden_progress
from toy_quanta.analysis.solvable import SWEEP_FILES
from toy_quanta.claims import verdicts
from toy_quanta.claims.catalogue.papers import BARAK, NAM
from toy_quanta.claims.catalogue.read import copy_figure, fmt
from toy_quanta.claims.ledger import Experiment, Measured, Runs, claim
from toy_quanta.plots.curves import save_figure

N_BY_K = {2: (16, 32, 64, 128, 256, 512), 3: (16, 32, 64, 128, 256)}
COLLECT = ("toy-quanta-collect {dir} --steps-to-learn task.n",)


def _hidden(arm: str, k: int, extra: tuple[str, ...], ns: tuple[int, ...], cost_s: float) -> Experiment:
    return Experiment(f"hidden_progress_{arm}_k{k}", ("experiment=hidden_progress", f"task.k={k}",
                                                       f"task.n={','.join(map(str, ns))}", *extra),
                      sweep=True, then=COLLECT, cost_s=cost_s)


# The faithful setting (±1 inputs, lr 0.1), lr ∝ 1/n, and the {0, 1} inputs of the earlier setting
ARMS = {
    "pm_fixed": ("±1 inputs, lr 0.1", (), {2: 60, 3: 90}),
    "pm_inverse": ("±1 inputs, lr 6.4 / n", ("+lr_rule=inverse_n",), {2: 60, 3: 200}),
    "01_fixed": ("{0, 1} inputs, lr 0.1", ("task.encoding=zero_one", "train.steps=30000"), {2: 50, 3: 60}),
}
HIDDEN = {(arm, k): _hidden(arm, k, extra, N_BY_K[k] if arm != "01_fixed" else N_BY_K[k][:4], cost[k])
          for arm, (_, extra, cost) in ARMS.items() for k in (2, 3)}
# 2 seeds, each run ending once every skill has held 70% of S (the emergence at S / 2 is measured)
SOLVABLE = Experiment("solvable_emergence_paper", ("experiment=solvable_emergence_paper", "ensemble.seeds=2",
                                                   "train.stop_at_least=3.5"),
                      sweep=True, then=("toy-quanta-collect {dir} --solvable",), cost_s=540)
_checks_judge, _checks_rule = verdicts.checks(partly_at_least=1)


def _result(runs: Runs, arm: str, k: int) -> dict:
    path = Path(runs[HIDDEN[(arm, k)].id]) / hidden_progress.FILES["json"]
    return json.loads(path.read_text())["k"][str(k)]


def _plateau(runs: Runs) -> Measured:
    checks, rows = {}, []
    for k in (2, 3):
        entry = _result(runs, "pm_fixed", k)
        n_max = max(entry["n"], key=int)
        e = entry["n"][n_max]
        learned = e["learned"] == len(e["seeds"])
        flat = e["loss_max_ratio"] is not None and e["loss_max_ratio"] <= 1.1
        gained, of = (int(x) for x in (e["hidden_progress"] or "0/0").split("/"))
        checks[f"k={k}, n={n_max}: every seed learns, after a plateau where the loss stays within 10% of its start"] = (
            learned and flat)
        checks[f"k={k}, n={n_max}: on the plateau every seed's relevant weight grows x1.5 or more"] = of > 0 and gained == of
        checks[f"k={k}, n={n_max}: on the plateau the parameters travel at least 20% of their distance from the "
               "initialisation (the median seed)"] = e["distance_end_fraction"] is not None and \
            e["distance_end_fraction"] >= 0.2
        rows.append(f"k={k}, n={n_max}: plateau to step {e['plateau_end_step']:,.0f} (median), loss at most "
                    f"{e['loss_max_ratio']:.2f} x start, relevant weight x{e['ratio_gain']:.2f} on it, "
                    f"{e['distance_end_fraction']:.0%} of the distance from init travelled ({e['hidden_progress']} "
                    "with x1.5 or more)")
    figure = Path(runs[HIDDEN[("pm_fixed", 3)].id]) / hidden_progress.FILES["figure"]
    return Measured(None, None, "; ".join(rows), checks, figure=copy_figure(figure))


claim(id="hidden-progress-plateau", paper=BARAK, section="Section 5 (hidden progress measures)",
      claim="SGD on a sparse parity sits on a loss plateau and then drops abruptly, while measures the loss cannot "
            "see (the weight on the relevant bits, the distance travelled) grow steadily during the plateau.",
      paper_value="a flat loss, then an abrupt drop; hidden progress in the weights during the plateau",
      experiments=(HIDDEN[("pm_fixed", 2)], HIDDEN[("pm_fixed", 3)]), measure=_plateau, judge=_checks_judge,
      rule=_checks_rule, page="hidden-progress.md")


def _scaling(runs: Runs) -> Measured:
    fits, local = {}, {}
    for (arm, k) in HIDDEN:
        entry = _result(runs, arm, k)
        fits[(arm, k)] = entry["fit"]
        local[(arm, k)] = entry["local_exponents"]
    f2, f3 = fits[("pm_fixed", 2)], fits[("pm_fixed", 3)]
    checks = {"k=3's exponent lies above k=2's (intervals apart), ±1 inputs, lr 0.1": f3["ci_low"] > f2["ci_high"],
              "the same with lr 6.4 / n": fits[("pm_inverse", 3)]["ci_low"] > fits[("pm_inverse", 2)]["ci_high"],
              "steps grow with n at every step of n, both k, both learning rates": all(
                  e["exponent"] > 0 for (arm, _), rows in local.items() if arm != "01_fixed" for e in rows)}
    text = "; ".join(f"{ARMS[arm][0]}, k={k}: n^{fmt(f['exponent'], (f['ci_low'], f['ci_high']), 2)}"
                     for (arm, k), f in fits.items() if f)
    details = {"fits": {f"{arm}_k{k}": f for (arm, k), f in fits.items()},
               "local_exponents": {f"{arm}_k{k}": rows for (arm, k), rows in local.items()}}

    def figure(path: Path) -> None:
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), constrained_layout=True)
        for ax, k in zip(axes, (2, 3)):
            for i, (arm, (label, _, _)) in enumerate(ARMS.items()):
                rows = local[(arm, k)]
                if not rows:
                    continue
                mid = np.array([np.sqrt(r["n_from"] * r["n_to"]) for r in rows]) * (1 + 0.04 * (i - 1))
                value = np.array([r["exponent"] for r in rows])
                err = [value - [r.get("ci_low", np.nan) for r in rows], [r.get("ci_high", np.nan) for r in rows] - value]
                ax.errorbar(mid, value, yerr=err, fmt="o-", color=f"C{i}", capsize=3, label=label)
            ax.axhline(k - 1, color="k", ls="--", lw=0.8, label=f"n^(k-1) = n^{k - 1}: sign SGD's sample bound (Kou et al.)")
            ax.axhline(k, color="k", ls=":", lw=0.8, label=f"n^k = n^{k}: the SQ count of subsets")
            ax.set(xscale="log", xlabel="n (between consecutive values)", ylabel="local exponent of steps to learn",
                   title=f"k = {k}")
            ax.legend(fontsize=7)
        save_figure(fig, path)

    return Measured(f3["exponent"], (f3["ci_low"], f3["ci_high"]), text, checks, details, figure)


claim(id="hidden-progress-scaling", paper=BARAK, section="Section 3 (Empirical Finding 1), abstract",
      claim="The number of SGD steps to learn a k-sparse parity of n bits grows like n^O(k): polynomially in n, "
            "faster for larger k (near the SQ limit; the paper gives no single exponent).",
      paper_value="n^O(k) iterations on small instances; no exponent stated",
      experiments=tuple(HIDDEN.values()), measure=_scaling, judge=_checks_judge, rule=_checks_rule,
      page="hidden-progress.md#measured")


def _solvable(runs: Runs) -> Measured:
    result = json.loads((Path(runs[SOLVABLE.id]) / SWEEP_FILES["json"]).read_text())
    theirs, ours = result["theirs"]["skills"], result["ours"]["skills"]
    ratios = [r["ratio"]["value"] for r in theirs[1:] if r["ratio"]["value"] is not None]
    checks = {"every skill emerges, in order of frequency": all(r["measured_step"] is not None for r in theirs) and bool(
                  np.all(np.diff([r["measured_step"] for r in theirs]) > 0)),
              "their calibration predicts skills 2-5 within 0.8-1.25 of the measured step": bool(ratios) and all(
                  0.8 <= x <= 1.25 for x in ratios) and len(ratios) == len(theirs) - 1,
              "ours (skill 1 of the same network) does too": all(
                  r["ratio"]["value"] is not None and 0.8 <= r["ratio"]["value"] <= 1.25 for r in ours[1:])}
    text = "measured / predicted per skill, theirs: " + ", ".join(
        fmt(r["ratio"]["value"], tuple(r["ratio"]["interval"]) if r["ratio"]["interval"] else None, 2) for r in theirs) + \
        "; ours: " + ", ".join(fmt(r["ratio"]["value"], tuple(r["ratio"]["interval"]) if r["ratio"]["interval"] else None, 2)
                               for r in ours)
    value = float(np.exp(np.mean(np.log(ratios)))) if ratios else None
    return Measured(value, None, text, checks, {"theirs": theirs, "ours": ours, "R0": result["R0"],
                                                "rate_single": result["rate_single"]},
                    copy_figure(Path(runs[SOLVABLE.id]) / SWEEP_FILES["figure"]))


claim(id="solvable-emergence", paper=NAM, section="Section 4 and Figure 1 (time emergence), their train_time.py",
      claim="Each skill of multitask sparse parity emerges at the time the solvable multilinear model predicts, "
            "once calibrated: as a sigmoid at a time proportional to 1 / p_k.",
      paper_value="the calibrated model predicts every skill's emergence in time (their Figure 1, 32 bits, 5 skills, "
                  "p_k ∝ k^-1.6)",
      experiments=(SOLVABLE,), measure=_solvable, judge=_checks_judge, rule=_checks_rule,
      page="solvable-emergence.md")

