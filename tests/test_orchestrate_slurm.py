"""The study on the real local SLURM test cluster (slurm/testcluster/): every trial a SLURM job.
A driver stopped with SIGTERM cancels the jobs it owns; a driver killed with SIGKILL leaves them
running and `--resume` re-attaches to them instead of submitting again. And the launcher:
`sbatch slurm/sweep.sbatch STUDY` runs the driver as a SLURM job that submits the trial jobs."""
from __future__ import annotations

import signal
import time

import pandas as pd
import pytest
from orchestrate_setup import (
    REPO,
    Driver,
    epochs_of,
    expected_trainings,
    jobs_of,
    run_attnsweep,
    shrunk_study,
    trial_dirs,
)
from trainer_setup import Hold

from attnsweep.pipelines.trial.folder import TrialFolder

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
EVAL_SETS = 3  # val, test, ood:shifted


def _wait_for(condition, what: str, driver: Driver | None = None, timeout_s: float = 900):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if driver is not None:
            assert driver.proc.poll() is None, f"driver exited: {driver.log.name}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return found


def _held_trials(out, hold: Hold) -> list:
    """Trial folders of the sound learning rate held now (their epoch 1 done, their job running)."""
    held = set(hold.held())
    return [d for d in trial_dirs(out) if d.name in held and TrialFolder(d).config()["lr"] == 0.02]


