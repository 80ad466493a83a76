"""Where a trial runs, all through submitit: `debug` (in this process), `local` (N processes on
this machine: DDP on CPU, or on a workstation's GPUs), `slurm` (a batch job; a job array for
several splits). Every submitted job id is recorded in the trial folder's `jobs.json`, so a driver
can cancel a job or re-attach to it."""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from attnsweep.pipelines.config.executor import LOCAL_NO_TIMEOUT_MIN, SLURM_DEFAULT_TIMEOUT_MIN, ExecutorSpec
from attnsweep.pipelines.trial.failures import describe, failure_kind
from attnsweep.pipelines.trial.job_env import (CPU_THREADS_ENV, LOCAL_JOB_NICENESS, machine_cpus, machine_gpus,
                                               submitit_job)
from attnsweep.pipelines.trial.folder import SUBMITIT, TrialFolder, deliver
from attnsweep.pipelines.config.trial_config import TrialConfig, TrialConfigError


class TrialJob(Checkpointable):
    """The submitit callable: one rank of a trial. On the time-out/preemption signal submitit calls
    `checkpoint` and requeues the job."""

    def __init__(self, cfg: TrialConfig, trial_dir: Path, cpu_threads: int | None = None) -> None:
        self.cfg = cfg
        self.trial_dir = Path(trial_dir)
        self.cpu_threads = cpu_threads  # per rank, for a local job (see job_env.CPU_THREADS_ENV)

    def __call__(self) -> dict:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
        if self.cpu_threads is not None:  # a local job
            os.environ[CPU_THREADS_ENV] = str(self.cpu_threads)  # this job's own process
            os.nice(max(0, LOCAL_JOB_NICENESS - os.nice(0)))  # before torch starts threads (they inherit it)
        if threading.current_thread() is threading.main_thread():
            # A local cancel is SIGINT (stop even if it was inherited as ignored: a driver started
            # with &), a scancel SIGTERM (submitit ignores it and SLURM kills after KillWait).
            signal.signal(signal.SIGINT, _save_then(signal.default_int_handler))
            signal.signal(signal.SIGTERM, _save_then(signal.getsignal(signal.SIGTERM)))
        try:
            return _trainer().train(self.cfg, self.trial_dir)
        except Exception as err:
            if _rank() == 0:
                record = {"status": "failed", "error": describe(err), "failure": failure_kind(err)}
                try:
                    TrialFolder(self.trial_dir).write_result(record)
                except OSError as write_err:  # a full disk: no result is an infrastructure failure too
                    logging.getLogger(__name__).error("cannot write the result: %s", describe(write_err))
            raise

    def checkpoint(self) -> DelayedSubmission:
        # The signal lands mid-step: what is saved is the last finished epoch's state, if the
        # trainer has not written it yet (checkpoints are due every K epochs or N minutes).
        _write_pending_checkpoint()
        return DelayedSubmission(self)


def _save_then(previous):
    """A signal handler: first the last finished epoch's state, if it is not on disk yet (so a
    cancelled trial resumes after that epoch, not from its last timed checkpoint), then what the
    signal did before."""
    def handler(signum, frame):
        _write_pending_checkpoint()
        deliver(previous, signum, frame)
    return handler


# A module with `train(cfg, trial_dir)` that jobs run instead of the trainer: the stand-in of the
# driver's scale bench and tests (`standin`). Set in the driver's environment; jobs inherit it.
TRAINER_ENV = "ATTNSWEEP_TRAINER"


def _trainer():
    """The trainer, imported by the job that runs it, not by whoever submits jobs (the driver):
    it brings torch, seconds to import (see job_env)."""
    return importlib.import_module(os.environ.get(TRAINER_ENV, "attnsweep.pipelines.trial.trainer"))


