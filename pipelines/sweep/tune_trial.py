"""One Tune trial: a configuration trained on its splits by submitit jobs, as Ray Tune's searcher
and trial scheduler see it (search: every search split in lockstep; repeat: one split).

The driver's loop (`scheduler`) owns it: it submits one job per split (re-attaching to jobs still
queued or running, so a retried or resumed trial goes on from its checkpoints), reads the trial
folders when the study's watcher says they changed, and turns them into Tune results: result N
comes when every split has finished epoch N, with the mean validation score over the splits
(`val_score`), so ASHA can stop the configuration; the last one carries the configuration's search
`score` and `status`. A job that ends without a final result fails the trial (`TrialFailed`), which
the loop retries up to `max_failures` times."""
from __future__ import annotations

import math
from pathlib import Path
from statistics import fmean

from attnsweep.pipelines.config import selection
from attnsweep.pipelines.config.executor import ExecutorSpec
from attnsweep.pipelines.sweep.plan import Trial
from attnsweep.pipelines.trial import executors
from attnsweep.pipelines.trial.folder import TrialFolder

VAL_SCORE = "val_score"  # the metric ASHA compares at each epoch
SCORE = "score"  # the configuration's search score (config.selection)
TIME_ATTR = "training_iteration"  # ASHA's clock: epochs relayed, as Tune counts results


class TrialFailed(RuntimeError):
    """A job ended without a final result."""

    def __init__(self, trial_dir: Path, job) -> None:
        super().__init__(f"{trial_dir}: job {job.job_id} ended without a result")
        self.trial_dir, self.job = trial_dir, job

    def reason(self) -> str:
        """The message with the job's error; submitit may wait seconds for a lost job's outcome."""
        return f"{self}: {_why(self.trial_dir, self.job)}"


class TuneTrial:
    def __init__(self, trial_id: str, variant: str, phase: str, config: dict, trials: list[Trial],
                 executor: ExecutorSpec):
        self.trial_id, self.variant, self.phase, self.config = trial_id, variant, phase, config
        self.trials, self.executor = trials, executor
        self.jobs: dict[str, object] = {}  # trial id -> submitit job, for the splits not done yet
        self.epoch = 0  # results relayed
        self.failures = 0
        self.last_result: dict | None = None
        self._epochs: dict[str, list[dict]] = {t.ref.trial_id: [] for t in trials}
        self._results: dict[str, dict | None] = {t.ref.trial_id: None for t in trials}

    @property
    def folders(self) -> list:
        return [t.ref.dir for t in self.trials if self._results[t.ref.trial_id] is None]

    def start(self, study_name: str, jobs_at_once: int) -> list[str]:
        """Re-attach to the jobs of splits still queued or running, submit the others -> new job ids."""
        pending = []
        for t in self.trials:
            self._read(t)
            if self._results[t.ref.trial_id] is not None:
                continue
            job = executors.attach(t.ref.dir, self.executor)
            if job is None:
                pending.append(t)
            else:
                self.jobs[t.ref.trial_id] = job
        # One job per split, not a job array: sacct lists an array cancelled while pending under
        # its array id only, so submitit would never see its tasks end (state UNKNOWN).
        submitted = []
        for t in pending:
            name = executors.job_name(study_name, t.ref.variant, t.ref.phase, t.ref.split)
            job = executors.submit(t.cfg, t.ref.dir, self.executor, jobs_at_once, name)
            self.jobs[t.ref.trial_id] = job
            submitted.append(job.job_id)
        return submitted

    def _read(self, t: Trial) -> None:
        self._epochs[t.ref.trial_id] = t.ref.folder.epochs()
        self._results[t.ref.trial_id] = t.ref.folder.final_result()

    def refresh(self, changed: set, ended_jobs: set[str]) -> None:
        """Read the folders that changed; a split whose job ended without a final result fails the
        trial (its folder is read once more first: the job writes its result before it ends)."""
        for t in self.trials:
            tid = t.ref.trial_id
            if self._results[tid] is not None:
                continue
            job = self.jobs.get(tid)
            ended = job is not None and job.job_id in ended_jobs
            if t.ref.dir in changed or ended:
                self._read(t)
            if ended and self._results[tid] is None:
                del self.jobs[tid]
                raise TrialFailed(t.ref.dir, job)

    def running(self) -> list[tuple[Path, object, list[dict]]]:
        """(trial folder, job, epoch lines read so far) of each split whose job runs without a final result."""
        return [(t.ref.dir, self.jobs[t.ref.trial_id], self._epochs[t.ref.trial_id]) for t in self.trials
                if self._results[t.ref.trial_id] is None and t.ref.trial_id in self.jobs]

    def next_result(self) -> dict | None:
        """The next Tune result, once every split has got that far; None while they run."""
        epochs, results = list(self._epochs.values()), list(self._results.values())
        last = self.epoch + 1 >= self.trials[0].cfg.epochs
        diverged = any(r is not None and r["status"] == "diverged" for r in results)
        if diverged or (last and all(r is not None for r in results)):
            self.epoch += 1
            return self._result(epochs, results, done=True)
        if not last and all(len(e) > self.epoch for e in epochs):
            self.epoch += 1
            return self._result(epochs, results, done=False)
        return None

    def _result(self, epochs: list[list[dict]], results: list[dict | None], done: bool) -> dict:
        """Epoch `self.epoch` of every split (a split that stopped earlier counts its last epoch):
        the mean validation score for ASHA, and the configuration's score, final when `done`."""
        metric = self.trials[0].cfg.selection_metric
        lines = [e[min(self.epoch, len(e)) - 1] for e in epochs if e]
        result = {"epoch": self.epoch, TIME_ATTR: self.epoch, "done": done,
                  VAL_SCORE: _mean([_score(line, metric) for line in lines]) if lines else selection.floor(metric)}
        if not done:
            result[SCORE] = _mean([max(_score(line, metric) for line in e[: self.epoch]) for e in epochs if e])
        else:
            finished = [r for r in results if r is not None]
            diverged = any(r["status"] == "diverged" for r in finished)
            result["status"] = "diverged" if diverged else "ok"
            result[SCORE] = selection.search_score(
                [None if diverged else r["metrics"]["val"][metric] for r in finished], metric, diverged)
        self.last_result = result
        return result

    def cancel(self) -> None:
        """Cancel the jobs of splits without a final result (ASHA stopped the trial, or it failed)."""
        for t in self.trials:
            job = self.jobs.get(t.ref.trial_id)
            if job is not None and t.ref.folder.final_result() is None:
                job.cancel(check=False)


def _score(line: dict, metric: str) -> float:
    """An epoch line's validation score; NaN (left out of the mean) when it has none."""
    v = (line.get("val") or {}).get(metric)
    return math.nan if v is None else selection.score(v, metric)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return fmean(finite) if finite else math.nan


def _why(trial_dir, job) -> str:
    error = (TrialFolder(trial_dir).result() or {}).get("error")
    if error:
        return error
    try:
        err = job.exception()
    except Exception as e:  # noqa: BLE001 -- submitit cannot always read a lost job's outcome
        err = e
    return f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}" if err else \
        "no error recorded"
