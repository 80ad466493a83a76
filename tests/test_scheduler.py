"""The study-wide schedule: every variant's phases at once under one job budget (Ray Tune's searchers
in the driver's loop, real submitit local jobs, real MLflow sqlite store), per-variant settings end to end, and the dry-run's
simulation of the schedule.

The resume test holds every job after its first epoch (`pipelines/trial/hold.py`), so the driver is
SIGKILLed at a known moment: while the jobs of two variants are running."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from orchestrate_setup import STANDIN, Driver, epochs_of, expected_trainings, jobs_of, kill_pids, run_attnsweep, \
    shrunk_study, trial_dirs

from attnsweep.pipelines.config.study import load_study
from attnsweep.pipelines.sweep import estimate
from attnsweep.pipelines.sweep.budget import Budget

REPO = Path(__file__).resolve().parents[1]


# ---- the budget and the simulation ----------------------------------------------------------

def test_budget_goes_to_baselines_then_repeats_closest_to_a_comparison_then_searches():
    b = Budget(2, {"base": "base", "a": "base", "b": "base"}, ["base", "a", "b"])
    b.repeats_done = {"a": 0, "b": 3}
    order = sorted([("a", "search"), ("b", "repeat"), ("a", "repeat"), ("base", "search")], key=lambda k: b.priority(*k))
    assert order == [("base", "search"), ("b", "repeat"), ("a", "repeat"), ("a", "search")]
    b.take(2)
    assert not b.fits(1)
    b.give_back(1, "b", "repeat")
    assert b.fits(1) and not b.fits(2) and b.repeats_done["b"] == 4
    b.give_back(1, "a", "search")
    assert b.used == 0 and b.repeats_done["a"] == 0  # a search trial is no repeat


def test_simulated_schedule_starts_every_variant_at_once_and_meets_the_lower_bound():
    study = load_study(REPO / "studies" / "seed002_isic.yaml")
    rows = estimate.phase_work(study)
    jobs = dict.fromkeys(study.variant_ids, 100.0)
    n_jobs = sum(p.trainings for p in rows)
    sched = estimate.simulate(study, rows, jobs, 32)
    assert sched.job_seconds == n_jobs * 100.0
    assert sched.lower_bound <= sched.makespan <= sched.lower_bound + 2 * 100.0  # only the last waves' tails idle
    assert sched.phase_end["search"] < sched.phase_end["repeat"] == sched.makespan
    # no variant waits for the others: with room for all, every variant ends after its two waves
    wide = estimate.simulate(study, rows, jobs, 10_000)
    assert wide.makespan == 200.0 and set(wide.variant_end.values()) == {200.0}


# ---- real studies -----------------------------------------------------------------------------------

def _held(hold: Path) -> set[str]:
    return {p.name.removesuffix(".held") for p in hold.glob("*.held")}


@pytest.mark.slow
def test_resume_with_two_variants_in_flight(tmp_path):
    # 2 variants x (1 configuration x 2 search splits + 2 repeat splits), 4 jobs at once: both
    # variants' searches run together; every job holds after epoch 1 until the driver is killed.
    # The jobs run the stand-in trainer: the trainer's own resume is test_executors' (a killed job)
    study = shrunk_study(tmp_path, name="inflight", max_concurrent=4, features=None,  # the stand-in keeps no checkpoint
                         search={"algorithm": "tpe", "trials": 1, "seed": 0, "lr": {"low": 0.003, "high": 0.1}})
    out, hold = tmp_path / "out", tmp_path / "hold"
    hold.mkdir()
    env = {**STANDIN, "ATTNSWEEP_HOLD_AFTER_EPOCH": "1", "ATTNSWEEP_HOLD_DIR": str(hold)}
    driver = Driver("run", str(study), "--out", str(out), "--no-report", env=env, log=tmp_path / "driver.log")
    leftovers: set[int] = set()
    try:
        deadline = time.monotonic() + 900
        while len(_held(hold)) < 4:
            assert driver.proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"held: {_held(hold)}"
            time.sleep(0.5)
        held_dirs = [d for d in trial_dirs(out) if d.name in _held(hold)]
        assert {d.parent.name for d in held_dirs} == {"resnet18", "resnet18+se"}  # two variants' jobs at once
        jobs_before = {d: jobs_of(d) for d in held_dirs}
        driver.kill()
        leftovers = driver.tree
    finally:
        driver.cleanup()
    assert not list((out / "results").glob("*.parquet"))  # nothing had ended

    done = run_attnsweep("run", str(study), "--out", str(out), "--resume", env=STANDIN)  # no hold now
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for f in _held(hold):
        (hold / f"{f}.release").touch()
    kill_pids(leftovers)

    dirs = trial_dirs(out)
    assert len(dirs) == expected_trainings(study) == 8
    for d in dirs:
        assert epochs_of(d) == [1, 2], d  # every epoch trained once, across the kill
    for d, ids in jobs_before.items():
        assert len(jobs_of(d)) == len(ids) + 1, d  # resumed after its last epoch once
    rows = pd.read_parquet(out / "results")
    assert len(rows) == 8 * 3 and not rows.duplicated(["trial_id", "eval_set"]).any()
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("inflight").experiment_id], max_results=1000)
    children = [r.data.tags["attnsweep.trial_id"] for r in runs if "attnsweep.trial_id" in r.data.tags]
    assert sorted(children) == sorted(rows["trial_id"].unique())  # one run per training
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_per_variant_optimizer_reported_against_its_baseline(tmp_path):
    study_file = shrunk_study(
        tmp_path, name="pervariant", n_variants=1, max_concurrent=2,
        search={"algorithm": "grid", "lr": [0.03], "weight_decay": [0.0]},
        splits={"val_fraction": 0.15, "test_fraction": 0.2, "search_splits": 0, "repeat_splits": 2, "seed": 0})
    data = yaml.safe_load(study_file.read_text())
    data["variants"] = ["resnet18", {"id": "resnet18_adamw", "model": "resnet18",
                                     "train": {"optimizer": "adamw", "schedule": "constant"},
                                     "search": {"lr": [0.001]}}]
    data["train"]["epochs"] = 1
    study_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    done = run_attnsweep("run", str(study_file), "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    rows = pd.read_parquet(out / "results")
    rep = rows[(rows["phase"] == "repeat") & (rows["eval_set"] == "test")]
    assert sorted(rep["variant"].unique()) == ["resnet18", "resnet18_adamw"]
    assert set(rep.loc[rep["variant"] == "resnet18_adamw", "lr"]) == {0.001}
    assert set(rep.loc[rep["variant"] == "resnet18_adamw", "backbone"]) == {"resnet18"}
    configs = [json.loads((d / "config.json").read_text()) for d in (out / "trials" / "repeat" / "resnet18_adamw").iterdir()]
    assert {(c["model"], c["optimizer"], c["schedule"]) for c in configs} == {("resnet18", "adamw", "constant")}
    comparisons = pd.read_csv(out / "report" / "tables" / "comparisons.csv")
    pairs = {tuple(x) for x in comparisons[["variant", "baseline"]].drop_duplicates().values}
    assert pairs == {("resnet18", "resnet18"), ("resnet18_adamw", "resnet18")}
    md = (out / "report" / "report.md").read_text()
    assert "| resnet18_adamw | resnet18 |" in md


def test_a_bad_override_fails_before_any_job(tmp_path):
    study_file = shrunk_study(tmp_path, name="badoverride")
    data = yaml.safe_load(study_file.read_text())
    data["variants"].append({"id": "se_big", "model": "resnet18+se", "executor": {"slurm": {"gpus_per_node": -1}}})
    study_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    done = run_attnsweep("run", str(study_file), "--out", str(out))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {study_file}: variants.se_big.executor.slurm.gpus_per_node")
    assert not out.exists()  # nothing prepared, nothing submitted


def _measured_trial(folder: Path, name: str, epochs: list[float], wall: float, n_train: int, threads: int,
                    copied: bool = False) -> None:
    """A finished local training as the trainer leaves it: its epochs' seconds, its job's submission
    and its result written `wall` seconds later. `copied`: the result says when it ended and its
    mtime is today's (a study folder copied with `cp -r`); else an older result without `ended_at`."""
    import datetime
    import os

    d = folder / "trials" / "repeat" / "resnet18" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model": "resnet18", "image_size": 48}))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "seconds": s}) + "\n"
                                             for i, s in enumerate(epochs)))
    submitted = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    (d / "jobs.json").write_text(json.dumps([{"job_id": "1", "kind": "local", "submitted_at": submitted.isoformat()}]))
    ended = submitted + datetime.timedelta(seconds=wall)
    (d / "result.json").write_text(json.dumps({"status": "ok", "epochs_run": len(epochs), "n_train": n_train,
                                               "cpu_threads": threads, "world_size": 1,
                                               **({"ended_at": ended.isoformat()} if copied else {})}))
    if not copied:
        os.utime(d / "result.json", (ended.timestamp(),) * 2)


