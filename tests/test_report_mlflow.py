"""The report is logged as an artifact of the study's MLflow parent run, the Bayesian probabilities
of its comparisons as that run's metrics: a real `mlflow server` (proxied artifacts) on a free
loopback port, read back with `MlflowClient`."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from mlflow_server import mlflow_server  # noqa: F401 (fixture: a real server, stopped also on failure)

from attnsweep.pipelines.report.build import build_report, log_report_to_mlflow

GOLDEN = Path(__file__).parent / "golden" / "study"


@pytest.mark.slow
def test_report_is_logged_to_the_parent_run(mlflow_server, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(GOLDEN, out)
    client = MlflowClient(tracking_uri=mlflow_server)
    parent = client.create_run(client.create_experiment("golden")).info.run_id
    with pytest.raises(FileNotFoundError, match="no report to log"):
        log_report_to_mlflow(out, mlflow_server, parent)

    report = build_report(out, explain=False)
    log_report_to_mlflow(out, mlflow_server, parent)
    names = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/index.html", "report/report.md", "report/tables"} <= names
    tables = {a.path for a in client.list_artifacts(parent, "report/tables")}
    assert "report/tables/comparisons.csv" in tables
    got = Path(client.download_artifacts(parent, "report/tables/comparisons.csv", str(tmp_path / "dl")))
    assert got.read_bytes() == (report / "tables" / "comparisons.csv").read_bytes()
    # the Bayesian probabilities, one metric per comparison and outcome, equal to the Parquet table
    comp = pd.read_parquet(report / "tables" / "comparisons.parquet")
    tested = comp[comp.prob_better.notna()]
    metrics = client.get_run(parent).data.metrics
    assert len([k for k in metrics if k.startswith("bayes/")]) == 3 * len(tested)
    ela = tested[(tested.variant == "resnet18+ela") & (tested.dataset == "synthderm") & (tested.eval_set == "test")
                 & (tested.metric == "balanced_accuracy")].iloc[0]
    assert metrics["bayes/synthderm/test/balanced_accuracy/resnet18_ela/p_worse"] == ela.prob_worse
    assert metrics["bayes/synthderm/ood_shifted/balanced_accuracy/resnet18_ela/p_better"] == tested[
        (tested.variant == "resnet18+ela") & (tested.eval_set == "ood:shifted")
        & (tested.metric == "balanced_accuracy") & (tested.dataset == "synthderm")].iloc[0].prob_better
