"""The `features:` section of a study file: which metadata columns, eval set, models and
conditional independence tests. Plain settings; `pipelines.report.features` computes."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CITest = Literal["kci", "rcot", "cmiknn"]
ALL_TESTS: tuple[str, ...] = ("kci", "rcot", "cmiknn")


class FeatureSettings(BaseModel):
    """`features:` section of a study file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    columns: list[str] = Field(min_length=1, description="metadata columns (records of the prepared data)")
    eval_set: str = Field("test", description="test | val | ood:<name>")
    models: Literal["best", "all"] = Field(
        "best", description="best: the repeat split with the best validation metric per variant (paper 002); "
                            "all: every repeat split (a usage rate)")
    tests: list[CITest] = Field(default_factory=lambda: list(ALL_TESTS), min_length=1)
    alpha: float = Field(0.01, gt=0, lt=1)
    max_samples: int | None = Field(1000, ge=20, description="a fixed-seed random subset above this (KCI is O(n^3))")
    prediction: Literal["softmax", "class"] = Field("softmax", description="Y_hat: softmax vector or predicted class")
    categorical: Literal["one_hot", "ordinal"] = Field(
        "one_hot", description="text columns: one-hot, or codes in category order (ordered pandas categoricals) "
                               "or sorted order")
    seed: int = 0

    @field_validator("columns", "tests")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        dup = sorted({c for c in v if v.count(c) > 1})
        if dup:
            raise ValueError(f"listed twice: {dup}")
        return v
