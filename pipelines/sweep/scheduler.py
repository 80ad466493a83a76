"""One schedule for the whole study, run by one loop in the driver: every variant's phase chain (its
search, then its repeats) at once, under the study's job budget. No variant waits for another: a
variant's repeat phase starts as soon as its own search has chosen, and a waiting trial of any
variant starts as soon as its jobs fit (`budget.Budget` says who goes first).

Ray Tune decides, this loop executes: each phase's Tune searcher (OptunaSearch's TPE, or the grid's
points) proposes configurations and its trial scheduler (ASHA) stops weak ones, through their
public interfaces, called as Tune's own controller calls them; the loop submits the jobs, follows
them with one watcher for the whole study (`watcher`), relays their epochs as Tune results, and
hands every ended trial to the writer thread (`recording`). Tune's own controller runs each trial
in an actor process (~110 MB each, with its own `sacct` and file polls), which at the 64-256 jobs a
cluster gives a study would need tens of GB and a core for the driver alone; here a job costs the
driver a few objects, one `stat` per poll and a share of one `sacct` (bench/driver_scale.py)."""
from __future__ import annotations

import itertools
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from attnsweep.pipelines.config.study import Study
from attnsweep.pipelines.sweep import budget
from attnsweep.pipelines.sweep.phases import Phase, end_repeat, end_search, repeat_phase, search_phase
from attnsweep.pipelines.sweep.plan import phase_splits, tune_trials
from attnsweep.pipelines.sweep.recording import Recordings
from attnsweep.pipelines.sweep.stall import Watchdog
from attnsweep.pipelines.sweep.tune_trial import SCORE, TrialFailed, TuneTrial
from attnsweep.pipelines.sweep.watcher import FOLDER_POLL_S, JobWatcher

log = logging.getLogger(__name__)
TICK_S = 0.2  # the loop's turn: local jobs' ends, admissions, phase changes (no file or SLURM call)
SUBMITTERS = 8  # submissions side by side (each an sbatch process while it waits)


def start_order(study: Study) -> list[str]:
    """Variant ids, each baseline before the variants compared with it (table order otherwise)."""
    baselines = study.baselines()
    heads = [v for v in study.variant_ids if baselines[v] == v]
    return heads + [v for v in study.variant_ids if v not in heads]


