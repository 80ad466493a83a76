"""How the driver records trials that ended without a final result (failed, stopped) and which
search configuration it repeats: trial folders in the trainer's format, recorded through the real
MLflow (sqlite) and Parquet writers, then read back."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from attnsweep.pipelines.store import parquet_store
from attnsweep.pipelines.store.mlflow_store import MlflowStore
from attnsweep.pipelines.config import selection
from attnsweep.pipelines.sweep.phases import best_config, config_scores
from attnsweep.pipelines.sweep.plan import make_trial
from attnsweep.pipelines.config.study import load_study
from attnsweep.pipelines.sweep.tracking import Recorder
from attnsweep.pipelines.sweep.recording import Recordings, close

DEMO = Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"
VARIANT = "resnet18"


def _metrics(ba: float, loss: float = 0.5) -> dict:
    return {"balanced_accuracy": ba, "accuracy": ba, "auc_roc": 0.7, "loss": loss, "n_samples": 20,
            "per_class_recall": [ba] * 3, "confusion_matrix": [[5, 1, 0], [1, 5, 1], [0, 1, 6]]}


def _trial(study, out, split, lr, val_bas, status=None, val_loss=0.5):
    """A search trial folder: one metrics line per entry of `val_bas`, and a result when `status`."""
    trial = make_trial(study, out, "search", VARIANT, split, lr, 0.0, out / "data")
    folder = trial.ref.folder
    folder.claim(trial.cfg)
    lines = [{"epoch": e, "train_loss": 1.0, "lr": lr, "seconds": 1.0, "images_per_s": 10.0,
              "val": {"balanced_accuracy": ba, "accuracy": ba, "auc_roc": 0.7, "loss": 0.5}}
             for e, ba in enumerate(val_bas, 1)]
    for line in lines:
        folder.append_epoch(line)
    if status:
        best = max(val_bas) if val_bas else None
        metrics = {} if status == "diverged" else {"val": _metrics(best, val_loss), "test": _metrics(best - 0.1)}
        folder.write_result({
            "status": status, "world_size": 1, "hosts": ["h"], "best_epoch": val_bas.index(best) + 1 if best else None,
            "epochs_run": len(val_bas), "n_train": 60, "params": 1000, "train_seconds": 1.0, "gpu_seconds": 0.0,
            "metrics": metrics})
    return trial


@pytest.fixture
def recorded(tmp_path):
    study = load_study(DEMO)
    out = tmp_path
    store = MlflowStore(f"sqlite:///{out / 'mlflow.db'}", study.name, out)
    recorder = Recorder(study, out, store, ["val", "test"], ["nevus", "melanoma", "other"])
    t = {}
    t["a"] = [_trial(study, out, s, 0.01, [0.5, 0.6], "ok") for s in ("search-0", "search-1")]
    t["b"] = [_trial(study, out, "search-0", 0.02, [0.9, 0.9], "ok"), _trial(study, out, "search-1", 0.02, [], "diverged")]
    t["c"] = [_trial(study, out, "search-0", 0.03, [0.7, 0.7], "ok"), _trial(study, out, "search-1", 0.03, [0.4])]
    t["d"] = [_trial(study, out, s, 0.04, [0.95]) for s in ("search-0", "search-1")]
    t["e"] = [_trial(study, out, s, 0.005, [0.6, 0.4], "ok") for s in ("search-0", "search-1")]
    for key in "abe":
        for trial in t[key]:
            close(recorder, trial, "stopped")  # has a final result: recorded with it
    for trial in t["b"] + t["c"][:1]:
        assert recorder.record_finished(trial)
    close(recorder, t["c"][1], "failed", "RuntimeError: boom")
    for trial in t["d"]:
        close(recorder, trial, "stopped")  # ASHA stopped it after one epoch
    return study, out, recorder, t


def test_unfinished_trials_are_recorded_with_their_status(recorded):
    study, out, recorder, t = recorded
    rows = parquet_store.read(out).to_pandas()
    assert len(rows) == 10 * 2  # 10 trials x (val, test)
    by_trial = rows.set_index(["trial_id", "eval_set"])
    failed = by_trial.loc[(t["c"][1].ref.trial_id, "val")]
    assert failed["status"] == "failed" and failed["balanced_accuracy"] != failed["balanced_accuracy"]  # NaN
    stopped = by_trial.loc[(t["d"][0].ref.trial_id, "val")]
    assert stopped["status"] == "stopped" and stopped["balanced_accuracy"] == pytest.approx(0.95)
    assert by_trial.loc[(t["d"][0].ref.trial_id, "test")]["balanced_accuracy"] != by_trial.loc[(t["d"][0].ref.trial_id, "test")]["balanced_accuracy"]
    assert by_trial.loc[(t["b"][1].ref.trial_id, "val")]["status"] == "diverged"
    assert not t["a"][0].ref.folder.checkpoint_file.exists()

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    status = {r.data.tags["attnsweep.trial_id"]: (r.info.status, r.data.tags["attnsweep.status"])
              for r in client.search_runs([recorder.store.experiment_id]) if "attnsweep.trial_id" in r.data.tags}
    assert status[t["c"][1].ref.trial_id] == ("FAILED", "failed")
    assert status[t["d"][0].ref.trial_id] == ("KILLED", "stopped")
    assert status[t["b"][1].ref.trial_id] == ("FINISHED", "diverged")
    assert len(status) == 10

    # Recording again (a resumed driver) adds nothing and opens no run.
    for trials in t.values():
        for trial in trials:
            close(recorder, trial, "stopped")
    assert parquet_store.read(out).num_rows == 20
    assert len([r for r in client.search_runs([recorder.store.experiment_id]) if "attnsweep.trial_id" in r.data.tags]) == 10


def test_best_configuration_excludes_diverged_failed_and_stopped(recorded):
    study, out, _, _ = recorded
    scores = config_scores(out, VARIANT, n_splits=2).set_index("lr")
    assert scores.loc[0.01, "score"] == pytest.approx(0.6) and scores.loc[0.01, "eligible"]
    assert scores.loc[0.02, "score"] == 0.0 and not scores.loc[0.02, "eligible"]  # a split diverged
    assert scores.loc[0.03, "score"] is None or scores.loc[0.03, "score"] != scores.loc[0.03, "score"]  # failed
    assert not scores.loc[0.03, "eligible"]
    assert scores.loc[0.04, "score"] == pytest.approx(0.95) and not scores.loc[0.04, "eligible"]  # stopped
    # 0.01 and 0.005 tie at 0.6: the smaller lr wins; the stopped 0.95 and diverged 0.9 never do
    assert best_config(out, VARIANT, n_splits=2) == {"lr": 0.005, "weight_decay": 0.0}


def test_the_search_score_follows_the_selection_metric(tmp_path):
    """Two configurations whose balanced accuracy and loss disagree: each metric picks its own."""
    study = load_study(DEMO)
    recorder = Recorder(study, tmp_path, MlflowStore(f"sqlite:///{tmp_path / 'mlflow.db'}", study.name, tmp_path),
                        ["val", "test"], ["nevus", "melanoma", "other"])
    for lr, ba, loss in ((0.01, 0.8, 0.9), (0.02, 0.6, 0.3)):
        for split in ("search-0", "search-1"):
            assert recorder.record_finished(_trial(study, tmp_path, split, lr, [ba], "ok", val_loss=loss))
    assert best_config(tmp_path, VARIANT, 2, "balanced_accuracy") == {"lr": 0.01, "weight_decay": 0.0}
    assert best_config(tmp_path, VARIANT, 2, "loss") == {"lr": 0.02, "weight_decay": 0.0}
    by_loss = config_scores(tmp_path, VARIANT, 2, "loss").set_index("lr")["score"]
    assert by_loss.to_dict() == {0.01: pytest.approx(-0.9), 0.02: pytest.approx(-0.3)}


def test_search_score_rule():
    assert selection.search_score([0.6, 0.8], "balanced_accuracy") == pytest.approx(0.7)
    assert selection.search_score([0.6, 0.8], "balanced_accuracy", diverged=True) == 0.0
    assert selection.search_score([0.2, 0.4], "loss") == pytest.approx(-0.3)  # lower loss scores higher
    assert selection.search_score([0.2, 0.4], "loss", diverged=True) == -math.inf
    assert selection.search_score([0.9, None], "auc_roc") == 0.0  # an undefined metric: the floor
    assert selection.score(None, "accuracy") < selection.score(0.0, "accuracy")


def test_a_recording_that_fails_in_the_writer_thread_ends_the_study(tmp_path):
    # The loop hands the recording to the writer thread and goes on; the error (here a real
    # OSError: the results folder is a file) comes at the loop's next turn, and wait() says it too.
    study = load_study(DEMO)
    out = tmp_path
    (out / "results").write_text("not a folder")
    store = MlflowStore(f"sqlite:///{out / 'mlflow.db'}", study.name, out)
    recordings = Recordings(Recorder(study, out, store, ["val", "test"], None))
    trial = _trial(study, out, "search-0", 0.01, [0.5, 0.6], "ok")
    recordings.close(VARIANT, [trial], "stopped")  # returns: the writer records
    with pytest.raises(OSError):
        recordings.wait()
    with pytest.raises(OSError):
        recordings.raise_failed()
    assert recordings.idle(VARIANT) and not parquet_store.is_recorded(out, trial.ref.trial_id)
    (out / "results").unlink()
    recordings.close(VARIANT, [trial], "stopped")  # the writer goes on
    with pytest.raises(OSError):
        recordings.wait()  # once the next recording is written; the first error stays
    assert parquet_store.is_recorded(out, trial.ref.trial_id)
