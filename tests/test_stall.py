"""The stall watchdog (issue 25, item 4), with a real driver and real local jobs of the stand-in
trainer: a job held by the test hold after epoch 1 is SIGSTOPped there, so its epoch lines stop
for good (as a hung collective or a dead mount would stop them); the driver reports it, cancels it
and retries its trial as an infrastructure failure, and the retried job resumes after epoch 1. A
study whose `max_failures` the stall exhausts ends with one line naming it. No timing wins a race:
the stopped job stays stopped until the driver acts, and the test waits for what the driver writes.
The limits' defaults (from the expected epoch time) are checked on their own."""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from orchestrate_setup import STANDIN, Driver, epochs_of, jobs_of, trial_dirs
from survive_setup import hold_env, held, one_trial_study, release_all, wait_for

from attnsweep.pipelines.config.executor import StallSettings
from attnsweep.pipelines.config.study import StudyError, load_study
from attnsweep.pipelines.sweep import estimate, stall
from attnsweep.pipelines.trial.failures import INFRASTRUCTURE
from attnsweep.pipelines.trial.folder import TrialFolder

REPO = Path(__file__).resolve().parents[1]
# Reported 12 s and cancelled 30 s after the last epoch line: far beyond the stand-in's start-up and
# 0.2 s epochs, so only the stopped job can reach them.
STALL = {"warn_min": 0.2, "cancel_min": 0.5}


def _study(tmp_path: Path, max_failures: int, executor: dict | None = None, stall_limits: dict = STALL) -> Path:
    path = one_trial_study(tmp_path, epochs=3)
    data = yaml.safe_load(path.read_text())
    data["executor"] = {**(executor or data["executor"]), "stall": stall_limits}
    data["max_failures"] = max_failures
    data.pop("features", None)  # the stand-in keeps no weights to analyse
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _stop_held_job(tmp_path: Path, driver: Driver, log: Path) -> tuple[int, float]:
    """SIGSTOP the job the hold keeps after epoch 1, then lift the hold (the stopped process cannot
    see it) -> its pid and when it was stopped."""
    hold_dir = tmp_path / "hold"
    (marker,) = wait_for(lambda: held(hold_dir), "the job to finish epoch 1", driver, log)
    pid = int(marker.read_text())
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    release_all(hold_dir)
    return pid, stopped_at


def _lines(log: Path, pattern: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if re.search(pattern, line)]


def _run(tmp_path: Path, max_failures: int, env: dict | None = None) -> tuple[Driver, Path, Path]:
    study = _study(tmp_path, max_failures)
    out, log = tmp_path / "out", tmp_path / "driver.log"
    env = {**STANDIN, **hold_env(tmp_path / "hold"), **(env or {})}
    driver = Driver("run", str(study), "--out", str(out), "--no-report", env=env, log=log)
    return driver, out, log


@pytest.mark.slow
def test_a_stopped_job_is_reported_then_cancelled_and_its_trial_resumes_as_a_retry(tmp_path):
    driver, out, log = _run(tmp_path, max_failures=1)
    try:
        pid, stopped_at = _stop_held_job(tmp_path, driver, log)
        (trial,) = trial_dirs(out)
        (first_job,) = jobs_of(trial)
        report = rf"trial {trial.name} \(job {first_job}\): no new epoch line for .*stalled"
        warned = wait_for(lambda: _lines(log, report), "the stall report", driver, log)
        reported_s = time.monotonic() - stopped_at
        cancelled = wait_for(lambda: _lines(log, rf"\(job {first_job}\): stalled: .*cancelled after 0:00:30"),
                             "the stall's cancel", driver, log)
        cancelled_s = time.monotonic() - stopped_at
        assert driver.proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        driver.cleanup()
    print(f"after SIGSTOP: reported in {reported_s:.1f} s, cancelled in {cancelled_s:.1f} s "
          f"(limits 12 s and 30 s from the last epoch line)")
    text = log.read_text()
    # one line naming the trial, its job and how long since its last epoch; then the cancel and the retry
    assert len(warned) == 1 and "(epoch 1)" in warned[0] and "reported after 0:00:12" in warned[0], warned
    assert re.search(r"no new epoch line for 0:00:1[2-9]", warned[0]), warned
    assert len(cancelled) == 1 and "an infrastructure failure of the trial" in cancelled[0], cancelled
    retried = rf"failed \(1 of 1 retries\): {re.escape(str(trial))}: job {first_job} stalled"
    assert re.search(retried, text), text[-3000:]
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    # the retried job went on after epoch 1: every epoch once, the trial finished and recorded once
    jobs = jobs_of(trial)
    assert len(jobs) == 2 and jobs[0] == first_job
    assert epochs_of(trial) == [1, 2, 3]
    assert TrialFolder(trial).final_result()["status"] == "ok"
    rows = pd.read_parquet(out / "results")
    assert len(rows) == 2 and set(rows["status"]) == {"ok"} and not rows.duplicated(["trial_id", "eval_set"]).any()
    assert "stalled" not in " ".join(_lines(log, rf"job {jobs[1]}"))  # the retry ran without a stall


