"""The driver at a cluster's scale, on the real SLURM test cluster with stand-in jobs (the trainer's
trial folders without torch: `pipelines/trial/standin.py`): 16 jobs at once are followed by the
driver process alone (no process per job), and a driver SIGKILLed while they run is resumed: it
re-attaches to every running job, and every trial is trained and recorded exactly once."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from orchestrate_setup import STANDIN, Driver, descendants, jobs_of, run_attnsweep, trial_dirs
from trainer_setup import Hold

from attnsweep.pipelines.trial.folder import TrialFolder

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
AT_ONCE = 16


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "(gone)"


def _study(tmp_path) -> tuple:
    """2 variants x (a grid of 4 configurations x 2 search splits, then 4 repeat splits): 16 search
    jobs at once, then 8 repeat jobs; 24 trials."""
    study = {
        "name": "scale16",
        "dataset": {"format": "synthderm", "options": {"n": 64, "seed": 0}},
        "image_size": 32,
        "variants": ["resnet18", "resnet18+se"],
        "train": {"epochs": 2, "batch_size": 8},
        "search": {"algorithm": "grid", "lr": [0.001, 0.003, 0.01, 0.03], "weight_decay": [0.0]},
        "splits": {"val_fraction": 0.2, "test_fraction": 0.2, "search_splits": 2, "repeat_splits": 4},
        "executor": {"kind": "slurm", "slurm": {"cpus_per_task": 1, "mem_gb": 0.1, "timeout_min": 30}},
        "max_concurrent": AT_ONCE,
    }
    path = tmp_path / "scale16.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path, 2 * (4 * 2 + 4)


def test_sixteen_jobs_followed_by_one_process_killed_and_resumed_record_every_trial_once(slurm_cluster_wide,
                                                                                        tmp_path):
    study, trials = _study(tmp_path)
    out = tmp_path / "out"
    args = ("run", str(study), "--out", str(out), "--no-report")
    hold = Hold(tmp_path / "hold", after_epoch=1)
    env = {**slurm_cluster_wide.env, **hold.env, **STANDIN}
    first = Driver(*args, env=env, log=tmp_path / "driver1.log")
    try:
        deadline = time.monotonic() + 600
        while len(hold.held()) < AT_ONCE:  # every search job of both variants, held after epoch 1
            assert first.proc.poll() is None, (tmp_path / "driver1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"{len(hold.held())} of {AT_ONCE} jobs held"
            time.sleep(0.5)
        # 16 jobs running, followed by the driver process alone: below it only multiprocessing's
        # resource tracker (left by the preflight's process) and an sbatch or sacct in flight
        below = {pid: _cmdline(pid) for pid in descendants(first.proc.pid)}
        assert len(below) <= 3, below
        first.kill()
    finally:
        first.cleanup()
    running = {d: jobs_of(d) for d in trial_dirs(out)}
    assert len(running) == AT_ONCE and all(len(ids) == 1 for ids in running.values())

    hold.release(*(d.name for d in running))  # the held jobs go on while the next driver starts
    done = run_attnsweep(*args, "--resume", env={**slurm_cluster_wide.env, **STANDIN})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for d, ids in running.items():  # re-attached or recorded as finished: never submitted twice
        assert jobs_of(d) == ids, d
    dirs = trial_dirs(out)
    assert len(dirs) == trials
    for d in dirs:  # every epoch written once, every trial finished
        assert [e["epoch"] for e in TrialFolder(d).epochs()] == [1, 2], d
        assert TrialFolder(d).final_result()["status"] == "ok"
    rows = pd.read_parquet(out / "results")
    assert len(rows) == trials * 2 and not rows.duplicated(["trial_id", "eval_set"]).any()  # val, test
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (experiment,) = client.search_experiments(filter_string="name = 'scale16'")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    trial_ids = [r.data.tags["attnsweep.trial_id"] for r in runs if "attnsweep.trial_id" in r.data.tags]
    assert len(trial_ids) == trials and set(trial_ids) == {d.name for d in dirs}  # one MLflow run per trial
