"""The MLflow UI (a real `mlflow server`, its own React app in headless Chromium) shows a study as
the driver records it: the URL the run prints opens the runs table (not MLflow 3's GenAI page),
and that table lists every variant's parent run with its aggregate, without expanding anything.
The runs are written by `MlflowStore` exactly as the driver writes them (child runs, Parquet
rows, `finish_parent`)."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from chromium import run_chromium
from mlflow import MlflowClient
from mlflow_server import mlflow_server  # noqa: F401 (fixture: a real server, stopped also on failure)

from attnsweep.pipelines.store import parquet_store
from attnsweep.pipelines.store.mlflow_store import MlflowStore
from attnsweep.pipelines.store.mlflow_summary import dataset_digest, runs_url
from attnsweep.pipelines.store.result_rows import TrialRef, epoch_rows, result_rows

pytestmark = pytest.mark.slow

VARIANTS = ("resnet18", "resnet18+se", "resnet18+ga")
EVAL_SETS = ["val", "test", "ood:shifted"]
SPLITS = 3


def _metrics(ba: float) -> dict:
    return {"balanced_accuracy": ba, "accuracy": ba + 0.02, "auc_roc": 0.8, "loss": 0.5, "n_samples": 30,
            "confusion_matrix": [[3, 1], [1, 4]]}


def _record_study(uri: str, out: Path) -> MlflowStore:
    """A study of three variants x three repeat splits, recorded as the driver does; the prepared
    data's manifest is there, so every child logs it as its input dataset."""
    (out / "data").mkdir(parents=True)
    (out / "data" / "manifest.json").write_text(json.dumps({
        "fingerprints": {"dataset": "f00d"}, "splits": {"sha256": "5p1175", "names": ["repeat-0"]},
        "image_size": 48, "datasets": {"dataset": {"n": 400}}}))
    store = MlflowStore(uri, "ui-study", out, "synthderm")
    for vi, variant in enumerate(VARIANTS):
        for s in range(SPLITS):
            trial_id = f"{variant}-{s}".replace("+", "_")
            d = out / "trials" / "repeat" / variant / trial_id
            d.mkdir(parents=True)
            cfg = {"model": variant, "lr": 0.01, "weight_decay": 1e-4, "batch_size": 16, "epochs": 2, "seed": s}
            ba = 0.6 + 0.07 * vi + 0.013 * s * (vi + 1)  # distinct means and spreads per variant
            epochs = [{"epoch": e, "train_loss": 1.0 / e, "lr": 0.01, "seconds": 2.0, "images_per_s": 50.0,
                       "val": {"balanced_accuracy": ba - 0.1 / e, "accuracy": ba, "auc_roc": 0.7, "loss": 0.9}}
                      for e in (1, 2)]
            (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in epochs))
            result = {"status": "ok", "best_epoch": 2, "n_train": 100, "params": 11_000_000, "train_seconds": 4.0,
                      "gpu_seconds": 0.0, "world_size": 1,
                      "metrics": {"val": _metrics(ba + 0.01), "test": _metrics(ba), "ood:shifted": _metrics(ba - 0.1)}}
            ref = TrialRef(study="ui-study", phase="repeat", variant=variant, backbone="resnet18",
                           attention=tuple(variant.split("+")[1:]), dataset="synthderm", split=f"repeat-{s}",
                           trial_id=trial_id, config_hash="c" * 16, dir=d)
            run_id, _ = store.child_run(ref, cfg)
            store.log_epochs(run_id, ref.folder.epochs())
            store.finish_child(ref, run_id, result, ["a", "b"])
            parquet_store.write_trial(out, trial_id, result_rows(ref, cfg, result, EVAL_SETS, run_id, "v"),
                                      epoch_rows(ref, cfg, ref.folder.epochs()))
        store.finish_parent(variant, "repeat")
    return store


@pytest.fixture(scope="module")
def study(mlflow_server, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("ui") / "study"
    return _record_study(mlflow_server, out), out


def _expected(out: Path) -> pd.DataFrame:
    """Mean, std and n of the test balanced accuracy per variant, from the Parquet rows."""
    rows = pd.read_parquet(out / "results")
    test = rows[(rows["eval_set"] == "test") & (rows["status"] == "ok")]
    return test.groupby("variant")["balanced_accuracy"].agg(["mean", "std", "count"])


def test_parents_carry_the_aggregate_and_children_their_provenance(study, mlflow_server):  # noqa: F811
    store, out = study
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment(store.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    expected = _expected(out)
    runs = client.search_runs([store.experiment_id], max_results=100)
    parents = {r.data.tags["attnsweep.variant"]: r for r in runs if r.data.tags.get("attnsweep.kind") == "parent"}
    assert set(parents) == set(VARIANTS)
    for variant, run in parents.items():
        m = run.data.metrics
        assert m["test_balanced_accuracy_mean"] == pytest.approx(expected.loc[variant, "mean"])
        assert m["test_balanced_accuracy_std"] == pytest.approx(expected.loc[variant, "std"])
        assert m["test_n"] == SPLITS and m["ood_shifted_n"] == SPLITS and m["runs_not_ok"] == 0
    child = next(r for r in runs if "attnsweep.trial_id" in r.data.tags)
    (dataset_input,) = client.get_run(child.info.run_id).inputs.dataset_inputs
    assert dataset_input.dataset.name == "synthderm"
    assert dataset_input.dataset.digest == dataset_digest(out / "data")


def test_the_printed_url_opens_the_runs_table_with_every_variant_and_its_aggregate(study, mlflow_server, tmp_path):  # noqa: F811
    store, out = study
    url = runs_url(mlflow_server, store.experiment_id)
    # the app loads its data with fetch(); virtual time waits for pending requests, then renders
    proc = run_chromium(tmp_path, "--window-size=1600,1000", "--virtual-time-budget=30000", "--dump-dom", url,
                        timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = html.unescape(re.sub(r"<[^>]+>", "\n", proc.stdout))
    # the runs page, not the GenAI "Overview" that the bare experiment URL opens in MLflow 3.17
    assert re.findall(r"<h2[^>]*>([^<]*)</h2>", proc.stdout)[:1] == ["Runs"]
    expected = _expected(out)
    for variant in VARIANTS:
        mean, std, n = expected.loc[variant]
        shown = f"{variant} repeat | test balanced_accuracy {mean:.3f} ± {std:.3f} (n={int(n)})"
        assert shown in text, f"{shown!r} not in the rendered runs table"
