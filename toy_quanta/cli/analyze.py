"""`toy-quanta-analyze DIR [DIR ...]`: scaling exponents, emergence and convergence times of sweeps,
each measured number beside the quantization model's prediction.

Writes figures (PNG), report.md and report.json into --out (default: the first DIR's analysis/),
prints a table, and ends with one line of JSON: every measured exponent with its interval and
its prediction. Several DIRs are analysed together (e.g. a params and a data sweep, which places
this project's (alpha_N, alpha_D) among the other studies').
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from toy_quanta.analysis.scaling import (
    LEARNED_BITS, PAPER_CONVERGENCE_EXPONENT, QUANTITY_LABEL, ConvergenceAnalysis, ScaleAnalysis, agreement, analyse,
    convergence, scale_points, summary_frame)
from toy_quanta.analysis.sweep import load_sweeps
from toy_quanta.data.sparse_parity import LN2
from toy_quanta.plots import scaling as plots
from toy_quanta.results import atomic_write, json_safe, write_json


def _interval(value: float, low: float, high: float) -> str:
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def exponent_records(analyses: list[ScaleAnalysis], conv: list[ConvergenceAnalysis]) -> list[dict[str, Any]]:
    records = []
    for a in analyses:
        q, f = a.points.quantity, a.fit
        records.append({"name": f"alpha_{q}", "alpha": a.points.alpha, "measured": f.exponent,
                        "ci": [f.ci_low, f.ci_high], "predicted": a.predicted, "fit_range": [f.x_min, f.x_max],
                        "finite_size_slope": a.finite_size_slope,
                        "agrees": bool(f.ci_low <= a.predicted <= f.ci_high)})
        if a.growth is not None:
            g = a.growth
            records.append({"name": f"n_learned_vs_{q}", "alpha": a.points.alpha, "measured": g[0], "ci": [g[1], g[2]],
                            "predicted": a.growth_predicted, "agrees": bool(g[1] <= a.growth_predicted <= g[2])})
    for c in conv:
        if c.fit is not None:
            f = c.fit
            records.append({"name": "convergence_time_vs_p", "alpha": c.alpha, "measured": f.exponent,
                            "ci": [f.ci_low, f.ci_high], "predicted": 1.0, "paper": PAPER_CONVERGENCE_EXPONENT,
                            "agrees": bool(f.ci_low <= 1.0 <= f.ci_high)})
    return records


def _own_points(analyses: list[ScaleAnalysis]) -> list[tuple[float, float, float]]:
    by_alpha: dict[float, dict[str, float]] = {}
    for a in analyses:
        by_alpha.setdefault(a.points.alpha, {})[a.points.quantity] = a.fit.exponent
    return [(alpha, q["N"], q["D"]) for alpha, q in sorted(by_alpha.items()) if "N" in q and "D" in q]


def write_report(out: Path, dirs: list[Path], analyses: list[ScaleAnalysis], conv: list[ConvergenceAnalysis],
                 figures: dict[str, str], reports: list[dict]) -> str:
    lines = ["# Scaling analysis", "", "Sweeps: " + ", ".join(f"`{d}`" for d in dirs), ""]
    for r in reports:
        lines.append(f"- `{r['sweep_dir']}`: {r['jobs_completed']} jobs completed, {r['jobs_failed']} failed, "
                     f"{r['jobs_missing']} missing")
    lines += ["", "Losses are mean test cross-entropy; exponents are the same in bits and nats. Intervals are 95% "
              "bootstrap intervals over (seed, scale) rows. Predictions are the quantization model's "
              "(Michaud et al. 2023): alpha_N = alpha, alpha_D = alpha_S = alpha / (alpha + 1); subtasks learned "
              "grow as N^1 and as D^(1/(alpha+1)); convergence time t_k ∝ p_k^-1 (the paper measured "
              f"p_k^-{PAPER_CONVERGENCE_EXPONENT}). A subtask counts as learned below {LEARNED_BITS:g} bits.", ""]
    lines += ["## Exponents", "", "The predicted exponents are the infinite-tail laws. With a finite list of "
              "subtasks the same model bends: *finite-size slope* is the log-log slope, over the same fit range, of "
              "the model's loss for the number of subtasks actually learned (a subtask learned costs 0, one not "
              "learned 1 bit).", "",
              "| quantity | alpha | measured [95% CI] | predicted | finite-size slope | fit range | verdict |",
              "|---|---|---|---|---|---|---|"]
    for a in analyses:
        f = a.fit
        lines.append(f"| loss vs {QUANTITY_LABEL[a.points.quantity]} | {a.points.alpha:g} | "
                     f"{_interval(f.exponent, f.ci_low, f.ci_high)} | {a.predicted:.3f} | {a.finite_size_slope:.3f} | "
                     f"{f.x_min:.4g} to {f.x_max:.4g} "
                     f"({f.n_points} rows) | {agreement(f.exponent, f.ci_low, f.ci_high, a.predicted)} |")
        if a.growth is not None:
            g = a.growth
            lines.append(f"| subtasks learned vs {QUANTITY_LABEL[a.points.quantity]} | {a.points.alpha:g} | "
                         f"{_interval(*g)} | {a.growth_predicted:.3f} | | {a.learned_fit.x_min:.4g} to "
                         f"{a.learned_fit.x_max:.4g} | {agreement(g[0], g[1], g[2], a.growth_predicted)} |")
    for c in conv:
        if c.fit is not None:
            f = c.fit
            lines.append(f"| convergence time vs p_k | {c.alpha:g} | {_interval(f.exponent, f.ci_low, f.ci_high)} | "
                         f"1 (paper measured {PAPER_CONVERGENCE_EXPONENT}) | | p from {f.x_min:.3g} to {f.x_max:.3g} | "
                         f"{agreement(f.exponent, f.ci_low, f.ci_high, 1.0)} |")
    lines += ["", f"Fit range rule: {analyses[0].fit.rule}." if analyses else "", ""]
    for a in analyses:
        p = a.points
        tag = f"{p.quantity}, alpha={p.alpha:g}"
        lines += [f"## Loss against {QUANTITY_LABEL[p.quantity]} (alpha={p.alpha:g})", "", f"{p.description}; "
                  f"{len(np.unique(p.seed))} seed(s), {len(a.xs)} scales from {a.xs.min():.4g} to {a.xs.max():.4g}.", "",
                  "| scale | mean loss (bits) | mean loss (nats) | std (bits) | subtasks learned | quantization model's tail loss (bits) |",
                  "|---|---|---|---|---|---|"]
        for x, m, s, n, fs in zip(a.xs, a.mean_loss, a.std_loss, a.n_learned, a.finite_size):
            lines.append(f"| {x:.4g} | {m / LN2:.4f} | {m:.4f} | {s / LN2:.4f} | {n:.1f} | {fs / LN2:.4f} |")
        fall = a.mean_loss.max() / a.mean_loss.min()
        learned = np.isfinite(a.learned_scale)
        lines += ["", f"- Mean loss falls {fall:.1f}x along the sweep; {int(learned.sum())} of {p.n_tasks} subtasks "
                  f"are learned by the largest scale (mean over seeds).",
                  f"- Learning order against frequency rank: Spearman {a.spearman:.3f} (1 = exactly in frequency order).",
                  "- Scale from which each subtask stays learned (rank: scale; mean over seeds): "
                  + ", ".join(f"{k + 1}: {v:.4g}" for k, v in enumerate(a.learned_scale) if np.isfinite(v))
                  + (f"; not learned: {int((~learned).sum())} subtasks" if (~learned).any() else "") + ".",
                  "- The tail-loss column is what the quantization model predicts from the number of subtasks "
                  "learned alone (unlearned subtasks at 1 bit, learned at 0); the measured loss sits above it where "
                  "learned subtasks keep some loss or unlearned ones are partly learned."]
        lines += [f"- Note: {n}" for n in a.notes]
        lines += ["", f"![loss {tag}]({figures[f'loss_{p.quantity}_{p.alpha:g}']})",
                  f"![emergence {tag}]({figures[f'emergence_{p.quantity}_{p.alpha:g}']})", ""]
    for c in conv:
        lines += [f"## Convergence time against frequency (alpha={c.alpha:g})", "",
                  f"{c.description}; {len(c.p)} (member, subtask) pairs learned during training.", ""]
        if c.fit is None:
            lines.append("- Too few subtasks learned for a fit.")
        else:
            f = c.fit
            lines.append(f"- t_k ∝ p_k^-{f.exponent:.3f} [{f.ci_low:.3f}, {f.ci_high:.3f}]; theory 1, paper "
                         f"{PAPER_CONVERGENCE_EXPONENT}: {agreement(f.exponent, f.ci_low, f.ci_high, 1.0)}.")
        lines += ["", f"![convergence alpha={c.alpha:g}]({figures[f'convergence_{c.alpha:g}']})", ""]
    if "exponents_vs_alpha" in figures:
        lines += ["## Exponents against alpha", "", f"![exponents]({figures['exponents_vs_alpha']})", ""]
    lines += ["## Other studies", "", "(alpha_N, alpha_D) of the studies listed by Michaud et al., the two reference "
              "lines, and this project's points where one analysis holds both a parameter and a data sweep of the "
              "same alpha.", "", f"![other studies]({figures['other_studies']})", ""]
    text = "\n".join(lines)
    atomic_write(out / "report.md", lambda p: p.write_text(text))
    return text


def run(dirs: list[Path], out: Path, n_boot: int = 2000) -> dict[str, Any]:
    sweep = load_sweeps(dirs)
    analyses = [analyse(points, n_boot=n_boot) for points in scale_points(sweep)]
    conv = convergence(sweep, n_boot=n_boot)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    for a in analyses:
        tag = f"{a.points.quantity}_{a.points.alpha:g}"
        for kind, plot in (("loss", plots.plot_loss), ("emergence", plots.plot_emergence)):
            name = f"{kind}_{tag}.png"
            plot(a, out / name)
            figures[f"{kind}_{tag}"] = name
    for c in conv:
        name = f"convergence_{c.alpha:g}.png"
        plots.plot_convergence(c, out / name)
        figures[f"convergence_{c.alpha:g}"] = name
    if len({a.points.alpha for a in analyses}) > 1:
        plots.plot_exponents_vs_alpha(analyses, out / "exponents_vs_alpha.png")
        figures["exponents_vs_alpha"] = "exponents_vs_alpha.png"
    plots.plot_other_studies(_own_points(analyses), out / "other_studies.png")
    figures["other_studies"] = "other_studies.png"
    write_report(out, dirs, analyses, conv, figures, sweep.reports)
    records = exponent_records(analyses, conv)
    result = {"out": str(out), "exponents": records,
              "spearman": {f"{a.points.quantity}_{a.points.alpha:g}": a.spearman for a in analyses},
              "learned_scale": {f"{a.points.quantity}_{a.points.alpha:g}": a.learned_scale.tolist() for a in analyses},
              "figures": sorted(figures.values())}
    write_json(out / "report.json", json_safe({**result, "table": summary_frame(analyses).to_dict(orient="records")}))
    return {"table": summary_frame(analyses), **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toy-quanta-analyze", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", type=Path, nargs="+", help="multirun sweep directories (multirun/NAME/DATE_TIME)")
    parser.add_argument("--out", type=Path, default=None, help="where to write figures and report (default: DIR/analysis)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples per fit (default 2000)")
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"toy-quanta-analyze: {missing[0]}: no such directory (give a multirun sweep directory)", file=sys.stderr)
        return 2
    if args.bootstrap < 100:
        print(f"toy-quanta-analyze: --bootstrap={args.bootstrap} is not allowed: an integer >= 100", file=sys.stderr)
        return 2
    try:
        result = run(args.dirs, args.out or args.dirs[0] / "analysis", n_boot=args.bootstrap)
    except ValueError as exc:
        print(f"toy-quanta-analyze: {exc}", file=sys.stderr)
        return 2
    table = result.pop("table")
    with_cols = table.drop(columns=["verdict"]).round(4)
    print(with_cols.to_string(index=False))
    for row in table.itertuples():
        print(f"alpha_{row.quantity} at alpha={row.alpha:g}: {row.verdict}")
    print(f"report: {Path(result['out']) / 'report.md'}")
    print(json.dumps(json_safe({"exponents": result["exponents"], "spearman": result["spearman"]}), allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
