"""`toy-quanta-report` (toy_quanta.cli.report): headline figures of the latest job of each experiment."""

from __future__ import annotations

import json
import os

import pytest
from omegaconf import OmegaConf

from toy_quanta.cli import report


def _job(path, name, task, summary, mtime=None):
    path.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"name": name, "task": {"name": task}}), path / "config.yaml")
    (path / "summary.json").write_text(json.dumps({"output_dir": str(path), "steps": 100, "wall_time_s": 3.0,
                                                   **summary}))
    if mtime is not None:
        os.utime(path / "summary.json", (mtime, mtime))
    return path


def _member(i, final, **hyper):
    return {"member": i, "seed": 0, "model.init_scale": 1.0, **hyper, "diverged": False, "final": final}


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "outputs"
    mnist = {"steps_to_train_100": 3054.0, "steps_to_val_60": 22051.0, "steps_to_val_80": None, "test_acc": 0.9,
             "param_norm": 55.0}
    _job(root / "omni" / "old", "omnigrok_mnist", "mnist",
         {"status": "completed", "members": [_member(0, {**mnist, "test_acc": 0.1})]}, mtime=1_000)
    _job(root / "omni" / "new", "omnigrok_mnist", "mnist",
         {"status": "completed", "members": [_member(0, {**mnist, "param_norm": 12.0}, **{"model.init_scale": 1.0}),
                                             _member(1, mnist, **{"model.init_scale": 8.0})]}, mtime=2_000)
    _job(root / "lu", "lu_mnist", "mnist",
         {"status": "completed", "members": [_member(i, mnist) for i in range(3)],
          "lu": {"w": [5.0, 10.0, 20.0], "w_c": 9.0, "w_lo": 5.0, "w_hi": 20.0, "at_edge": False,
                 "test_loss_min": 0.01, "l_knee": 10.0, "rows": []}})
    _job(root / "phase", "phase_toy", "symbol_add",
         {"status": "completed", "members": [_member(i, {"rqi": 1.0}) for i in range(4)],
          "phase": {"x": "optim.lr", "y": "optim.weight_decay", "threshold": 0.9, "gap_steps": 1000,
                    "n_members": 4, "counts": {"comprehension": 1, "grokking": 1, "memorisation": 1, "confusion": 1}}})
    many = [_member(i, {"steps_to_train_99": float(100 * i), "steps_to_val_99": None if i % 2 else 500.0,
                        "gap_99": None, "test_acc": 0.5}, **{"optim.lr": 1e-3 * (i + 1)}) for i in range(10)]
    _job(root / "frac", "grok_fraction", "modular", {"status": "completed", "members": many})
    _job(root / "broken", "grok_power", "modular", {"status": "failed", "error": "RuntimeError: boom\ntrace"})
    return root


def test_latest_job_per_experiment_and_its_headline(tree):
    rep = report.report([tree])
    assert set(rep["experiments"]) == {"omnigrok_mnist", "lu_mnist", "phase_toy", "grok_fraction"}
    assert rep["n_jobs"] == 6 and rep["n_failed"] == 1 and rep["failed"][0]["reason"].startswith("RuntimeError")
    omni = rep["experiments"]["omnigrok_mnist"]
    assert omni["output_dir"].endswith("new")  # the later of the two omnigrok_mnist jobs
    rows = omni["members"]
    assert [r["model.init_scale"] for r in rows] == [1.0, 8.0]  # the varying key is listed, seed is not
    assert rows[1]["steps_to_val_60"] == 22051.0 and rows[1]["steps_to_val_80"] is None and rows[0]["param_norm"] == 12.0
    assert "seed" not in rows[0]


def test_lu_and_phase_headlines_replace_member_lists(tree):
    rep = report.report([tree])["experiments"]
    assert rep["lu_mnist"]["lu"]["w_c"] == 9.0 and rep["lu_mnist"]["lu"]["w_lo"] == 5.0 and "members" not in rep["lu_mnist"]
    assert sum(rep["phase_toy"]["phase"]["counts"].values()) == rep["phase_toy"]["n_members"] == 4


