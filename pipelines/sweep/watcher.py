"""The study's one watcher of its jobs: which trial folders changed, and which jobs ended.

Its cost does not grow per job beyond one `stat` per live trial folder per `folder_poll_s`, and
one `sacct` for all SLURM jobs per `sacct_s` (submitit's watcher, updated here on our schedule):
- A trial folder is re-read only when its directory changed: every file of a trial folder is
  written to a temporary name and renamed (`TrialFolder`), which changes the directory's mtime.
  A folder changed within the last `RECENT_S` is read again at the next poll, so two writes in one
  tick of a coarse file-system clock are not missed.
- A job that ends writes its result first, so the folder poll notices a job's end; `sacct` is for
  jobs that end without one (a node lost, an out-of-memory kill, a cancel). A local job's end is its
  process's exit (`poll()`, no file or SLURM call); a debug job runs in this process when asked.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import submitit
from submitit.slurm.slurm import SlurmInfoWatcher

# The test suite shortens both (tests/conftest.py): its studies are seconds long, a cluster's hours.
FOLDER_POLL_S = float(os.environ.get("ATTNSWEEP_FOLDER_POLL_S", "5"))
SACCT_S = float(os.environ.get("ATTNSWEEP_SACCT_S", "30"))
RECENT_S = 2.0
# SLURM states of a job that waits for its resources (a requeued job waits again), and submitit's
# for a job that `sacct` does not list yet (just submitted)
QUEUED_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "UNKNOWN")


class JobWatcher:
    def __init__(self, folder_poll_s: float = FOLDER_POLL_S, sacct_s: float = SACCT_S):
        self.folder_poll_s, self.sacct_s = folder_poll_s, sacct_s
        self._mtimes: dict[Path, int] = {}
        self._last_folder_poll = -float("inf")
        self._sacct = SlurmInfoWatcher(delay_s=int(sacct_s))
        self._last_sacct = -float("inf")

    def changed_folders(self, folders: list[Path]) -> set[Path]:
        """The folders whose files changed since they were last seen, when a poll is due (else none).
        A folder seen for the first time counts as changed."""
        now = time.monotonic()
        if now - self._last_folder_poll < self.folder_poll_s:
            return set()
        self._last_folder_poll = now
        wall = time.time_ns()
        changed = set()
        for folder in folders:
            try:
                mtime = os.stat(folder).st_mtime_ns
            except FileNotFoundError:
                continue
            if self._mtimes.get(folder) != mtime or wall - mtime < RECENT_S * 1e9:
                changed.add(folder)
            self._mtimes[folder] = mtime
        return changed

    def forget(self, folders: list[Path]) -> None:
        for folder in folders:
            self._mtimes.pop(folder, None)

    def ended(self, jobs: list) -> set[str]:
        """The ids of `jobs` (submitit jobs) that are no longer queued or running."""
        slurm = [j for j in jobs if isinstance(j, submitit.SlurmJob)]
        done = {j.job_id for j in jobs if not isinstance(j, submitit.SlurmJob) and _local_done(j)}
        if slurm and time.monotonic() - self._last_sacct >= self.sacct_s:
            self._last_sacct = time.monotonic()
            for j in slurm:
                self._sacct.register_job(j.job_id)
            self._sacct.update()
        for j in slurm:
            if j.job_id in self._sacct._registered and self._sacct.is_done(j.job_id, mode="cache"):
                done.add(j.job_id)
        return done

    def queued(self, jobs: list) -> set[str]:
        """The ids of `jobs` that wait in SLURM's queue as far as the last `sacct` knows (no call of
        its own; a local job runs from its submission)."""
        return {j.job_id for j in jobs if isinstance(j, submitit.SlurmJob)
                and self._sacct.get_state(j.job_id, mode="cache").split()[0] in QUEUED_STATES}


def _local_done(job) -> bool:
    """A debug job runs now, in this process (`exception()` runs it and returns its error); a
    local job has ended when its process has."""
    if isinstance(job, submitit.DebugJob):
        job.exception()
        return True
    return job.done()
