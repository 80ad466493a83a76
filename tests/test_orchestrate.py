"""`attnsweep run` end to end with real Ray Tune, real submitit (local executor) and a real MLflow
server, on the demo study shrunk by a fixture. The driver is SIGKILLed mid-study (its trial jobs
held after epoch 1, one released and recorded first) and `--resume`
finishes it: no finished trial is trained again, no epoch twice, no duplicate row or run; then
the rows, the choice of the repeated configuration and the MLflow runs are checked. (One study
run serves both, to keep the suite short; the SLURM tests run a study without interruption.)"""
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
from trainer_setup import Hold

from attnsweep.pipelines.trial.folder import TrialFolder

pytestmark = pytest.mark.slow
EVAL_SETS = {"val", "test", "ood:shifted"}
VARIANTS, CONFIGS, SEARCH_SPLITS, REPEAT_SPLITS = ["resnet18", "resnet18+se"], 2, 2, 2


def _kill_mid_study(study, out, tmp_path, *args) -> dict:
    """Start the driver with every trial job held after epoch 1; release the held ones until a
    trial is recorded (a search trial reports its splits in lockstep: all of them must go on),
    then SIGKILL the driver once another is held (an epoch, no result). Returns the job ids of the
    trials held at that moment."""
    hold = Hold(tmp_path / "hold", after_epoch=1)
    driver = Driver("run", str(study), "--out", str(out), *args, env=hold.env, log=tmp_path / "driver.log")
    alive = lambda: driver.proc.poll() is None  # noqa: E731
    try:
        hold.wait(alive=alive)
        deadline = time.monotonic() + 900
        while not list((out / "results").glob("*.parquet")):
            hold.release(*hold.held())
            assert alive(), (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no released trial was recorded"
            time.sleep(0.3)
        hold.wait(alive=alive)
        in_flight_jobs = {d: jobs_of(d) for d in trial_dirs(out) if d.name in hold.held()}
        driver.kill()
    finally:
        driver.cleanup()
    return in_flight_jobs


def test_demo_study_killed_and_resumed_end_to_end(tmp_path, mlflow_server):  # noqa: F811
    study = shrunk_study(tmp_path, name="e2e")
    out = tmp_path / "out"
    t0 = time.monotonic()
    in_flight = _kill_mid_study(study, out, tmp_path, "--tracking-uri", mlflow_server)
    # Finished = an ok/diverged result: a job killed mid-epoch by the clean-up (its DataLoader
    # worker SIGTERMed first) may have recorded `failed`, which a resume rightly trains again.
    before = {d: (jobs_of(d), TrialFolder(d).final_result() is not None) for d in trial_dirs(out)}
    recorded = {p: p.stat().st_mtime_ns for p in (out / "results").glob("*.parquet")}

    done = run_attnsweep("run", str(study), "--out", str(out), "--tracking-uri", mlflow_server, "--resume")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    n = expected_trainings(study)
    print(f"\nshrunk demo: {n} trainings in {time.monotonic() - t0:.0f} s; at the kill {len(recorded)} recorded, "
          f"{len(in_flight)} in flight")
    assert f"results (Parquet): {out / 'results'}" in done.stdout and "report:" in done.stdout

    # Resume: finished trials were not started again, every epoch trained once, rows untouched.
    dirs = trial_dirs(out)
    assert len(dirs) == n
    for d in dirs:
        assert epochs_of(d) == [1, 2], d
        if d in before and before[d][1]:
            assert jobs_of(d) == before[d][0], d
    assert in_flight and all(len(jobs_of(d)) <= len(ids) + 1 for d, ids in in_flight.items())  # resumed, once
    assert all(p.stat().st_mtime_ns == t for p, t in recorded.items())

    # Rows: variants x (configurations x search splits + repeat splits) x evaluated sets, once each.
    rows = pd.read_parquet(out / "results")
    assert len(rows) == len(VARIANTS) * (CONFIGS * SEARCH_SPLITS + REPEAT_SPLITS) * len(EVAL_SETS) == n * 3
    assert not rows.duplicated(["trial_id", "eval_set"]).any()
    assert set(rows["eval_set"]) == EVAL_SETS and set(rows["status"]) <= {"ok", "diverged"}
    for variant in VARIANTS:
        mine = rows[rows["variant"] == variant]
        search, repeat = mine[mine["phase"] == "search"], mine[mine["phase"] == "repeat"]
        assert search["config_hash"].nunique() == CONFIGS  # a resumed search asks for no extra one
        assert all(set(g["split"]) == {"search-0", "search-1"} for _, g in search.groupby("config_hash"))
        assert sorted(repeat["split"].unique()) == ["repeat-0", "repeat-1"]
        # the repeated configuration is the search's best mean validation balanced accuracy
        val = search[search["eval_set"] == "val"].groupby(["lr", "weight_decay"])["balanced_accuracy"].mean()
        best = val[val == val.max()].index.min()  # a tie goes to the smaller lr, then weight decay
        assert {tuple(x) for x in repeat[["lr", "weight_decay"]].drop_duplicates().values} == {best}
    paired = rows[rows["phase"] == "repeat"].groupby("variant")["seed"].apply(sorted)
    assert paired.iloc[0] == paired.iloc[1]  # every variant on the same repeat splits

    # MLflow on the server holds the same runs, once each.
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if "attnsweep.trial_id" in r.data.tags]
    assert sorted(r.data.tags["attnsweep.trial_id"] for r in children) == sorted(rows["trial_id"].unique())
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_trial = {r.data.tags["attnsweep.trial_id"]: r for r in children}
    for row in rows[rows["eval_set"] == "test"].itertuples():
        run = by_trial[row.trial_id]
        assert row.mlflow_run_id == run.info.run_id
        assert float(run.data.tags["final_test_balanced_accuracy"]) == pytest.approx(row.balanced_accuracy)
        assert run.inputs.dataset_inputs and run.data.tags["mlflow.source.git.commit"]
        assert run.data.tags["attnsweep.status"] == row.status
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_balanced_accuracy")]
        assert sorted(steps) == [1, 2], row.trial_id  # relayed epochs logged once, also across the kill
    assert "confusion_matrix_test.png" in {f.path for f in client.list_artifacts(children[0].info.run_id)}
    kinds = [r.data.tags.get("attnsweep.kind") for r in runs]
    assert kinds.count("parent") == 2 * len(VARIANTS) and kinds.count("study") == 1
    test = rows[(rows["phase"] == "repeat") & (rows["eval_set"] == "test") & (rows["status"] == "ok")]
    for parent in (r for r in runs if r.data.tags.get("attnsweep.kind") == "parent"):
        if parent.data.tags["attnsweep.phase"] == "repeat":  # the aggregate of its children
            ba = test.loc[test["variant"] == parent.data.tags["attnsweep.variant"], "balanced_accuracy"]
            assert parent.data.metrics["test_balanced_accuracy_mean"] == pytest.approx(ba.mean())
            assert parent.info.run_name.endswith(f"(n={len(ba)})")
    assert (out / "report" / "index.html").exists()

    export = tmp_path / "all.parquet"
    assert run_attnsweep("export", str(out), "--to", str(export)).returncode == 0
    assert len(pd.read_parquet(export)) == len(rows)
