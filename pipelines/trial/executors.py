"""Where a trial runs, all through submitit: `debug` (in this process), `local` (N processes on
this machine: DDP on CPU, or on a workstation's GPUs), `slurm` (a batch job; a job array for
several splits). Every submitted job id is recorded in the trial folder's `jobs.json`, so a driver
can cancel a job or re-attach to it."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

import psutil
import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from attnsweep.pipelines.config.executor import ExecutorSpec
from attnsweep.pipelines.trial.distributed import CPU_THREADS_ENV, machine_cpus, submitit_job
from attnsweep.pipelines.trial.folder import SUBMITIT, TrialFolder
from attnsweep.pipelines.trial.trainer import train
from attnsweep.pipelines.config.trial_config import TrialConfig, TrialConfigError


class TrialJob(Checkpointable):
    """The submitit callable: one rank of a trial. On the time-out/preemption signal submitit calls
    `checkpoint` and requeues the job."""

    def __init__(self, cfg: TrialConfig, trial_dir: Path, cpu_threads: int | None = None) -> None:
        self.cfg = cfg
        self.trial_dir = Path(trial_dir)
        self.cpu_threads = cpu_threads  # per rank, for a local job (see distributed.CPU_THREADS_ENV)

    def __call__(self) -> dict:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
        if self.cpu_threads is not None:
            os.environ[CPU_THREADS_ENV] = str(self.cpu_threads)  # this job's own process
        try:
            return train(self.cfg, self.trial_dir)
        except Exception as err:
            if _rank() == 0:
                error = f"{type(err).__name__}: {err}"
                TrialFolder(self.trial_dir).write_result({"status": "failed", "error": error})
            raise

    def checkpoint(self) -> DelayedSubmission:
        # The state is checkpoint.pt, written after every epoch. Nothing is saved here: the signal
        # lands mid-step, so the requeued job resumes after the last finished epoch instead.
        return DelayedSubmission(self)


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


def make_executor(spec: ExecutorSpec, folder: Path) -> submitit.Executor:
    s = spec.slurm
    if spec.kind == "debug":
        return submitit.DebugExecutor(folder)
    if spec.kind == "local":
        import torch

        ex = submitit.LocalExecutor(folder, max_num_timeout=s.max_requeues)
        # submitit hides the GPUs of a local job unless it is given some.
        ex.update_parameters(tasks_per_node=spec.workers, nodes=1, timeout_min=s.timeout_min,
                             signal_delay_s=s.signal_delay_s,
                             gpus_per_node=min(spec.workers, torch.cuda.device_count()))
        return ex
    ex = submitit.SlurmExecutor(folder, max_num_timeout=s.max_requeues)
    params = dict(partition=s.partition, nodes=s.nodes, ntasks_per_node=s.tasks_per_node,
                  cpus_per_task=s.cpus_per_task, gpus_per_node=s.gpus_per_node or None,
                  mem=f"{round(s.mem_gb * 1024)}MB" if s.mem_gb else None, time=s.timeout_min,
                  account=s.account, qos=s.qos, constraint=s.constraint, signal_delay_s=s.signal_delay_s,
                  additional_parameters=dict(s.extra),
                  # one rank dying ends the others instead of leaving them blocked in a collective
                  srun_args=["--kill-on-bad-exit=1"], job_name="attnsweep")
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def local_cpu_threads(executor: ExecutorSpec, jobs_at_once: int) -> int | None:
    """Threads per rank of a local job when `jobs_at_once` such jobs share this machine."""
    if executor.kind != "local":
        return None
    return max(1, machine_cpus() // (executor.workers * jobs_at_once))


def submit(cfg: TrialConfig, trial_dir: str | Path, executor: ExecutorSpec, jobs_at_once: int = 1) -> submitit.Job:
    """Validate, then submit one trial; its job id goes to `<trial_dir>/jobs.json`."""
    return submit_array([cfg], [trial_dir], executor, jobs_at_once)[0]


def submit_array(cfgs: list[TrialConfig], trial_dirs: list[str | Path], executor: ExecutorSpec,
                 jobs_at_once: int | None = None) -> list[submitit.Job]:
    """Several trials (e.g. one per split) as one SLURM job array. All are validated before any is
    submitted. One trial's submitit logs go to `<trial_dir>/submitit/`, an array's to
    `<common parent>/submitit/`. `jobs_at_once`: how many local jobs will share this machine's
    cores (default: these)."""
    dirs = [Path(d) for d in trial_dirs]
    for cfg, d in zip(cfgs, dirs, strict=True):
        validate(cfg, executor)
        TrialFolder(d).claim(cfg)
    folder = (dirs[0] if len(dirs) == 1 else Path(os.path.commonpath(dirs))) / SUBMITIT
    ex = make_executor(executor, folder)
    with ex.batch():
        threads = local_cpu_threads(executor, jobs_at_once or len(cfgs))
        jobs = [ex.submit(TrialJob(cfg, d, threads)) for cfg, d in zip(cfgs, dirs)]
    for job, d in zip(jobs, dirs):
        TrialFolder(d).record_job(job.job_id, executor.kind, folder, executor.world_size)
    return jobs


def attach(trial_dir: str | Path, executor: ExecutorSpec) -> submitit.Job | None:
    """The trial's last job of this executor kind if it is still queued or running, else None.

    A `local` job cannot be re-attached from another process (submitit's LocalJob needs the
    Popen handle of its controller): if one is still running it is stopped, and None is returned,
    so that the caller's new submission resumes from the checkpoint without two jobs in one folder."""
    records = [r for r in TrialFolder(trial_dir).jobs() if r["kind"] == executor.kind]
    if not records or executor.kind == "debug":
        return None
    rec = records[-1]
    if executor.kind == "slurm":
        job = submitit.SlurmJob(folder=rec["folder"], job_id=rec["job_id"], tasks=tuple(range(rec["tasks"])))
        return None if job.done(force_check=True) else job
    _stop_local_controller(int(rec["job_id"]), rec["folder"])
    return None


def _stop_local_controller(pid: int, folder: str, grace_s: float = 30.0) -> None:
    def alive() -> bool:  # and still our controller, not a reused pid or a zombie
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"submitit.local._local" in args and folder.encode() in args

    if not alive():
        return
    os.kill(pid, signal.SIGINT)  # what LocalJob.cancel sends: the controller stops its tasks
    deadline = time.monotonic() + grace_s
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive():  # it did not stop in time (a loaded node): kill it and its task processes outright
        with contextlib.suppress(psutil.NoSuchProcess):
            controller = psutil.Process(pid)
            tree = controller.children(recursive=True) + [controller]
            for proc in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            psutil.wait_procs(tree, timeout=10)
