"""Claims of the later grokking mechanisms: Grokfast (Lee et al. 2024), softmax collapse and its
fixes (Prieto et al. 2025), Slingshot (Thilak et al. 2022), lazy to rich (Kumar et al. 2023), and
induction heads (Olsson et al. 2022)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toy_quanta.claims import verdicts
from toy_quanta.claims.catalogue.papers import GROKFAST, KUMAR, OLSSON, PRIETO, THILAK
from toy_quanta.claims.catalogue.read import copy_figure, curve, fmt, metrics, summary
from toy_quanta.claims.catalogue.omnigrok import MNIST as OMNIGROK_MNIST
from toy_quanta.claims.ledger import Experiment, Measured, Runs, Verdict, claim

GROKFAST_CPU = Experiment("grokfast", ("experiment=grokfast",), cost_s=160)
# Their MNIST setting, 8 seeds per arm: the filtered arm against the baseline with the same weight
# decay, compared at 80% test accuracy (both reach it within about 2,000 steps: the run ends once
# every member has held it). Their baseline (weight decay 0.01) needs about 3e4 steps to 80%: it is
# omnigrok_mnist's init-x8 member, the same setting and seed, which the Omnigrok claim runs anyway.
MNIST_FAIR = Experiment("grokfast_mnist_fair", (
    "experiment=grokfast_mnist_paper", "~ensemble.arms.baseline", "ensemble.arms_levels=[0.8]",
    "train.stop_metric=test_acc", "train.stop_at_least=0.8"), cost_s=150)
# 2 seeds of the float32 run and of orthogonal gradients (which ends at its milestone); 1 seed of
# StableMax and float64, whose claim is only partly testable here
COLLAPSE = {fix: Experiment(f"collapse_{fix}", ("experiment=collapse", f"+collapse_fix={fix}", f"ensemble.seeds={seeds}",
                                                 *extra), cost_s=cost)
            for fix, seeds, extra, cost in (("none", 2, (), 110),
                                            ("orthogonal", 2, ("train.stop_metric=test_acc", "train.stop_at_least=0.99"), 25),
                                            ("stablemax", 1, (), 70), ("float64", 1, (), 70))}
SLINGSHOT = Experiment("slingshot", ("experiment=slingshot", "ensemble.eps=[1e-8,1e-4]", "ensemble.seeds=1"), cost_s=120)
LAZY = Experiment("lazy_rich", ("experiment=lazy_rich",), cost_s=190)
INDUCTION = Experiment("induction", ("experiment=induction",), cost_s=100)
INDUCTION_SEGMENT = Experiment("induction_segment", ("experiment=induction_segment",), cost_s=200)
_checks_judge, _checks_rule = verdicts.checks(partly_at_least=1)


def _arm_speedup(s: dict, arm: str, over: str, level: int) -> tuple[float, tuple[float, float], str | None]:
    entry = s["arms"]["pairwise"][arm][f"over {over}"][str(level)]
    return entry["speedup"], tuple(entry["interval"]), entry["bound"]


def _grokfast(runs: Runs) -> Measured:
    s = summary(runs[GROKFAST_CPU.id])
    bare, bare_i, bare_bound = _arm_speedup(s, "ema", "baseline", 95)
    fair, fair_i, fair_bound = _arm_speedup(s, "ema", "baseline_ema_wd", 95)
    text = (f"EMA over the baseline {fmt(bare, bare_i, 2)}{' (' + bare_bound + ')' if bare_bound else ''}; over the "
            f"baseline with EMA's weight decay {fmt(fair, fair_i, 2)} (steps to 95% validation accuracy)")
    return Measured(bare, bare_i, text, details={"over_fair_baseline": [fair, *fair_i], "bound": bare_bound},
                    figure=copy_figure(Path(runs[GROKFAST_CPU.id]) / "arms.png"))


def _judge_grokfast(m: Measured) -> Verdict:
    fair, low, _ = m.details["over_fair_baseline"]
    how = ("its interval over the baseline with the same weight decay lies above 1" if low > 1 else
           "but not beyond the weight decay it comes with")
    return Verdict("partly", f"the filter speeds grokking ({how}); the paper's 44x needs their transformer, whose "
                             "baseline groks within its budget: here the bare baseline does not, so the speed-up is a "
                             f"{m.details['bound'] or 'ratio'}")


claim(id="grokfast-algorithmic", paper=GROKFAST, section="README table, algorithmic data (x*y mod 97)",
      claim="Amplifying the slow part of the gradients (Grokfast's EMA filter) reaches 95% validation accuracy "
            "about 44 times sooner than the baseline.",
      paper_value="baseline 39,890 steps, EMA 910, MA 790 (2-layer transformer)",
      experiments=(GROKFAST_CPU,), measure=_grokfast, judge=_judge_grokfast,
      rule="reproduced if the speed-up over their baseline is about 44x with an interval; partly if the filter "
           "speeds grokking but the number cannot be compared (a censored baseline or another model); differs if "
           "it does not speed it", page="grokking-mechanisms.md#grokfast-is-the-speed-up-the-filter-or-the-weight-decay",
      paper_scale="their transformer, 50,000 steps x 5 arms (grokfast_paper): a GPU job", gpu=True)


def _mnist_headline(runs: Runs) -> Measured:
    from toy_quanta.analysis.milestones import crossings

    frame = metrics(runs[OMNIGROK_MNIST.id])
    steps_L, test_LxM = curve(frame, "test_acc")
    scale = frame.drop_duplicates("member").set_index("member")["model.init_scale"].sort_index().to_numpy()
    baseline = float(crossings(test_LxM[:, [int(np.argmax(scale))]], steps_L, 0.8)[0])
    ema = np.asarray(summary(runs[MNIST_FAIR.id])["arms"]["arms"]["ema"]["80"]["steps"], np.float64)
    value = baseline / float(np.exp(np.mean(np.log(ema))))
    rng = np.random.default_rng(0)
    boot = [baseline / np.exp(np.mean(np.log(rng.choice(ema, len(ema))))) for _ in range(2000)]
    interval = tuple(float(q) for q in np.percentile(boot, [2.5, 97.5]))
    final = float(test_LxM[-1].max())
    text = (f"to 80% test accuracy: baseline {baseline:,.0f} steps (1 seed), EMA {np.exp(np.mean(np.log(ema))):,.0f} "
            f"({len(ema)} seeds): {fmt(value, interval, 3)}x; 95% is reached by no run here (best final accuracy "
            f"{final:.1%})")
    return Measured(value, interval, text, details={"baseline_80": baseline, "ema_80": ema.tolist(),
                                                    "best_final_accuracy": final},
                    figure=copy_figure(Path(runs[MNIST_FAIR.id]) / "arms.png"))


_speed_judge, _speed_rule = verdicts.number(22.0, 0.25, "the paper's 22x (44,022 / 2,001)")


def _judge_headline(m: Measured) -> Verdict:
    v = _speed_judge(m)
    if v.verdict == "differs":
        return v
    return Verdict("partly", f"at 80% test accuracy: {v.reason}; the paper's counts are to 95%, which no arm reaches "
                             f"on the offline digits (best {m.details['best_final_accuracy']:.1%})")


claim(id="grokfast-mnist", paper=GROKFAST, section="README table, MNIST",
      claim="On MNIST from a large initialisation, Grokfast's EMA filter (with weight decay 2.0) reaches the "
            "generalisation level about 22 times sooner than the baseline (weight decay 0.01).",
      paper_value="steps to 95% test accuracy: baseline 44,022, EMA 2,001 (22x) (their README)",
      experiments=(MNIST_FAIR, OMNIGROK_MNIST), measure=_mnist_headline, judge=_judge_headline,
      rule=_speed_rule + "; at most partly when measured at another accuracy level than the paper's",
      page="grokking-mechanisms.md#grokfast-is-the-speed-up-the-filter-or-the-weight-decay")


def _mnist_fair(runs: Runs) -> Measured:
    s = summary(runs[MNIST_FAIR.id])
    out = {level: _arm_speedup(s, "ema", "baseline_ema_wd", level) for level in (80,)}
    speed, interval, _ = out[80]
    text = "; ".join(f"{level}%: {fmt(v, i, 3)}x" for level, (v, i, _) in out.items())
    return Measured(speed, interval, "EMA over the baseline with the same weight decay 2.0, " + text,
                    details={"by_level": {str(k): [v, *i] for k, (v, i, _) in out.items()},
                             "n_seeds": s["arms"]["arms"]["ema"]["n_seeds"]},
                    figure=copy_figure(Path(runs[MNIST_FAIR.id]) / "arms.png"))


def _judge_fair(m: Measured) -> Verdict:
    low, high = m.interval
    n = m.details["n_seeds"]
    if low > 1:
        return Verdict("reproduced", f"the filter's own speed-up {m.value:.2f} [{low:.2f}, {high:.2f}] lies above 1 "
                                     f"({n} seeds per arm)")
    if high < 1:
        return Verdict("differs", f"the filter slows it: {m.value:.2f} [{low:.2f}, {high:.2f}]")
    return Verdict("differs", f"the filter's own speed-up {m.value:.2f} [{low:.2f}, {high:.2f}] includes 1 ({n} seeds "
                              f"per arm): the measured speed-up is the weight decay's; a filter effect of up to "
                              f"{high:.2f}x is not excluded")


claim(id="grokfast-mnist-filter", paper=GROKFAST, section="README table, MNIST (the filtered run also raises the weight "
                                                           "decay from 0.01 to 2.0)",
      claim="The speed-up on MNIST is the filter's: Grokfast EMA is faster than the baseline given the filtered "
            "run's own weight decay.",
      paper_value="attributed to the filter (their baseline has weight decay 0.01, the filtered run 2.0)",
      experiments=(MNIST_FAIR,), measure=_mnist_fair, judge=_judge_fair,
      rule="reproduced if the interval of EMA's speed-up over the baseline with weight decay 2.0 (to 80% test "
           "accuracy, 8 seeds per arm) lies above 1; differs otherwise",
      page="grokking-mechanisms.md#grokfast-is-the-speed-up-the-filter-or-the-weight-decay")


def _final(runs: Runs, e: Experiment, metric: str) -> np.ndarray:
    return curve(metrics(runs[e.id]), metric)[1][-1]


def _collapse(runs: Runs) -> Measured:
    frame = metrics(runs[COLLAPSE["none"].id])
    steps, zero_LxM = curve(frame, "zero_loss")
    val = _final(runs, COLLAPSE["none"], "test_acc")
    peak = zero_LxM.max(0)
    checks = {"without weight decay a float32 run's training samples reach exactly zero loss (>= 10% of them)":
              bool((peak >= 0.1).all()),
              "validation accuracy stays near chance (below 5%)": bool((val < 0.05).all())}
    return Measured(float(peak.min()), None, f"largest zero-loss fraction {', '.join(f'{p:.2f}' for p in peak)}; final "
                                              f"validation accuracy {', '.join(f'{v:.3f}' for v in val)}", checks,
                    figure=copy_figure(Path(runs[COLLAPSE["none"].id]) / "curves.png"))


claim(id="collapse-float32", paper=PRIETO, section="Section 3 (softmax collapse)",
      claim="Without weight decay, grokking stops at softmax collapse: the float32 softmax of training samples "
            "rounds to one-hot, their losses and gradients become exactly zero, and the model does not generalise.",
      paper_value="softmax collapse in float32 without weight decay; no generalisation (their MLP, a+b mod 113, 40%)",
      experiments=(COLLAPSE["none"],), measure=_collapse, judge=_checks_judge, rule=_checks_rule,
      page="grokking-mechanisms.md#softmax-collapse-stablemax-and-orthogonal-gradients")


def _orthogonal(runs: Runs) -> Measured:
    s = summary(runs[COLLAPSE["orthogonal"].id])
    steps = [m["final"]["steps_to_val_99"] for m in s["members"]]
    checks = {"every seed reaches 99% validation accuracy without weight decay within 300 steps":
              all(x is not None and x <= 300 for x in steps)}
    return Measured(max(x or np.inf for x in steps), None,
                    f"99% validation accuracy at steps {', '.join('never' if x is None else f'{x:.0f}' for x in steps)}",
                    checks, figure=copy_figure(Path(runs[COLLAPSE["orthogonal"].id]) / "curves.png"))


claim(id="collapse-orthogonal", paper=PRIETO, section="Section 5 (orthogonal gradients), their run script",
      claim="Orthogonal gradients (each tensor's gradient without its component along the weights) let the model "
            "generalise without weight decay.",
      paper_value="generalisation within 300 epochs (full batch: 300 steps)",
      experiments=(COLLAPSE["orthogonal"],), measure=_orthogonal, judge=_checks_judge, rule=_checks_rule,
      page="grokking-mechanisms.md#softmax-collapse-stablemax-and-orthogonal-gradients")


def _fixes(runs: Runs) -> Measured:
    rows, checks = [], {}
    for fix in ("stablemax", "float64"):
        e = COLLAPSE[fix]
        zero = curve(metrics(runs[e.id]), "zero_loss")[1].max(0)
        val = _final(runs, e, "test_acc")
        checks[f"{fix}: no training sample reaches exactly zero loss"] = bool((zero == 0).all())
        rows.append(f"{fix}: zero-loss fraction at most {zero.max():.2f}, validation {', '.join(f'{v:.3f}' for v in val)} "
                    "at 3,000 steps")
    return Measured(None, None, "; ".join(rows), checks)


def _judge_fixes(m: Measured) -> Verdict:
    prevented = all(m.checks.values())
    return Verdict("not tested here", ("both prevent the collapse here (no exactly-zero losses), " if prevented else
                                       "the collapse is not prevented here, ") +
                   "but their generalisation needs 80,000 full-batch steps each (about 35 min per seed on 2 cores, "
                   "measured at 40 steps/s), beyond the ledger's budget; within 3,000 steps neither generalises")


claim(id="collapse-stablemax-float64", paper=PRIETO, section="Section 4 (StableMax), their run script (float64)",
      claim="StableMax, or a float64 softmax, prevents softmax collapse, and with it the model groks without weight "
            "decay.",
      paper_value="StableMax and float64 generalise given 80,000 epochs (their run script)",
      experiments=(COLLAPSE["stablemax"], COLLAPSE["float64"]), measure=_fixes, judge=_judge_fixes,
      rule="reproduced if both prevent the collapse and generalise within the paper's budget; not tested here when "
           "the budget is beyond the ledger's (the collapse part is measured)",
      page="grokking-mechanisms.md#softmax-collapse-stablemax-and-orthogonal-gradients",
      paper_scale="80,000 full-batch steps per fix and seed: about 35 min each on 2 cores")


def _slingshot(runs: Runs) -> Measured:
    s = summary(runs[SLINGSHOT.id])
    by_eps = {}
    for m in s["members"]:
        by_eps.setdefault(m["optim.eps"], []).append((m["loss_spikes"]["count"], m["final"]["test_acc"],
                                                      m["loss_spikes"]["first"]))
    small, large = min(by_eps), max(by_eps)
    grew = [sp["readout_growth_before"] for _, _, first in by_eps[small] for sp in first if "readout_growth_before" in sp]
    checks = {f"eps {small:g}: training-loss spikes": all(c > 0 for c, _, _ in by_eps[small]),
              "the last layer's norm grows ahead of each spike": bool(grew) and all(g > 1 for g in grew),
              f"eps {large:g}: no spike": all(c == 0 for c, _, _ in by_eps[large]),
              "generalisation arrives with a spike (validation accuracy above 50%)": any(
                  acc > 0.5 for c, acc, _ in by_eps[small] if c > 0)}
    text = "; ".join(f"eps {e:g}: " + ", ".join(f"{c} spike(s), validation {acc:.3f}" for c, acc, _ in v)
                     for e, v in sorted(by_eps.items()))
    return Measured(None, None, text, checks, figure=copy_figure(Path(runs[SLINGSHOT.id]) / "curves.png"))


claim(id="slingshot", paper=THILAK, section="Sections 3-4 (the Slingshot mechanism)",
      claim="With Adam and no weight decay the last layer's norm grows in cycles with training-loss spikes, "
            "generalisation tends to arrive at the onset of a spike, and a larger Adam eps suppresses the cycles.",
      paper_value="cyclic norm growth and loss spikes; generalisation at spike onsets; larger eps suppresses them",
      experiments=(SLINGSHOT,), measure=_slingshot, judge=_checks_judge, rule=_checks_rule,
      page="grokking-mechanisms.md#slingshot-and-adams-eps")


def _lazy(runs: Runs) -> Measured:
    s = summary(runs[LAZY.id])
    frame = metrics(runs[LAZY.id])
    _, ntk_LxM = curve(frame, "ntk_alignment")
    by_scale: dict[float, list] = {}
    for i, m in enumerate(s["members"]):
        by_scale.setdefault(m["model.output_scale"], []).append((m["final"]["test_loss"], ntk_LxM[-1, i], ntk_LxM[0, i],
                                                                 m.get("grokking_delay")))
    scales = sorted(by_scale)
    loss = [np.mean([r[0] for r in by_scale[a]]) for a in scales]
    ntk = [np.mean([r[1] for r in by_scale[a]]) for a in scales]
    checks = {"the final test loss rises with the output scale": bool(np.all(np.diff(loss) > 0)),
              "the final NTK alignment falls with the output scale": bool(np.all(np.diff(ntk) < 0)),
              f"at the smallest scale ({scales[0]:g}) the alignment rises over training":
                  bool(all(r[1] > 1.5 * r[2] for r in by_scale[scales[0]])),
              "at the largest scale validation reaches 90% late (a grokking delay)": any(
                  r[3] is not None for r in by_scale[scales[-1]])}
    text = "; ".join(f"alpha {a:g}: test loss {l:.2f}, NTK alignment {n:.3f}" for a, l, n in zip(scales, loss, ntk))
    return Measured(None, None, text, checks, figure=copy_figure(Path(runs[LAZY.id]) / "curves.png"))


claim(id="lazy-to-rich", paper=KUMAR, section="Sections 3-4 (the output scale alpha)",
      claim="Grokking without weight decay is the move from lazy (kernel) to rich (feature-learning) training: a "
            "larger output scale keeps the network lazy longer and delays generalisation; the NTK's alignment with "
            "the targets rises at the transition.",
      paper_value="larger alpha, longer delay; NTK alignment rises at the transition (their polynomial toy, D = 100)",
      experiments=(LAZY,), measure=_lazy, judge=_checks_judge, rule=_checks_rule,
      page="grokking-mechanisms.md#lazy-to-rich-the-output-scale")


def _phase_change(runs: Runs) -> Measured:
    s = summary(runs[INDUCTION.id])
    frame = metrics(runs[INDUCTION.id])
    steps, loss_LxM = curve(frame, "test_loss")
    found = s["induction"]
    changes, heads = found["phase_change_steps"], found["induction_steps"]
    drops = []
    for i, step in enumerate(changes):
        if step is None:
            continue
        at = int(np.searchsorted(steps, step))
        window = (steps >= step - 100) & (steps <= step + 100)
        drops.append(float(loss_LxM[window, i].max() - loss_LxM[window, i].min()))
    checks = {"every seed's loss drops abruptly (a phase change found)": all(c is not None for c in changes),
              "the drop is at least 1 nat within 200 steps": bool(drops) and min(drops) >= 1.0,
              "a head's induction score reaches 0.5 within 50 steps of the phase change":
                  all(c is not None and h is not None and abs(h - c) <= 50 for c, h in zip(changes, heads))}
    spread = found["phase_change_spread"]
    return Measured(spread["median"], None, f"phase change at steps {changes} (median {spread['median']:g}); induction "
                                            f"heads at {heads}; drop within 200 steps {min(drops, default=0):.2f} nats "
                                            "or more", checks, {"changes": changes, "heads": heads},
                    copy_figure(Path(runs[INDUCTION.id]) / "curves.png"))


claim(id="induction-phase-change", paper=OLSSON, section="Section 'induction heads and in-context learning' "
                                                        "(the phase change)",
      claim="In-context learning appears abruptly in a short window of training, together with induction heads.",
      paper_value="an abrupt phase change coinciding with induction heads (their public toy run: below 4 nats at "
                  "step 812, below 2 at 904)",
      experiments=(INDUCTION,), measure=_phase_change, judge=_checks_judge, rule=_checks_rule,
      page="induction-heads.md")


def _circuit(runs: Runs) -> Measured:
    from toy_quanta import results
    from toy_quanta.analysis.induction import uniform_previous_token_score

    found = {name: summary(runs[e.id])["induction"] for name, e in (("segment", INDUCTION_SEGMENT),
                                                                     ("periodic", INDUCTION))}
    seq_len = results.load_config(runs[INDUCTION_SEGMENT.id]).task.seq_len
    uniform = uniform_previous_token_score(seq_len)
    seg, per = found["segment"]["circuits"], found["periodic"]["circuits"]

    def composed(c: dict) -> bool:
        """An induction head that needs a head below it, which attends to the previous token at
        least twice as much as uniform attention does."""
        prev = c["previous_token_head"]
        return (c["induction_head"]["induction"] >= 0.5 and c["induction_head"]["ablation_rise"] >= 0.1
                and prev is not None and prev["ablation_rise"] >= 0.1 and prev["previous_token"] >= 2 * uniform)

    checks = {"Olsson layout: every seed forms the canonical circuit (a previous-token head, score >= 0.5, below "
              "an induction head, both needed)": all(c["canonical"] for c in seg),
              f"Olsson layout: every seed's induction head needs a head below it that attends to the previous "
              f"token at least twice as much as uniform attention ({2 * uniform:.2f})": all(composed(c) for c in seg),
              "periodic layout (compared): the canonical circuit forms": all(c["canonical"] for c in per)}

    def line(c: dict) -> str:
        ind, prev = c["induction_head"], c["previous_token_head"]
        return (f"{ind['head']} induction {ind['induction']:.2f} (+{ind['ablation_rise']:.2f} nats when zeroed), "
                f"{prev['head']} previous-token {prev['previous_token']:.2f} (+{prev['ablation_rise']:.2f})")

    text = ("Olsson layout: " + "; ".join(line(c) for c in seg) + ". Periodic layout: " +
            "; ".join(line(c) for c in per) + f". Uniform attention's previous-token score: {uniform:.2f}")
    return Measured(float(sum(c["canonical"] for c in seg)), None, text, checks,
                    {"segment": seg, "periodic": per, "uniform_previous_token": uniform},
                    copy_figure(Path(runs[INDUCTION_SEGMENT.id]) / "curves.png"))


def _judge_circuit(m: Measured) -> Verdict:
    canonical, composed, periodic = m.checks.values()
    other = ("; in the periodic layout, where positions line up with the repeat, it forms too" if periodic else
             "; in the periodic layout, where positions line up with the repeat, it does not")
    if canonical:
        return Verdict("reproduced", "every seed forms the canonical circuit in the Olsson layout" + other)
    if composed:
        return Verdict("partly", "every seed's induction head needs a layer-0 head that leans to the previous token, "
                                 "but that head's previous-token score stays below 0.5 at this budget" + other)
    return Verdict("differs", "the induction heads do not need a previous-token head below them" + other)


claim(id="induction-circuit", paper=OLSSON, section="Section 'induction heads' (the two-head mechanism)",
      claim="An induction head works with a previous-token head in the layer below: the previous-token head tags "
            "each position with its predecessor, the induction head attends to the token after the current token's "
            "earlier occurrence.",
      paper_value="previous-token head (layer 0) composed with an induction head (layer 1)",
      experiments=(INDUCTION_SEGMENT, INDUCTION), measure=_circuit, judge=_judge_circuit,
      rule="reproduced if every seed in the Olsson layout forms a previous-token head (score >= 0.5) below an "
           "induction head (score >= 0.5), each raising the repeated part's loss by >= 0.1 nats when zeroed; partly "
           "if the induction head needs a head below it whose previous-token score is at least twice uniform "
           "attention's, but under 0.5; differs otherwise",
      page="induction-heads.md#which-circuit-forms")
