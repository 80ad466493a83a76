"""The stall watchdog of the driver's loop: a job whose trial folder gets no new epoch line (a hung
NCCL collective, a dead NFS mount, a stopped process) is reported, then cancelled and its trial
retried as an infrastructure failure, like a lost node (it counts against `max_failures`).

A job's clock runs from the last time its epoch lines advanced, or else from when it started
running: a local job's submission; a SLURM job's last `sacct` (every `watcher.SACCT_S`) that saw
it queued (PENDING, requeued, or not listed yet: `watcher.QUEUED_STATES`). So queue time never
counts, and the time before the first epoch (start-up, data loading) does. The epoch lines are
those the loop reads anyway when the watcher says a folder changed: the clock is a few seconds
late at most (`watcher.FOLDER_POLL_S`).

Limits (`executor.stall` of the study, per variant): `warn_min` reports the job in the live view
and the log, `cancel_min` cancels it. Unset, they follow the expected epoch time: 5 epochs and at
least 10 min to report, twice that to cancel. The expected epoch time is the median of this
variant's epoch lines seen so far in this study, else the calibration on measured trainings
(`estimate.epoch_seconds`); with neither, a job is reported after 30 min and not cancelled until
an epoch time is known (a guess must not cancel a slow first epoch for ever)."""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from attnsweep.pipelines.config.executor import StallSettings
from attnsweep.pipelines.sweep.progress import clock
from attnsweep.pipelines.sweep.tune_trial import TrialFailed
from attnsweep.pipelines.trial.failures import INFRASTRUCTURE
from attnsweep.pipelines.trial.folder import TrialFolder

log = logging.getLogger(__name__)

WARN_EPOCHS = 5  # expected epochs without a new line before a job is reported
MIN_WARN_S = 600.0  # ... and at least this long (start-up and data loading come before the first epoch)
CANCEL_FACTOR = 2  # the cancel limit: this times the report limit
UNKNOWN_WARN_S = 1800.0  # no expected epoch time: report after this, cancel never
KEPT_EPOCHS = 1000  # a variant's expected epoch time: the median of its latest epoch lines' seconds


@dataclass(frozen=True)
class Limits:
    warn_s: float
    cancel_s: float | None  # None: reported only
    basis: str  # where the limits come from, for the driver's line at start

    def describe(self) -> str:
        cancel = f"cancelled after {clock(self.cancel_s)}" if self.cancel_s is not None else "not cancelled"
        return f"reported after {clock(self.warn_s)}, {cancel} ({self.basis})"


def limits(settings: StallSettings, epoch_s: float | None, basis: str = "") -> Limits:
    """The limits of one variant: as set in the study, else from the expected epoch time `epoch_s`
    (`basis` says where that comes from)."""
    warn, cancel = settings.warn_min, settings.cancel_min
    if warn is not None or cancel is not None:
        warn_s = 60 * warn if warn is not None else 60 * cancel / CANCEL_FACTOR
        return Limits(warn_s, 60 * cancel if cancel is not None else CANCEL_FACTOR * warn_s, "executor.stall")
    if epoch_s is None:
        return Limits(UNKNOWN_WARN_S, None, "no expected epoch time until the variant's first epoch lines")
    warn_s = max(MIN_WARN_S, WARN_EPOCHS * epoch_s)
    return Limits(warn_s, CANCEL_FACTOR * warn_s, f"{basis or 'expected'} epoch {epoch_s:.3g} s")


@dataclass
class _Clock:
    variant: str
    phase: str
    trial_dir: Path
    since: float  # time.monotonic() of the last advance (or of the start of running)
    epochs: int
    warned: bool = False
    cancelled: str | None = None  # why, once cancelled


