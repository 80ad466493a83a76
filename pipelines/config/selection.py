"""Model selection, one rule everywhere: the study's `selection_metric` on the validation set,
turned into a score where larger is better. It picks a trial's epoch (the trainer's `best.pt`),
scores a configuration for the search (Tune/Optuna, ASHA, and the choice of the configuration the
repeat phase trains) and picks the epoch a stopped trial is recorded with."""
from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean
from typing import Literal, get_args

Metric = Literal["balanced_accuracy", "accuracy", "auc_roc", "loss"]
METRICS: tuple[str, ...] = get_args(Metric)  # what every evaluated set and epoch line reports
HIGHER_IS_BETTER = {"balanced_accuracy": True, "accuracy": True, "auc_roc": True, "loss": False}
DEFAULT: Metric = "balanced_accuracy"  # paper 002's selection metric


def score(value: float | None, metric: str) -> float:
    """One value of `metric` as a score (larger is better); an undefined metric (None, NaN) ranks
    below every defined one."""
    if value is None or math.isnan(value):
        return -math.inf
    return float(value) if HIGHER_IS_BETTER[metric] else -float(value)


def floor(metric: str) -> float:
    """What a diverged configuration scores: the bottom of the metric's range (0 for the
    accuracies and AUC), so the search learns to avoid its region; a NaN would make Optuna drop
    the trial and maybe sample it again."""
    return 0.0 if HIGHER_IS_BETTER[metric] else -math.inf


def search_score(val_values: Sequence[float | None], metric: str, diverged: bool = False) -> float:
    """A configuration's score over its splits: the mean validation `metric` at each split's
    selected epoch, as a score; the floor if a split diverged (or its metric is undefined)."""
    if diverged or not val_values:
        return floor(metric)
    return max(floor(metric), fmean(score(v, metric) for v in val_values))
