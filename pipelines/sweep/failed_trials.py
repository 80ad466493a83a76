"""Failed trials of a study: which failed and why, and the retry of infrastructure failures.

A failed trial is recorded (its rows say `failed`), so the study can finish and report it; but a
failure of the infrastructure is no result: `--resume` forgets its record (Parquet files and MLflow
run) and the trial trains again, from its checkpoint. A study with failed trials ends non-zero
unless `--allow-failed`."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from attnsweep.pipelines.store import parquet_store
from attnsweep.pipelines.store.mlflow_store import MlflowStore
from attnsweep.pipelines.trial.failures import CONFIGURATION, trial_failure
from attnsweep.pipelines.trial.study_paths import StudyPaths


class StudyIncomplete(RuntimeError):
    """The study finished with failed trials; the message (one line) lists them."""


def failed_trials(out: Path) -> pd.DataFrame:
    """One row per recorded failed trial: phase, variant, split, trial_id, failure (kind), why."""
    rows = parquet_store.read(out).to_pandas()
    failed = rows[rows["status"] == "failed"].drop_duplicates("trial_id")
    records = []
    for r in failed.itertuples():
        kind, why = trial_failure(StudyPaths(out).trial_dir(r.phase, r.variant, r.trial_id))
        records.append({"phase": r.phase, "variant": r.variant, "split": r.split, "trial_id": r.trial_id,
                        "failure": kind, "why": why})
    return pd.DataFrame(records, columns=["phase", "variant", "split", "trial_id", "failure", "why"])


def retry_infrastructure_failures(out: Path, store: MlflowStore) -> list[str]:
    """Forget the records of trials that failed for infrastructure reasons -> their trial ids."""
    failed = failed_trials(out)
    retried = failed[failed["failure"] != CONFIGURATION]["trial_id"].tolist()
    for trial_id in retried:
        parquet_store.forget_trial(out, trial_id)
        store.discard_child(trial_id)
    return retried


def check_complete(out: Path, allow_failed: bool) -> pd.DataFrame:
    """The failed trials; `StudyIncomplete` if there are any and they are not allowed."""
    failed = failed_trials(out)
    if len(failed) and not allow_failed:
        first = failed.iloc[0]
        kinds = ", ".join(f"{n} {k}" for k, n in failed["failure"].value_counts().items())
        raise StudyIncomplete(
            f"{len(failed)} trial(s) failed ({kinds}; first: {first.phase} {first.variant} {first.split}: "
            f"{first.failure}, {first.why}); the report lists them; `--resume` retries the infrastructure "
            "failures, `--allow-failed` accepts the study without them")
    return failed
