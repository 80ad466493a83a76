"""The driver's result writers: Parquet rows (one file per trial, atomic, idempotent, exported
and read back by pandas and duckdb) and MLflow runs on a real `mlflow server`, including what a
resumed driver finds there."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from mlflow_server import mlflow_server  # noqa: F401 (fixture)

from attnsweep.pipelines.store import parquet_store, selection_record
from attnsweep.pipelines.store.mlflow_store import MlflowStore
from attnsweep.pipelines.store.result_rows import TrialRef, epoch_rows, result_rows
from attnsweep.pipelines.store.results_schema import RESULTS_SCHEMA, to_table
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.trial.study_paths import StudyPaths

EVAL_SETS = ["val", "test", "ood:shifted"]
CONFIG = {"model": "resnet18+se", "lr": 0.01, "weight_decay": 1e-4, "batch_size": 16, "epochs": 3, "seed": 2,
          "optimizer": "sgd", "split": "repeat-0", "dataset": {"format": "synthderm"}}


def _metrics(ba: float, n: int) -> dict:
    return {"balanced_accuracy": ba, "accuracy": ba + 0.05, "auc_roc": 0.8, "loss": 0.6, "n_samples": n,
            "per_class_recall": [ba, ba, ba], "confusion_matrix": [[3, 1, 0], [0, 4, 1], [1, 0, 5]]}


def make_trial_folder(root: Path, trial_id: str, epochs: int = 3, finished: bool = True) -> TrialRef:
    """A trial folder in the trainer's format (interfaces.md): config, per-epoch lines, result."""
    d = root / "trials" / "repeat" / "resnet18+se" / trial_id
    folder = TrialFolder(d)
    folder.write_config(CONFIG)
    lines = [{"epoch": e, "train_loss": 1.0 / e, "lr": 0.01, "seconds": 2.0, "images_per_s": 50.0,
              "val": {"balanced_accuracy": 0.4 + 0.1 * e, "accuracy": 0.5, "auc_roc": 0.7, "loss": 0.9}}
             for e in range(1, epochs + 1)]
    for line in lines:
        folder.append_epoch(line)
    if finished:
        folder.write_result({
            "status": "ok", "world_size": 1, "hosts": ["h"], "best_epoch": epochs, "epochs_run": epochs,
            "n_train": 120, "params": 11_000_000, "train_seconds": 6.0, "gpu_seconds": 0.0,
            "metrics": {"val": _metrics(0.7, 30), "test": _metrics(0.65, 40), "ood:shifted": _metrics(0.5, 25)}})
    return TrialRef(study="t", phase="repeat", variant="resnet18+se", backbone="resnet18", attention=("se",),
                    dataset="synthderm", split="repeat-0", trial_id=trial_id, config_hash="c0ffee", dir=d)


def _rows(ref: TrialRef, result: dict, run_id: str | None = "run") -> tuple[list, list]:
    return (result_rows(ref, CONFIG, result, EVAL_SETS, run_id, "v1"),
            epoch_rows(ref, CONFIG, ref.folder.epochs()))


def test_every_eval_set_has_a_row_also_without_metrics(tmp_path):
    ref = make_trial_folder(tmp_path, "a1")
    ok = ref.folder.result()
    rows, _ = _rows(ref, ok)
    assert [r["eval_set"] for r in rows] == EVAL_SETS
    assert [r["balanced_accuracy"] for r in rows] == [0.7, 0.65, 0.5]
    assert rows[1]["n_samples"] == 40 and rows[0]["n_train"] == 120 and rows[0]["attention"] == "se"
    failed, _ = _rows(ref, {"status": "failed", "metrics": {}})
    assert len(failed) == 3 and {r["status"] for r in failed} == {"failed"}
    assert all(r["balanced_accuracy"] is None and r["best_epoch"] is None for r in failed)


def test_an_epoch_line_still_being_written_is_not_read(tmp_path):
    ref = make_trial_folder(tmp_path, "a2", epochs=2, finished=False)
    with ref.folder.metrics_file.open("a") as f:
        f.write('{"epoch": 3, "train_lo')
    assert [e["epoch"] for e in ref.folder.epochs()] == [1, 2]