def _write_pending_checkpoint() -> None:
    """From a signal handler: nothing is pending before the trainer was loaded, and a handler must
    not import it (torch, seconds)."""
    trainer = sys.modules.get("attnsweep.pipelines.trial.trainer")
    if trainer is not None and hasattr(trainer, "write_pending_checkpoint"):  # not one still importing
        trainer.write_pending_checkpoint()


def _rank() -> int:
    job = submitit_job()
    return job.global_rank if job is not None else int(os.environ.get("RANK", 0))


def validate(cfg: TrialConfig, executor: ExecutorSpec) -> None:
    """Checks that need both the trial and where it runs; a one-line TrialConfigError."""
    world = executor.world_size
    if cfg.batch_size < world:
        raise TrialConfigError(f"batch_size: {cfg.batch_size} is smaller than the world size {world}")
    if cfg.batch_size % world:
        raise TrialConfigError(f"batch_size: {cfg.batch_size} is not divisible by the world size {world}")


def job_name(study: str, variant: str, phase: str, split: str) -> str:
    """`<study>/<variant>/<phase>/<split>`, the SLURM job name a user tells trials apart by in
    `squeue`/`sacct`: characters other than letters, digits and `._+-` become `_` (a name goes
    into an sbatch `#SBATCH` line and shell commands), at most 200 characters."""
    parts = (re.sub(r"[^A-Za-z0-9._+-]+", "_", p) for p in (study, variant, phase, split))
    return "/".join(parts)[:200]


