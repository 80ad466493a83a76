"""The driver's single writer of results: MLflow runs and the Parquet datasets (fed by the driver's
loop through `recording`). The trial folders are read, never written: a trial that ends without
a final `result.json` (stopped by ASHA, failed after its retries) is recorded with that status
from its `metrics.jsonl`. A trial counts as recorded once its `results/<trial_id>.parquet`
exists, so a resumed driver records every trial exactly once."""
from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnsweep.pipelines.config import selection
from attnsweep.pipelines.store import parquet_store
from attnsweep.pipelines.store.mlflow_store import MlflowStore
from attnsweep.pipelines.sweep import budget
from attnsweep.pipelines.sweep.plan import Trial
from attnsweep.pipelines.store.result_rows import epoch_rows, result_rows
from attnsweep.pipelines.config.study import Study
from attnsweep.pipelines.trial.folder import TrialFolder


def code_version() -> str:
    """The git commit of the installed code (`-dirty` with local changes), else the package version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=here,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    from importlib.metadata import version

    return version("attnsweep")


def unfinished_result(trial_dir: Path, status: str, error: str | None = None,
                      metric: str = selection.DEFAULT) -> dict[str, Any]:
    """The record of a trial without a final result. A stopped one keeps its best validation
    epoch so far by `metric` (what ASHA judged it by); a failed one has no metrics."""
    epochs = TrialFolder(trial_dir).epochs()
    best = max(epochs, key=lambda e: selection.score((e.get("val") or {}).get(metric), metric), default=None)
    kept = best if status == "stopped" else None
    return {"status": status, "error": error, "epochs_run": len(epochs),
            "best_epoch": kept["epoch"] if kept else None,
            "metrics": {"val": kept["val"]} if kept else {}}


class Recorder:
    def __init__(self, study: Study, out: Path, store: MlflowStore, eval_sets: Sequence[str],
                 class_names: Sequence[str] | None):
        """`eval_sets`: the evaluated sets of the prepared data (val, test, ood:*), one row each."""
        self.study, self.out, self.store, self.class_names = study, out, store, class_names
        self.eval_sets = list(eval_sets)
        self.code_version = code_version()

    def is_recorded(self, trial: Trial) -> bool:
        return parquet_store.is_recorded(self.out, trial.ref.trial_id)

    def log_progress(self, trial: Trial) -> None:
        if budget.interrupted.is_set():
            return
        run_id, terminated = self.store.child_run(trial.ref, trial.cfg.model_dump(mode="json"))
        if not terminated:
            self.store.log_epochs(run_id, trial.ref.folder.epochs())

    def record(self, trial: Trial, result: dict[str, Any]) -> None:
        """MLflow first (the row names the run), then the Parquet files (the recorded marker)."""
        if self.is_recorded(trial) or budget.interrupted.is_set():  # an interrupt ends no trial
            return
        config = trial.cfg.model_dump(mode="json")
        run_id, terminated = self.store.child_run(trial.ref, config)
        epochs = trial.ref.folder.epochs()
        if not terminated:
            self.store.log_epochs(run_id, epochs)
            self.store.finish_child(trial.ref, run_id, result, self.class_names)
        parquet_store.write_trial(
            self.out, trial.ref.trial_id,
            result_rows(trial.ref, config, result, self.eval_sets, run_id, self.code_version),
            epoch_rows(trial.ref, config, epochs))

    def record_finished(self, trial: Trial) -> bool:
        """Record a trial whose trainer finished (e.g. while the driver was down) -> whether it was."""
        result = trial.ref.folder.final_result()
        if result is not None:
            self.record(trial, result)
        return result is not None

    def record_unfinished(self, trial: Trial, status: str, error: str | None = None) -> None:
        """Record a trial without a final result as `status` (stopped, failed)."""
        self.record(trial, unfinished_result(trial.ref.dir, status, error, trial.cfg.selection_metric))
