"""The report is logged as an artifact of the study's MLflow parent run: a real `mlflow server`
(proxied artifacts) on a free loopback port, read back with `MlflowClient`."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow_server import mlflow_server  # noqa: F401 (fixture: a real server, stopped also on failure)

from attnsweep.pipelines.report.build import build_report, log_report_to_mlflow

GOLDEN = Path(__file__).parent / "golden" / "study"


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
