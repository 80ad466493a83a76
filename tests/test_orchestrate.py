"""`attnsweep run` end to end with real Ray Tune, real submitit (local executor) and a real MLflow
server, on the demo study shrunk by a fixture; and a driver SIGKILLed mid-study that `--resume`
finishes without training a finished trial again and without a duplicate row or run."""
from __future__ import annotations

import time

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow_server import mlflow_server  # noqa: F401 (fixture)
from orchestrate_setup import (
    Driver,
    epochs_of,
    expected_trainings,
    jobs_of,
    run_attnsweep,
    shrunk_study,
    trial_dirs,
)

pytestmark = pytest.mark.slow
EVAL_SETS = {"val", "test", "ood:shifted"}


def _children(client: MlflowClient, study: str) -> list:
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if "attnsweep.trial_id" in r.data.tags], runs


def test_demo_study_end_to_end(tmp_path, mlflow_server):  # noqa: F811
    study = shrunk_study(tmp_path, name="e2e")
    out = tmp_path / "out"
    t0 = time.monotonic()
    done = run_attnsweep("run", str(study), "--out", str(out), "--tracking-uri", mlflow_server)
    wall = time.monotonic() - t0
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"shrunk demo: {expected_trainings(study)} trainings in {wall:.0f} s")
    assert f"results (Parquet): {out / 'results'}" in done.stdout and "report:" in done.stdout

    rows = pd.read_parquet(out / "results")
    variants, trials, splits, repeats = ["resnet18", "resnet18+se"], 2, 2, 2
    assert len(rows) == len(variants) * (trials * splits + repeats) * len(EVAL_SETS)
    assert not rows.duplicated(["trial_id", "eval_set"]).any()
    assert set(rows["eval_set"]) == EVAL_SETS and set(rows["status"]) <= {"ok", "diverged"}
    for variant in variants:
        mine = rows[rows["variant"] == variant]
        search, repeat = mine[mine["phase"] == "search"], mine[mine["phase"] == "repeat"]
        assert search["config_hash"].nunique() == trials
        assert all(set(g["split"]) == {"search-0", "search-1"} for _, g in search.groupby("config_hash"))
        assert sorted(repeat["split"].unique()) == ["repeat-0", "repeat-1"]
        # the repeated configuration is the search's best mean validation balanced accuracy
        val = search[search["eval_set"] == "val"].groupby(["lr", "weight_decay"])["balanced_accuracy"].mean()
        best = val[val == val.max()].index.min()  # a tie goes to the smaller lr, then weight decay
        assert {tuple(x) for x in repeat[["lr", "weight_decay"]].drop_duplicates().values} == {best}
    paired = rows[rows["phase"] == "repeat"].groupby("variant")["seed"].apply(sorted)
    assert paired.iloc[0] == paired.iloc[1]  # every variant on the same repeat splits

    client = MlflowClient(mlflow_server)
    children, runs = _children(client, "e2e")
    assert len(children) == expected_trainings(study)
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_trial = {r.data.tags["attnsweep.trial_id"]: r for r in children}
    for row in rows[rows["eval_set"] == "test"].itertuples():
        run = by_trial[row.trial_id]
        assert row.mlflow_run_id == run.info.run_id
        assert run.data.metrics["final_test_balanced_accuracy"] == pytest.approx(row.balanced_accuracy)
        assert run.data.tags["attnsweep.status"] == row.status
    one = children[0].info.run_id
    assert sorted(m.step for m in client.get_metric_history(one, "val_balanced_accuracy")) == [1, 2]
    assert "confusion_matrix_test.png" in {f.path for f in client.list_artifacts(one)}
    kinds = [r.data.tags.get("attnsweep.kind") for r in runs]
    assert kinds.count("parent") == 2 * len(variants) and kinds.count("study") == 1
    assert (out / "report" / "index.html").exists()

    export = tmp_path / "all.parquet"
    assert run_attnsweep("export", str(out), "--to", str(export)).returncode == 0
    assert len(pd.read_parquet(export)) == len(rows)


def test_killed_driver_resumes_without_training_twice(tmp_path):
    study = shrunk_study(tmp_path, name="resume", n_variants=1)
    out = tmp_path / "out"
    driver = Driver("run", str(study), "--out", str(out), "--no-report", log=tmp_path / "driver.log")
    try:
        deadline = time.monotonic() + 1200
        while True:  # mid-study: a trial recorded, and one with finished epochs but no result yet
            recorded = list((out / "results").glob("*.parquet"))
            in_flight = [d for d in trial_dirs(out) if epochs_of(d) and not (d / "result.json").exists()]
            if recorded and in_flight:
                break
            assert driver.proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the study never had a trial in flight after one was recorded"
            time.sleep(0.3)
        driver.kill()
    finally:
        driver.cleanup()
    before = {d: (jobs_of(d), (d / "result.json").exists()) for d in trial_dirs(out)}
    recorded = {p: p.stat().st_mtime_ns for p in (out / "results").glob("*.parquet")}

    done = run_attnsweep("run", str(study), "--out", str(out), "--resume")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    dirs = trial_dirs(out)
    assert len(dirs) == expected_trainings(study)
    for d in dirs:
        assert epochs_of(d) == [1, 2], d  # every epoch trained once
        if d in before and before[d][1]:
            assert jobs_of(d) == before[d][0], d  # finished before the kill: not started again
    in_flight = [d for d in before if not before[d][1] and before[d][0]]
    assert in_flight and all(len(jobs_of(d)) <= len(before[d][0]) + 1 for d in in_flight)  # resumed, once
    assert all(p.stat().st_mtime_ns == t for p, t in recorded.items())  # recorded rows untouched

    rows = pd.read_parquet(out / "results")
    assert len(rows) == expected_trainings(study) * len(EVAL_SETS)
    assert not rows.duplicated(["trial_id", "eval_set"]).any()
    children, _ = _children(MlflowClient(f"sqlite:///{out / 'mlflow.db'}"), "resume")
    assert sorted(r.data.tags["attnsweep.trial_id"] for r in children) == sorted(rows["trial_id"].unique())
    assert {r.info.status for r in children} == {"FINISHED"}
