"""Helpers of the tests of what a study survives (issue 11): a one-trial study, a driver held at a
known epoch by the test hold hook (pipelines/trial/hold.py), and the counts the tests compare."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pandas as pd
import yaml
from orchestrate_setup import shrunk_study

from attnsweep.pipelines.trial.hold import AFTER_EPOCH_ENV, DIR_ENV


def one_trial_study(tmp_path: Path, name: str = "tiny", epochs: int = 2, **overrides) -> Path:
    """One variant, one fixed configuration, one repeat split: a single training of `epochs`."""
    path = shrunk_study(tmp_path, name=name, n_variants=1, **overrides)
    study = yaml.safe_load(path.read_text())
    study["train"]["epochs"] = epochs
    study["search"].update(lr=[0.01], weight_decay=[0.0])
    study["splits"].update(search_splits=0, repeat_splits=1)
    study["ood"] = {}
    study["max_failures"] = 0
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def hold_env(hold_dir: Path, after_epoch: int = 1) -> dict:
    hold_dir.mkdir(parents=True, exist_ok=True)
    return {AFTER_EPOCH_ENV: str(after_epoch), DIR_ENV: str(hold_dir)}


def wait_for(predicate, what: str, driver=None, log: Path | None = None, timeout_s: float = 600):
    """Poll `predicate` until it returns something true (a deadline, not a sleep that wins a race)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if driver is not None and driver.proc.poll() is not None:
            raise AssertionError(f"the driver ended while waiting for {what}: " +
                                 (log.read_text()[-3000:] if log else ""))
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def held(hold_dir: Path) -> list[Path]:
    return sorted(hold_dir.glob("*.held"))


def release_all(hold_dir: Path) -> None:
    for h in held(hold_dir):
        h.with_suffix(".release").write_text("")


def counts(out: Path) -> dict:
    """What the closing note reports: trainings (trial folders), jobs submitted, trained epochs,
    Parquet rows, MLflow runs (all / still RUNNING / trial runs) and duplicates (rows and trial runs)."""
    dirs = sorted(p.parent for p in (out / "trials").glob("*/*/*/config.json"))
    jobs = sum(len(json.loads((d / "jobs.json").read_text())) for d in dirs if (d / "jobs.json").exists())
    epochs = sum(len((d / "metrics.jsonl").read_text().splitlines()) for d in dirs if (d / "metrics.jsonl").exists())
    files = [p for p in (out / "results").glob("*.parquet") if not p.name.startswith(".")] \
        if (out / "results").is_dir() else []
    rows = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame(columns=["trial_id", "eval_set"])
    runs, running, trial_runs = 0, 0, []
    if (out / "mlflow.db").exists():
        with sqlite3.connect(out / "mlflow.db") as db:
            runs = db.execute("select count(*) from runs where lifecycle_stage = 'active'").fetchone()[0]
            running = db.execute("select count(*) from runs where lifecycle_stage = 'active' "
                                 "and status = 'RUNNING'").fetchone()[0]
            trial_runs = [r[0] for r in db.execute(
                "select t.value from tags t join runs r on r.run_uuid = t.run_uuid "
                "where t.key = 'attnsweep.trial_id' and r.lifecycle_stage = 'active'")]
    return {"trainings": len(dirs), "jobs": jobs, "epochs": epochs, "rows": len(rows), "mlflow_runs": runs, "running_runs": running,
            "trial_runs": len(trial_runs),
            "duplicates": int(rows.duplicated(["trial_id", "eval_set"]).sum()) + len(trial_runs) - len(set(trial_runs))}
