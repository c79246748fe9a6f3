"""`toy-quanta-claims`: the claims ledger. Every paper claim this package checks, the runs that test
it, the measured number with its interval and a verdict (toy_quanta/claims/).

    toy-quanta-claims list                           # the claims: paper, experiments, cost
    toy-quanta-claims run --all [--dir claims]       # run what is missing, then claims.json/.csv/.md
    toy-quanta-claims run quanta-alpha-n grokking-delay
    toy-quanta-claims run --cheapest 600             # the cheapest claims, together within 600 s
    toy-quanta-claims doc claims/claims.json --out docs/claims.md [--check]
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
import time
from pathlib import Path

from toy_quanta.claims import report, runner
from toy_quanta.claims.catalogue import claims
from toy_quanta.claims.ledger import PAPERS, Claim, experiments

log = logging.getLogger("toy_quanta.claims")


def cheapest(within_s: float) -> list[Claim]:
    """The cheapest claims whose experiments together cost at most within_s (an experiment that
    several of them share counted once), cheapest first, in the ledger's order."""
    chosen: list[Claim] = []
    for c in sorted(claims().values(), key=lambda c: c.cost_s):
        if sum(e.cost_s for e in experiments([*chosen, c])) <= within_s:
            chosen.append(c)
    order = list(claims())
    return sorted(chosen, key=lambda c: order.index(c.id))


def select(ids: list[str], every: bool, within_s: float | None) -> list[Claim]:
    known = claims()
    if every:
        return list(known.values())
    if within_s is not None:
        return cheapest(within_s)
    unknown = [i for i in ids if i not in known]
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(known), n=1)
        raise SystemExit(f"toy-quanta-claims: no claim {unknown[0]!r}" + (f" (did you mean {near[0]}?)" if near else "")
                         + "; `toy-quanta-claims list` shows them")
    if not ids:
        raise SystemExit("toy-quanta-claims run: name claims, or --all, or --cheapest SECONDS")
    return [known[i] for i in ids]


def cmd_list(args: argparse.Namespace) -> int:
    rows = list(claims().values())
    if args.json:
        print(json.dumps([{"id": c.id, "paper": PAPERS[c.paper][0], "claim": c.claim, "paper_value": c.paper_value,
                           "experiments": [e.command for e in c.experiments], "cost_s": c.cost_s, "gpu": c.gpu}
                          for c in rows], indent=1))
        return 0
    width = max(len(c.id) for c in rows)
    for c in rows:
        print(f"{c.id:<{width}}  {PAPERS[c.paper][0]:<30}  {c.cost_s / 60:5.1f} min  {c.claim}")
    total = sum(e.cost_s for e in experiments(rows))
    print(f"{len(rows)} claims, {len(experiments(rows))} experiments, {total / 60:.0f} min on the reference machine "
          "(2 cores) for all of them")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    selected = select(args.ids, args.all, args.cheapest)
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    todo = experiments(selected)
    print(f"{len(selected)} claims, {len(todo)} experiments (about {sum(e.cost_s for e in todo) / 60:.0f} min on 2 "
          f"cores for those not run yet) into {root}/", flush=True)
    start = time.monotonic()

    def progress(e, outcome) -> None:
        what = f"failed: {outcome}" if isinstance(outcome, Exception) else (
            "completed earlier" if outcome == 0 else f"{outcome:.0f} s")
        print(f"  {e.id}: {what}", flush=True)

    ran = runner.run_all(root, selected, jobs=args.jobs, on_done=progress)
    outcomes = runner.judge_all(root, selected, ran)
    table = report.write(root, outcomes, time.monotonic() - start, runner.span(root, selected))
    width = max(len(o.claim.id) for o in outcomes)
    for row in table["claims"]:
        print(f"{row['id']:<{width}}  {row['verdict']:<15}  {row['measured'] or row['reason']}")
    counts = ", ".join(f"{n} {v}" for v, n in table["counts"].items() if n)
    print(f"{counts}; {time.monotonic() - start:.0f} s; {root / 'claims.md'}", flush=True)
    return 1 if table["counts"]["error"] else 0


def cmd_doc(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.check:  # reads only
        current = out.read_text() if out.is_file() else ""
        if current != report.doc_page(Path(args.source)):
            print(f"{out} is not the page {args.source} makes: run `toy-quanta-claims doc {args.source} --out {out}`",
                  file=sys.stderr)
            return 1
        return 0
    text = report.publish(Path(args.source), out.parent)
    out.write_text(text)
    print(f"{out} ({len(json.loads(Path(args.source).read_text())['claims'])} claims)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toy-quanta-claims", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="the claims, their papers, experiments and costs")
    p_list.add_argument("--json", action="store_true", help="as JSON")
    p_list.set_defaults(fn=cmd_list)
    p_run = sub.add_parser("run", help="run the claims' experiments (what is missing) and judge them")
    p_run.add_argument("ids", nargs="*", help="claim ids (toy-quanta-claims list)")
    p_run.add_argument("--all", action="store_true", help="every claim")
    p_run.add_argument("--cheapest", type=float, default=None, metavar="SECONDS",
                       help="the cheapest claims whose experiments together cost at most SECONDS on 2 cores")
    p_run.add_argument("--dir", default="claims", help="where the runs and the tables go (default: claims/)")
    p_run.add_argument("--jobs", type=int, default=2, help="experiments run at once (default 2: a 2-core machine "
                                                           "runs two small experiments side by side faster)")
    p_run.set_defaults(fn=cmd_run)
    p_doc = sub.add_parser("doc", help="docs/claims.md from a run's claims.json (and its figures)")
    p_doc.add_argument("source", help="a claims.json written by `toy-quanta-claims run` (with --check: the committed "
                                      "docs/claims/claims.json)")
    p_doc.add_argument("--out", default="docs/claims.md", help="the page (its figures go to claims/ beside it)")
    p_doc.add_argument("--check", action="store_true", help="exit 1 if the page differs from what the JSON makes")
    p_doc.set_defaults(fn=cmd_doc)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
