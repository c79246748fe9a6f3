"""Monogenic against polygenic samples: the classifier (toy_quanta.analysis.genic) on synthetic
curves, and toy-quanta-genic on a .npy file and on real sweeps."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import _multirun
from toy_quanta.analysis import genic
from toy_quanta.analysis.genic import FLAT, MONOGENIC, POLYGENIC, by_group, classify
from toy_quanta.cli import genic as cli

WIDTHS = np.array([8, 16, 32, 64, 128, 256], np.float64)  # the real check's width sweep


def sharp_curves(rng, n: int, scales: np.ndarray, noise: float = 0.02) -> np.ndarray:
    """Half steps between two random adjacent scales, half steep sigmoids (in log scale) centred
    anywhere between the second and the second-to-last scale; from about 1 to about 0."""
    x = np.log2(scales)
    hi, lo = rng.uniform(0.8, 1.2, (n, 1)), rng.uniform(0.0, 0.1, (n, 1))
    step_at = rng.integers(1, len(x), (n, 1))
    steps = np.where(np.arange(len(x)) < step_at, hi, lo)
    centre = rng.uniform(x[1], x[-2], (n, 1))
    sigmoids = lo + (hi - lo) / (1 + np.exp(10 * (x - centre)))
    curves = np.where(np.arange(n)[:, None] % 2 == 0, steps, sigmoids)
    return curves + rng.normal(0, noise, curves.shape)


def power_law_curves(rng, n: int, scales: np.ndarray, noise: float = 0.005) -> np.ndarray:
    """Smooth declines c + (s / s0)^-a with a in [0.05, 0.45] and an irreducible c in [0, 1]."""
    a, c = rng.uniform(0.05, 0.45, (n, 1)), rng.uniform(0.0, 1.0, (n, 1))
    curves = c + (scales / scales[0]) ** -a
    return curves + rng.normal(0, noise, curves.shape)


@pytest.mark.parametrize("scales", [WIDTHS, np.geomspace(10, 5000, 10)])
def test_sharp_curves_are_monogenic_and_power_laws_polygenic(scales):
    rng = np.random.default_rng(0)
    sharp = classify(sharp_curves(rng, 400, scales), scales)
    assert (sharp.labels_N == MONOGENIC).all(), np.sort(sharp.sharpness_N)[:5]
    assert sharp.sharpness_N.min() >= 0.45  # a sigmoid splits at worst in two halves
    smooth = classify(power_law_curves(rng, 400, scales), scales)
    assert (smooth.labels_N == POLYGENIC).all(), np.sort(smooth.sharpness_N)[-5:]
    assert smooth.fractions == {MONOGENIC: 0.0, POLYGENIC: 1.0, FLAT: 0.0, "monogenic_of_nonflat": 0.0}
    assert sharp.resolvable and smooth.resolvable


def test_flat_curves_and_the_learned_level():
    rng = np.random.default_rng(1)
    learned = rng.uniform(0, 0.01, (50, 6))  # always learned
    unlearned = 1 + rng.normal(0, 0.01, (50, 6))  # never learned, quietly
    worse = np.linspace(0.1, 1.0, 6) + np.zeros((50, 1))  # got worse with scale
    result = classify(np.concatenate([learned, unlearned, worse]), WIDTHS)
    assert (result.labels_N == FLAT).all() and np.isnan(result.sharpness_N).all() and (result.emerge_N == -1).all()
    assert result.fractions["flat"] == 1.0 and result.fractions["monogenic_of_nonflat"] is None
    # Never learned but noisy (sparse parity's unlearned samples): single noisy jumps look like sharp
    # falls, unless a learned level is asked for.
    noisy = np.clip(1 + rng.normal(0, 0.3, (200, 6)), 0.2, None)
    assert (classify(noisy, WIDTHS).labels_N != FLAT).mean() > 0.9
    with_level = classify(noisy, WIDTHS, learned_below=0.1)
    assert (with_level.labels_N == FLAT).all() and "below 0.1 bits at no scale" in with_level.criterion


def test_fall_survives_a_larger_model_that_missed_it():
    """Learned at one width and missed at the next: one sharp fall, not flat."""
    curves = np.array([[1.0, 1.0, 0.0, 1.0, 1.0, 1.0],
                       [1.0, 1.0, 0.0, 1.0, 0.0, 0.0],
                       [1.0, 0.7, 0.5, 0.3, 0.15, 0.0]])
    result = classify(curves, WIDTHS, learned_below=0.1)
    assert result.labels_N.tolist() == [MONOGENIC, MONOGENIC, POLYGENIC]
    np.testing.assert_allclose(result.fall_N, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(result.sharpness_N, [1.0, 1.0, 0.3])
    assert result.emerge_N.tolist() == [2, 2, 1]
    rows = by_group(result, np.array([0, 0, 1]))
    assert rows[0]["monogenic"] == 2 and rows[1]["polygenic"] == 1 and rows[1]["monogenic_of_nonflat"] == 0.0
    # Two intervals hold half of the gradual fall: monogenic with a wider window.
    assert classify(curves, WIDTHS, window=2, threshold=0.4).labels_N[2] == MONOGENIC
    assert not classify(curves[:, :3], WIDTHS[:3]).resolvable


@pytest.mark.parametrize("loss, scales, kwargs, match", [
    (np.zeros(6), None, {}, "2-D"),
    (np.zeros((4, 2)), None, {}, "at least 3 scales"),
    (np.zeros((0, 5)), None, {}, "at least 1 sample"),
    (np.array([[1.0, np.nan, 0.0]]), None, {}, "finite"),
    (np.array([["a", "b", "c"]]), None, {}, "real numbers"),
    (np.zeros((2, 4)), [1, 2, 3], {}, "one scale per column"),
    (np.zeros((2, 4)), [1, 2, 2, 3], {}, "strictly increasing"),
    (np.zeros((2, 4)), None, {"window": 3}, "window=3"),
    (np.zeros((2, 4)), None, {"window": 0}, "window=0"),
    (np.zeros((2, 4)), None, {"threshold": 0.0}, "threshold=0.0"),
    (np.zeros((2, 4)), None, {"threshold": 1.5}, "threshold=1.5"),
    (np.zeros((2, 4)), None, {"min_drop": 0.0}, "min_drop=0.0"),
    (np.zeros((2, 4)), None, {"learned_below": float("inf")}, "learned_below=inf"),
])
def test_bad_input_is_rejected(loss, scales, kwargs, match):
    with pytest.raises(ValueError, match=match):
        classify(loss, scales, **kwargs)


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toy_quanta.cli.genic", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_cli_on_a_npy_file(tmp_path):
    rng = np.random.default_rng(2)
    scales = np.geomspace(1e6, 1e9, 10)
    loss = np.concatenate([3 * power_law_curves(rng, 60, scales), 3 * sharp_curves(rng, 40, scales)])
    np.save(tmp_path / "tokens.npy", loss)
    np.save(tmp_path / "sizes.npy", scales)
    proc = _run_cli(["tokens.npy", "--scales", "sizes.npy", "--examples", "3"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = _last_json(proc.stdout)
    assert line["fractions"] == {"monogenic": 0.4, "polygenic": 0.6, "flat": 0.0, "monogenic_of_nonflat": 0.4}
    assert line["scale_kind"] == "given" and line["n_scales"] == 10
    out = tmp_path / "tokens_genic"
    assert {p.name for p in out.iterdir()} == {"genic.json", "curves.npz", "genic.png"}
    report = json.loads((out / "genic.json").read_text())
    assert report["counts"] == {"monogenic": 40, "polygenic": 60, "flat": 0} and report["learned_below"] is None
    np.testing.assert_allclose(report["scales"], scales)
    curves = np.load(out / "curves.npz")
    np.testing.assert_array_equal(curves["loss_SxK"], loss)
    assert curves["labels_S"].tolist() == [POLYGENIC] * 60 + [MONOGENIC] * 40 and "subtask_S" not in curves


@pytest.mark.parametrize("make, args, match", [
    (None, ["missing.npy"], "no such file"),
    (lambda d: np.save(d / "x.npy", np.zeros(5)), ["x.npy"], "2-D"),
    (lambda d: np.save(d / "x.npy", np.zeros((5, 2))), ["x.npy"], "at least 3 scales"),
    (lambda d: (d / "x.npy").write_text("not numpy"), ["x.npy"], "x.npy"),
    (lambda d: np.save(d / "x.npy", np.zeros((5, 4))), ["x.npy", "--scales", "x.npy"], "one scale per column"),
    (lambda d: np.save(d / "x.npy", np.zeros((5, 4))), ["x.npy", "--threshold", "2"], "threshold=2.0"),
    (lambda d: (d / "empty").mkdir(), ["empty"], "not a toy-quanta sweep"),
    (lambda d: (d / "empty").mkdir(), ["empty", "--scales", "s.npy"], "--scales goes with a .npy"),
])
def test_cli_bad_input(tmp_path, monkeypatch, capsys, make, args, match):
    """Exit code 2 and one line on stderr (main is what the console script runs)."""
    if make:
        make(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err and err.startswith("toy-quanta-genic: ")


def background_runs(items, tmp_path_factory) -> dict:
    """The module's two sweeps (independent subprocesses), started at the start of the session
    (conftest._background_runs) when a selected test needs them."""
    names = {item.originalname for item in items}
    jobs = {}
    if names & {"test_cli_on_a_width_sweep", "test_sweep_errors"}:
        # model.width=4,8,16 on 4 subtasks, a few hundred steps each
        jobs["width"] = lambda: _multirun(tmp_path_factory, "genic_width", ["train.steps=300", "train.batch_size=128"],
                                          ["model.width=4,8,16"])
    if "test_data_sweep_in_one_job" in names:
        jobs["data"] = lambda: _multirun(tmp_path_factory, "genic_data", ["ensemble.D=[64,256,1024]", "train.steps=100"], [])
    return jobs


@pytest.fixture(scope="module")
def sweeps(background) -> dict:
    return background


@pytest.fixture(scope="module")
def width_sweep(sweeps) -> Path:
    """model.width=4,8,16 on 4 subtasks, a few hundred steps each."""
    return sweeps["width"].result()


@pytest.mark.slow  # 20 s with its sweep; test_cli_on_a_npy_file and test_data_sweep_in_one_job stay fast
def test_cli_on_a_width_sweep(width_sweep, tmp_path):
    proc = _run_cli([width_sweep, "--n-samples", "3000", "--examples", "4"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = _last_json(proc.stdout)
    assert line["scale_kind"] == "width" and line["n_scales"] == 3 and line["resolvable"] is False
    assert abs(sum(line["fractions"][k] for k in ("monogenic", "polygenic", "flat")) - 1) < 1e-9
    out = width_sweep / "genic"
    report = json.loads((out / "genic.json").read_text())
    assert report["scales"] == [4, 8, 16] and report["seed"] == 0 and report["learned_below"] == 0.1
    assert [m["job"] for m in report["models"]] == [str(width_sweep / j) for j in ("0", "1", "2")]
    assert len(report["per_subtask"]) == 4 and sum(r["n"] for r in report["per_subtask"]) == 3000
    curves = np.load(out / "curves.npz")
    assert curves["loss_SxK"].shape == (3000, 3) and np.isfinite(curves["loss_SxK"]).all()
    assert curves["subtask_S"].shape == (3000,) and set(np.unique(curves["subtask_S"])) <= {0, 1, 2, 3}
    # The frequent subtask is learned by some width: its samples' loss is low at the largest.
    assert np.median(curves["loss_SxK"][curves["subtask_S"] == 0, -1]) < 0.5
    assert (out / "genic.png").stat().st_size > 0


def test_sweep_errors(width_sweep, tmp_path, capsys):
    assert cli.main([str(width_sweep / "0"), str(width_sweep / "1")]) == 2
    assert "need at least 3 scales" in capsys.readouterr().err
    assert cli.main([str(width_sweep), "--seed", "5"]) == 2
    assert "seeds [0]" in capsys.readouterr().err
    broken = tmp_path / "job"
    broken.mkdir()
    (broken / "config.yaml").write_text((width_sweep / "0" / "config.yaml").read_text())
    assert cli.main([str(broken)]) == 2
    assert "no completed job with a checkpoint" in capsys.readouterr().err
    # one model of another alpha: its task draws other samples, so it cannot share the others'
    other = tmp_path / "other_alpha"
    for job in ("0", "1", "2"):
        shutil.copytree(width_sweep / job, other / job)
    config = other / "2" / "config.yaml"
    config.write_text(config.read_text().replace("alpha: 0.4", "alpha: 0.7"))
    assert cli.main([str(other)]) == 2
    err = capsys.readouterr().err
    assert "member 0 draws other samples than" in err and "task.alpha" in err, err


@pytest.mark.slow
def test_data_sweep_in_one_job(sweeps):
    """ensemble.D=[...] in one job: the scale axis is the members' task.D."""
    sweep = sweeps["data"].result()  # ensemble.D=[64,256,1024], train.steps=100
    curves = genic.sweep_curves([sweep], n_samples=500)
    assert curves.scale_kind == "D" and curves.scales_G.tolist() == [64, 256, 1024]
    assert curves.loss_NxG.shape == (500, 3) and [m["member"] for m in curves.provenance["models"]] == [0, 1, 2]
    _check_against_numpy(curves, sweep / "0")


