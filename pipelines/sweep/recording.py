"""Recording off the driver's loop: the study's writer thread, and what ending a trial involves
besides recording it (dropping the resume state of a finished one)."""
from __future__ import annotations

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
    """The study's writer thread: every recording (MLflow, Parquet) runs there, in the order the
    loop hands them over, so the loop goes on following jobs meanwhile (recording a trial takes
    about a second, five the first time). A recording that fails ends the study at the loop's next
    turn (`raise_failed`). A driver killed before its writer caught up loses nothing: the trial
    folders hold the results, and a resumed driver records what has none (`phases`)."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="record")
        self._pending: dict[str, list[Future]] = {}  # variant -> its recordings not yet seen done
        self._progress_queued: set[str] = set()  # trial ids whose epoch logging waits in the queue

    def later(self, variant: str, record, *args) -> None:
        self._pending.setdefault(variant, []).append(self._writer.submit(record, *args))

    def raise_failed(self) -> None:
        """The error of the first recording that failed, if any (it stays: the study is to end)."""
        for variant, futures in self._pending.items():
            self._pending[variant] = [f for f in futures if not (f.done() and f.exception() is None)]
            for f in self._pending[variant]:
                if f.done():
                    f.result()

    def idle(self, variant: str) -> bool:
        """Every recording of `variant` handed over so far is written."""
        return all(f.done() for f in self._pending.get(variant, []))

    def wait(self) -> None:
        """Returns once every recording handed over is written; raises the first that failed."""
        wait([f for futures in self._pending.values() for f in futures])
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
            self.later(variant, log)

    def close(self, variant: str, trials: list[Trial], status: str, error: str | None = None) -> None:
        self.later(variant, lambda: [close(self.recorder, t, status, error) for t in trials])
