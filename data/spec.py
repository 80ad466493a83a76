"""`DatasetSpec` and `SplitSpec`: what a study says about its data. Validated when the study is
loaded, so a wrong option fails before anything is prepared (pydantic names the field)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class DatasetSpec(BaseModel):
    """One dataset: its on-disk format, where it is, and how its raw labels map to classes.

    - `root`: the dataset folder (unused by `synthderm`, which is generated).
    - `metadata`: the metadata file, relative to `root` or absolute (default: the format's
      published name, e.g. `HAM10000_metadata.csv`; for `medmnist` the `.npz` file).
    - `class_map`: raw label -> class name, or -> null to leave that label out on purpose; the class
      order is the order of first appearance of the names. None: the format's table in
      `attnsweep.data.class_maps`. A raw label that is in neither is an error.
    - `options`: format specific, checked against the format's `Options` model (e.g. synthderm
      `n`, `bias_strength`, `ood`; medmnist `official_test`; camelyon17 `ood_centers`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field(description="a format of attnsweep.data.adapters (built-in or installed), or an "
                                    "adapter module's import path")
    root: Path | None = None
    metadata: str | None = None
    class_map: dict[str, str | None] | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("format")
    @classmethod
    def _known_format(cls, fmt: str) -> str:
        from attnsweep.data.adapters import check_format

        check_format(fmt)
        return fmt

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        from attnsweep.data.adapters import adapter

        module = adapter(self.format)  # a plugin's import or contract failure: one line naming it
        if getattr(module, "NEEDS_ROOT", True) and self.root is None:
            raise ValueError(f"root: format {self.format} needs the dataset folder")
        module.Options.model_validate(self.options)  # names the bad option
        if self.class_map is not None and not any(v is not None for v in self.class_map.values()):
            raise ValueError("class_map: maps every label to null, no class is left")
        return self

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """`"synthderm"` or `"FORMAT:ROOT"` (e.g. `"ham10000:../shared/data/ham10000"`)."""
        fmt, sep, root = text.partition(":")
        return cls(format=fmt, root=Path(root) if sep else None)

    def opts(self) -> BaseModel:
        """The validated options, with the format's defaults filled in."""
        from attnsweep.data.adapters import adapter

        return adapter(self.format).Options.model_validate(self.options)

    def metadata_path(self, default: str) -> Path:
        assert self.root is not None
        return Path(self.root) / (self.metadata or default)


class SplitSpec(BaseModel):
    """How the pool is divided: stratified by class, grouped by lesion/patient. Split names are
    `search-0..` and `repeat-0..`, drawn from disjoint seed streams of `seed`. A fixed test set of
    the dataset (an official test split) replaces the drawn one; `test_fraction` then is unused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    search_splits: int = Field(2, ge=0, strict=True)
    repeat_splits: int = Field(10, ge=0, strict=True)
    seed: int = Field(0, ge=0, strict=True)

    @model_validator(mode="after")
    def _fractions(self) -> SplitSpec:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(f"val_fraction + test_fraction must leave a training set, got "
                             f"{self.val_fraction} + {self.test_fraction}")
        if self.search_splits + self.repeat_splits == 0:
            raise ValueError("search_splits + repeat_splits: at least one split is needed")
        return self

    def names(self) -> list[str]:
        return [f"search-{i}" for i in range(self.search_splits)] + [
            f"repeat-{i}" for i in range(self.repeat_splits)]
