"""Records the golden test study (`tests/golden/study/`: six variants, synthetic numbers, no
trial folders; its `synthderm` dataset only, as a study has one) into an MLflow store the way the driver does (`MlflowStore`: a child run
per trial and split with its final values, the parents with their aggregates, the report in the
`report` run), for screenshots of the UI without training anything:

    python docs/record_golden.py /tmp/golden && python docs/make_screenshots.py /tmp/golden
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

from attnsweep.pipelines.report.build import build_report, log_report_to_mlflow
from attnsweep.pipelines.store.mlflow_store import MlflowStore, default_tracking_uri
from attnsweep.pipelines.config.selection import METRICS
from attnsweep.pipelines.store.result_rows import TrialRef

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden" / "study"


def main(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(GOLDEN, out, ignore=shutil.ignore_patterns("synthpath-*"))
    rows = pd.read_parquet(out / "results")
    store = MlflowStore(default_tracking_uri(out), "golden", out)
    for (phase, variant, trial_id, split), g in rows.groupby(["phase", "variant", "trial_id", "split"], sort=False):
        first = g.iloc[0]
        ref = TrialRef(study="golden", phase=phase, variant=variant, backbone=first["backbone"],
                       attention=tuple(filter(None, first["attention"].split("+"))), dataset=first["dataset"],
                       split=split, trial_id=trial_id, config_hash=first["config_hash"], dir=out / "none")
        config = {"model": variant, "lr": first["lr"], "weight_decay": first["weight_decay"], "seed": first["seed"]}
        run_id, _ = store.child_run(ref, config)
        metrics = {r["eval_set"]: {k: r[k] for k in METRICS if pd.notna(r[k])} for _, r in g.iterrows()}
        store.finish_child(ref, run_id, {"status": first["status"], "best_epoch": first["best_epoch"],
                                         "metrics": metrics}, None)
    for variant in rows["variant"].unique():
        for phase in ("search", "repeat"):
            best = None
            if phase == "search":
                rep = rows[(rows["variant"] == variant) & (rows["phase"] == "repeat")].iloc[0]
                best = {"lr": rep["lr"], "weight_decay": rep["weight_decay"]}
            store.finish_parent(variant, phase, best)
    build_report(out, explain=False)
    log_report_to_mlflow(out, default_tracking_uri(out), store.study_run())
    store.client.set_terminated(store.study_run(), "FINISHED")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
