"""Where a trial runs, all through submitit: `debug` (in this process), `local` (N processes on
this machine: DDP on CPU, or on a workstation's GPUs), `slurm` (a batch job; a job array for
several splits). Every submitted job id is recorded in the trial folder's `jobs.json`, so a driver
can cancel a job or re-attach to it."""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Literal

import psutil
import submitit
from pydantic import BaseModel, ConfigDict, Field
from submitit.helpers import Checkpointable, DelayedSubmission

from attnsweep.pipelines.trial import checkpoint
from attnsweep.pipelines.trial.distributed import CPU_THREADS_ENV, machine_cpus, submitit_job
from attnsweep.pipelines.trial.trainer import RESULT, claim_folder, train
from attnsweep.pipelines.config.trial_config import TrialConfig, TrialConfigError

JOBS = "jobs.json"


class SlurmResources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    tasks_per_node: int = Field(1, ge=1, description="ranks per node (one per GPU on a GPU node)")
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    timeout_min: int = Field(60, ge=1, description="time limit of one job (a `local` job too)")
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: dict[str, str | int | bool] = Field(default_factory=dict,
                                               description="more sbatch flags, e.g. {'exclusive': True}")
    signal_delay_s: int = Field(90, ge=0, description="the requeue signal comes this long before the time limit")
    max_requeues: int = Field(3, ge=0, description="time-outs after which the job is not requeued again")


class ExecutorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["debug", "local", "slurm"] = "local"
    workers: int = Field(1, ge=1, description="processes (ranks) of a `local` job")
    slurm: SlurmResources = Field(default_factory=SlurmResources)

    @property
    def world_size(self) -> int:
        if self.kind == "slurm":
            return self.slurm.nodes * self.slurm.tasks_per_node
        return self.workers if self.kind == "local" else 1


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
                checkpoint.write_json(self.trial_dir / RESULT, {"status": "failed", "error": error})
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
        claim_folder(cfg, d)
    folder = (dirs[0] if len(dirs) == 1 else Path(os.path.commonpath(dirs))) / "submitit"
    ex = make_executor(executor, folder, name)
    with ex.batch():
        threads = local_cpu_threads(executor, jobs_at_once or len(cfgs))
        jobs = [ex.submit(TrialJob(cfg, d, threads)) for cfg, d in zip(cfgs, dirs)]
    for job, d in zip(jobs, dirs):
        _record(d, job, executor, folder)
    return jobs


def _record(trial_dir: Path, job: submitit.Job, executor: ExecutorSpec, folder: Path) -> None:
    path = trial_dir / JOBS
    records = checkpoint.read_json(path) if path.exists() else []
    records.append({"job_id": job.job_id, "kind": executor.kind, "folder": str(folder),
                    "tasks": executor.world_size,
                    "submitted_at": datetime.datetime.now(datetime.timezone.utc).isoformat()})
    checkpoint.write_json(path, records)


def job_ids(trial_dir: str | Path) -> list[str]:
    path = Path(trial_dir) / JOBS
    return [r["job_id"] for r in checkpoint.read_json(path)] if path.exists() else []


def attach(trial_dir: str | Path, executor: ExecutorSpec) -> submitit.Job | None:
    """The trial's last job of this executor kind if it is still queued or running, else None.

    A `local` job cannot be re-attached from another process (submitit's LocalJob needs the
    Popen handle of its controller): if one is still running it is stopped, and None is returned,
    so that the caller's new submission resumes from the checkpoint without two jobs in one folder."""
    path = Path(trial_dir) / JOBS
    records = [r for r in (checkpoint.read_json(path) if path.exists() else []) if r["kind"] == executor.kind]
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
