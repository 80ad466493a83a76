"""The driver's single writer of results: MLflow runs and the Parquet datasets, fed by a Ray Tune
callback. The trial folders are read, never written: a trial that ends without a final
`result.json` (stopped by ASHA, failed after its retries) is recorded with that status from its
`metrics.jsonl`. A trial counts as recorded once its `results/<trial_id>.parquet` exists, so a
resumed driver records every trial exactly once."""
from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray import tune

from attnsweep.pipelines.trial import executors
from attnsweep.pipelines.store import parquet_store
from attnsweep.pipelines.store.mlflow_store import MlflowStore
from attnsweep.pipelines.sweep.plan import Trial, tune_trials
from attnsweep.pipelines.store.result_rows import epoch_rows, read_epochs, result_rows
from attnsweep.pipelines.config.study import Study
from attnsweep.pipelines.trial.trainer import CHECKPOINT
from attnsweep.pipelines.sweep.tune_trainable import final_result

log = logging.getLogger(__name__)


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


def unfinished_result(trial_dir: Path, status: str, error: str | None = None) -> dict[str, Any]:
    """The record of a trial without a final result. A stopped one keeps its best validation
    epoch so far (what ASHA judged it by); a failed one has no metrics."""
    epochs = read_epochs(trial_dir)
    best = max(epochs, key=lambda e: (e.get("val") or {}).get("balanced_accuracy") or 0.0, default=None)
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
        run_id, terminated = self.store.child_run(trial.ref, trial.cfg.model_dump(mode="json"))
        if not terminated:
            self.store.log_epochs(run_id, read_epochs(trial.ref.dir))

    def record(self, trial: Trial, result: dict[str, Any]) -> None:
        """MLflow first (the row names the run), then the Parquet files (the recorded marker)."""
        if self.is_recorded(trial):
            return
        config = trial.cfg.model_dump(mode="json")
        run_id, terminated = self.store.child_run(trial.ref, config)
        epochs = read_epochs(trial.ref.dir)
        if not terminated:
            self.store.log_epochs(run_id, epochs)
            self.store.finish_child(trial.ref, run_id, result, self.class_names)
        parquet_store.write_trial(
            self.out, trial.ref.trial_id,
            result_rows(trial.ref, config, result, self.eval_sets, run_id, self.code_version),
            epoch_rows(trial.ref, config, epochs))

    def record_finished(self, trial: Trial) -> bool:
        """Record a trial whose trainer finished (e.g. while the driver was down) -> whether it was.
        Its `checkpoint.pt` (the resume state, twice the size of the weights) goes: a finished
        trial is never resumed; `best.pt` stays for the explanations."""
        result = final_result(trial.ref.dir)
        if result is not None:
            self.record(trial, result)
            (trial.ref.dir / CHECKPOINT).unlink(missing_ok=True)
        return result is not None

    def close(self, trial: Trial, status: str, error: str | None = None) -> None:
        """A trial that Tune ended: record its final result, or, if it has none, cancel its job
        (the trainable does too, but an actor may die before it can) and record it as `status`."""
        if self.is_recorded(trial) or self.record_finished(trial):
            return
        job = executors.attach(trial.ref.dir, self.study.executor)  # a local job is stopped by attach
        if job is not None:
            job.cancel(check=False)
        self.record(trial, unfinished_result(trial.ref.dir, status, error))


class TrackerCallback(tune.Callback):
    """Relays one phase of one variant to the recorder (and the progress view)."""

    def __init__(self, recorder: Recorder, phase: str, variant: str, data_dir: Path, progress=None):
        self.recorder, self.phase, self.variant, self.data_dir = recorder, phase, variant, data_dir
        self.progress = progress
        self._trials: dict[str, list[Trial]] = {}

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks into the experiment folder for `Tuner.restore`, which a study
        # never uses (it resumes from its recorded rows); the MLflow client and the live view
        # cannot be pickled, so only the labels go there.
        return {"phase": self.phase, "variant": self.variant}

    def trials_of(self, tune_trial) -> list[Trial]:
        key = tune_trial.trial_id
        if key not in self._trials:
            r = self.recorder
            self._trials[key] = tune_trials(r.study, r.out, self.phase, self.variant, tune_trial.config, self.data_dir)
        return self._trials[key]

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.progress:
            self.progress.started(self.variant, self.phase)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        for t in self.trials_of(trial):
            self.recorder.log_progress(t)
        if self.progress:
            c = trial.config
            label = " ".join([f"lr={c['lr']:.3g} wd={c['weight_decay']:.3g}", *([c["split"]] if "split" in c else [])])
            self.progress.result(self.variant, self.phase, result.get("score"), result.get("epoch"), label)

    def on_trial_complete(self, iteration, trials, trial, **info):
        status = (trial.last_result or {}).get("status")
        ended = "stopped" if status is None else status  # no final report: ASHA stopped it
        for t in self.trials_of(trial):
            self.recorder.close(t, "stopped")
        if self.progress:
            self.progress.ended(self.variant, self.phase, ended, (trial.last_result or {}).get("score"))

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _error_message(trial.error_file)
        log.warning("%s %s trial %s failed: %s", self.variant, self.phase, trial.trial_id, error)
        for t in self.trials_of(trial):
            self.recorder.close(t, "failed", error)
        if self.progress:
            self.progress.ended(self.variant, self.phase, "failed", None)


def _error_message(error_file: str | None) -> str | None:
    """The exception message: the last line of the trial's error file that Tune wrote."""
    if not error_file or not Path(error_file).exists():
        return None
    lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
    return lines[-1][:500] if lines else None
