"""The Ray Tune side of recording: a callback that relays each Tune trial's trials to the recorder
and the progress view, and what ending a trial involves besides recording it (cancelling its job,
dropping the resume state of a finished one)."""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from ray import tune

from attnsweep.pipelines.sweep.plan import Trial, tune_trials
from attnsweep.pipelines.sweep.tracking import Recorder
from attnsweep.pipelines.trial import executors

log = logging.getLogger(__name__)


def finish(recorder: Recorder, trial: Trial) -> bool:
    """Record a trial whose trainer finished -> whether it was. Its `checkpoint.pt` (the resume
    state, twice the size of the weights) goes: a finished trial is never resumed; `best.pt`
    stays for the explanations."""
    if not recorder.record_finished(trial):
        return False
    trial.ref.folder.drop_checkpoint()
    return True


def close(recorder: Recorder, trial: Trial, status: str, error: str | None = None) -> None:
    """A trial that Tune ended: record its final result, or, if it has none, cancel its job
    (the trainable does too, but an actor may die before it can) and record it as `status`."""
    if recorder.is_recorded(trial) or finish(recorder, trial):
        return
    job = executors.attach(trial.ref.dir, recorder.study.variant(trial.ref.variant).executor)  # a local job is stopped by attach
    if job is not None:
        job.cancel(check=False)
    recorder.record_unfinished(trial, status, error)


class TrackerCallback(tune.Callback):
    """Relays one phase of one variant to the recorder (and the progress view).

    The recording (MLflow, Parquet) runs in a writer thread of this Tuner, in the order Tune reports:
    Tune calls its callbacks in the loop that also starts the Tuner's next trial, and recording a
    trial takes about a second (five the first time), which the next trial's jobs waited for
    (bench/scheduler.py). A recording that fails ends the Tuner at its next step with its error;
    `wait()` returns once everything is written. A driver killed before
    its writer caught up loses nothing: the trial folders hold the results, and a resumed driver
    records what has none (`phases.run_search`, `run_repeat`)."""

    def __init__(self, recorder: Recorder, phase: str, variant: str, data_dir: Path, progress=None):
        self.recorder, self.phase, self.variant, self.data_dir = recorder, phase, variant, data_dir
        self.progress = progress
        self._trials: dict[str, list[Trial]] = {}
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"record-{phase}-{variant}")
        self._pending: list[Future] = []

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks into the experiment folder for `Tuner.restore`, which a study
        # never uses (it resumes from its recorded rows); the MLflow client and the live view
        # cannot be pickled, so only the labels go there.
        return {"phase": self.phase, "variant": self.variant}

    def _later(self, record, *args) -> None:
        self._pending.append(self._writer.submit(record, *args))

    def _raise_failed(self) -> None:
        """The error of the first recording that failed, if any (it stays: the Tuner is to end)."""
        self._pending = [f for f in self._pending if not (f.done() and f.exception() is None)]
        for f in self._pending:
            if f.done():
                f.result()

    def wait(self) -> None:
        """Returns once every recording of this Tuner is written; raises the first that failed. (The
        writer thread ends with this callback: an executor's thread exits once it is collected.)"""
        wait(self._pending)
        self._raise_failed()

    def on_step_begin(self, iteration, trials, **info):
        self._raise_failed()

    def _log_progress(self, tune_trial) -> None:
        for t in self.trials_of(tune_trial):
            self.recorder.log_progress(t)

    def _close(self, tune_trial, status: str, error: str | None = None) -> None:
        for t in self.trials_of(tune_trial):
            close(self.recorder, t, status, error)

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
        self._later(self._log_progress, trial)
        if self.progress:
            c = trial.config
            label = " ".join([f"lr={c['lr']:.3g} wd={c['weight_decay']:.3g}", *([c["split"]] if "split" in c else [])])
            self.progress.result(self.variant, self.phase, result.get("score"), result.get("epoch"), label)

    def on_trial_complete(self, iteration, trials, trial, **info):
        status = (trial.last_result or {}).get("status")
        ended = "stopped" if status is None else status  # no final report: ASHA stopped it
        self._later(self._close, trial, "stopped")
        if self.progress:
            self.progress.ended(self.variant, self.phase, ended, (trial.last_result or {}).get("score"))

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _error_message(trial.error_file)
        log.warning("%s %s trial %s failed: %s", self.variant, self.phase, trial.trial_id, error)
        self._later(self._close, trial, "failed", error)
        if self.progress:
            self.progress.ended(self.variant, self.phase, "failed", None)


def _error_message(error_file: str | None) -> str | None:
    """The exception message: the last line of the trial's error file that Tune wrote."""
    if not error_file or not Path(error_file).exists():
        return None
    lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
    return lines[-1][:500] if lines else None
