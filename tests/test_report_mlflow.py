"""The report is logged as an artifact of the study's MLflow parent run: a real `mlflow server`
(proxied artifacts) on a free loopback port, read back with `MlflowClient`."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from attnsweep.pipelines.report import build_report, log_report_to_mlflow

GOLDEN = Path(__file__).parent / "golden" / "study"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


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
