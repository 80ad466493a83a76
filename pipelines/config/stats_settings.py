"""The `stats:` section of a study file: which metrics, which test marks significance, the
baselines. Plain settings; `pipelines.report.stats` computes."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Metric = Literal["balanced_accuracy", "accuracy", "auc_roc"]


class StatsSettings(BaseModel):
    """`stats:` section of a study file."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[Metric] = Field(default_factory=lambda: ["balanced_accuracy"], min_length=1)
    # The test whose p-value marks significance; `welch` (with correction: none) reproduces paper 002.
    significance: Literal["corrected", "welch", "paired"] = "corrected"
    # Holm across the comparisons of one table (one metric); `none` uses the raw p-value.
    correction: Literal["holm", "none"] = "holm"
    alpha: float = Field(0.05, gt=0, lt=1)
    # variant -> baseline variant; a variant not listed is compared to its backbone.
    baselines: dict[str, str] = Field(default_factory=dict)
    # images per explanation mean map (paper 002 uses 500)
    explain_images: int = Field(500, ge=1)
