"""The driver's single writer of results: the Parquet datasets and MLflow runs (fed by the driver's
loop through `recording`). The trial folders are read, never written: a trial that ends without
a final `result.json` (stopped by ASHA, failed after its retries) is recorded with that status
from its `metrics.jsonl`. A trial counts as recorded once its `results/<trial_id>.parquet`
exists, so a resumed driver records every trial exactly once."""
from __future__ import annotations

import functools
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attnsweep.pipelines.config import selection
from attnsweep.pipelines.store import parquet_store
from attnsweep.pipelines.store.mlflow_store import MlflowStore, one_line_error, unavailable
from attnsweep.pipelines.sweep import budget
from attnsweep.pipelines.sweep.plan import Trial
from attnsweep.pipelines.store.result_rows import TrialRef, epoch_rows, result_rows
from attnsweep.pipelines.config.study import Study
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.trial.study_paths import StudyPaths

FAILED_PHASE = "failed"  # `Recorder.parents`: the phase failed, its parent run ends FAILED


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
    """Records each trial: its Parquet rows first, from the trial folder, whatever MLflow does; then
    its MLflow run. MLflow's own HTTP client retries each call with backoff (`mlflow_store`); a
    write that still fails (the server is down, its database gone) leaves the trial in `pending`,
    replayed in order at the next recording, and by a resumed driver (`resync`: every recorded
    trial without a finished run). One warning line when MLflow stops answering, one when it is back."""

    def __init__(self, study: Study, out: Path, store: MlflowStore, eval_sets: Sequence[str],
                 class_names: Sequence[str] | None, warn: Callable[[str], None] = print):
        """`eval_sets`: the evaluated sets of the prepared data (val, test, ood:*), one row each."""
        self.study, self.out, self.store, self.class_names = study, out, store, class_names
        self.eval_sets = list(eval_sets)
        self.code_version = code_version()
        self.warn = warn
        self.pending: dict[str, tuple[TrialRef, dict[str, Any]]] = {}  # trial id -> what MLflow has not got yet
        # parents not finished in MLflow yet -> the chosen configuration, or FAILED_PHASE
        self.parents: dict[tuple[str, str], dict[str, float] | str | None] = {}
        self.down: str | None = None  # why MLflow stopped answering, None while it answers
        # True: `record` and `finish_parent` only queue for MLflow and someone else calls `flush` (the
        # driver's MLflow thread, `recording.Recordings`), so rows never wait for MLflow.
        self.defer_mlflow = False
        self._lock = threading.RLock()  # one MLflow writer at a time

    def is_recorded(self, trial: Trial) -> bool:
        return parquet_store.is_recorded(self.out, trial.ref.trial_id)

    def log_progress(self, trial: Trial) -> None:
        if budget.interrupted.is_set() or self.down:  # the final recording logs every epoch
            return
        with self._lock:
            self.mlflow(lambda: self._log_epochs(trial.ref, trial.cfg.model_dump(mode="json")))

    def record(self, trial: Trial, result: dict[str, Any]) -> None:
        """The Parquet files (the recorded marker), then MLflow (see the class)."""
        if self.is_recorded(trial) or budget.interrupted.is_set():  # an interrupt ends no trial
            return
        self._write_rows(trial.ref, result, self.store.known_run(trial.ref.trial_id))
        self.pending[trial.ref.trial_id] = (trial.ref, result)
        if not self.defer_mlflow:
            self.flush()

    def finish_parent(self, variant: str, phase: str, best: dict[str, float] | str | None = None) -> None:
        """A phase's parent run gets its aggregate when MLflow has every trial of it (see `flush`)."""
        self.parents[(variant, phase)] = best
        if not self.defer_mlflow:
            self.flush()

    def fail_parent(self, variant: str, phase: str) -> None:
        """A phase that ended without a result to aggregate: its parent run ends FAILED, not RUNNING."""
        self.finish_parent(variant, phase, FAILED_PHASE)

    def flush(self) -> bool:
        """Replay what MLflow has not got, in order -> whether it has everything now."""
        with self._lock:
            for trial_id, (ref, result) in list(self.pending.items()):
                if not self.mlflow(functools.partial(self._log_trial, ref, result)):
                    return False
                del self.pending[trial_id]
            for (variant, phase), best in list(self.parents.items()):
                finish = functools.partial(self.store.fail_parent, variant, phase) if best == FAILED_PHASE else \
                    functools.partial(self.store.finish_parent, variant, phase, best)
                if not self.mlflow(finish):
                    return False
                del self.parents[(variant, phase)]
            return True

    def resync(self) -> int:
        """Queue every recorded trial whose MLflow run is missing or unfinished (MLflow was down
        when it was recorded, or its store was replaced) and replay them -> how many were queued."""
        rows = parquet_store.read(self.out).to_pandas().drop_duplicates("trial_id")
        for r in rows.itertuples():
            if self.store.is_finished(r.trial_id) or r.trial_id in self.pending:
                continue
            ref = TrialRef(study=r.study, phase=r.phase, variant=r.variant, backbone=r.backbone,
                           attention=tuple(a for a in r.attention.split("+") if a), dataset=r.dataset,
                           split=r.split, trial_id=r.trial_id, config_hash=r.config_hash,
                           dir=StudyPaths(self.out).trial_dir(r.phase, r.variant, r.trial_id))
            result = ref.folder.final_result() or unfinished_result(ref.dir, r.status, None, self.study.train.selection_metric)
            self.pending[r.trial_id] = (ref, result)
        queued = len(self.pending)
        if queued:
            self.warn(f"MLflow: replaying {queued} recorded trial(s) it has no finished run of")
            self.flush()
        return queued

    def _log_epochs(self, ref: TrialRef, config: dict[str, Any]) -> tuple[str, bool]:
        run_id, terminated = self.store.child_run(ref, config)
        if not terminated:
            self.store.log_epochs(run_id, ref.folder.epochs())
        return run_id, terminated

    def _log_trial(self, ref: TrialRef, result: dict[str, Any]) -> None:
        config = ref.folder.config()
        run_id, terminated = self._log_epochs(ref, config)
        if not terminated:
            self.store.finish_child(ref, run_id, result, self.class_names)
        if parquet_store.run_id(self.out, ref.trial_id) != run_id:  # recorded while MLflow was down
            self._write_rows(ref, result, run_id)

    def _write_rows(self, ref: TrialRef, result: dict[str, Any], run_id: str | None) -> None:
        config = ref.folder.config()
        parquet_store.write_trial(self.out, ref.trial_id,
                                  result_rows(ref, config, result, self.eval_sets, run_id, self.code_version),
                                  epoch_rows(ref, config, ref.folder.epochs()))

    def mlflow(self, write: Callable[[], object]) -> bool:
        """`write` -> whether MLflow took it; an unavailable MLflow is a warning line, not an error."""
        try:
            write()
        except unavailable() as e:
            if self.down is None:
                self.warn(f"warning: MLflow at {self.store.tracking_uri} is not answering ({one_line_error(e)}); "
                          f"results go to Parquet, MLflow gets them when it is back (or by --resume)")
            self.down = one_line_error(e)
            return False
        if self.down is not None:
            self.warn(f"MLflow at {self.store.tracking_uri} answers again; replaying what it missed")
            self.down = None
        return True

    def record_finished(self, trial: Trial) -> bool:
        """Record a trial whose trainer finished (e.g. while the driver was down) -> whether it was."""
        result = trial.ref.folder.final_result()
        if result is not None:
            self.record(trial, result)
        return result is not None

    def record_unfinished(self, trial: Trial, status: str, error: str | None = None) -> None:
        """Record a trial without a final result as `status` (stopped, failed)."""
        self.record(trial, unfinished_result(trial.ref.dir, status, error, trial.cfg.selection_metric))
