"""docs/adding-a-task.md, run exactly as the page shows it: its files written into an empty folder,
then every `toy-quanta` command of the page, in order, from that folder."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "adding-a-task.md"
BIN = Path(sys.executable).parent


def page_files(text: str) -> dict[str, str]:
    return dict(re.findall(r"^File `([^`]+)`:\n\n```\w+\n(.*?)```", text, re.M | re.S))


def page_commands(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("toy-quanta")]


def _run_page(folder: Path) -> tuple[Path, list[subprocess.CompletedProcess]]:
    text = PAGE.read_text()
    for name, content in page_files(text).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    procs = []
    for command in page_commands(text):
        program, *args = shlex.split(command)
        procs.append(subprocess.run([str(BIN / program), *args], cwd=folder, capture_output=True, text=True,
                                    timeout=600))
    return folder, procs


def background_runs(items, tmp_path_factory) -> dict:
    """The page's commands, one after another in their folder, in the suite's background pool."""
    if not any("ran" in item.fixturenames for item in items):
        return {}
    folder = tmp_path_factory.mktemp("user_task")
    return {"page": lambda: _run_page(folder)}


@pytest.fixture(scope="module")
def ran(background) -> tuple[Path, list[subprocess.CompletedProcess]]:
    return background["page"].result()


def test_the_page_has_its_files_and_commands():
    text = PAGE.read_text()
    assert set(page_files(text)) == {"majority.py", "conf/experiment/majority.yaml"}
    assert len(page_commands(text)) == 5


def test_every_command_of_the_page_succeeds(ran):
    _, procs = ran
    for proc in procs:
        assert proc.returncode == 0, f"{proc.args}\nSTDOUT\n{proc.stdout}\nSTDERR\n{proc.stderr}"


def test_the_user_task_learns_its_majority(ran):
    """Each job of the page wrote the usual files, and its members learned the majority."""
    folder, _ = ran
    summaries = [json.loads(p.read_text()) for p in folder.rglob("summary.json")]
    assert len(summaries) == 5  # the plain run, the experiment, its noisy members, and the sweep's two grid points
    for summary in summaries:
        job = Path(summary["output_dir"])
        in_sweep = (job.parent / "multirun.yaml").is_file()  # a multirun's jobs draw no figures by default
        assert {"config.yaml", "metrics.parquet", "checkpoint.msgpack", *(() if in_sweep else ("curves.png",))} <= {
            p.name for p in job.iterdir()}
        for member in summary["members"]:
            assert member["final"]["test_acc"] > 0.95, member
            # its evaluate logs ctx.train_loss as it is: at step 0 the first batch's loss (about
            # ln 2 for an untrained model on two balanced classes), so no spike from a 0 at step 0
            assert member["loss_spikes"]["count"] == 0, member["loss_spikes"]
        metrics = pd.read_parquet(job / "metrics.parquet")
        first = metrics[(metrics.step == 0) & (metrics.metric == "train_loss")].value
        assert len(first) and (first > 0.3).all() and (first < 2.0).all(), first


def test_the_users_own_key_varies_per_member_in_one_program(ran):
    """+ensemble.noise=[0.0,0.2]: four members (2 noise levels x 2 seeds) in one job; each member's
    training accuracy is near 1 - its own noise (its flipped labels reached its batches), and every
    member still learns the clean test set."""
    folder, _ = ran
    (summary,) = [s for s in (json.loads(p.read_text()) for p in folder.rglob("summary.json"))
                  if s["name"] == "majority_noise"]
    members = summary["members"]
    assert [(m["task.noise"], m["seed"]) for m in members] == [(0.0, 0), (0.0, 1), (0.2, 0), (0.2, 1)]
    frame = pd.read_parquet(Path(summary["output_dir"]) / "metrics.parquet")
    late = frame[(frame.metric == "train_acc") & (frame.step >= frame.step.max() // 2)]
    for m in members:
        train_acc = late[late.member == m["member"]].value.mean()
        assert abs(train_acc - (1 - m["task.noise"])) < 0.05, (m["task.noise"], train_acc)
        assert m["final"]["test_acc"] > 0.95, m
        assert m["diagnosis"] in ("generalised", "grokked"), m["diagnosis"]
    assert set(frame["task.noise"]) == {0.0, 0.2}


def test_the_sweep_ran_both_grid_points_and_the_report_reads_them(ran):
    folder, procs = ran
    sweep = [json.loads(p.read_text()) for p in (folder / "multirun").rglob("summary.json")]
    assert sorted(s["swept"]["task.k"] for s in sweep) == [3, 5]
    report = json.loads(procs[-1].stdout.strip().splitlines()[-1])
    assert report["n_jobs"] == 2 and report["n_failed"] == 0
    (experiment,) = report["experiments"].values()
    assert experiment["task"] == "majority" and all("test_acc" in m for m in experiment["members"])


def test_a_bad_value_of_the_user_task_is_one_clear_line(ran):
    folder, _ = ran
    proc = subprocess.run([str(BIN / "toy-quanta"), "tasks_module=majority.py", "~experiment", "task=majority",
                           "model=dense_mlp", "task.k=4"], cwd=folder, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "task.k=4 is not allowed: an odd integer" in proc.stderr
    assert "Traceback" not in proc.stderr
    missing = subprocess.run([str(BIN / "toy-quanta"), "tasks_module=nowhere.py", "task=majority"], cwd=folder,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "tasks_module='nowhere.py' is not allowed" in missing.stderr
