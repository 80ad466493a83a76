"""The driver's decision of each variant's configuration, `<out>/selection/<variant>.json`: the
metric it chose by, every fully recorded search configuration with its score and whether it could
be chosen, the chosen one, and when. The report, the MLflow search parent and `attnsweep export`
read this record instead of choosing again by a rule of their own.

    {"variant": "resnet18+se", "metric": "auc_roc", "search_splits": 2,
     "configurations": [{"lr": 0.01, "weight_decay": 0.0, "score": 0.81, "eligible": true}, ...],
     "chosen": {"lr": 0.01, "weight_decay": 0.0, "score": 0.81}, "decided_at": "2026-12-04T21:03:11+00:00"}
"""
from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from attnsweep.data.atomic import write_text
from attnsweep.pipelines.trial.study_paths import StudyPaths


def _number(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def write(out: Path, variant: str, metric: str, search_splits: int, scores: pd.DataFrame,
          chosen: dict[str, float]) -> Path:
    """Record the choice; `scores` has one row per configuration: lr, weight_decay, score, eligible."""
    configs = [{"lr": float(r.lr), "weight_decay": float(r.weight_decay), "score": _number(r.score),
                "eligible": bool(r.eligible)} for r in scores.itertuples()]
    hit = [c["score"] for c in configs if (c["lr"], c["weight_decay"]) == (chosen["lr"], chosen["weight_decay"])]
    record = {"variant": variant, "metric": metric, "search_splits": search_splits, "configurations": configs,
              "chosen": {"lr": float(chosen["lr"]), "weight_decay": float(chosen["weight_decay"]),
                         "score": hit[0] if hit else None},
              "decided_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path = StudyPaths(out).selection_file(variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(record, indent=1, allow_nan=False))
    return path


def read(out: Path, variant: str) -> dict[str, Any] | None:
    """A variant's record, None before its search has chosen (or in a folder copied without it)."""
    path = StudyPaths(out).selection_file(variant)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def read_all(out: Path) -> dict[str, dict[str, Any]]:
    """variant -> its record, for every variant whose search has chosen."""
    folder = StudyPaths(out).selection_dir
    found = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return {p.stem: read(out, p.stem) for p in found}


def chosen(out: Path, variant: str) -> dict[str, float] | None:
    """The chosen lr and weight_decay, None before the search has chosen."""
    record = read(out, variant)
    return None if record is None else {k: record["chosen"][k] for k in ("lr", "weight_decay")}
