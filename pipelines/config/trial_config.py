"""`TrialConfig`: everything one training run on one split depends on. Validated in the driver,
before any job is submitted; an error is one line that names the field."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from attnsweep.data import DatasetSpec, SplitSpec
from attnsweep.pipelines.config import selection
from attnsweep.pipelines.config.errors import one_line


class TrialConfigError(ValueError):
    """A bad trial configuration; the message is one line naming the field."""


# Validation context: the model was already probed at this image size and stem (the driver's
# preflight does it for every variant), so the probe, which needs torch and timm, is skipped.
MODEL_PROBED = "model_probed"


class AttentionSource(BaseModel):
    """An attention module from outside attnsweep: `factory(channels, **kwargs) -> nn.Module`, named
    by import path (`my_lab.attn:CoordAttention`, importable where the jobs run). A plain string is
    the factory without kwargs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    factory: str = Field(description="import path, package.module:Name")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments after the channels")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: object) -> object:
        return {"factory": v} if isinstance(v, str) else v


def register_attentions(sources: dict[str, AttentionSource]) -> dict[str, AttentionSource]:
    """Make the names usable in model names in this process (no import: the factories are loaded
    when a model is built); ValueError `NAME: problem` for a bad name or path."""
    from attnsweep.models.registry import register
    from attnsweep.plugins import PluginError

    for name, src in sources.items():
        try:
            register(name, src.factory, src.kwargs, f"attentions.{name}")
        except PluginError as err:
            raise ValueError(str(err).removeprefix("attentions.")) from None
    return sources


class TrialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # Before `model`: validated first, so the model name may use them. The study sets the ones its
    # variant uses (study-level `attentions:`).
    attentions: dict[str, AttentionSource] = Field(default_factory=dict, description="attention modules from "
                                                   "outside attnsweep by name (set at study level)")
    model: str = Field(description="model variant, e.g. resnet18 or resnet18+ga")
    dataset: DatasetSpec
    ood: dict[str, DatasetSpec] = Field(default_factory=dict)
    splits: SplitSpec = Field(default_factory=SplitSpec)
    split: str = Field("search-0", description="split name (search-K, repeat-K)")
    image_size: int = Field(224, ge=16, strict=True)
    stem: Literal["imagenet", "small"] = Field(
        "imagenet", description="ResNets: `small` is the 3x3 stride-1 stem without max-pool of the 28-32 px papers")
    epochs: int = Field(ge=1, strict=True)
    lr: float = Field(gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(ge=1, strict=True, description="global batch, split evenly over the ranks")
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum; AdamW's beta1")
    schedule: Literal["step", "multistep", "cosine", "constant"] = Field("constant", description="learning-rate schedule")
    step_size: int = Field(30, ge=1, strict=True, description="step: epochs between decays (x gamma)")
    milestones: tuple[float, ...] = Field((0.3, 0.6, 0.9), description="multistep: fractions of the epochs (x gamma)")
    gamma: float = Field(0.1, gt=0, le=1, description="step/multistep: decay factor")
    augmentation: Literal["none", "flip_rot20", "perez2018"] = "none"
    seed: int = Field(0, strict=True)
    pretrained: str | None = Field(None, description="pretrained weights (see attnsweep models)")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="numeric precision (autocast); fp16 needs a GPU")
    selection_metric: selection.Metric = Field(selection.DEFAULT, description="validation metric that selects "
                                                                              "the epoch and the configuration")
    num_workers: int = Field(0, ge=0, strict=True, description="DataLoader worker processes per rank")
    # checkpoint.pt (the resume state) after the last epoch, at the requeue signal, and after an
    # epoch when either of these is due (both None: only those two); a kill re-runs the epochs since.
    checkpoint_every_epochs: int | None = Field(None, ge=1, strict=True, description="every K epochs")
    checkpoint_every_minutes: float | None = Field(10.0, gt=0, description="once this long since the last one")
    cpu_threads: int | None = Field(None, ge=1, strict=True, description="torch threads per rank on the CPU; None: "
                                                          "SLURM's cpus-per-task, else the cores shared by the ranks")
    compile: bool = Field(False, strict=True, description="torch.compile the model (worth it on a GPU)")
    data_dir: Path | None = Field(None, description="prepared data (attnsweep.data.prepare); "
                                                    "None: prepared into the trial folder")

    @field_validator("attentions")
    @classmethod
    def _register(cls, sources: dict[str, AttentionSource]) -> dict[str, AttentionSource]:
        return register_attentions(sources)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from attnsweep.models import parse_name

        parse_name(name)  # ValueError listing the valid backbones and attentions
        return name

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, ms: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < m < 1 for m in ms) or list(ms) != sorted(ms):
            raise ValueError(f"must be increasing fractions of the epochs in (0, 1), got {list(ms)}")
        return ms

    @model_validator(mode="after")
    def _split_and_roots(self, info: ValidationInfo) -> TrialConfig:
        if self.split not in self.splits.names():
            raise ValueError(f"split: {self.split!r} is not one of the splits {self.splits.names()}")
        for field, spec in [("dataset", self.dataset), *((f"ood.{k}", v) for k, v in self.ood.items())]:
            if spec.root is not None and not Path(spec.root).exists():
                raise ValueError(f"{field}.root: {spec.root} does not exist")
        if not (info.context or {}).get(MODEL_PROBED):
            from attnsweep.models.factory import check_input_size

            check_input_size(self.model, self.image_size, self.stem)  # also checks the stem fits the model
        if self.stem == "small" and self.pretrained:
            raise ValueError(f"stem: 'small' has no pretrained weights (pretrained: {self.pretrained}); train from scratch")
        return self

    def identity(self, *exclude: str) -> dict:
        """The configuration as JSON, without the fields `exclude` names."""
        return self.model_dump(mode="json", exclude=set(exclude))

    def hash(self) -> str:
        """Identifies the trial's configuration (a stable folder name for one trial)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


def parse(data: dict, source: str = "trial config") -> TrialConfig:
    try:
        return TrialConfig.model_validate(data)
    except ValidationError as err:
        raise TrialConfigError(one_line(err, source)) from None
