"""The submitting side's wait on SLURM jobs (hydra_plugins/toy_quanta_vmap_launcher/_slurm.py),
on a clock of its own: what SLURM answers is scripted here, in the words squeue and sacct use
(tests/slurm/ runs the same code against a real slurmctld); and, in the job, a requeue whose own
scontrol the requeue kills."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from hydra_plugins.toy_quanta_vmap_launcher import _slurm
from toy_quanta.errors import ClusterJobLost


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _job(tmp_path: Path, job_id: str) -> SimpleNamespace:
    paths = SimpleNamespace(result_pickle=tmp_path / f"{job_id}_result.pkl", stderr=tmp_path / f"{job_id}_log.err")
    return SimpleNamespace(job_id=job_id, paths=paths, results=lambda: [f"results of {job_id}"])


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(_slurm.time, "sleep", clock.sleep)
    return clock


def _script(monkeypatch, clock: Clock, timeline) -> list[float]:
    """SLURM's answers: timeline(now, job_ids) -> {job_id: (state, reason)} or a str (no answer).
    Returns the times it was asked."""
    asked: list[float] = []

    def states(job_ids):
        asked.append(clock.now)
        return timeline(clock.now, list(job_ids))

    monkeypatch.setattr(_slurm, "states", states)
    return asked


def test_a_job_that_ends_without_a_result_is_lost_after_the_grace_naming_it_and_its_state(tmp_path, clock,
                                                                                              monkeypatch):
    jobs = [_job(tmp_path, "7_0"), _job(tmp_path, "7_1")]

    def timeline(now, ids):
        if now >= 10 and not jobs[1].paths.result_pickle.exists():
            jobs[1].paths.result_pickle.write_text("done")  # 7_1 completes
        return {i: ("CANCELLED", "") if i == "7_0" and now >= 20 else ("RUNNING", "") for i in ids}

    asked = _script(monkeypatch, clock, timeline)
    outcomes = _slurm.wait(jobs, ["group 0", "group 1"], should_stop=lambda: None, clock=clock)
    lost, kept = outcomes
    assert kept == ["results of 7_1"]  # the other job's results stand
    assert isinstance(lost, ClusterJobLost) and lost.job_id == "7_0"
    assert str(lost) == (f"SLURM job 7_0 (group 0) ended CANCELLED without writing a result; its log: "
                         f"{jobs[0].paths.stderr}")
    first_ended = next(t for t in asked if t >= 20)
    assert first_ended + _slurm.RESULT_GRACE_S <= clock.now < first_ended + _slurm.RESULT_GRACE_S + 2
    assert all(b - a >= _slurm.STATE_EVERY_S for a, b in zip(asked, asked[1:]))  # SLURM asked every 5 s, not more


def test_a_result_written_late_within_the_grace_is_taken(tmp_path, clock, monkeypatch):
    job = _job(tmp_path, "8")

    def timeline(now, ids):
        if now >= 12:  # a shared filesystem shows the result file 7 s after SLURM said COMPLETED
            job.paths.result_pickle.write_text("done")
        return {"8": ("COMPLETED", "")} if now >= 5 else {"8": ("RUNNING", "")}

    _script(monkeypatch, clock, timeline)
    assert _slurm.wait([job], ["job 0"], should_stop=lambda: None, clock=clock) == [["results of 8"]]


@pytest.mark.parametrize("alive", ["PENDING", "REQUEUED", "COMPLETING", "PREEMPTED", "SUSPENDED"])
def test_a_requeued_or_waiting_job_is_waited_on_for_as_long_as_slurm_keeps_it(tmp_path, clock, monkeypatch, alive):
    """Defect 1's other half: a requeued job (no result: leave_to_scheduler) is not given up on."""
    job = _job(tmp_path, "9")

    def timeline(now, ids):
        if now >= 3000:
            job.paths.result_pickle.write_text("done")
        return {"9": (alive, "BeginTime")}

    _script(monkeypatch, clock, timeline)
    assert _slurm.wait([job], ["group 0"], should_stop=lambda: None, clock=clock) == [["results of 9"]]
    assert clock.now >= 3000


def test_a_job_slurm_no_longer_knows_is_lost_too(tmp_path, clock, monkeypatch):
    job = _job(tmp_path, "10")
    _script(monkeypatch, clock, lambda now, ids: {"10": (_slurm.GONE, "")})
    [lost] = _slurm.wait([job], ["group 3"], should_stop=lambda: None, clock=clock)
    assert "SLURM job 10 (group 3) is unknown to the scheduler without writing a result" in str(lost)


def test_a_silent_scheduler_ends_the_wait_after_its_limit_and_says_why(tmp_path, clock, monkeypatch):
    job = _job(tmp_path, "11")
    _script(monkeypatch, clock, lambda now, ids: "squeue: error: Unable to contact slurm controller (connect failure)")
    [lost] = _slurm.wait([job], ["group 0"], should_stop=lambda: None, clock=clock)
    assert _slurm.SILENT_LIMIT_S <= clock.now < _slurm.SILENT_LIMIT_S + 2 * _slurm.STATE_EVERY_S
    assert "has not answered for 600 s (squeue: error: Unable to contact slurm controller" in str(lost)


