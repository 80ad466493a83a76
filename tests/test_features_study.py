"""`attnsweep features` on a real study folder (synthderm, a small CNN trained by the real trainer
on two repeat splits, `features_setup`): Table 3 printed and written as Parquet + CSV, logged to
the study's MLflow run, shown in the report (rendered by Chromium); bad input is one line and
writes nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from features_setup import trained_study
from mlflow.tracking import MlflowClient

from attnsweep.data import DatasetSpec
from attnsweep.pipelines.store.mlflow_store import MlflowStore, default_tracking_uri

pytestmark = pytest.mark.slow

COLUMNS = ["skin_tone", "patch", "sex", "age"]


def attnsweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnsweep.pipelines.cli", *args], capture_output=True,
                          text=True, timeout=3000)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("features") / "featstudy"
    spec = DatasetSpec(format="synthderm", options={"n": 200, "seed": 0, "bias_strength": 0.5})
    return trained_study(out, spec, ["cnn2"], {"columns": COLUMNS, "tests": ["kci", "rcot", "cmiknn"]},
                         repeat_splits=2, epochs=1)


def test_features_writes_prints_and_logs_table3(study):
    proc = attnsweep("features", str(study))
    assert proc.returncode == 0, proc.stderr
    assert "Table 3" in proc.stdout and all(c in proc.stdout for c in COLUMNS)
    rows = pd.read_parquet(study / "features" / "usage.parquet")
    # best split only: one model, 4 features x 3 tests
    assert len(rows) == 12 and rows["split"].nunique() == 1 and set(rows["test"]) == {"kci", "rcot", "cmiknn"}
    n_test = pd.read_parquet(study / "results").query("eval_set == 'test'")["n_samples"].iloc[0]
    assert (rows["n"] + rows["n_dropped"] == n_test).all()
    assert rows["p_value"].between(0, 1).all() and (rows["rejected"] == (rows["p_value"] < 0.01)).all()
    assert json.loads(rows.loc[rows["test"] == "rcot", "params"].iloc[0])["num_f"] == 100
    assert rows["library"].str.startswith(("causal-learn ", "tigramite ")).all()
    table = pd.read_csv(study / "features" / "table3.csv", index_col="variant")
    assert list(table.columns) == COLUMNS and set(table.loc["cnn2"]) <= {"✓", "✗"}
    for feature, mark in table.loc["cnn2"].items():  # the table is the majority of the rows
        assert (mark == "✓") == (rows.loc[rows["feature"] == feature, "rejected"].sum() >= 2)
    # the same files in the study's MLflow run
    uri = default_tracking_uri(study)
    run = MlflowStore(uri, study.name, study).study_run()
    logged = {a.path for a in MlflowClient(uri).list_artifacts(run, "features")}
    assert logged == {"features/usage.parquet", "features/table3.csv"}


def test_all_repeat_splits_give_a_usage_rate(study, tmp_path):
    proc = attnsweep("features", str(study), "--models", "all", "--tests", "rcot", "--no-mlflow")
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_parquet(study / "features" / "usage.parquet")
    assert sorted(rows["split"].unique()) == ["repeat-0", "repeat-1"] and len(rows) == 8
    table = pd.read_csv(study / "features" / "table3.csv", index_col="variant")
    for feature in COLUMNS:
        used = int(rows.loc[rows["feature"] == feature, "used"].sum())
        assert table.loc["cnn2", feature] == f"{used}/2"


class FeatureTable(HTMLParser):
    """Cells (text, title) of <table id="feature-usage-table">."""

    def __init__(self):
        super().__init__()
        self.inside, self.cells, self.title = False, [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.inside |= tag == "table" and a.get("id") == "feature-usage-table"
        if self.inside and tag == "td":
            self.title = a.get("title", "")

    def handle_endtag(self, tag):
        self.inside &= tag != "table"

    def handle_data(self, data):
        if self.inside and self.title is not None and data.strip():
            self.cells.append((data.strip(), self.title))
            self.title = None


def test_report_shows_table3_with_p_values_on_hover(study, tmp_path):
    from test_report_html import run_chromium

    assert attnsweep("features", str(study), "--no-mlflow").returncode == 0
    proc = attnsweep("report", str(study), "--no-explain")
    assert proc.returncode == 0, proc.stderr
    dom = run_chromium(tmp_path, "--dump-dom", (study / "report" / "index.html").as_uri())
    parser = FeatureTable()
    parser.feed(dom.stdout)
    assert parser.cells[0][0] == "cnn2" and len(parser.cells) == 1 + len(COLUMNS)
    for mark, title in parser.cells[1:]:
        assert mark in {"✓", "✗"} and title.count("p=") == 3
    assert "Feature usage (Table 3 style)" in (study / "report" / "report.md").read_text()


@pytest.mark.parametrize("args, field", [(["--columns", "age,nosuch"], "features.columns"),
                                         (["--eval-set", "ood:none"], "features.eval_set"),
                                         (["--tests", "chsic"], "features.tests"),
                                         (["--alpha", "2"], "features.alpha")])
def test_bad_input_is_one_line_and_writes_nothing(study, args, field):
    before = {p: p.stat().st_mtime_ns for p in (study / "features").glob("*")} if (study / "features").exists() else {}
    proc = attnsweep("features", str(study), "--no-mlflow", *args)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and field in lines[0], proc.stderr
    after = {p: p.stat().st_mtime_ns for p in (study / "features").glob("*")} if (study / "features").exists() else {}
    assert after == before
