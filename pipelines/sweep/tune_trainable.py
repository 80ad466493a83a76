"""The Ray Tune trainable of one Tune trial: a configuration trained on its splits by submitit jobs.

It never trains in the Ray worker (except executor `debug`, which runs the job in-process for
debugging). It submits one job per split, follows the trial folders' `metrics.jsonl` and relays
the splits in lockstep: step N returns when every split has finished epoch N, with the mean
validation score over the splits (`selection_metric`), so ASHA can stop the trial. Stopping the trial
cancels its jobs; a retry (`FailureConfig(max_failures)`) re-attaches to jobs still queued or
running and resubmits the others, which resume from their checkpoints.

The jobs are submitted at the first `step`, not in `setup`: Tune may construct an actor for a trial
and then discard it, because a cached actor became free first (`reuse_actors`; Tune's
`_maybe_reuse_cached_actor` removes "the original actor" it had requested). Such an actor's `setup`
runs all the same; when it submitted jobs, it stopped the running local job of the trial that the
reused actor had just started, and its own jobs were killed with it (seen in bench/scheduler.py:
a search job killed after epoch 1, the trial retried). Only the actor that runs the trial steps."""
from __future__ import annotations

import math
import time
from pathlib import Path
from statistics import fmean

import submitit
from ray import tune

from attnsweep.pipelines.config import selection
from attnsweep.pipelines.config.executor import ExecutorSpec
from attnsweep.pipelines.trial import executors
from attnsweep.pipelines.sweep.plan import Trial, tune_trials
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.config.study import Study

VAL_SCORE = "val_score"  # the metric ASHA compares at each epoch
GRANT_POLL_S = 0.1  # a waiting trial's jobs start this soon after its grant


class TrialFailed(RuntimeError):
    """A job ended without a final result; Tune retries the trial up to `max_failures` times."""


class SplitsTrainable(tune.Trainable):
    def setup(self, config: dict, *, study: Study, phase: str, variant: str, out: str, data_dir: str,
              executor: ExecutorSpec, poll_s: float = 1.0, grants: str | None = None) -> None:
        """`grants`: the study's gate's folder (`budget.Gate`): jobs are submitted once the file of
        this Tune trial is there. None: at once."""
        self.study, self.phase, self.variant, self.out = study, phase, variant, Path(out)
        self.data_dir, self.executor, self.poll_s = Path(data_dir), executor, poll_s
        self.grants = Path(grants) if grants else None
        self._assign(config)

    def reset_config(self, new_config: dict) -> bool:
        """Tune reuses this actor for the next trial (`reuse_actors`): no new worker process, no
        new imports. Jobs the previous trial left (it was stopped) are cancelled first."""
        self.cleanup()
        self._assign(new_config)
        return True

    def _assign(self, config: dict) -> None:
        """The trial this actor is given; its jobs start at the first step (see the module's doc)."""
        self.config_to_run = config
        self.trials: list[Trial] = []
        self.jobs: dict[str, object] = {}  # trial_id -> submitit job, for the splits not done yet
        self.epoch = 0

    def _start(self) -> None:
        """Once granted, re-attach to the jobs of splits still queued or running, submit the others."""
        while self.grants is not None and not (self.grants / self.trial_id).exists():
            time.sleep(GRANT_POLL_S)
        # The driver's preflight probed the model (see plan.trial_config): no torch in this actor.
        self.trials = tune_trials(self.study, self.out, self.phase, self.variant, self.config_to_run, self.data_dir,
                                  probe_model=False)
        pending = []
        for t in self.trials:
            if t.ref.folder.final_result() is not None:
                continue
            job = executors.attach(t.ref.dir, self.executor)
            if job is None:
                pending.append(t)
            else:
                self.jobs[t.ref.trial_id] = job
        # One job per split, not a job array: sacct lists an array cancelled while pending under
        # its array id only, so submitit would never see its tasks end (state UNKNOWN), and a
        # resumed driver would wait on them for ever.
        # Local jobs share this machine: the study runs up to max_concurrent jobs at once.
        jobs_at_once = self.study.max_concurrent
        for t in pending:
            name = executors.job_name(self.study.name, t.ref.variant, t.ref.phase, t.ref.split)
            self.jobs[t.ref.trial_id] = executors.submit(t.cfg, t.ref.dir, self.executor, jobs_at_once, name)

    def step(self) -> dict:
        if not self.trials:
            self._start()
        self.epoch += 1
        last = self.epoch >= self.trials[0].cfg.epochs
        while True:
            epochs, results = self._poll()
            diverged = any(r is not None and r["status"] == "diverged" for r in results)
            if diverged or (last and all(r is not None for r in results)):
                return self._report(epochs, results, done=True)
            if not last and all(len(e) >= self.epoch for e in epochs):
                return self._report(epochs, results, done=False)
            time.sleep(self.poll_s)

    def _poll(self) -> tuple[list[list[dict]], list[dict | None]]:
        """Each split's finished epochs and final result; TrialFailed for a job that ended without
        a final result."""
        epochs, results = [], []
        for t in self.trials:
            result = t.ref.folder.final_result()
            job = self.jobs.get(t.ref.trial_id)
            if result is None and job is not None:
                # A debug job runs here, now; exception() returns (not raises) its error.
                ended = isinstance(job, submitit.DebugJob) or job.done()
                err = job.exception() if ended else None
                result = t.ref.folder.final_result()
                if result is None and ended:
                    raise TrialFailed(f"{t.ref.dir}: job {job.job_id} ended without a result: {_why(t.ref.dir, err)}")
            epochs.append(t.ref.folder.epochs())
            results.append(result)
        return epochs, results

    def _report(self, epochs: list[list[dict]], results: list[dict | None], done: bool) -> dict:
        """Epoch `self.epoch` of every split (a split that stopped earlier counts its last epoch):
        the mean validation score for ASHA (`val_score`), and the configuration's score for the
        search, final when `done`."""
        metric = self.trials[0].cfg.selection_metric
        lines = [e[min(self.epoch, len(e)) - 1] for e in epochs if e]
        report = {"epoch": self.epoch, "done": done,
                  VAL_SCORE: _mean([_score(line, metric) for line in lines]) if lines else selection.floor(metric)}
        if not done:
            report["score"] = _mean([max(_score(line, metric) for line in e[: self.epoch]) for e in epochs if e])
            return report
        finished = [r for r in results if r is not None]
        diverged = any(r["status"] == "diverged" for r in finished)
        report["status"] = "diverged" if diverged else "ok"
        report["score"] = selection.search_score(
            [None if diverged else r["metrics"]["val"][metric] for r in finished], metric, diverged)
        return report

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        # The training state is in the trial folders; Tune only keeps how far the relay got, so a
        # retried trial goes on with the next epoch instead of relaying the earlier ones again.
        return {"epoch": self.epoch}

    def load_checkpoint(self, checkpoint: dict) -> None:
        self.epoch = checkpoint["epoch"]

    def cleanup(self) -> None:
        """Tune stopped (or finished) the trial: cancel the jobs of splits without a final result."""
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


def _why(trial_dir: Path, err: BaseException | None) -> str:
    error = (TrialFolder(trial_dir).result() or {}).get("error")
    if error:
        return error
    return f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}" if err else "no error recorded"