def test_parquet_one_file_per_trial_rewritten_not_appended(tmp_path):
    refs = [make_trial_folder(tmp_path, f"t{i}") for i in range(2)]
    result = refs[0].folder.result()
    for ref in refs:
        parquet_store.write_trial(tmp_path, ref.trial_id, *_rows(ref, result))
    parquet_store.write_trial(tmp_path, refs[0].trial_id, *_rows(refs[0], result, run_id="again"))
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["t0.parquet", "t1.parquet"]
    table = parquet_store.read(tmp_path)
    assert table.num_rows == 2 * len(EVAL_SETS)
    df = table.to_pandas()
    assert set(df.loc[df["trial_id"] == "t0", "mlflow_run_id"]) == {"again"}
    assert parquet_store.read(tmp_path, "epochs").num_rows == 2 * 3
    assert pq.read_schema(tmp_path / "results" / "t0.parquet").metadata[b"attnsweep.schema"] == b"results"


def test_export_is_readable_by_pandas_and_duckdb(tmp_path):
    refs = [make_trial_folder(tmp_path, f"t{i}") for i in range(3)]
    result = refs[0].folder.result()
    for ref in refs:
        parquet_store.write_trial(tmp_path, ref.trial_id, *_rows(ref, result))
    dest = tmp_path.with_name(tmp_path.name + "-export") / "all.parquet"  # outside the study folder
    dest.parent.mkdir()
    assert parquet_store.export(tmp_path, dest) == 9
    df = pd.read_parquet(dest)
    assert len(df) == 9 and df["finished_at"].dt.tz is not None
    n, mean = duckdb.sql(f"SELECT count(*), avg(balanced_accuracy) FROM '{dest}' WHERE eval_set = 'test'").fetchall()[0]
    assert n == 3 and mean == pytest.approx(0.65)
    with pytest.raises(FileNotFoundError, match="no results folder"):
        parquet_store.export(tmp_path / "nothing", dest)


def test_export_carries_the_drivers_choices(tmp_path):
    ref = make_trial_folder(tmp_path, "t0")
    parquet_store.write_trial(tmp_path, ref.trial_id, *_rows(ref, ref.folder.result()))
    scores = pd.DataFrame({"lr": [0.01, 0.1], "weight_decay": [0.0, 0.0], "score": [0.7, None],
                           "eligible": [True, False]})
    path = selection_record.write(tmp_path, "resnet18+se", "auc_roc", 2, scores, {"lr": 0.01, "weight_decay": 0.0})
    assert path == tmp_path / "selection" / "resnet18+se.json"
    dest = tmp_path.with_name(tmp_path.name + "-export") / "all.parquet"  # outside the study folder
    dest.parent.mkdir()
    parquet_store.export(tmp_path, dest)
    carried = json.loads(pq.read_schema(dest).metadata[b"attnsweep.selection"])
    assert carried == {"resnet18+se": selection_record.read(tmp_path, "resnet18+se")}
    record = carried["resnet18+se"]
    assert record["metric"] == "auc_roc" and record["chosen"] == {"lr": 0.01, "weight_decay": 0.0, "score": 0.7}
    assert record["configurations"][1] == {"lr": 0.1, "weight_decay": 0.0, "score": None, "eligible": False}