def make_executor(spec: ExecutorSpec, folder: Path, name: str = "attnsweep") -> submitit.Executor:
    s = spec.slurm
    if spec.kind == "debug":
        return submitit.DebugExecutor(folder)
    if spec.kind == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=s.max_requeues)
        # submitit hides the GPUs of a local job unless it is given some.
        # a workstation has no queue time limit: a local job has none unless the study sets one
        ex.update_parameters(tasks_per_node=spec.workers, nodes=1, timeout_min=s.timeout_min or LOCAL_NO_TIMEOUT_MIN,
                             signal_delay_s=s.signal_delay_s,
                             gpus_per_node=min(spec.workers, machine_gpus()))
        return ex
    ex = submitit.SlurmExecutor(folder, max_num_timeout=s.max_requeues)
    params = dict(partition=s.partition, nodes=s.nodes, ntasks_per_node=s.tasks_per_node,
                  cpus_per_task=s.cpus_per_task, gpus_per_node=s.gpus_per_node or None,
                  mem=f"{round(s.mem_gb * 1024)}MB" if s.mem_gb else None, time=s.timeout_min or SLURM_DEFAULT_TIMEOUT_MIN,
                  account=s.account, qos=s.qos, constraint=s.constraint, signal_delay_s=s.signal_delay_s,
                  additional_parameters=dict(s.extra),
                  # one rank dying ends the others instead of leaving them blocked in a collective
                  srun_args=["--kill-on-bad-exit=1"], job_name=name)
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def local_cpu_threads(executor: ExecutorSpec, jobs_at_once: int) -> int | None:
    """Threads per rank of a local job when `jobs_at_once` such jobs share this machine."""
    if executor.kind != "local":
        return None
    return max(1, machine_cpus() // (executor.workers * jobs_at_once))


def submit(cfg: TrialConfig, trial_dir: str | Path, executor: ExecutorSpec, jobs_at_once: int = 1,
           name: str = "attnsweep") -> submitit.Job:
    """Validate, then submit one trial as job `name`; its job id goes to `<trial_dir>/jobs.json`."""
    return submit_array([cfg], [trial_dir], executor, jobs_at_once, name)[0]


def submit_array(cfgs: list[TrialConfig], trial_dirs: list[str | Path], executor: ExecutorSpec,
                 jobs_at_once: int | None = None, name: str = "attnsweep") -> list[submitit.Job]:
    """Several trials (e.g. one per split) as one SLURM job array. All are validated before any is
    submitted. One trial's submitit logs go to `<trial_dir>/submitit/`, an array's to
    `<common parent>/submitit/`. `jobs_at_once`: how many local jobs will share this machine's
    cores (default: these)."""
    dirs = [Path(d) for d in trial_dirs]
    for cfg, d in zip(cfgs, dirs, strict=True):
        validate(cfg, executor)
        TrialFolder(d).claim(cfg)
    folder = (dirs[0] if len(dirs) == 1 else Path(os.path.commonpath(dirs))) / SUBMITIT
    ex = make_executor(executor, folder, name)
    with ex.batch():
        threads = local_cpu_threads(executor, jobs_at_once or len(cfgs))
        jobs = [ex.submit(TrialJob(cfg, d, threads)) for cfg, d in zip(cfgs, dirs)]
    for job, d in zip(jobs, dirs):
        TrialFolder(d).record_job(job.job_id, executor.kind, folder, executor.world_size)
    return jobs


def _last_record(trial_dir: str | Path, executor: ExecutorSpec) -> dict | None:
    records = [r for r in TrialFolder(trial_dir).jobs() if r["kind"] == executor.kind]
    return records[-1] if records and executor.kind != "debug" else None


def attach(trial_dir: str | Path, executor: ExecutorSpec) -> submitit.Job | None:
    """The trial's last job of this executor kind if it is still queued or running, else None.

    A `local` job cannot be re-attached from another process (submitit's LocalJob needs the
    Popen handle of its controller): if one is still running it is stopped, and None is returned,
    so that the caller's new submission resumes from the checkpoint without two jobs in one folder."""
    rec = _last_record(trial_dir, executor)
    if rec is None:
        return None
    if executor.kind == "slurm":
        job = submitit.SlurmJob(folder=rec["folder"], job_id=rec["job_id"], tasks=tuple(range(rec["tasks"])))
        return None if job.done(force_check=True) else job
    stop_local_jobs([rec])
    return None


def stop_jobs(trial_dirs: list[Path], executor: ExecutorSpec) -> list[str]:
    """Stop the last job of each trial that is still queued or running, all at once -> their ids.
    Local jobs get their signal together and share one grace period (not one each). SLURM jobs:
    one `sacct` and one `scancel` for all (submitit's cancel takes one job per call), because a
    driver whose own job is cancelled has only SLURM's KillWait to do it."""
    records = [r for r in (_last_record(d, executor) for d in trial_dirs) if r is not None]
    if executor.kind == "slurm":
        # each job registers with submitit's shared watcher: the first forced check asks sacct for all
        jobs = [submitit.SlurmJob(folder=rec["folder"], job_id=rec["job_id"], tasks=tuple(range(rec["tasks"])))
                for rec in records]
        stopped = [job.job_id for i, job in enumerate(jobs) if not job.done(force_check=i == 0)]
        if stopped:
            subprocess.call(["scancel", *stopped])
        return stopped
    return stop_local_jobs(records)


def _local_job(rec: dict) -> psutil.Process | None:
    """The controller process of a local job if it still runs (not a reused pid, not a zombie)."""
    try:
        proc = psutil.Process(int(rec["job_id"]))
        args = proc.cmdline()
        if proc.status() != psutil.STATUS_ZOMBIE and "submitit.local._local" in args and rec["folder"] in args:
            return proc
    except psutil.Error:
        pass
    return None


def stop_local_jobs(records: list[dict], grace_s: float = 10.0) -> list[str]:
    """SIGINT to every running local job's controller and ranks at once (what LocalJob.cancel
    sends; the ranks too, in case the controller inherited an ignored SIGINT), one shared grace
    period, then SIGKILL for what is left -> the ids of the jobs that were running."""
    controllers = {rec["job_id"]: proc for rec in records if (proc := _local_job(rec)) is not None}
    tree = []
    for proc in controllers.values():
        with contextlib.suppress(psutil.Error):
            tree += [proc, *proc.children(recursive=True)]
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGINT)
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for proc in alive:  # did not stop in time (a loaded node, a signal ignored): killed outright
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)
    return list(controllers)
