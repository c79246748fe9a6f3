"""The ledger's tables: claims.json (everything), claims.csv (one row per claim) and claims.md (the
table and a section per claim, with its figure), written from the outcomes of a run; and
docs/claims.md, rendered from a committed claims.json the same way."""

from __future__ import annotations

import csv
import io
import json
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from toy_quanta.claims.ledger import PAPERS, VERDICTS, Measured
from toy_quanta.claims.runner import Outcome
from toy_quanta.files import atomic_write
from toy_quanta.plots.curves import save_figure
from toy_quanta.results import json_safe

FIGURES = "figures"
REFERENCES = "references.md"  # the bibliography page, beside docs/claims.md


def cpu_name() -> str:
    """The CPU's model name (lscpu), and whether it has AVX-512 or only AVX2: the timings' machine."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    name = fields.get("Model name", "unknown CPU").strip()
    flags = fields.get("Flags", "")
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name} ({isa}, {fields.get('CPU(s)', '?').strip()} CPUs)"


def default_figure(o: Outcome, path: Path) -> None:
    """The measured value with its interval beside the paper's, or the conditions of a qualitative rule."""
    m, c = o.measured, o.claim
    fig, ax = plt.subplots(figsize=(6.4, 2.2 + 0.25 * max(len(m.checks), 1)), constrained_layout=True)
    if m.checks:
        names = list(m.checks)
        ax.barh(range(len(names)), [1] * len(names), color=["tab:green" if m.checks[n] else "tab:red" for n in names])
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xticks([])
        ax.invert_yaxis()
    elif m.value is not None:
        low, high = m.interval or (m.value, m.value)
        ax.errorbar([m.value], [0], xerr=[[m.value - low], [high - m.value]], fmt="o", color="k", capsize=4,
                    label=f"measured {m.text}")
        ax.set_yticks([])
        ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"{c.id}: {o.verdict.verdict if o.verdict else 'error'}\npaper: {c.paper_value}", fontsize=9)
    save_figure(fig, path)


def record(o: Outcome, figure: str | None) -> dict[str, Any]:
    c, m, v = o.claim, o.measured, o.verdict
    citation, anchor = PAPERS[c.paper]
    return json_safe({
        "id": c.id, "paper": citation, "reference": f"{REFERENCES}#{anchor}", "section": c.section, "claim": c.claim,
        "paper_value": c.paper_value, "measured": m.text if m else None, "value": m.value if m else None,
        "interval": list(m.interval) if m and m.interval else None, "checks": m.checks if m else {},
        "verdict": v.verdict if v else "error", "reason": v.reason if v else o.error, "rule": c.rule,
        "cost_s": c.cost_s, "wall_s": o.wall_s, "experiments": [e.id for e in c.experiments],
        "commands": [e.command for e in c.experiments], "page": c.page, "gpu": c.gpu, "paper_scale": c.paper_scale,
        "details": m.details if m else {}, "figure": figure, "runs": o.runs})


def write(root: Path, outcomes: list[Outcome], wall_s: float, runs: dict[str, float] | None = None) -> dict[str, Any]:
    """claims.json, claims.csv, claims.md and figures/<id>.png into root; returns the JSON. wall_s:
    this invocation's time; runs: when the experiments ran (runner.span)."""
    root = Path(root)
    (root / FIGURES).mkdir(parents=True, exist_ok=True)
    rows = []
    for o in outcomes:
        figure = None
        if o.measured is not None:
            path = root / FIGURES / f"{o.claim.id}.png"
            try:
                (o.measured.figure or (lambda p, o=o: default_figure(o, p)))(path)
                figure = f"{FIGURES}/{path.name}"
            except Exception as exc:  # noqa: BLE001  (a figure that fails costs the figure, not the table)
                o.measured.details["figure_error"] = f"{type(exc).__name__}: {exc}"
                plt.close("all")
        rows.append(record(o, figure))
    table = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": cpu_name(), "wall_s": wall_s,
             "runs": runs, "counts": counts(rows), "claims": rows}
    atomic_write(root / "claims.json", lambda p: p.write_text(json.dumps(table, indent=2) + "\n"))
    atomic_write(root / "claims.csv", lambda p: p.write_text(to_csv(rows)))
    atomic_write(root / "claims.md", lambda p: p.write_text(render(table, links=False)))
    return table


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {v: sum(r["verdict"] == v for r in rows) for v in (*VERDICTS, "error")}