def test_large_ensembles_are_summarised_by_medians(tree):
    head = report.report([tree])["experiments"]["grok_fraction"]
    assert head["n_members"] == 10 and head["varying"] == ["optim.lr"]
    assert head["median"]["steps_to_train_99"] == 450.0  # median of 0, 100, ..., 900
    assert head["median"]["steps_to_val_99"] == 500.0 and head["median"]["steps_to_val_99_reached"] == 5
    assert head["median"]["gap_99"] is None and head["median"]["gap_99_reached"] == 0


def test_cli_prints_the_json_line_last(tree, capsys):
    report.main([str(tree)])
    out = capsys.readouterr().out.strip().splitlines()
    last = json.loads(out[-1])
    assert set(last["experiments"]) == {"omnigrok_mnist", "lu_mnist", "phase_toy", "grok_fraction"}
    text = "\n".join(out[:-1])
    assert "w_c = 9" in text and "comprehension 1" in text and "failed:" in text and "boom" in text


@pytest.mark.parametrize("args", [["does/not/exist"], []])
def test_cli_errors_are_one_line_and_exit_2(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no outputs/ or multirun/ here
    with pytest.raises(SystemExit) as exc:
        report.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("toy-quanta-report: error:")


def test_cli_on_a_directory_without_jobs_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        report.main([str(tmp_path / "empty")])
    assert exc.value.code == 2 and "no toy-quanta job" in capsys.readouterr().err


def test_a_vmap_launched_job_shows_its_groups_time(tmp_path, capsys):
    """A job trained with its vmap group has almost no time of its own; the report gives the group's."""
    job = _job(tmp_path / "multirun" / "s" / "0", "sweep", "mnist",
               {"status": "completed", "wall_time_s": 0.02, "members": [_member(0, {"test_acc": 0.9})],
                "group": {"group": 0, "group_jobs": [0, 1, 2], "group_members": 3, "group_wall_time_s": 42.0}})
    head = report.report([tmp_path / "multirun"])["experiments"]["sweep"]
    assert head["group_wall_time_s"] == 42.0 and head["group_jobs"] == 3
    report.main([str(tmp_path / "multirun")])
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"sweep (mnist, 100 steps, 42 s with its group of 3 jobs): {job}"


def test_a_users_task_is_read_from_where_it_ran_or_its_metrics_are_shown_with_a_note(tmp_path, monkeypatch):
    """tasks_module=my_tasks.py, relative to where the job ran: the report, run from elsewhere,
    imports it from there (Hydra's runtime.cwd); if it is gone, the metrics every task logs are
    still shown, with a note naming the module."""
    ran_in = tmp_path / "project"
    ran_in.mkdir()
    (ran_in / "report_test_tasks.py").write_text("# a user's tasks module (registers nothing here)\n")
    final = {"train_loss": 0.1, "train_acc": 0.99, "test_loss": 0.2, "test_acc": 0.95}
    job = _job(ran_in / "outputs" / "mine" / "1", "mine", "majority",
               {"status": "completed", "members": [_member(0, final), _member(1, final, **{"model.init_scale": 2.0})]})
    cfg = OmegaConf.load(job / "config.yaml")
    cfg.tasks_module = "report_test_tasks.py"
    OmegaConf.save(cfg, job / "config.yaml")
    (job / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"cwd": str(ran_in)}}}), job / ".hydra" / "hydra.yaml")
    monkeypatch.chdir(tmp_path)  # not where the job ran

    head = report.report([ran_in / "outputs"])["experiments"]["mine"]
    assert "note" not in head
    assert [row["test_acc"] for row in head["members"]] == [0.95, 0.95]  # unknown task: the core metrics

    (ran_in / "report_test_tasks.py").unlink()
    head = report.report([ran_in / "outputs"])["experiments"]["mine"]
    assert "tasks_module=report_test_tasks.py cannot be imported" in head["note"]
    assert [row["test_loss"] for row in head["members"]] == [0.2, 0.2]
