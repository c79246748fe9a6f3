"""The ledger's runner and tables on a tiny claim of our own: its experiment run with the command
line into DIR/runs/, reused when it completed, run again (and its completed job reused) when its
mark is gone; the claim measured and judged; claims.json, .csv, .md and the figure written; a
failed experiment and a failing measurement recorded without losing the other claims."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toy_quanta.claims import report, runner, verdicts
from toy_quanta.claims.catalogue.read import summary
from toy_quanta.claims.catalogue import claims
from toy_quanta.claims.ledger import PAPERS, Claim, Experiment, Measured, paper

TINY = ("task.n_tasks=4", "task.n=8", "task.k=3", "task.test_size=256", "task.per_task_test=16", "model.width=16",
        "optim.lr=0.01", "train.steps=60", "train.batch_size=64", "train.log_every=20", "name=tinyclaim")
PAPER = paper("tiny2026", "Tiny et al. 2026", "tiny-2026")


def _claim(cid: str, experiment: Experiment, measure=None, level: float = 0.5) -> Claim:
    judge, rule = verdicts.number(level, 0.5)

    def read(runs):
        acc = summary(runs[experiment.id])["members"][0]["final"]["test_acc"]
        return Measured(acc, (acc - 0.05, acc + 0.05), f"test accuracy {acc:.3f}")

    return Claim(id=cid, paper=PAPER, section="Section 1", claim="A tiny MLP learns something.", paper_value="0.5",
                 experiments=(experiment,), measure=measure or read, judge=judge, rule=rule, page="usage.md")


GOOD = Experiment("tiny", TINY, cost_s=10)
BAD = Experiment("tiny_bad", (*TINY, "model.width=0"), cost_s=10)


def _ledger(root: Path) -> tuple:
    selected = [_claim("tiny-learns", GOOD, level=0.6), _claim("tiny-bad", BAD),
                _claim("tiny-broken", GOOD, measure=lambda runs: 1 / 0)]
    ran = runner.run_all(root, selected, jobs=2)
    return root, selected, ran


def background_runs(items, tmp_path_factory) -> dict:
    """The tiny ledger's experiments (subprocesses) start with the session (conftest._background_runs)."""
    if not any("first" in getattr(item, "fixturenames", ()) for item in items):
        return {}
    return {"ledger": lambda: _ledger(tmp_path_factory.mktemp("claims"))}


@pytest.fixture(scope="module")
def first(background):
    root, selected, ran = background["ledger"].result()
    outcomes = runner.judge_all(root, selected, ran)
    table = report.write(root, outcomes, 1.0)
    return root, selected, ran, outcomes, table


def test_the_experiment_runs_once_into_its_directory_with_the_command_line(first):
    root, _, ran, _, _ = first
    out = runner.run_dir(root, GOOD)
    assert out.parent == root / "runs" and out.name.startswith("tiny-") and ran["tiny"] > 0
    assert summary(out)["status"] == "completed" and summary(out)["name"] == "tinyclaim"
    record = json.loads((out / runner.DONE).read_text())
    assert record["command"] == GOOD.command and GOOD.command.startswith("toy-quanta task.n_tasks=4")
    assert record["finished"] - record["started"] == pytest.approx(record["wall_s"], abs=1.0)
    span = runner.span(root, [_claim("again", GOOD)])  # when it ran, read back from its mark
    assert span["experiments"] == 1 and span["wall_s"] == pytest.approx(record["wall_s"], abs=1.0)
    assert "$ " in (out / runner.LOG_FILE).read_text()