def _check_against_numpy(curves, job: Path) -> None:
    """Each column is its member's per-sample loss in bits on the task's samples from SAMPLE_KEY:
    here drawn with the data module's sampler and scored by a float64 NumPy cross-entropy of the
    checkpoint's parameters, independently of the task's program and the model's code."""
    import jax

    from toy_quanta.data.sparse_parity import sample
    from toy_quanta.results import load_run

    run = load_run(job, "genic")
    t = run.cfg.task
    for g, model in enumerate(curves.provenance["models"]):
        m = model["member"]
        task, bits, label = (np.asarray(x) for x in sample(jax.random.key(genic.SAMPLE_KEY), run.member_inputs[m],
                                                           run.members[m]["task.alpha"], len(curves.loss_NxG), t.n))
        np.testing.assert_array_equal(curves.subtask_N, task)
        p = jax.tree.map(lambda x: np.asarray(x[m], np.float64), run.params)
        h = np.maximum(np.concatenate([np.eye(t.n_tasks)[task], bits], 1) @ p["inp"]["kernel"] + p["inp"]["bias"], 0)
        z = h @ p["out"]["kernel"] + p["out"]["bias"]
        want = np.logaddexp(0.0, -np.where(label == 1, 1.0, -1.0) * (z[:, 1] - z[:, 0])) / np.log(2.0)
        np.testing.assert_allclose(curves.loss_NxG[:, g], want, rtol=1e-5, atol=1e-6)
