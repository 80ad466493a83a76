"""The `stats:` section of a study file: which metrics, which test marks significance, the
baselines. Plain settings; `pipelines.report.stats` computes."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Metric = Literal["balanced_accuracy", "accuracy", "auc_roc"]
DEFAULT_ROPE = 0.01


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
    # Region of practical equivalence of the Bayesian correlated t-test, in the metric's units
    # (0.01 = one point of balanced accuracy): one value for every metric, or per metric.
    rope: float | dict[Metric, float] = DEFAULT_ROPE

    @field_validator("rope")
    @classmethod
    def _rope_range(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        for metric, width in (v.items() if isinstance(v, dict) else [("", v)]):
            if not 0 <= width < 1:
                where = f"{metric}: " if metric else ""
                raise ValueError(f"{where}a ROPE half-width in [0, 1) of the metric, got {width}")
        return v

    def rope_for(self, metric: str) -> float:
        """The ROPE half-width of `metric` (a metric a per-metric mapping leaves out: the default)."""
        return self.rope.get(metric, DEFAULT_ROPE) if isinstance(self.rope, dict) else self.rope
