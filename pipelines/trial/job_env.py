"""Where a trial job runs: its submitit job, its CPUs, its GPUs. No torch here: the Tune actors
that submit jobs import this, and torch alone takes seconds to import, which an actor starting
beside busy training jobs pays many times over before its first job is submitted."""
from __future__ import annotations

import os
from pathlib import Path


def submitit_job():
    """The submitit JobEnvironment of this process's slurm or local job task, else None (also in
    a `debug` job, which runs in the caller's process as a single rank)."""
    if os.environ.get("SUBMITIT_EXECUTOR") not in ("slurm", "local"):
        return None
    from submitit import JobEnvironment

    return JobEnvironment()


# Set in a `local` job by the submitting driver: the threads of each of its ranks, so that local
# jobs side by side share the cores instead of each taking all of them (oversubscribed, torch's
# threads spin against each other: two 2-thread jobs on 2 cores trained 5x slower each, not 2x).
CPU_THREADS_ENV = "ATTNSWEEP_CPU_THREADS"


# A `local` job shares its machine with the driver and the Tune actors that follow it; they need
# little CPU but need it at once (an actor starting beside four training jobs on two cores took
# 5-9 s, not 2, before its first job was submitted: bench/scheduler.py). So local jobs train at a
# lower CPU priority; alone on the machine they train as fast as before.
LOCAL_JOB_NICENESS = 10


def machine_cpus() -> int:
    return len(os.sched_getaffinity(0))


def cpu_threads(local_world_size: int, configured: int | None = None) -> int:
    """CPU threads per rank: `configured` (TrialConfig.cpu_threads), else SLURM's cpus-per-task,
    else the driver's share for a local job, else this machine's CPUs shared by its ranks."""
    if configured is not None:
        return configured
    for var in ("SLURM_CPUS_PER_TASK", CPU_THREADS_ENV):
        if var in os.environ:
            return int(os.environ[var])
    return max(1, machine_cpus() // local_world_size)


def machine_gpus() -> int:
    """GPUs this process sees (torch.cuda: NVIDIA, or AMD in a ROCm build). torch is asked only where
    a GPU kernel driver is loaded (NVIDIA's, or ROCm's /dev/kfd): without one it would say 0, after
    seconds of importing."""
    if not (Path("/proc/driver/nvidia").exists() or Path("/dev/kfd").exists()):
        return 0
    import torch

    return torch.cuda.device_count()
