"""The process group of one trial. Rank and world size come from submitit's job environment (each
submitit task is one rank) or from torchrun's variables; gloo on CPU, NCCL on GPU."""
from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Any

import psutil
import torch
import torch.distributed as dist

from attnsweep.pipelines.trial.job_env import cpu_threads, submitit_job


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    host: str  # this rank's address on the network that reaches rank 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _local_address(peer: str) -> str:
    """Our address on the route to `peer` (connecting a UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((socket.gethostbyname(peer), 9))
        return s.getsockname()[0]


def _interface_of(address: str) -> str | None:
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == address for a in addrs):
            return name
    return None


def setup(configured_threads: int | None = None) -> Dist:
    if submitit_job() is not None and "RANK" not in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        # The job's own values win over any MASTER_ADDR/PORT inherited from the submitting shell;
        # CUDA_VISIBLE_DEVICES stays as SLURM set it, the rank picks its GPU by local rank below.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(cpu_threads(local_world, configured_threads))
    host = _local_address(os.environ.get("MASTER_ADDR", "127.0.0.1"))
    if world > 1:
        backend = "nccl" if cuda else "gloo"
        if backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ:
            # gloo binds to the address of the host name, which on a multi-homed node (or a node in
            # a network namespace) may not reach rank 0: bind to the interface that does.
            ifname = _interface_of(host)
            if ifname:
                os.environ["GLOO_SOCKET_IFNAME"] = ifname
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30))
    return Dist(rank, world, local_rank, device, host)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather(obj: Any) -> list[Any]:
    """One object from every rank, in rank order (a one-element list without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP copies them only at the
    start of each training forward pass, so after an epoch every rank holds its own, and ranks
    would evaluate their shards with different models."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