def test_the_claim_is_measured_judged_and_written(first):
    root, _, _, outcomes, table = first
    good = outcomes[0]
    assert good.error is None and good.verdict.verdict in ("reproduced", "partly", "differs")
    row = table["claims"][0]
    assert row["id"] == "tiny-learns" and row["paper"] == "Tiny et al. 2026"
    assert row["reference"] == "references.md#tiny-2026" and row["measured"].startswith("test accuracy")
    assert row["figure"] == "figures/tiny-learns.png" and (root / row["figure"]).stat().st_size > 0
    assert (root / "claims.csv").read_text().splitlines()[0].startswith("id,paper,section,claim")
    md = (root / "claims.md").read_text()
    assert "| claim | paper | measured [95% CI] | verdict | cost | command |" in md
    assert "`toy-quanta-claims run tiny-learns`" in md and "## tiny-learns" in md
    assert json.loads((root / "claims.json").read_text())["counts"]["error"] == 2


def test_a_failed_experiment_and_a_failing_measurement_are_recorded_not_fatal(first):
    root, _, ran, outcomes, table = first
    assert isinstance(ran["tiny_bad"], runner.ExperimentFailed)
    assert "model.width=0" in str(ran["tiny_bad"])  # names the command and the key
    bad, broken = outcomes[1], outcomes[2]
    assert bad.verdict is None and "tiny_bad" in bad.error
    assert broken.verdict is None and broken.error.startswith("ZeroDivisionError")
    assert [r["verdict"] for r in table["claims"]] == [outcomes[0].verdict.verdict, "error", "error"]


def test_a_completed_experiment_is_reused_and_a_rerun_reuses_its_completed_job(first):
    root, selected, _, _, _ = first
    out = runner.run_dir(root, GOOD)
    stamp = (out / "summary.json").stat().st_mtime_ns
    assert runner.run_experiment(root, GOOD) == 0.0  # the mark says it completed: nothing runs
    (out / runner.DONE).unlink()  # as if the ledger had been stopped before marking it
    assert runner.run_experiment(root, GOOD) > 0  # the command runs again ...
    assert (out / "summary.json").stat().st_mtime_ns == stamp  # ... and its job, completed earlier, is left as it was
    assert "completed earlier" in (out / runner.LOG_FILE).read_text()


def test_changed_settings_go_to_a_new_directory():
    other = Experiment("tiny", (*TINY, "seed=1"))
    assert other.key != GOOD.key and other.key.startswith("tiny-")
    assert Experiment("q", ("a=1",), then=("toy-quanta-qdg {dir}",)).command == "toy-quanta a=1 && toy-quanta-qdg DIR"


def test_the_cheapest_selection_keeps_within_its_budget_counting_shared_experiments_once():
    from toy_quanta.cli.claims import cheapest
    from toy_quanta.claims.ledger import experiments

    every = claims()
    for budget in (60, 300, 600, 1200):
        chosen = cheapest(budget)
        assert sum(e.cost_s for e in experiments(chosen)) <= budget
        left = [c for c in every.values() if c not in chosen]
        assert all(sum(e.cost_s for e in experiments([*chosen, c])) > budget for c in left)
    assert len(cheapest(600)) >= 6


def test_the_command_lists_the_claims_and_refuses_an_unknown_one(tmp_path, capsys, monkeypatch):
    from toy_quanta.cli.claims import main

    monkeypatch.chdir(tmp_path)
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert len(listed.splitlines()) >= 25
    assert "quanta-alpha-n" in listed and "claims," in listed.splitlines()[-1]
    assert main(["list", "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert len(as_json) == len(claims()) and all(r["experiments"] for r in as_json)
    with pytest.raises(SystemExit, match=r"no claim 'quanta-alpha-nn' \(did you mean quanta-alpha-n\?\)"):
        main(["run", "quanta-alpha-nn"])
    assert not (tmp_path / "claims").exists()


def test_the_console_script_is_this_main_and_refuses_a_run_without_claims():
    from importlib.metadata import entry_points

    from toy_quanta.cli.claims import main

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "toy-quanta-claims"]
    assert script.load() is main
    with pytest.raises(SystemExit, match="name claims, or --all, or --cheapest SECONDS"):
        main(["run"])


def test_papers_are_registered_once_with_an_anchor():
    claims()
    assert all(anchor and " " not in anchor for _, anchor in PAPERS.values())