def to_csv(rows: list[dict[str, Any]]) -> str:
    columns = ["id", "paper", "section", "claim", "paper_value", "measured", "value", "ci_low", "ci_high", "verdict",
               "reason", "rule", "cost_s", "wall_s", "gpu", "commands"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for r in rows:
        low, high = r["interval"] or (None, None)
        writer.writerow({**{k: r.get(k) for k in columns}, "ci_low": low, "ci_high": high,
                         "commands": " ; ".join(r["commands"])})
    return buf.getvalue()


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _run_time(table: dict[str, Any]) -> str:
    runs = table.get("runs")
    if not runs:
        return f"The command took {_minutes(table['wall_s'])}."
    return (f"Its {runs['experiments']} experiments ran in {_minutes(runs['wall_s'])} of wall time, two at a time "
            f"({_minutes(runs['sum_s'])} added up).")


def render(table: dict[str, Any], links: bool = True, figures: str = FIGURES) -> str:
    """The ledger as Markdown: with `links`, papers link into references.md and pages into the site
    (docs/claims.md); without, plain text (a run's own claims.md)."""
    rows = table["claims"]
    c = table["counts"]
    lines = [
        "# Claims you can check",
        "",
        "Every number our pages compare with a paper, as a claim of that paper, the runs of this package",
        "that test it, the measured value with its 95% interval, and a verdict by a stated rule:",
        "**reproduced** (the paper's value lies in the measured interval, or its qualitative statement",
        "holds), **partly**, **differs** (the reason measured), **not tested here** (it needs a GPU or",
        "more than a CPU run allows; the cost is given). One command runs them all and writes this table:",
        "",
        "```bash",
        "toy-quanta-claims run --all --dir claims     # every claim; runs what is missing, reuses finished runs",
        "toy-quanta-claims run quanta-alpha-n          # one claim (and the runs it needs)",
        "toy-quanta-claims list                        # the claims, their papers, experiments and costs",
        "```",
        "",
        f"This table: generated {table['generated']} on {table['machine']}. " + _run_time(table) + " Verdicts: "
        + ", ".join(f"{n} {v}" for v, n in c.items() if n) + ".",
        "",
        "| claim | paper | measured [95% CI] | verdict | cost | command |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        paper = f"[{r['paper']}]({r['reference']})" if links else r["paper"]
        lines.append(f"| [{r['id']}](#{r['id']}) | {_cell(paper)} | {_cell(r['measured'])} | **{r['verdict']}** | "
                     f"{_minutes(r['cost_s'])} | `toy-quanta-claims run {r['id']}` |")
    for r in rows:
        paper = f"[{r['paper']}]({r['reference']})" if links else r["paper"]
        page = f"[{r['page']}]({r['page']})" if links else r["page"]
        lines += ["", f"## {r['id']} {{#{r['id']}}}" if links else f"## {r['id']}", "",
                  f"**Claim.** {r['claim']}", "",
                  f"- Paper: {paper}, {r['section']}. The paper: {r['paper_value']}.",
                  f"- Measured: {r['measured']}.",
                  f"- Verdict: **{r['verdict']}**. {r['reason']}.",
                  f"- Rule: {r['rule']}.",
                  *(f"- Runs: `{cmd}`" for cmd in r["commands"]),
                  f"- Cost: {_minutes(r['cost_s'])} on the reference machine" + (
                      f"; {_minutes(r['wall_s'])} in this run" if r.get("wall_s") else "") + ".",
                  *([f"- At the paper's scale: {r['paper_scale']}."] if r.get("paper_scale") else []),
                  f"- Discussed in {page}."]
        if r.get("figure"):
            lines += ["", f"![{r['id']}]({r['figure'].replace(FIGURES, figures, 1)})"]
    return "\n".join(lines) + "\n"


DOC_ASSETS = "claims"  # beside docs/claims.md: the committed claims.json and the claims' figures


def doc_page(table_path: Path) -> str:
    """docs/claims.md's text from a claims.json (its figures under claims/ beside the page)."""
    return render(json.loads(Path(table_path).read_text()), links=True, figures=DOC_ASSETS)


def publish(table_path: Path, docs_dir: Path) -> str:
    """Copy a run's claims.json and its figures into docs_dir/claims/; returns the page's text (the
    caller writes it to docs_dir/claims.md)."""
    table = json.loads(Path(table_path).read_text())
    source = Path(table_path).parent
    target = Path(docs_dir) / DOC_ASSETS
    target.mkdir(parents=True, exist_ok=True)
    for r in table["claims"]:
        if r.get("figure") and (source / r["figure"]).is_file():
            shutil.copyfile(source / r["figure"], target / Path(r["figure"]).name)
    if source.resolve() != target.resolve():
        shutil.copyfile(table_path, target / "claims.json")
    return doc_page(target / "claims.json")


def interval_text(value: float, interval: tuple[float, float] | None, digits: int = 3) -> str:
    if interval is None or not np.all(np.isfinite(interval)):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}g} [{interval[0]:.{digits}g}, {interval[1]:.{digits}g}]"


__all__ = ["Measured", "write", "render", "publish", "record", "interval_text", "cpu_name"]