def test_the_per_job_estimate_is_calibrated_on_measured_trainings(tmp_path, monkeypatch):
    from attnsweep.pipelines.trial import job_env

    monkeypatch.setattr(job_env, "machine_cpus", lambda: 2)
    runs = tmp_path / "runs"
    # a sibling study folder: 2 trainings of resnet18 at 48 px, 1 thread each, 100 training images
    _measured_trial(runs / "earlier", "a", [10.0, 10.0], wall=50.0, n_train=100, threads=1)
    _measured_trial(runs / "earlier", "b", [12.0, 12.0], wall=54.0, n_train=100, threads=1, copied=True)
    data = yaml.safe_load((REPO / "studies" / "demo.yaml").read_text())
    data.update(out_dir=str(runs / "demo"), variants=["resnet18", "resnet18+se"])
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)  # 2 jobs at once on 2 cores: 1 core each, as measured
    measured = estimate.measured_trainings(estimate.calibration_folders(study))
    assert len(measured) == 2
    rows = {(p.variant, p.phase): p for p in estimate.phase_work(study)}
    n_train = estimate.training_images(study)
    assert n_train == round(400 * (1 - 0.15 - 0.2))
    job = estimate.job_estimate(study, rows[("resnet18", "repeat")], n_train, measured)
    # 11 s per epoch for 100 images on a core -> 0.11 s per image; 30 s of the rest (median of 30, 30)
    assert job.calibrated and "2 measured trainings" in job.basis
    assert job.seconds == pytest.approx(30.0 + 3 * 0.11 * n_train)
    other = estimate.job_estimate(study, rows[("resnet18+se", "repeat")], n_train, measured)
    assert not other.calibrated and "uncalibrated" in other.basis  # another model: not measured