@pytest.mark.slow
@pytest.mark.parametrize("last_epoch", ["epoch 1", "no epoch yet"], ids=["stopped-after-epoch-1", "no-first-epoch"])
def test_stalls_that_exhaust_max_failures_fail_the_study_with_one_line(tmp_path, last_epoch):
    """The stall of a job SIGSTOPped after epoch 1, or of one that has not written its first epoch
    line (the stand-in's first epoch takes an hour) fails its trial when no retry is left."""
    pace = {"ATTNSWEEP_STANDIN_EPOCH_S": "3600"} if last_epoch == "no epoch yet" else {}
    driver, out, log = _run(tmp_path, max_failures=0, env=pace)
    try:
        if last_epoch == "epoch 1":
            _stop_held_job(tmp_path, driver, log)
        rc = driver.proc.wait(timeout=300)
    finally:
        driver.cleanup()
    (trial,) = trial_dirs(out)
    (job,) = jobs_of(trial)
    assert rc == 1, log.read_text()[-3000:]
    (last,) = _lines(log, r"^error: ")
    assert re.fullmatch(rf"error: 1 trial\(s\) failed \(1 infrastructure; first: repeat \S+ repeat-0: "
                        rf"infrastructure, job {job} stalled: no new epoch line for 0:00:3\d \({last_epoch}\), "
                        r"cancelled after 0:00:30 \(executor.stall\)\); .*--resume` retries the infrastructure "
                        r"failures.*", last), last
    result = TrialFolder(trial).result()
    assert result["status"] == "failed" and result["failure"] == INFRASTRUCTURE, result
    rows = pd.read_parquet(out / "results")
    assert set(rows["status"]) == {"failed"} and rows["trial_id"].nunique() == 1


@pytest.mark.slurm
@pytest.mark.slow
def test_queue_time_does_not_count(slurm_cluster, tmp_path):
    """A SLURM job held in the queue (sbatch --hold) for longer than both limits is neither reported
    nor cancelled; released, it runs and the study finishes with its one job."""
    slurm = {"cpus_per_task": 1, "mem_gb": 0.1, "timeout_min": 30, "extra": {"hold": True}}
    study = _study(tmp_path, 0, {"kind": "slurm", "slurm": slurm}, {"warn_min": 0.1, "cancel_min": 0.2})
    out, log = tmp_path / "out", tmp_path / "driver.log"
    driver = Driver("run", str(study), "--out", str(out), "--no-report", env={**slurm_cluster.env, **STANDIN}, log=log)
    try:
        (trial,) = wait_for(lambda: trial_dirs(out) if trial_dirs(out) and jobs_of(trial_dirs(out)[0]) else None,
                            "the job's submission", driver, log)
        (job,) = jobs_of(trial)
        seen = time.monotonic()
        state = lambda: slurm_cluster.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()  # noqa: E731
        # queued for twice the cancel limit (12 s), by the real clock the limits are compared with
        wait_for(lambda: time.monotonic() - seen > 24 and state() == "PENDING", "24 s in the queue", driver, log)
        assert not _lines(log, "no new epoch line"), log.read_text()[-3000:]
        slurm_cluster.run("scontrol", "release", job)
        assert driver.proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        driver.cleanup()
    assert not _lines(log, "no new epoch line"), log.read_text()[-3000:]
    assert jobs_of(trial) == [job] and epochs_of(trial) == [1, 2, 3]
    assert TrialFolder(trial).final_result()["status"] == "ok"


