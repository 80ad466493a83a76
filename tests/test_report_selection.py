"""The driver's decisions are data: a real study selecting on `auc_roc` (jobs of the stand-in
trainer), stopped (SIGTERM) once every variant's search has chosen. The partial report's Table 5
names the configurations of `selection/*.json`, which are the driver's choice (the MLflow search
parents' `best_*` params, the repeat trials' configuration) and the best `auc_roc` among the
configurations every split of which finished ok; the saved study carries each variant's resolved
settings and baseline."""
from __future__ import annotations

import json
import os
import signal
import time

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from orchestrate_setup import STANDIN, Driver, shrunk_study

from attnsweep.pipelines.config import selection
from attnsweep.pipelines.report.build import build_report
from attnsweep.pipelines.store import parquet_store, selection_record
from attnsweep.pipelines.trial.study_paths import StudyPaths

pytestmark = pytest.mark.slow


def test_partial_report_names_the_drivers_choice(tmp_path):
    study = yaml.safe_load(shrunk_study(tmp_path, name="auc").read_text())
    study["train"]["selection_metric"] = "auc_roc"
    study["train"]["epochs"] = 1
    study["search"] = {"algorithm": "grid", "lr": [0.003, 0.05], "weight_decay": [0.0]}
    study.pop("features", None)
    path = tmp_path / "auc.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    out, paths = tmp_path / "out", StudyPaths(tmp_path / "out")
    variants = [v if isinstance(v, str) else v["id"] for v in study["variants"]]

    driver = Driver("run", str(path), "--out", str(out), "--no-report", env=STANDIN, log=tmp_path / "driver.log")
    try:
        deadline = time.monotonic() + 1500
        while not all(paths.selection_file(v).exists() for v in variants):  # poll the state, with a deadline
            assert driver.proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the searches did not choose in time"
            time.sleep(0.5)
        driver.tree = set()
        os.kill(driver.proc.pid, signal.SIGTERM)  # as scancel does: unfinished repeat jobs are cancelled
        assert driver.proc.wait(timeout=300) == 130
    finally:
        driver.cleanup()

    records = selection_record.read_all(out)
    assert sorted(records) == sorted(variants)
    rows = parquet_store.read(out).to_pandas()
    val = rows[(rows.phase == "search") & (rows.eval_set == "val")]
    client = MlflowClient(tracking_uri=f"sqlite:///{paths.mlflow_db}")
    exp = client.get_experiment_by_name("auc")
    for v, record in records.items():
        assert record["metric"] == "auc_roc" and len(record["configurations"]) == 2
        # the rule, recomputed from the rows: the best mean val auc_roc among all-ok configurations
        scored = []
        for (lr, wd), g in val[val.variant == v].groupby(["lr", "weight_decay"]):
            if set(g.status) == {"ok"} and g.split.nunique() == 2:
                scored.append((selection.score(g.auc_roc.mean(), "auc_roc"), -lr, -wd))
        _, lr, wd = max(scored)
        assert record["chosen"]["lr"] == -lr and record["chosen"]["weight_decay"] == -wd
        # the driver used it: the search parent's params and every repeat trial's configuration
        parent = client.search_runs([exp.experiment_id], f"tags.`attnsweep.variant` = '{v}' and "
                                    "tags.`attnsweep.kind` = 'parent' and tags.`attnsweep.phase` = 'search'")
        assert len(parent) == 1, [r.info.run_name for r in parent]
        params = parent[0].data.params
        assert float(params["best_lr"]) == -lr and float(params["best_weight_decay"]) == -wd
        assert params["selection_metric"] == "auc_roc"
        for trial in paths.iter_trials("repeat", v):
            assert (trial.config()["lr"], trial.config()["weight_decay"]) == (-lr, -wd)

    saved = yaml.safe_load(paths.study_file.read_text())
    assert saved["resolved"]["resnet18+se"]["baseline"] == "resnet18"
    assert saved["resolved"]["resnet18"]["train"]["selection_metric"] == "auc_roc"

    report = build_report(out, explain=False)
    best = pd.read_csv(report / "tables" / "best_hparams.csv")
    got = {r.variant: (r.lr, r.weight_decay, r.selection_metric, r.chosen_by) for r in best.itertuples()}
    assert got == {v: (r["chosen"]["lr"], r["chosen"]["weight_decay"], "auc_roc", "driver")
                   for v, r in records.items()}
    land = pd.read_csv(report / "tables" / "search_landscape.csv")
    assert set(land.metric) == {"auc_roc"}
    assert json.loads(paths.selection_file(variants[0]).read_text())["chosen"]["score"] == pytest.approx(
        best.set_index("variant").loc[variants[0], "search_score"])