class StudyLoop:
    def __init__(self, study: Study, out: Path, data_dir: Path, recorder, progress, poll_s: float = FOLDER_POLL_S,
                 epoch_s: dict[str, float | None] | None = None):
        """`epoch_s`: per variant, its calibrated epoch seconds, for the stall watchdog's default limits."""
        self.study, self.out, self.data_dir, self.recorder, self.progress = study, out, data_dir, recorder, progress
        self.budget = budget.Budget(study.max_concurrent, study.baselines(), study.variant_ids)
        self.watcher = JobWatcher(folder_poll_s=poll_s)
        self.watchdog = Watchdog({v: study.variant(v).executor.stall for v in study.variant_ids}, epoch_s or {},
                                 progress)
        self.recordings = Recordings(recorder)
        self.phases: dict[str, Phase] = {}  # variant -> its running phase
        self.errors: dict[str, BaseException] = {}
        self._ids = itertools.count()
        self._submitter = ThreadPoolExecutor(SUBMITTERS, thread_name_prefix="submit")
        # Tune trial id -> (its phase, the trial, its submission in flight): the loop goes on meanwhile
        # (another variant's turn, other jobs' ends) and leaves the trial alone until it is done
        self._submitting: dict[str, tuple[Phase, TuneTrial, Future]] = {}

    def live(self) -> list[TuneTrial]:
        return [tt for p in self.phases.values() for tt in p.live.values()]

    def _followed(self) -> list[TuneTrial]:
        """The live trials whose submission is done: those the watcher and the watchdog follow."""
        return [tt for tt in self.live() if tt.trial_id not in self._submitting]

    def run(self) -> None:
        """Returns when every variant's phases have ended. A variant that fails (e.g. no eligible
        configuration) does not stop the others: its error is raised once they are done. An
        interrupt (`budget.interrupted`, Ctrl-C, SIGTERM) ends the loop at once."""
        try:
            for variant in start_order(self.study):
                self._next_phase(variant, None)
            while self.phases:
                if budget.interrupted.is_set():
                    raise KeyboardInterrupt("interrupted")
                self.recordings.raise_failed()
                self._submitted()
                self._follow()
                self._admit()
                for variant, phase in list(self.phases.items()):
                    if phase.ended() and self.recordings.idle(variant):  # the phase's rows are read next
                        self._next_phase(variant, phase)
                time.sleep(TICK_S)
        finally:
            # every job submitted is in its trial's jobs.json before the caller cancels what is left
            self._submitter.shutdown(wait=True, cancel_futures=True)
            # what the writers were handed is written before the caller stops or exits, an interrupted
            # study's too (e.g. a search's chosen configuration on its MLflow parent run)
            self.recordings.wait(raise_failed=False)
        self.recordings.raise_failed()
        for variant in self.study.variant_ids:  # the first failure in table order
            if variant in self.errors:
                raise self.errors[variant]

    def _next_phase(self, variant: str, ended: Phase | None) -> None:
        s = self.study
        try:
            if ended is None and phase_splits(s, "search"):
                phase = search_phase(s, self.out, variant, self.data_dir, self.recorder, self.progress)
            elif ended is None or ended.phase == "search":
                best = s.variant(variant).search.fixed() if ended is None else \
                    end_search(s, self.out, variant, self.recorder)
                phase = repeat_phase(s, self.out, variant, self.data_dir, self.recorder, self.progress, best)
            else:
                end_repeat(s, self.out, variant, self.recorder)
                phase = None
        except Exception as err:  # noqa: BLE001 -- raised once every variant has ended
            self.errors[variant], phase = err, None
        self.recordings.mlflow_soon()  # a parent run's aggregate, when a phase ended
        if phase is None:
            self.phases.pop(variant, None)
        else:
            self.phases[variant] = phase

    def _follow(self) -> None:
        """Read what changed in the live trials' folders, relay their results, end what ended."""
        live = self._followed()
        changed = self.watcher.changed_folders([d for tt in live for d in tt.folders])
        jobs = [job for tt in live for job in tt.jobs.values()]
        ended_jobs = self.watcher.ended(jobs)
        for phase in list(self.phases.values()):
            for tt in list(phase.live.values()):
                if tt.trial_id in self._submitting:
                    continue
                try:
                    tt.refresh(changed, ended_jobs)
                except TrialFailed as err:
                    self._failed(phase, tt, self.watchdog.failure(err))
                    continue
                while (result := tt.next_result()) is not None and self._relay(phase, tt, result):
                    pass
        self.watchdog.check(self._followed(), self.watcher.queued(jobs))  # the trials still live after this turn

    def _relay(self, phase: Phase, tt: TuneTrial, result: dict) -> bool:
        """Hand one Tune result to the searcher and the trial scheduler -> whether the trial goes on."""
        c = tt.config
        label = " ".join([f"lr={c['lr']:.3g} wd={c['weight_decay']:.3g}", *([c["split"]] if "split" in c else [])])
        if self.progress:
            self.progress.result(tt.variant, tt.phase, result.get(SCORE), result["epoch"], label)
        self.recordings.epoch(tt.variant, tt.trials)
        if result["done"]:
            self._end(phase, tt, result["status"])
            return False
        phase.searcher.on_trial_result(tt.trial_id, result)
        if phase.scheduler is not None and phase.scheduler.on_trial_result(None, tt, result) == TrialScheduler.STOP:
            tt.cancel()
            self._end(phase, tt, "stopped")
            return False
        return True

    def _end(self, phase: Phase, tt: TuneTrial, status: str, error: str | None = None) -> None:
        del phase.live[tt.trial_id]
        self.budget.give_back(phase.jobs, tt.variant, tt.phase)
        self.watcher.forget([t.ref.dir for t in tt.trials])
        if status == "failed":
            if phase.scheduler is not None:
                phase.scheduler.on_trial_error(None, tt)
            phase.searcher.on_trial_complete(tt.trial_id, result=None, error=True)
        else:
            if phase.scheduler is not None:
                phase.scheduler.on_trial_complete(None, tt, tt.last_result)
            phase.searcher.on_trial_complete(tt.trial_id, result=tt.last_result)
        # A trial with a final result is recorded with it, else as stopped or failed.
        self.recordings.close(tt.variant, tt.trials, "failed" if status == "failed" else "stopped", error)
        if self.progress:
            self.progress.ended(tt.variant, tt.phase, status, (tt.last_result or {}).get(SCORE))

    def _failed(self, phase: Phase, tt: TuneTrial, error: str) -> None:
        """Retry the trial's unfinished splits (from their checkpoints) up to `max_failures` times."""
        tt.failures += 1
        if tt.failures > self.study.max_failures:
            log.warning("%s %s trial %s failed: %s", tt.variant, tt.phase, tt.trial_id, error)
            tt.cancel()
            self._end(phase, tt, "failed", error)
            return
        log.warning("%s %s trial %s failed (%d of %d retries): %s", tt.variant, tt.phase, tt.trial_id,
                    tt.failures, self.study.max_failures, error)
        self._start(phase, tt)

    def _start(self, phase: Phase, tt: TuneTrial) -> None:
        """Submit the trial's jobs (or re-attach to them) in a submitter thread. Side by side: an
        sbatch waits on the controller (0.1 s, seconds when it is busy), and a hundred in a row would
        keep the slots of the first jobs, and the loop, waiting meanwhile."""
        def start() -> None:
            if not budget.interrupted.is_set():  # nothing new once the study is being stopped
                tt.start(self.study.name, self.study.max_concurrent)

        self._submitting[tt.trial_id] = (phase, tt, self._submitter.submit(start))

    def _submitted(self) -> None:
        """Hand the trials whose submission is done back to the loop; one that failed is a failure
        of the trial."""
        for trial_id, (phase, tt, submission) in list(self._submitting.items()):
            if submission.done():
                del self._submitting[trial_id]
                if submission.exception() is not None:
                    err = submission.exception()
                    self._failed(phase, tt, f"{type(err).__name__}: {err}")

    def _admit(self) -> None:
        """Start Tune trials while the budget has room, the waiting phase that comes first first."""
        waiting = sorted((p for p in self.phases.values() if p.wants_more()),
                         key=lambda p: self.budget.priority(p.variant, p.phase))
        for phase in waiting:
            while phase.wants_more() and self.budget.fits(phase.jobs):
                trial_id = f"{phase.phase}-{phase.variant}-{next(self._ids)}"
                config = phase.searcher.suggest(trial_id)
                if config is None:
                    break
                if config == Searcher.FINISHED:
                    phase.finished = True
                    break
                phase.proposed += 1
                trials = tune_trials(self.study, self.out, phase.phase, phase.variant, config, self.data_dir)
                tt = TuneTrial(trial_id, phase.variant, phase.phase, config, trials,
                               self.study.variant(phase.variant).executor)
                if phase.scheduler is not None:
                    phase.scheduler.on_trial_add(None, tt)
                phase.live[trial_id] = tt
                self.budget.take(phase.jobs)
                if self.progress:
                    self.progress.started(phase.variant, phase.phase)
                self._start(phase, tt)


def run_variants(study: Study, out: Path, data_dir: Path, recorder, progress, poll_s: float = FOLDER_POLL_S,
                 epoch_s: dict[str, float | None] | None = None) -> None:
    """Run every variant's phases at once; returns when all have ended (see `StudyLoop.run`)."""
    budget.interrupted.clear()
    StudyLoop(study, out, data_dir, recorder, progress, poll_s, epoch_s).run()
