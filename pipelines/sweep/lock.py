"""One driver per study folder: `study_lock(out)` is held for the whole run.

Two parts, because no single file lock is reliable on every shared file system:
- an OS lock (`filelock.FileLock`: `flock` on `<out>/driver.lock`). The kernel drops it when the
  holder dies (SIGKILL, a crash), so a held lock means a live driver. On NFS (v3 with NLM, v4)
  Linux emulates `flock` with POSIX byte-range locks, which are coherent across clients. On Lustre
  it is coherent only when the client mounts with `-o flock`; with `localflock` it covers one node,
  and without either option `flock` fails with ENOSYS (filelock then falls back to a soft lock file).
- a record of the holder, `<out>/driver.json` (host, pid, process start time, SLURM job id), which
  names the holder in the refusal and decides for the case the OS lock cannot see: a record of
  another host whose SLURM job is still queued or running refuses the driver even when the OS lock
  was free (Lustre `localflock`). A record whose process is gone (same host: the pid with its start
  time; another host: its SLURM job no longer in `squeue`) is stale: `--resume` takes it over."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
from filelock import FileLock, Timeout

from attnsweep.pipelines.trial.study_paths import StudyPaths


class StudyLocked(RuntimeError):
    """Another driver holds the study folder; the message (one line) names it."""


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "pid_started": psutil.Process().create_time(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def describe(holder: dict) -> str:
    job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return f"host {holder.get('host')}, pid {holder.get('pid')}{job}, since {holder.get('since')}"


def _read_record(out: Path) -> dict | None:
    try:
        record = json.loads(StudyPaths(out).driver_file.read_text())
    except (OSError, ValueError):
        return None  # none, or half written by a driver killed while writing it: nothing to honour
    return record if isinstance(record, dict) else None


def _slurm_job_active(job_id: str) -> bool | None:
    """Whether `squeue` still lists the job (None: SLURM cannot be asked from here)."""
    try:
        done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:  # squeue fails on a job id it no longer knows
        return False if "Invalid job id" in done.stderr else None
    return bool(done.stdout.strip())


def holder_alive(holder: dict) -> bool:
    """Whether the recorded driver still runs (see the module doc)."""
    if holder.get("host") == socket.gethostname():
        try:
            proc = psutil.Process(int(holder["pid"]))
            return abs(proc.create_time() - float(holder.get("pid_started", 0))) < 1.0 and \
                proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.Error, KeyError, TypeError, ValueError):
            return False
    if holder.get("slurm_job_id"):
        return _slurm_job_active(str(holder["slurm_job_id"])) is not False
    return False  # another host, no SLURM job: the OS lock we hold is the only evidence, and it says gone


@contextlib.contextmanager
def study_lock(out: Path, resume: bool, on_takeover=None) -> Iterator[None]:
    """Hold the study folder `out` (created if needed) for one driver; `StudyLocked` if another
    driver holds it. A stale record is taken over with `--resume` (`on_takeover(holder)` is told);
    without it the stopped study is pointed out instead of silently restarted."""
    lock = FileLock(StudyPaths(out).lock_file, timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        holder = _read_record(out)
        who = describe(holder) if holder else "its record is not written yet"
        raise StudyLocked(f"{out}: another driver is running this study ({who}); wait for it to end or stop it") from None
    try:
        previous = _read_record(out)
        if previous is not None and previous.get("pid") != os.getpid():
            if holder_alive(previous):
                raise StudyLocked(f"{out}: another driver is running this study ({describe(previous)}); "
                                  "wait for it to end or stop it")
            if not resume:
                raise StudyLocked(f"{out}: a driver stopped here without finishing ({describe(previous)}); "
                                  "pass --resume to finish the study, or use another --out")
            if on_takeover is not None:
                on_takeover(previous)
        from attnsweep.pipelines.trial.folder import write_json

        write_json(StudyPaths(out).driver_file, _me())
        try:
            yield
        finally:
            StudyPaths(out).driver_file.unlink(missing_ok=True)
    finally:
        lock.release()