def test_default_limits_follow_the_expected_epoch_time():
    unset = StallSettings()
    assert stall.limits(unset, 30.0) == stall.Limits(600.0, 1200.0, "expected epoch 30 s")  # at least 10 min
    five_epochs = stall.Limits(1500.0, 3000.0, "calibrated epoch 300 s")
    assert stall.limits(unset, 300.0, "calibrated") == five_epochs
    unknown = stall.Limits(1800.0, None, "no expected epoch time until the variant's first epoch lines")
    assert stall.limits(unset, None) == unknown  # reported, never cancelled
    # set in the study: one alone gives the other (x2 or /2), in fractions of a minute too
    assert stall.limits(StallSettings(warn_min=0.5), 300.0) == stall.Limits(30.0, 60.0, "executor.stall")
    assert stall.limits(StallSettings(cancel_min=1), None) == stall.Limits(30.0, 60.0, "executor.stall")
    assert stall.limits(StallSettings(warn_min=1, cancel_min=5), None) == stall.Limits(60.0, 300.0, "executor.stall")


def test_the_expected_epoch_time_is_calibrated_then_learned_from_the_study(tmp_path, monkeypatch):
    from attnsweep.pipelines.trial import job_env

    monkeypatch.setattr(job_env, "machine_cpus", lambda: 2)
    data = yaml.safe_load((REPO / "studies" / "demo.yaml").read_text())
    data.update(out_dir=str(tmp_path / "demo"), variants=["resnet18", "resnet18+se"])
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)  # local, 2 jobs at once on 2 cores: 1 core a job
    # measured: 1.2 s per training image and epoch on one core, 60 MB checkpoints (0.4 s each)
    measured = [estimate.Measured("resnet18", study.image_size, "local", 1, 100, 2, 120.0, 30.0, 1.0, 60_000_000)]
    epoch_s = {v: estimate.epoch_seconds(study, v, 200, measured) for v in study.variant_ids}
    assert epoch_s == {"resnet18": pytest.approx(240.4), "resnet18+se": None}  # another model: not measured
    dog = stall.Watchdog({v: study.variant(v).executor.stall for v in study.variant_ids}, epoch_s)
    assert dog.limits("resnet18").warn_s == pytest.approx(5 * 240.4) and dog.limits("resnet18").cancel_s == \
        pytest.approx(10 * 240.4)
    assert dog.limits("resnet18+se").cancel_s is None
    dog._learn("resnet18+se", [{"epoch": 1, "seconds": 200.0}, {"epoch": 2, "seconds": 400.0}, {"epoch": 3}])
    assert dog.limits("resnet18+se") == stall.Limits(1500.0, 3000.0, "this study's epoch 300 s")


@pytest.mark.parametrize("stall_field, message", [
    ({"warn_min": 0}, "executor.stall.warn_min: Input should be greater than 0 (got 0)"),
    ({"warn_min": 2, "cancel_min": 1}, "executor.stall: cancel_min must be above warn_min, got warn_min=2.0 "
                                       "cancel_min=1.0"),
    ({"cancel": 3}, "executor.stall.cancel: Extra inputs are not permitted (got 3)"),
])
def test_a_bad_stall_field_is_one_line(tmp_path, stall_field, message):
    path = one_trial_study(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["executor"]["stall"] = stall_field
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert str(err.value) == f"{path}: {message}"
