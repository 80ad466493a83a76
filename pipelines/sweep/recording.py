"""Recording off the driver's loop: the study's writer thread, and what ending a trial involves
besides recording it (dropping the resume state of a finished one)."""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

from attnsweep.pipelines.sweep.plan import Trial
from attnsweep.pipelines.sweep.tracking import Recorder


def finish(recorder: Recorder, trial: Trial) -> bool:
    """Record a trial whose trainer finished -> whether it was. Its `checkpoint.pt` (the resume
    state, twice the size of the weights) goes: a finished trial is never resumed; `best.pt`
    stays for the explanations."""
    if not recorder.record_finished(trial):
        return False
    trial.ref.folder.drop_checkpoint()
    return True


def close(recorder: Recorder, trial: Trial, status: str, error: str | None = None) -> None:
    """A trial that ended: record its final result, or, if it has none (its job was cancelled or
    failed), record it as `status`."""
    if recorder.is_recorded(trial) or finish(recorder, trial):
        return
    recorder.record_unfinished(trial, status, error)


class Recordings:
    """The study's two writer threads, so that the loop goes on following jobs meanwhile: one writes
    each ended trial's Parquet rows, in the order the loop hands them over (a phase's next step reads
    them: `idle`); the other brings MLflow up to date (`Recorder.flush`: runs, epochs, parent
    aggregates), which takes a second or more per trial, and never holds up the rows. A recording
    that fails ends the study at the loop's next turn (`raise_failed`). A driver killed before its
    writers caught up loses nothing: the trial folders hold the results, and a resumed driver
    records what has no rows (`phases`) and replays what MLflow lacks (`Recorder.resync`)."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        recorder.defer_mlflow = True
        self._rows = ThreadPoolExecutor(1, thread_name_prefix="record-rows")
        self._mlflow = ThreadPoolExecutor(1, thread_name_prefix="record-mlflow")
        self._pending: dict[str, list[Future]] = {}  # variant -> its row writes not yet seen done
        self._mlflow_pending: list[Future] = []
        self._flush_queued = False
        self._progress_queued: set[str] = set()  # trial ids whose epoch logging waits in the queue
        self._lock = threading.Lock()  # the loop and the rows thread both hand work to the MLflow thread

    def later(self, variant: str, record, *args) -> None:
        self._pending.setdefault(variant, []).append(self._rows.submit(record, *args))

    def _in_mlflow_thread(self, write) -> None:
        with self._lock:
            self._mlflow_pending = [f for f in self._mlflow_pending if not (f.done() and f.exception() is None)]
            self._mlflow_pending.append(self._mlflow.submit(write))

    def mlflow_soon(self) -> None:
        """Bring MLflow up to date in its thread (one flush waiting in its queue at most)."""
        with self._lock:
            if self._flush_queued:
                return
            self._flush_queued = True

        def flush() -> None:
            with self._lock:
                self._flush_queued = False
            self.recorder.flush()

        self._in_mlflow_thread(flush)

    def raise_failed(self) -> None:
        """The error of the first recording that failed, if any (it stays: the study is to end)."""
        for variant, futures in self._pending.items():
            self._pending[variant] = [f for f in futures if not (f.done() and f.exception() is None)]
            for f in self._pending[variant]:
                if f.done():
                    f.result()
        with self._lock:
            mlflow = list(self._mlflow_pending)
        for f in mlflow:
            if f.done():
                f.result()

    def idle(self, variant: str) -> bool:
        """Every row write of `variant` handed over so far is done."""
        return all(f.done() for f in self._pending.get(variant, []))

    def wait(self, raise_failed: bool = True) -> None:
        """Returns once everything handed over is written, MLflow included as far as it answers;
        raises the first recording that failed (unless `raise_failed` is False)."""
        wait([f for futures in self._pending.values() for f in futures])
        self.mlflow_soon()
        with self._lock:
            mlflow = list(self._mlflow_pending)
        wait(mlflow)
        if raise_failed:
            self.raise_failed()

    def epoch(self, variant: str, trials: list[Trial]) -> None:
        """Log the trials' new epochs to MLflow. A trial whose epochs wait to be logged already is
        not queued again (the logging reads every epoch so far), so a writer that fell behind
        catches up instead of logging one epoch per turn."""
        new = [t for t in trials if t.ref.trial_id not in self._progress_queued]
        self._progress_queued.update(t.ref.trial_id for t in new)

        def log() -> None:
            for t in new:
                self._progress_queued.discard(t.ref.trial_id)
                self.recorder.log_progress(t)

        if new:
            self._in_mlflow_thread(log)

    def close(self, variant: str, trials: list[Trial], status: str, error: str | None = None) -> None:
        def record() -> None:
            for t in trials:
                close(self.recorder, t, status, error)
            self.mlflow_soon()

        self.later(variant, record)