def test_a_stop_request_ends_the_wait_and_the_jobs_go_on(tmp_path, clock, monkeypatch):
    job = _job(tmp_path, "12")
    _script(monkeypatch, clock, lambda now, ids: {"12": ("RUNNING", "")})
    assert _slurm.wait([job], ["group 0"], should_stop=lambda: 15 if clock.now > 30 else None, clock=clock) == [None]


def test_the_wait_says_which_jobs_it_waits_on_and_why_at_each_change_and_every_ten_minutes(tmp_path, clock,
                                                                                          monkeypatch, caplog):
    jobs = [_job(tmp_path, f"13_{i}") for i in range(8)]

    def timeline(now, ids):
        if now >= 1500:
            for job in jobs:
                job.paths.result_pickle.write_text("done")
        return {i: ("RUNNING", "") if i == "13_0" and now >= 60 else ("PENDING", "Resources") for i in ids}

    _script(monkeypatch, clock, timeline)
    with caplog.at_level(logging.INFO, logger=_slurm.log.name):
        _slurm.wait(jobs, [f"group {i}" for i in range(8)], should_stop=lambda: None, clock=clock)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("waiting on 8 SLURM jobs: 13_0 (group 0) PENDING (Resources); 13_1 (group 1) PENDING "
                        "(Resources); 13_2 (group 2) PENDING (Resources); 13_3 (group 3) PENDING (Resources); "
                        "13_4 (group 4) PENDING (Resources); and 3 more: 3 PENDING")
    assert lines[1].startswith("waiting on 8 SLURM jobs after 1 min: 13_0 (group 0) RUNNING; 13_1")
    assert len(lines) == 4  # the change at 60 s, then again at 660 s and 1260 s: nothing changed
    assert lines[2].startswith("waiting on 8 SLURM jobs after 11 min:")


def test_states_reads_squeue_then_sacct_for_the_jobs_squeue_has_forgotten(monkeypatch):
    """The commands' own output, as SLURM 22.05 prints it (checked against slurmctld by hand)."""
    calls = []

    def run(command):
        calls.append(command[0])
        if command[0] == "squeue":
            return 0, "20_0|RUNNING|None\n20_1|PENDING|Resources\n21|REQUEUED|BeginTime\n"
        return 0, "19|CANCELLED by 0\n"

    monkeypatch.setattr(_slurm, "_run", run)
    assert _slurm.states(["20_0", "20_1", "21", "19", "18"]) == {
        "20_0": ("RUNNING", ""), "20_1": ("PENDING", "Resources"), "21": ("REQUEUED", "BeginTime"),
        "19": ("CANCELLED", ""), "18": (_slurm.GONE, "")}
    assert calls == ["squeue", "sacct"]


def test_states_without_accounting_calls_a_forgotten_job_gone_and_a_dead_controller_no_answer(monkeypatch):
    answers = {"squeue": (1, "slurm_load_jobs error: Invalid job id specified\n"),
               "sacct": (1, "Slurm accounting storage is disabled\n")}
    monkeypatch.setattr(_slurm, "_run", lambda command: answers[command[0]])
    assert _slurm.states(["30"]) == {"30": (_slurm.GONE, "")}
    answers["squeue"] = (1, "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n")
    assert _slurm.states(["30"]) == "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"


def test_a_requeue_whose_scontrol_the_requeue_itself_kills_leaves_no_result(monkeypatch):
    """The job side (_submitit.SubmititLaunching._in_job). On USR2, submitit's handler runs
    `scontrol requeue` as a child of the job, and SLURM's requeue sends SIGTERM to the job's every
    process, scontrol too: its CalledProcessError must not become the job's result (seen against
    slurmctld: the sweep failed while SLURM ran the job again). A SLURM job exits without one
    (143); a local job keeps submitit's error."""
    import os
    import signal
    import subprocess

    import submitit

    from hydra_plugins.toy_quanta_vmap_launcher._submitit import SubmititSlurmLauncher
    from hydra_plugins.toy_quanta_vmap_launcher._vmap_submitit import VmapSubmititLocalLauncher
    from toy_quanta import stopping

    monkeypatch.setattr(stopping, "_requested", None)
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: SimpleNamespace(_usr_sig=lambda: signal.SIGUSR2))

    def submitit_handler(signum, frame):  # what checkpoint_and_try_requeue raised
        raise subprocess.CalledProcessError(-signal.SIGTERM, ["scontrol", "requeue", "7"])

    def work():
        os.kill(os.getpid(), signal.SIGUSR2)  # SLURM's USR2 before the time limit
        assert stopping.requested() == signal.SIGUSR2  # a stop request, not submitit's handler
        return "interrupted"

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with pytest.raises(SystemExit) as ended:
            SubmititSlurmLauncher()._in_job(work, lambda out: out == "interrupted")
        assert ended.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler  # given back
        with pytest.raises(subprocess.CalledProcessError):
            VmapSubmititLocalLauncher()._in_job(work, lambda out: out == "interrupted")
    finally:
        signal.signal(signal.SIGUSR2, previous)