def test_slurm_study_cancels_on_sigterm_and_reattaches_after_sigkill(slurm_cluster, tmp_path):
    # A grid with a learning rate that diverges: recorded as such, never the one repeated.
    study = shrunk_study(tmp_path, base="demo_slurm.yaml", name="slurmstudy", n_variants=1,
                         search={"algorithm": "grid", "lr": [0.02, 1e6], "weight_decay": [0.0]})
    out = tmp_path / "out"
    args = ("run", str(study), "--out", str(out), "--no-report")

    # 1. SIGTERM while a trial job is held after epoch 1: the driver cancels its jobs, none is left.
    hold1 = Hold(tmp_path / "hold1", after_epoch=1)
    first = Driver(*args, env={**slurm_cluster.env, **hold1.env}, log=tmp_path / "driver1.log")
    try:
        _wait_for(lambda: _held_trials(out, hold1), "a held trial job", first)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=120) == 130
    finally:
        first.cleanup()
    owned = {j for d in trial_dirs(out) for j in jobs_of(d)}
    assert owned
    _wait_for(lambda: not (owned & slurm_cluster.queued()), "the cancelled jobs to leave the queue", timeout_s=60)

    # 2. --resume, then SIGKILL while a trial job is held: the jobs stay in the queue.
    hold2 = Hold(tmp_path / "hold2", after_epoch=1)
    second = Driver(*args, "--resume", env={**slurm_cluster.env, **hold2.env}, log=tmp_path / "driver2.log")
    try:
        held = _wait_for(lambda: _held_trials(out, hold2), "a held trial job", second)
        second.kill()
    finally:
        second.cleanup()
    attached = {d: jobs_of(d) for d in held}
    queued = slurm_cluster.queued()
    for d, ids in attached.items():  # SIGKILL cancels nothing: the held job is still running
        assert ids[-1] in queued, d
    hold2.release(*(d.name for d in trial_dirs(out)))  # also jobs of driver 2 that start later

    # 3. --resume again: the running jobs are re-attached (no new submission) and the study ends.
    done = run_attnsweep(*args, "--resume", env=slurm_cluster.env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for d, ids in attached.items():
        assert jobs_of(d) == ids, d
        assert TrialFolder(d).result_file.exists()
    dirs = trial_dirs(out)
    assert len(dirs) == expected_trainings(study)
    rows = pd.read_parquet(out / "results")
    assert len(rows) == expected_trainings(study) * EVAL_SETS
    assert not rows.duplicated(["trial_id", "eval_set"]).any()
    status = rows.groupby("lr")["status"].unique()
    # Once one split diverged the configuration is settled: a split still training is cancelled.
    assert "diverged" in status[1e6] and set(status[1e6]) <= {"diverged", "stopped"}
    assert list(status[0.02]) == ["ok"]
    assert set(rows.loc[rows["phase"] == "repeat", "lr"]) == {0.02}
    ok = set(rows.loc[rows["status"] == "ok", "trial_id"])
    for d in dirs:  # every epoch trained once; the diverged ones stopped in their first
        assert epochs_of(d) == ([1, 2] if d.name in ok else []), d
    assert not ({j for d in dirs for j in jobs_of(d)} & slurm_cluster.queued())


def test_sbatch_launcher_runs_the_study_as_a_slurm_job(slurm_cluster, tmp_path):
    study = shrunk_study(tmp_path, base="demo_slurm.yaml", name="sbatchstudy", n_variants=1,
                         search={"algorithm": "tpe", "trials": 1, "seed": 0, "lr": {"low": 0.003, "high": 0.1}})
    out = tmp_path / "out"
    # The driver takes one of the test cluster's CPUs (the launcher's default), so the trial jobs run one at a time.
    submitted = slurm_cluster.run(
        "sbatch", "--parsable", "--mem=3G", f"--output={tmp_path}/driver-%j.out",
        str(REPO / "slurm" / "sweep.sbatch"), str(study), "--out", str(out))
    driver_job = submitted.stdout.strip().split(";")[0]
    log = tmp_path / f"driver-{driver_job}.out"

    def ended() -> str:
        state = slurm_cluster.run("sacct", "-n", "-X", "-j", driver_job, "-o", "State").stdout.split()
        return state[0] if state and state[0] not in ("PENDING", "RUNNING", "REQUEUED") else ""

    try:
        state = _wait_for(ended, "the driver job", timeout_s=1500)
    finally:
        if not ended():
            slurm_cluster.run("scancel", driver_job)
    text = log.read_text() if log.exists() else "(no driver log)"
    assert state == "COMPLETED", text[-4000:]
    assert "sbatchstudy finished" in text and "mlflow ui --backend-store-uri" in text

    rows = pd.read_parquet(out / "results")
    assert len(rows) == expected_trainings(study) * EVAL_SETS
    trial_jobs = {j for d in trial_dirs(out) for j in jobs_of(d)}
    accounted = slurm_cluster.run("sacct", "-n", "-X", "-o", "JobID,State", "-S", "now-1hours").stdout
    states = dict(line.split()[:2] for line in accounted.splitlines() if line.strip())
    assert trial_jobs and all(states.get(j) == "COMPLETED" for j in trial_jobs), (trial_jobs, states)
    assert (out / "report" / "index.html").exists()


def test_plain_scancel_of_the_driver_job_cancels_its_trial_jobs(slurm_cluster, tmp_path):
    """`scancel <driver job>`, as any SLURM user stops a job: SIGTERM reaches the driver and its
    Ray processes at once. The trial jobs, held after epoch 1 (they would never end by
    themselves), are cancelled before the driver dies."""
    study = shrunk_study(tmp_path, base="demo_slurm.yaml", name="scancelstudy", n_variants=1,
                         search={"algorithm": "grid", "lr": [0.02], "weight_decay": [0.0]})
    out, hold = tmp_path / "out", Hold(tmp_path / "hold", after_epoch=1)
    exports = ",".join(f"{k}={v}" for k, v in hold.env.items())
    submitted = slurm_cluster.run(  # the launcher's default: one CPU for the driver
        "sbatch", "--parsable", f"--export=ALL,{exports}", f"--output={tmp_path}/driver-%j.out",
        str(REPO / "slurm" / "sweep.sbatch"), str(study), "--out", str(out), "--no-report")
    driver_job = submitted.stdout.strip().split(";")[0]
    log = tmp_path / f"driver-{driver_job}.out"
    try:
        hold.wait(alive=lambda: driver_job in slurm_cluster.queued())
        owned = {j for d in trial_dirs(out) for j in jobs_of(d)}
        slurm_cluster.run("scancel", driver_job)
        _wait_for(lambda: not ({driver_job} | owned) & slurm_cluster.queued(),
                  "the driver and its trial jobs to leave the queue", timeout_s=120)
    finally:
        left = ({driver_job} | {j for d in trial_dirs(out) for j in jobs_of(d)}) & slurm_cluster.queued()
        if left:
            slurm_cluster.run("scancel", *left)
    text = log.read_text() if log.exists() else "(no driver log)"
    assert "job(s) of unfinished trials in" in text, text[-3000:]
    accounted = slurm_cluster.run("sacct", "-n", "-X", "-o", "JobID,State%30", "-j", ",".join(owned)).stdout
    states = {line.split()[1] for line in accounted.splitlines() if line.strip()}
    assert owned and states == {"CANCELLED"}, accounted  # "CANCELLED by <uid>" reads CANCELLED


def test_jobs_of_different_variants_are_queued_at_once(slurm_cluster, tmp_path):
    # 2 variants x 1 configuration x 2 search splits, 4 jobs at once: both variants' searches are
    # in the queue together (each job holds after its first epoch, so none ends before the check).
    study = shrunk_study(tmp_path, base="demo_slurm.yaml", name="twovariants", max_concurrent=4,
                         search={"algorithm": "tpe", "trials": 1, "seed": 0, "lr": {"low": 0.003, "high": 0.1}})
    out, hold = tmp_path / "out", tmp_path / "hold"
    hold.mkdir()
    env = {**slurm_cluster.env, "ATTNSWEEP_HOLD_AFTER_EPOCH": "1", "ATTNSWEEP_HOLD_DIR": str(hold)}
    driver = Driver("run", str(study), "--out", str(out), "--no-report", env=env, log=tmp_path / "driver.log")

    def variants_queued() -> set[str]:
        queued = slurm_cluster.queued()
        return {d.parent.name for d in trial_dirs(out) if jobs_of(d) and jobs_of(d)[-1] in queued}

    try:
        both = _wait_for(lambda: (v := variants_queued()) == {"resnet18", "resnet18+se"} and v, "two variants' jobs",
                         driver)
        assert both == {"resnet18", "resnet18+se"}
        driver.proc.send_signal(signal.SIGTERM)
        assert driver.proc.wait(timeout=120) == 130
    finally:
        driver.cleanup()
        for held in hold.glob("*.held"):
            held.with_suffix(".release").touch()
    owned = {j for d in trial_dirs(out) for j in jobs_of(d)}
    _wait_for(lambda: not (owned & slurm_cluster.queued()), "the cancelled jobs to leave the queue", timeout_s=60)
