"""The study file (`studies/*.yaml`): what to compare, on which data, how to search and repeat.
Validated with pydantic when loaded; an error is one line naming the file and the field."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model, field_validator, model_validator

from attnsweep.data import DatasetSpec, SplitSpec
from attnsweep.pipelines.config.executor import ExecutorSpec
from attnsweep.pipelines.config.feature_settings import FeatureSettings
from attnsweep.pipelines.config.notify_settings import NotifySettings
from attnsweep.pipelines.config.stats_settings import StatsSettings
from attnsweep.pipelines.config import overrides
from attnsweep.pipelines.config.errors import one_line
from attnsweep.pipelines.config.trial_config import AttentionSource, TrialConfig, register_attentions

# TrialConfig fields a study sets per trial; every other field is a shared training setting.
PER_TRIAL_FIELDS = {"model", "dataset", "ood", "splits", "split", "image_size", "lr", "weight_decay", "data_dir"}

# The `train:` section: TrialConfig's own fields and defaults (one definition), minus the per-trial ones.
TrainSettings = create_model(
    "TrainSettings",
    __config__=ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False),
    **{name: (f.annotation, f) for name, f in TrialConfig.model_fields.items() if name not in PER_TRIAL_FIELDS},
)


class LogRange(BaseModel):
    """A log-uniform range, e.g. `lr: {low: 1e-4, high: 1e-1}`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
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
    grace_period: int = Field(1, ge=1, strict=True, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(3, gt=1)


class WarmPoint(BaseModel):
    """A configuration a warm-started search evaluates first."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lr: float = Field(gt=0)
    weight_decay: float = Field(0.0, ge=0)


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    algorithm: Literal["tpe", "grid"] = "tpe"
    trials: int = Field(8, ge=1, strict=True, description="configurations per variant (tpe); grid: all combinations")
    seed: int = Field(0, strict=True)
    lr: Space
    weight_decay: Space = [0.0]
    asha: AshaSettings | None = None
    warm_start: Path | list[WarmPoint] | None = Field(
        None, description="an earlier study's folder (its variants' selected configurations) or a list of "
                          "{lr, weight_decay}: evaluated first (`sweep.warm_start`)")

    @field_validator("warm_start")
    @classmethod
    def _earlier_study(cls, v: Path | list[WarmPoint] | None) -> Path | list[WarmPoint] | None:
        if isinstance(v, Path):  # relative to the working directory, like out_dir
            if not (v / "results").is_dir():
                raise ValueError(f"{v} is not a study folder (it has no results/)")
            return v.resolve()
        return v

    @field_validator("lr", "weight_decay", mode="before")
    @classmethod
    def _range_or_list(cls, v: object) -> object:
        if not isinstance(v, (dict, list, LogRange)):  # else pydantic reports each union member's error
            raise ValueError(f"expected a log-uniform range {{low: .., high: ..}} or a list of values, got {v!r}")
        values = v if isinstance(v, list) else list(v.values()) if isinstance(v, dict) else []
        if any(isinstance(x, float) and not math.isfinite(x) for x in values):
            raise ValueError(f"values must be finite numbers, got {v!r}")
        return v

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
    train_images: int | None = Field(None, ge=1, strict=True, description="images in the pool (synthderm: its `n`)")
    tflops: float | None = Field(None, gt=0, description="sustained TFLOP/s per device; default by executor")
    measured: list[Path] = Field(default_factory=list, description="more study folders to calibrate the per-job "
                                 "time from (besides this study's and its sibling folders)")


class VariantSpec(BaseModel):
    """One row of the comparison: a model name, or a mapping with its own `id` (the name in results,
    MLflow and the report), the `model`, the `baseline` it is compared with, and overrides of the
    study's `train`, `search` and `executor` sections (merged over them, validated the same way)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str | None = None
    model: str
    baseline: str | None = None
    train: dict = Field(default_factory=dict)
    search: dict = Field(default_factory=dict)
    executor: dict = Field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """A variant with the study's settings merged in: what its trials are built from."""

    id: str
    model: str
    baseline: str
    train: TrainSettings
    search: SearchSettings
    executor: ExecutorSpec


VARIANT_ID = r"[A-Za-z0-9][A-Za-z0-9_.+-]*"  # it names trial folders and MLflow runs


def _merged(base: BaseModel, override: dict) -> dict:
    """`override` over `base`'s values, mappings merged key by key (e.g. executor.slurm.gpus_per_node)."""
    return overrides.merge(base.model_dump(), override)


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    description: str = ""
    # Before `variants`: validated first, so the variants' model names may use them.
    attentions: dict[str, AttentionSource] = Field(default_factory=dict, description="attention modules from "
                                                   "outside attnsweep: name -> import path or {factory, kwargs}")
    dataset: DatasetSpec
    dataset_name: str | None = Field(None, description="the `dataset` column of the results; default: the format")
    ood: dict[str, DatasetSpec] = Field(default_factory=dict)
    image_size: int = Field(224, ge=16, strict=True)
    variants: list[str | VariantSpec] = Field(min_length=1)
    train: TrainSettings
    search: SearchSettings
    splits: SplitSpec = Field(default_factory=SplitSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    max_concurrent: int = Field(2, ge=1, strict=True, description="training jobs running at once across the study "
                                                     "(a search trial on 2 splits is 2 jobs)")
    max_failures: int = Field(1, ge=0, strict=True, description="retries of a failed trial (from its checkpoint)")
    tracking_uri: str | None = Field(None, description="default: sqlite:///<out>/mlflow.db")
    out_dir: Path | None = Field(None, description="default: runs/<name>")
    stats: StatsSettings = Field(default_factory=StatsSettings)
    estimate: EstimateSettings = Field(default_factory=EstimateSettings)
    _resolved: dict[str, Variant] = PrivateAttr(default_factory=dict)  # id -> merged settings (derived)
    features: FeatureSettings | None = Field(None, description="feature usage (Table 3) after the repeats")
    notify: NotifySettings | None = Field(None, description="messages when the study ends or fails and when a "
                                                            "variant's repeats finish")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > 100:  # it names folders (a file name has at most 255 bytes) and the MLflow experiment
            raise ValueError(f"at most 100 characters, got {len(v)}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(f"use letters, digits, '_', '.', '-' (it names folders and the MLflow experiment), got {v!r}")
        return v

    @field_validator("attentions")
    @classmethod
    def _register(cls, sources: dict[str, AttentionSource]) -> dict[str, AttentionSource]:
        return register_attentions(sources)

    @field_validator("variants")
    @classmethod
    def _variants(cls, items: list[str | VariantSpec]) -> list[str | VariantSpec]:
        from attnsweep.models import parse_name

        for item in items:
            model = item if isinstance(item, str) else item.model
            try:
                parse_name(model)  # ValueError listing the valid backbones and attentions
            except ValueError as e:
                raise ValueError(str(e) if isinstance(item, str) else f"{_id(item)}.model: {e}") from None
            if not re.fullmatch(VARIANT_ID, _id(item)):
                raise ValueError(f"id: use letters, digits, '_', '.', '+', '-' (it names folders), got {_id(item)!r}")
        ids = [_id(i) for i in items]
        dup = sorted({n for n in ids if ids.count(n) > 1})
        if dup:
            raise ValueError(f"listed twice: {dup}")
        return items

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
            if variant not in self.variant_ids or base not in self.variant_ids:
                raise ValueError(f"stats.baselines: {variant} -> {base} names a variant the study does not list")
        if self.splits.search_splits > self.max_concurrent:
            raise ValueError(f"max_concurrent: {self.max_concurrent} jobs cannot hold a search configuration, which "
                             f"trains its {self.splits.search_splits} search splits at once")
        if self.train.attentions:
            raise ValueError("train.attentions: name attention modules at study level (attentions:)")
        resolved, trained = {}, {}
        for item in self.variants:
            v = self._resolve(item)
            same = trained.setdefault((v.model, v.train.model_dump_json()), v.id)
            if same != v.id:
                raise ValueError(f"variants.{v.id}: trains {v.model} with the same train settings as {same}")
            if self.splits.search_splits == 0 and not v.search.fixed():
                raise ValueError(f"variants.{v.id}.search: without search splits it needs a single lr and weight_decay")
            resolved[v.id] = v
        self._resolved = resolved
        return self

    def _resolve(self, item: str | VariantSpec) -> Variant:
        """Merge a variant's overrides over the study's sections; one line naming the variant and the
        field on error. The default baseline: the variant of its backbone without attention and
        with the same pretraining (a ViT-Tiny 21k row is compared with itself, not with the 1k one)."""
        from attnsweep.models import parse_name

        spec = VariantSpec(model=item) if isinstance(item, str) else item
        vid = _id(spec)
        if "kind" in spec.executor:
            raise ValueError(f"variants.{vid}.executor.kind: one executor kind per study (set it in executor:)")
        sections = {}
        for name, model, base in (("train", TrainSettings, self.train), ("search", SearchSettings, self.search),
                                  ("executor", ExecutorSpec, self.executor)):
            override = getattr(spec, name)
            try:
                sections[name] = model.model_validate(_merged(base, override)) if override else base
            except ValidationError as err:
                e = err.errors()[0]
                loc = ".".join(str(p) for p in (f"variants.{vid}.{name}", *e["loc"]))
                got = "" if e["type"] in ("value_error", "missing") else f" (got {e['input']!r})"
                raise ValueError(f"{loc}: {e['msg'].removeprefix('Value error, ')}{got}") from None
        if "attentions" in spec.train:
            raise ValueError(f"variants.{vid}.train.attentions: name attention modules at study level (attentions:)")
        # The trials carry the study attentions their model uses (to the jobs; in their identity).
        used = {a: self.attentions[a] for a in parse_name(spec.model)[1] if a in self.attentions}
        if used:
            sections["train"] = sections["train"].model_copy(update={"attentions": used})
        if spec.baseline is not None and spec.baseline not in self.variant_ids:
            raise ValueError(f"variants.{vid}.baseline: {spec.baseline!r} is not a variant of the study")
        backbone = parse_name(spec.model)[0]
        plain = [v for v in self.variants if (v if isinstance(v, str) else v.model) == backbone
                 and self._pretrained(v) == sections["train"].pretrained]
        baseline = spec.baseline or self.stats.baselines.get(vid) or (_id(plain[0]) if plain else backbone)
        return Variant(vid, spec.model, baseline, sections["train"], sections["search"], sections["executor"])

    def _pretrained(self, item: str | VariantSpec) -> str | None:
        if isinstance(item, VariantSpec) and "pretrained" in item.train:
            return item.train["pretrained"]
        return self.train.pretrained

    @property
    def variant_ids(self) -> list[str]:
        """The variants' names in results, MLflow and the report, in table order."""
        return [_id(v) for v in self.variants]

    def variant(self, variant_id: str) -> Variant:
        """A variant's model and its merged train, search and executor settings."""
        return self._resolved[variant_id]

    def baselines(self) -> dict[str, str]:
        """variant id -> the variant id it is compared with."""
        return {vid: v.baseline for vid, v in self._resolved.items()}

    def resolved(self) -> dict[str, dict]:
        """variant id -> its model, baseline and merged settings, as JSON: the `resolved` section of the
        study copy `<out>/study.yaml`, which the report reads instead of resolving again."""
        return {vid: {"model": v.model, "baseline": v.baseline, "train": v.train.model_dump(mode="json"),
                      "search": v.search.model_dump(mode="json"), "executor": v.executor.model_dump(mode="json")}
                for vid, v in self._resolved.items()}

    @model_validator(mode="after")
    def _features_eval_set(self) -> Study:
        sets = ["val", "test", *(f"ood:{k}" for k in self.ood)]
        if self.features and self.features.eval_set not in sets:
            raise ValueError(f"features.eval_set: {self.features.eval_set!r} is not one of {sets}")
        return self

    @property
    def dataset_label(self) -> str:
        return self.dataset_name or self.dataset.format

    def output_dir(self) -> Path:
        return (self.out_dir or Path("runs") / self.name).resolve()


def _id(item: str | VariantSpec) -> str:
    """A variant's id: its own, else its model name (`timm:x` as `timm-x`: ids name folders)."""
    return item.replace(":", "-") if isinstance(item, str) else (item.id or item.model.replace(":", "-"))


class StudyError(ValueError):
    """A study file that cannot be used; the message is one line naming the file and field."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently and has no option for it; a study would run with a setting its reader did not see)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_study(path: Path, dotlist: Sequence[str] = (), options: dict | None = None) -> Study:
    """Parse and validate a study file, with command-line overrides: `dotlist` (KEY=VALUE items,
    `config.overrides`) and `options` (fields set by command-line options, e.g. `--out`) merged
    over it. Relative dataset roots are relative to the file (to the working directory when an
    override sets them)."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except IsADirectoryError:
        raise StudyError(f"{path}: is a folder; name the study file (studies/*.yaml)") from None
    except UnicodeDecodeError as e:
        raise StudyError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#x} at offset {e.start}); "
                         f"save it as UTF-8") from None
    except OSError as e:
        raise StudyError(f"{path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise StudyError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise StudyError(f"{path}: expected a mapping of study settings, got {type(data).__name__}")
    _anchor_roots(data, path.parent)
    source = str(path)
    if dotlist or options:
        try:
            override = overrides.merge(overrides.parse(dotlist), options or {})
            _anchor_roots(override, Path.cwd())
            data = overrides.apply(data, override)
        except overrides.OverrideError as e:
            raise StudyError(f"{path}: {e}") from None
    try:
        return Study.model_validate(data)
    except ValidationError as err:
        if dotlist or options:  # the command line is named when the field is one it set
            loc = [str(p) for p in err.errors()[0]["loc"]]
            # a variant's path holds its id, the error's its index: the section is enough there
            if (not loc and dotlist) or any(loc and (loc[: len(key)] == key or key[0] == loc[0] == "variants")
                                            for key in _paths(override)):
                source = f"{path} + command line"
        raise StudyError(one_line(err, source)) from None


def _paths(tree: dict, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """The dotted paths of a nested mapping's leaves, as lists of keys."""
    out = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        out += _paths(value, path) if isinstance(value, dict) and value else [list(path)]
    return out


def _anchor_roots(data: dict, base: Path) -> None:
    """`root:` paths in a study are relative to the study file, not to the working directory."""
    specs = [data.get("dataset"), *((data.get("ood") or {}).values())]
    for spec in specs:
        if isinstance(spec, dict) and isinstance(spec.get("root"), str) and not Path(spec["root"]).is_absolute():
            spec["root"] = str((base / spec["root"]).resolve())