def test_mlflow_runs_on_a_real_server(mlflow_server, tmp_path):  # noqa: F811
    done = make_trial_folder(tmp_path, "done1")
    store = MlflowStore(mlflow_server, "tracking-test", tmp_path)
    run_id, terminated = store.child_run(done, CONFIG)
    assert not terminated
    epochs = done.folder.epochs()
    store.log_epochs(run_id, epochs[:2])
    store.log_epochs(run_id, epochs)  # relayed again after a retry: no step twice
    result = done.folder.result()
    store.finish_child(done, run_id, result, ["nevus", "melanoma", "other"])

    killed = make_trial_folder(tmp_path, "killed1", finished=False)
    killed_run, _ = store.child_run(killed, CONFIG)
    store.log_epochs(killed_run, killed.folder.epochs()[:2])  # then the driver dies

    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["attnsweep.status"] == "ok" and run.data.tags["attnsweep.phase"] == "repeat"
    assert run.data.params["lr"] == "0.01" and "dataset" not in run.data.params
    # single final values are tags, not one-point metric charts; the metrics are the time series
    assert float(run.data.tags["final_test_balanced_accuracy"]) == pytest.approx(0.65)
    assert float(run.data.tags["final_ood_shifted_balanced_accuracy"]) == pytest.approx(0.5)
    assert run.data.tags["best_epoch"] == "3" and not any(k.startswith("final") for k in run.data.metrics)
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    steps = [m.step for m in client.get_metric_history(run_id, "val_balanced_accuracy")]
    assert sorted(steps) == [1, 2, 3]
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["attnsweep.kind"] == "parent" and parent.data.tags["attnsweep.variant"] == "resnet18+se"
    artifacts = {f.path for f in client.list_artifacts(run_id)}
    assert {"config.json", "result.json", "confusion_matrix_test.png", "confusion_matrix_ood_shifted.png"} <= artifacts

    # A resumed driver: the finished run is left alone, the RUNNING one is continued, no new runs.
    resumed = MlflowStore(mlflow_server, "tracking-test", tmp_path)
    assert resumed.child_run(done, CONFIG) == (run_id, True)
    again, terminated = resumed.child_run(killed, CONFIG)
    assert (again, terminated) == (killed_run, False)
    resumed.log_epochs(again, killed.folder.epochs())
    steps = [m.step for m in client.get_metric_history(killed_run, "val_balanced_accuracy")]
    assert sorted(steps) == [1, 2, 3]
    exp = client.get_experiment_by_name("tracking-test")
    children = [r for r in client.search_runs([exp.experiment_id]) if "attnsweep.trial_id" in r.data.tags]
    assert sorted(r.data.tags["attnsweep.trial_id"] for r in children) == ["done1", "killed1"]


def test_a_run_created_by_a_driver_that_died_before_its_set_up_is_set_up_on_resume(mlflow_server, tmp_path,  # noqa: F811
                                                                                  monkeypatch):
    """A driver killed between creating a trial's run and logging its params and input dataset left
    a RUNNING run without them; the next driver logs them once, and once only."""
    data_dir = StudyPaths(tmp_path).data_dir
    data_dir.mkdir()
    manifest = {"fingerprints": {"train": "f0"}, "splits": {"sha256": "s0"}, "image_size": 48,
                "datasets": {"train": {"n": 10}}}
    (data_dir / "manifest.json").write_text(json.dumps(manifest))
    ref = make_trial_folder(tmp_path, "cut1", finished=False)
    first = MlflowStore(mlflow_server, "setup-test", tmp_path, dataset_name="synthderm")

    def killed(*_):
        raise SystemExit("killed")

    monkeypatch.setattr(first, "_set_up_child", killed)
    with pytest.raises(SystemExit):
        first.child_run(ref, CONFIG)
    client = MlflowClient(mlflow_server)
    (run,) = [r for r in client.search_runs([first.experiment_id]) if "attnsweep.trial_id" in r.data.tags]
    assert run.data.params == {} and not run.inputs.dataset_inputs  # what the dead driver left

    for _ in range(2):  # resumed twice: the second logs the same values again, harmlessly
        resumed = MlflowStore(mlflow_server, "setup-test", tmp_path, dataset_name="synthderm")
        assert resumed.child_run(ref, CONFIG) == (run.info.run_id, False)
        again = client.get_run(run.info.run_id)
        assert again.data.params["lr"] == "0.01"
        (dataset,) = again.inputs.dataset_inputs
        assert dataset.dataset.name == "synthderm" and dataset.tags[0].value == ref.split


def test_rows_read_back_from_memory_equal_the_files(tmp_path):
    """The driver keeps what it wrote and what it read (`parquet_store._read_before`): a read of the
    folder gives the same table as a cold read of the files, and a replaced file is read again."""
    for trial_id in ("r1", "r2"):
        ref = make_trial_folder(tmp_path, trial_id)
        parquet_store.write_trial(tmp_path, trial_id, *_rows(ref, ref.folder.result()))
    warm = parquet_store.read(tmp_path)
    parquet_store._read_before.clear()
    assert parquet_store.read(tmp_path).equals(warm, check_metadata=True)
    ref = make_trial_folder(tmp_path, "r1")
    rows, epochs = _rows(ref, ref.folder.result(), run_id="another")
    pq.write_table(to_table(rows, RESULTS_SCHEMA), tmp_path / "results" / "r1.parquet")  # replaced by another writer
    assert set(parquet_store.read(tmp_path).column("mlflow_run_id").to_pylist()) == {"another", "run"}