class Watchdog:
    """Every live job's clock, checked at each turn of the loop (`check`); a job cancelled here
    that ends is turned into an infrastructure failure with the reason (`failure`)."""

    def __init__(self, settings: dict[str, StallSettings], calibrated: dict[str, float | None], progress=None):
        """`settings`, `calibrated`: per variant, its `executor.stall` and its calibrated epoch
        seconds (None without a measurement)."""
        self.settings, self.calibrated, self.progress = settings, calibrated, progress
        self._clocks: dict[str, _Clock] = {}  # job id -> its clock
        self._seconds: dict[str, list[float]] = {}  # variant -> its epoch lines' seconds in this study
        self._limits: dict[str, Limits] = {}

    def limits(self, variant: str) -> Limits:
        if variant not in self._limits:
            seen = self._seconds.get(variant)
            if seen:
                self._limits[variant] = limits(self.settings[variant], statistics.median(seen), "this study's")
            else:
                self._limits[variant] = limits(self.settings[variant], self.calibrated.get(variant), "calibrated")
        return self._limits[variant]

    def check(self, live: list, queued: set[str], now: float | None = None) -> None:
        """`live`: the loop's Tune trials; `queued`: ids of jobs SLURM holds in its queue."""
        now = time.monotonic() if now is None else now
        seen = set()
        for tt in live:
            for trial_dir, job, lines in tt.running():
                seen.add(job.job_id)
                c = self._clocks.get(job.job_id)
                if c is None or job.job_id in queued:
                    self._reset(job.job_id, _Clock(tt.variant, tt.phase, trial_dir, now, len(lines)))
                elif len(lines) > c.epochs:
                    self._learn(tt.variant, lines[c.epochs:])
                    self._reset(job.job_id, _Clock(tt.variant, tt.phase, trial_dir, now, len(lines)))
                else:
                    self._check(job, c, now - c.since)
        for job_id in self._clocks.keys() - seen:  # ended, or its split finished
            self._reset(job_id, None)

    def _check(self, job, c: _Clock, idle: float) -> None:
        limit = self.limits(c.variant)
        last = f"epoch {c.epochs}" if c.epochs else "no epoch yet"
        if not c.warned and idle >= limit.warn_s:
            c.warned = True
            self._say(c, f"{c.variant} {c.phase} trial {c.trial_dir.name} (job {job.job_id}): no new epoch line "
                         f"for {clock(idle)} ({last}); stalled, {limit.describe()}", stalled=1)
        if c.cancelled is None and limit.cancel_s is not None and idle >= limit.cancel_s:
            c.cancelled = f"stalled: no new epoch line for {clock(idle)} ({last}), cancelled after " \
                          f"{clock(limit.cancel_s)} ({limit.basis})"
            job.cancel(check=False)
            self._say(c, f"{c.variant} {c.phase} trial {c.trial_dir.name} (job {job.job_id}): {c.cancelled}; "
                         f"an infrastructure failure of the trial (retried up to max_failures)")

    def _reset(self, job_id: str, c: _Clock | None) -> None:
        old = self._clocks.pop(job_id, None)
        if old is not None and old.warned and self.progress:
            self.progress.unstalled(old.variant, old.phase)
        if c is not None:
            self._clocks[job_id] = c

    def _learn(self, variant: str, lines: list[dict]) -> None:
        seconds = [float(x["seconds"]) for x in lines if isinstance(x.get("seconds"), (int, float))]
        if seconds:
            kept = self._seconds.setdefault(variant, [])
            kept.extend(seconds)
            del kept[:-KEPT_EPOCHS]
            self._limits.pop(variant, None)

    def _say(self, c: _Clock, line: str, stalled: int = 0) -> None:
        if self.progress:
            self.progress.stalled(c.variant, c.phase, line, stalled)
        else:
            log.warning("%s", line)

    def failure(self, err: TrialFailed) -> str:
        """The reason a job ended without a result; one cancelled for a stall has its `result.json`
        say so (`failed`, infrastructure: retried, by `--resume` too)."""
        job_id = err.job.job_id
        c = self._clocks.get(job_id)
        if c is None or c.cancelled is None:
            return err.reason()
        TrialFolder(err.trial_dir).write_result({"status": "failed", "failure": INFRASTRUCTURE,
                                                 "error": f"job {job_id} {c.cancelled}"})
        return f"{err.trial_dir}: job {job_id} {c.cancelled}"
