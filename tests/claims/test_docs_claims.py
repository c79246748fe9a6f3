"""docs/claims.md is the page the committed ledger (docs/claims/claims.json, the last full run)
makes, that ledger covers every claim of the catalogue with a verdict, its figures are committed,
every phenomenon page links its claims' rows, and (slow) the cheapest claims, run again from scratch, keep their verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toy_quanta.claims import report
from toy_quanta.claims.catalogue import claims
from toy_quanta.claims.ledger import VERDICTS

DOCS = Path(__file__).resolve().parents[2] / "docs"
COMMITTED = DOCS / "claims" / "claims.json"


def test_the_page_is_the_one_the_committed_ledger_makes():
    assert (DOCS / "claims.md").read_text() == report.doc_page(COMMITTED), (
        "docs/claims.md is stale: run `toy-quanta-claims doc docs/claims/claims.json --out docs/claims.md`")


def test_the_committed_ledger_covers_every_claim_with_a_verdict_and_a_figure():
    table = json.loads(COMMITTED.read_text())
    rows = {r["id"]: r for r in table["claims"]}
    assert set(rows) == set(claims()), "the catalogue changed since the last full run: run it again"
    for cid, row in rows.items():
        assert row["verdict"] in VERDICTS, (cid, row["verdict"], row["reason"])
        assert row["figure"] and (DOCS / "claims" / Path(row["figure"]).name).is_file(), cid
        assert not str(row.get("runs", "")).startswith("/work"), cid
    runs = table["runs"]  # the experiments' own marks: when they ran, however many invocations it took
    assert runs["experiments"] == len({e for r in rows.values() for e in r["experiments"]})
    assert runs["wall_s"] <= 90 * 60, f"the full run took {runs['wall_s'] / 60:.0f} min, more than 90"


def test_each_claim_is_linked_from_its_phenomenon_page():
    """Every claim's page (and its anchor, where it names one) exists, and the page links the claim's
    row of the ledger, so a reader of the page finds its verdict."""
    import re

    missing = {}
    for cid, c in claims().items():
        page, _, anchor = c.page.partition("#")
        text = (DOCS / page).read_text()
        if anchor:
            slugs = {re.sub(r"[^a-z0-9_ -]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"^#+ (.+?)(?: \{#.*\})?$", text, flags=re.M)}
            assert anchor in slugs, f"{cid}: {page} has no heading #{anchor}"
        if f"claims.md#{cid})" not in text:
            missing[cid] = page
    assert not missing, f"pages that do not link their claims' rows: {missing}"


@pytest.mark.slow
def test_the_cheapest_claims_keep_their_verdicts(tmp_path):
    """`toy-quanta-claims run --cheapest 600` from scratch: every claim it runs gets the verdict of the
    committed full run."""
    proc = subprocess.run([sys.executable, "-m", "toy_quanta.cli.claims", "run", "--cheapest", "600", "--dir",
                           str(tmp_path / "claims")], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fresh = {r["id"]: r for r in json.loads((tmp_path / "claims" / "claims.json").read_text())["claims"]}
    committed = {r["id"]: r for r in json.loads(COMMITTED.read_text())["claims"]}
    assert len(fresh) >= 6
    changed = {cid: (committed[cid]["verdict"], r["verdict"], r["measured"]) for cid, r in fresh.items()
               if r["verdict"] != committed[cid]["verdict"]}
    assert not changed, changed
