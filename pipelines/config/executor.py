"""Where a study's trials run (the `executor:` section of a study file): `debug`, `local` or
`slurm`, and the SLURM resources of one job. Plain settings; `pipelines.trial.executors` submits."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SlurmResources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    tasks_per_node: int = Field(1, ge=1, description="ranks per node (one per GPU on a GPU node)")
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    timeout_min: int | None = Field(None, ge=1, description="time limit of one job; unset: 60 min for a `slurm` "
                                                            "job, none for a `local` one")
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: dict[str, str | int | bool] = Field(default_factory=dict,
                                               description="more sbatch flags, e.g. {'exclusive': True}")
    signal_delay_s: int = Field(90, ge=0, description="the requeue signal comes this long before the time limit")
    max_requeues: int = Field(3, ge=0, description="time-outs after which the job is not requeued again")


class StallSettings(BaseModel):
    """The stall watchdog (`sweep.stall`): a running job without a new epoch line for `warn_min` is
    reported, after `cancel_min` cancelled and retried as an infrastructure failure. Unset: from the
    expected epoch time (see `sweep.stall.limits`); one set alone: the other is twice or half of it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    warn_min: float | None = Field(None, gt=0, description="minutes without a new epoch line before a job is "
                                                           "reported stalled (fractions allowed)")
    cancel_min: float | None = Field(None, gt=0, description="minutes without a new epoch line before a job is "
                                                             "cancelled and its trial retried")

    @model_validator(mode="after")
    def _ordered(self) -> StallSettings:
        if self.warn_min is not None and self.cancel_min is not None and self.cancel_min <= self.warn_min:
            raise ValueError(f"cancel_min must be above warn_min, got warn_min={self.warn_min} "
                             f"cancel_min={self.cancel_min}")
        return self


SLURM_DEFAULT_TIMEOUT_MIN = 60
LOCAL_NO_TIMEOUT_MIN = 100 * 365 * 24 * 60  # submitit's local jobs always have a limit: a century is none


class ExecutorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["debug", "local", "slurm"] = "local"
    workers: int = Field(1, ge=1, description="processes (ranks) of a `local` job")
    slurm: SlurmResources = Field(default_factory=SlurmResources)
    stall: StallSettings = Field(default_factory=StallSettings)

    @property
    def world_size(self) -> int:
        if self.kind == "slurm":
            return self.slurm.nodes * self.slurm.tasks_per_node
        return self.workers if self.kind == "local" else 1
