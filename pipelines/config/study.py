"""The study file (`studies/*.yaml`): what to compare, on which data, how to search and repeat.
Validated with pydantic when loaded; an error is one line naming the file and the field."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from attnsweep.data import DatasetSpec, SplitSpec
from attnsweep.pipelines.config.executor import ExecutorSpec
from attnsweep.pipelines.config.stats_settings import StatsSettings
from attnsweep.pipelines.config.errors import one_line
from attnsweep.pipelines.config.trial_config import TrialConfig

# TrialConfig fields a study sets per trial; every other field is a shared training setting.
PER_TRIAL_FIELDS = {"model", "dataset", "ood", "splits", "split", "image_size", "lr", "weight_decay", "data_dir"}

# The `train:` section: TrialConfig's own fields and defaults (one definition), minus the per-trial ones.
TrainSettings = create_model(
    "TrainSettings",
    __config__=ConfigDict(extra="forbid", frozen=True),
    **{name: (f.annotation, f) for name, f in TrialConfig.model_fields.items() if name not in PER_TRIAL_FIELDS},
)


class LogRange(BaseModel):
    """A log-uniform range, e.g. `lr: {low: 1e-4, high: 1e-1}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LogRange:
        if self.low >= self.high:
            raise ValueError(f"low must be below high, got low={self.low} high={self.high}")
        return self


Space = LogRange | list[float]


class AshaSettings(BaseModel):
    """Asynchronous successive halving over epochs (ray.tune.schedulers.ASHAScheduler)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(3, gt=1)


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["tpe", "grid"] = "tpe"
    trials: int = Field(8, ge=1, description="configurations per variant (tpe); grid: all combinations")
    seed: int = 0
    lr: Space
    weight_decay: Space = [0.0]
    asha: AshaSettings | None = None

    @field_validator("lr", "weight_decay")
    @classmethod
    def _values(cls, v: Space) -> Space:
        if isinstance(v, list):
            if not v:
                raise ValueError("needs at least one value")
            if any(x < 0 for x in v) or len(set(v)) != len(v):
                raise ValueError(f"values must be non-negative and distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _algorithm_fits_space(self) -> SearchSettings:
        if isinstance(self.lr, list) and 0 in self.lr:
            raise ValueError(f"lr: must be positive, got {self.lr}")
        lists = [isinstance(getattr(self, name), list) for name in ("lr", "weight_decay")]
        if self.algorithm == "grid" and not all(lists):
            raise ValueError("lr, weight_decay: the grid algorithm needs an explicit list of values for both")
        # TPE may propose a point of a finite space twice, and two trials of one configuration
        # would share their trial folders; lists only (more than one point) is a grid.
        if self.algorithm == "tpe" and all(lists) and not self.fixed():
            raise ValueError("algorithm: tpe needs a log-uniform range for lr or weight_decay; for lists use grid")
        return self

    def fixed(self) -> dict[str, float] | None:
        """The one configuration when the space has a single point, else None."""
        if isinstance(self.lr, list) and isinstance(self.weight_decay, list) and len(self.lr) == len(self.weight_decay) == 1:
            return {"lr": self.lr[0], "weight_decay": self.weight_decay[0]}
        return None

    def n_configs(self) -> int:
        if self.fixed():
            return 1
        if self.algorithm == "grid":
            return len(self.lr) * len(self.weight_decay)
        return self.trials


class EstimateSettings(BaseModel):
    """Only for the `--dry-run` compute estimate."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    train_images: int | None = Field(None, ge=1, description="images in the pool (synthderm: its `n`)")
    tflops: float | None = Field(None, gt=0, description="sustained TFLOP/s per device; default by executor")


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    dataset: DatasetSpec
    dataset_name: str | None = Field(None, description="the `dataset` column of the results; default: the format")
    ood: dict[str, DatasetSpec] = Field(default_factory=dict)
    image_size: int = Field(224, ge=16)
    variants: list[str] = Field(min_length=1)
    train: TrainSettings
    search: SearchSettings
    splits: SplitSpec = Field(default_factory=SplitSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    max_concurrent: int = Field(2, ge=1, description="Tune trials running at once")
    max_failures: int = Field(1, ge=0, description="retries of a failed trial (from its checkpoint)")
    tracking_uri: str | None = Field(None, description="default: sqlite:///<out>/mlflow.db")
    out_dir: Path | None = Field(None, description="default: runs/<name>")
    stats: StatsSettings = Field(default_factory=StatsSettings)
    estimate: EstimateSettings = Field(default_factory=EstimateSettings)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(f"use letters, digits, '_', '.', '-' (it names folders and the MLflow experiment), got {v!r}")
        return v

    @field_validator("variants")
    @classmethod
    def _variants(cls, names: list[str]) -> list[str]:
        from attnsweep.models import parse_name

        for n in names:
            parse_name(n)  # ValueError listing the valid backbones and attentions
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"listed twice: {dup}")
        return names

    @field_validator("ood")
    @classmethod
    def _ood_names(cls, ood: dict[str, DatasetSpec]) -> dict[str, DatasetSpec]:
        bad = [k for k in ood if not re.fullmatch(r"[A-Za-z0-9_-]+", k)]
        if bad:
            raise ValueError(f"OOD set names use letters, digits, '_', '-', got {bad}")
        return ood

    @model_validator(mode="after")
    def _phases(self) -> Study:
        if self.splits.repeat_splits == 0:
            raise ValueError("splits.repeat_splits: the repeat phase needs at least one split")
        if self.splits.search_splits == 0 and not self.search.fixed():
            raise ValueError("splits.search_splits: 0 skips the search, which needs a single lr and weight_decay")
        for variant, base in self.stats.baselines.items():
            if variant not in self.variants or base not in self.variants:
                raise ValueError(f"stats.baselines: {variant} -> {base} names a variant the study does not list")
        return self

    @property
    def dataset_label(self) -> str:
        return self.dataset_name or self.dataset.format

    def output_dir(self) -> Path:
        return (self.out_dir or Path("runs") / self.name).resolve()


class StudyError(ValueError):
    """A study file that cannot be used; the message is one line naming the file and field."""


def load_study(path: Path) -> Study:
    """Parse and validate a study file. Relative dataset roots are relative to the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise StudyError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise StudyError(f"{path}: expected a mapping of study settings, got {type(data).__name__}")
    _anchor_roots(data, path.parent)
    try:
        return Study.model_validate(data)
    except ValidationError as err:
        raise StudyError(one_line(err, str(path))) from None


def _anchor_roots(data: dict, base: Path) -> None:
    """`root:` paths in a study are relative to the study file, not to the working directory."""
    specs = [data.get("dataset"), *((data.get("ood") or {}).values())]
    for spec in specs:
        if isinstance(spec, dict) and isinstance(spec.get("root"), str) and not Path(spec["root"]).is_absolute():
            spec["root"] = str((base / spec["root"]).resolve())
