"""`attnsweep status OUT`: counts, the driver's best configuration, job-hours, ETA and the state
(exit status) read from a study folder, by another process than the driver; on a SLURM study
its held job is listed as running (from `squeue`)."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest
from orchestrate_setup import ATTNSWEEP, REPO, STANDIN, Driver, shrunk_study, trial_dirs
from status_setup import study_folder, write_trial
from survive_setup import wait_for
from trainer_setup import Hold

from attnsweep.pipelines.config.study import load_study
from attnsweep.pipelines.store.search_scores import best_config
from attnsweep.pipelines.sweep.lock import study_lock
from attnsweep.pipelines.sweep.status import EXIT_CODES, status

DEMO = REPO / "studies" / "demo.yaml"


def _study(*overrides: str):
    return load_study(DEMO, ["variants=[resnet18,resnet18+se]", "search.trials=3", "splits.search_splits=2",
                             "splits.repeat_splits=3", *overrides])


def _cli(out, *args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([ATTNSWEEP, "status", str(out), *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_a_stopped_study_counts_best_hours_and_eta(tmp_path):
    study, out = _study(), tmp_path / "out"
    study_folder(study, out, search_done=3, repeats_done=1, running=1)  # 1 repeat split never started
    st = status(out)
    assert st.state == "stopped" and st.exit_code == EXIT_CODES["stopped"] == 4  # no driver, work left
    by = {(p.variant, p.phase): p for p in st.phases}
    search, repeat = by[("resnet18", "search")], by[("resnet18", "repeat")]
    assert (search.planned, search.done, search.running, search.queued, search.failed) == (6, 6, 0, 0, 0)
    assert (repeat.planned, repeat.done, repeat.running, repeat.queued, repeat.failed) == (3, 1, 1, 1, 0)
    assert search.best == best_config(out, "resnet18", 2) == {"lr": 0.03, "weight_decay": 0.0}  # the driver's rule
    assert repeat.best == {"lr": 0.03, "weight_decay": 0.0}
    assert search.job_hours == pytest.approx(6 * 10 / 60)  # 10 min from each job's submission to its result
    assert st.eta_s == pytest.approx(2 * 2 * 600 / study.max_concurrent)  # 2 left per variant, 10 min each
    done = _cli(out, "--json")
    assert done.returncode == 4, done.stderr
    assert json.loads(done.stdout)["phases"][1]["done"] == 1


def test_finished_failed_and_running(tmp_path):
    study, out = _study(), tmp_path / "out"
    study_folder(study, out, search_done=3, repeats_done=3)
    assert status(out).state == "finished" and _cli(out).returncode == 0
    with study_lock(out, resume=False):  # a live driver of this folder (this process), seen from another one
        shown = _cli(out)
        assert shown.returncode == 3 and "running" in shown.stdout, shown.stdout
    write_trial(study, out, "search", "resnet18+se", "search-0", 0.5, "failed")
    st = status(out)
    assert st.state == "failed" and st.exit_code == 1
    assert {(p.variant, p.phase): p.failed for p in st.phases}[("resnet18+se", "search")] == 1


def test_not_a_study_folder_is_one_line(tmp_path):
    done = _cli(tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == \
        f"error: {tmp_path}: no study.yaml (not a study folder, or its driver has not started)"


def test_status_imports_no_ray_or_torch(tmp_path):
    study_folder(_study(), tmp_path / "out", search_done=1, repeats_done=0)
    code = ("import sys; from attnsweep.pipelines.cli import app\n"
            f"try: app(['status', {str(tmp_path / 'out')!r}])\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in ('ray', 'torch', 'mlflow', 'optuna') if m in sys.modules))")
    done = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_status_of_a_running_slurm_study_from_another_process(slurm_cluster, tmp_path):
    study = shrunk_study(tmp_path, base="demo_slurm.yaml", name="watched", n_variants=1, max_concurrent=2,
                         search={"algorithm": "grid", "lr": [0.02], "weight_decay": [0.0]})
    out, hold = tmp_path / "out", Hold(tmp_path / "hold", after_epoch=1)
    driver = Driver("run", str(study), "--out", str(out), "--no-report", env={**slurm_cluster.env, **hold.env, **STANDIN},
                    log=tmp_path / "driver.log")
    try:
        name = hold.wait(alive=lambda: driver.proc.poll() is None)  # a search job, held after epoch 1
        shown = _cli(out, "--json", env=slurm_cluster.env)
        assert shown.returncode == 3, shown.stderr
        st = json.loads(shown.stdout)
        assert st["state"] == "running" and st["driver"]["alive"]
        job = next(j for d in trial_dirs(out) if d.name == name for j in [json.loads((d / "jobs.json").read_text())])
        assert {"job_id": job[-1]["job_id"], "state": "RUNNING"} in st["jobs"]
        search = next(p for p in st["phases"] if p["phase"] == "search")
        assert search["running"] >= 1 and search["done"] == 0 and search["planned"] == 2
        driver.proc.send_signal(signal.SIGTERM)
        assert driver.proc.wait(timeout=120) == 130
        # the cancelled jobs ignore SIGTERM (submitit) until SLURM's KillWait SIGKILL: released before
        # that, a held job would finish its trial
        owned = {job["job_id"] for d in trial_dirs(out) for job in json.loads((d / "jobs.json").read_text())}
        wait_for(lambda: not owned & slurm_cluster.queued(), "the cancelled jobs to leave the queue", timeout_s=120)
    finally:
        driver.cleanup()
        hold.release(*(d.name for d in trial_dirs(out)))
    stopped = _cli(out, "--json", env=slurm_cluster.env)
    assert stopped.returncode == 4 and json.loads(stopped.stdout)["state"] == "stopped"
