"""The report of an unfinished or troubled study: the search phase only, a variant whose every run
failed. It still builds, and says what is missing instead of failing."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from attnsweep.pipelines.report.build import build_report
from attnsweep.pipelines.store.results_schema import RESULTS_SCHEMA

GOLDEN = Path(__file__).parent / "golden" / "study"


def study_with(tmp_path: Path, edit) -> Path:
    out = tmp_path / "study"
    shutil.copytree(GOLDEN, out)
    results = pd.read_parquet(out / "results")
    shutil.rmtree(out / "results")
    (out / "results").mkdir()
    rows = edit(results).astype({"finished_at": object})  # Timestamps: pyarrow keeps the zone
    pq.write_table(pa.Table.from_pandas(rows, schema=RESULTS_SCHEMA, preserve_index=False),
                   out / "results" / "all.parquet")
    return out


def test_search_phase_only(tmp_path):
    out = study_with(tmp_path, lambda r: r[r.phase == "search"])
    report = build_report(out, explain=False)
    assert pd.read_csv(report / "tables" / "comparisons.csv").empty
    # without the driver's record (selection/) and without repeat rows, no configuration is named:
    # the report does not choose by a rule of its own (tests/test_report_selection.py has the record)
    assert pd.read_csv(report / "tables" / "best_hparams.csv").empty
    land = pd.read_csv(report / "tables" / "search_landscape.csv")
    assert len(land) and set(land.metric) == {"balanced_accuracy"}
    html = (report / "index.html").read_text()
    assert "distribution_" not in html and "landscape_synthderm.png" in html


def test_a_variant_whose_runs_all_failed(tmp_path):
    def fail(r: pd.DataFrame) -> pd.DataFrame:
        hit = (r.variant == "resnet18+ela") & (r.phase == "repeat")
        r = r.copy()
        r.loc[hit, "status"] = "failed"
        r.loc[hit, ["balanced_accuracy", "accuracy", "auc_roc", "loss", "best_epoch"]] = None
        r.loc[r.variant == "resnet18+ela", "params"] = None  # never built: no parameter count
        return r

    report = build_report(study_with(tmp_path, fail), explain=False)
    comp = pd.read_csv(report / "tables" / "comparisons.csv")
    ela = comp[(comp.variant == "resnet18+ela") & (comp.metric == "balanced_accuracy")]
    assert (ela.n == 0).all() and (ela.excluded_runs == 5).all() and not ela.significant.any()
    assert ela.p_welch.isna().all()
    table2 = pd.read_csv(report / "tables" / "results_balanced_accuracy.csv").set_index("variant")
    assert table2.loc["resnet18+ela", "synthderm"] == "n/a (n/a)"
    params = pd.read_csv(report / "tables" / "params.csv").set_index("variant")
    assert pd.isna(params.loc["resnet18+ela", "params"])
    left = pd.read_csv(report / "tables" / "left_out_runs.csv")
    assert (left.variant == "resnet18+ela").sum() == 10  # 5 splits x 2 datasets


def test_a_one_variant_study_says_none_where_there_is_nothing_to_compare(tmp_path):
    out = study_with(tmp_path, lambda r: r[r.variant == "resnet18"])
    report = build_report(out, explain=False)
    html = (report / "index.html").read_text()
    assert "(none): every variant of this study is its own baseline" in html
    assert "(none): every run finished with status ok." in html


def test_confusion_matrices_and_failure_reasons_come_from_the_trial_folders(tmp_path):
    """The Parquet rows carry neither confusion matrices nor error messages: the report reads
    them from `trials/<phase>/<variant>/<trial_id>/result.json` of the study folder."""
    import json

    def fail_one(r: pd.DataFrame) -> pd.DataFrame:
        r = r.copy()
        hit = (r.trial_id == "synthpath-resnet18-r1")
        r.loc[hit, "status"] = "failed"
        r.loc[hit, ["balanced_accuracy", "accuracy", "auc_roc", "loss", "best_epoch"]] = None
        return r

    out = study_with(tmp_path, fail_one)
    rows = pd.read_parquet(out / "results")
    ok = rows[(rows.phase == "repeat") & (rows.status == "ok") & (rows.eval_set == "test")]
    for run in ok.itertuples():
        d = out / "trials" / "repeat" / run.variant / run.trial_id
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"status": "ok", "metrics": {"test": {
            "confusion_matrix": [[8, 2], [1, 9]]}}}))
    failed = out / "trials" / "repeat" / "resnet18" / "synthpath-resnet18-r1"
    failed.mkdir(parents=True)
    (failed / "result.json").write_text(json.dumps({"status": "failed", "error": "Traceback ...\nRuntimeError: CUDA out of memory"}))
    report = build_report(out, explain=False)
    html = (report / "index.html").read_text()
    assert 'alt="confusion_synthderm.png"' in html and 'alt="confusion_synthpath.png"' in html
    assert (report / "confusion_synthderm.png").stat().st_size > 5_000
    not_ok = pd.read_csv(report / "tables" / "runs_not_ok.csv").set_index("trial_id")
    assert not_ok.loc["synthpath-resnet18-r1", "reason"] == "failed (configuration): RuntimeError: CUDA out of memory"
    assert bool(not_ok.loc["synthpath-resnet18-r1", "left_out"])


def test_curves_follow_the_selection_metric(tmp_path):
    out = study_with(tmp_path, lambda r: r)
    study = out / "study.yaml"
    study.write_text(study.read_text().replace("selection_metric: balanced_accuracy", "selection_metric: auc_roc"))
    html = (build_report(out, explain=False) / "index.html").read_text()
    assert "Validation auc_roc (the selection metric)" in html
    assert "each run's epoch is the one with the best\n  validation auc_roc" in html
