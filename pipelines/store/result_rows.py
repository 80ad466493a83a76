"""Result rows of one trial folder (one configuration trained on one split): the `<out>/results/`
rows (one per evaluated set) and the `<out>/epochs/` rows (one per finished epoch), shaped by
`results_schema`. Pure functions of what the trainer wrote into the trial folder (its config,
epochs and result: `TrialFolder`), so the writer and a resume produce the same rows."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from attnsweep.pipelines.config.selection import METRICS
from attnsweep.pipelines.trial.folder import TrialFolder



@dataclass(frozen=True)
class TrialRef:
    """Who a trial folder belongs to: the study-level context its files do not hold."""

    study: str
    phase: str  # search | repeat
    variant: str
    backbone: str
    attention: tuple[str, ...]
    dataset: str
    split: str
    trial_id: str
    config_hash: str
    dir: Path

    @property
    def folder(self) -> TrialFolder:
        return TrialFolder(self.dir)


def _metric(values: dict[str, Any] | None, key: str) -> float | None:
    v = (values or {}).get(key)
    return None if v is None else float(v)


def result_rows(
    ref: TrialRef,
    config: dict[str, Any],
    result: dict[str, Any],
    eval_sets: Sequence[str],
    mlflow_run_id: str | None,
    code_version: str,
    finished_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """One row per evaluated set in `eval_sets` (val, test, ood:<name>). A set the trial has no
    metrics for (it failed, diverged or was stopped before evaluating it) still gets its row,
    with null metrics and the trial's status, so every planned trial is counted."""
    metrics = result.get("metrics") or {}
    finished_at = finished_at or datetime.now(timezone.utc)
    rows = []
    for eval_set in eval_sets:
        m = metrics.get(eval_set)
        rows.append(
            {
                "study": ref.study,
                "phase": ref.phase,
                "variant": ref.variant,
                "backbone": ref.backbone,
                "attention": "+".join(ref.attention),
                "dataset": ref.dataset,
                "eval_set": eval_set,
                "split": ref.split,
                "seed": config["seed"],
                "lr": float(config["lr"]),
                "weight_decay": float(config["weight_decay"]),
                "batch_size": config["batch_size"],
                "epochs": config["epochs"],
                "best_epoch": result.get("best_epoch"),
                "status": result["status"],
                "diverged_epoch": result.get("diverged_epoch"),
                **{k: _metric(m, k) for k in METRICS},
                "n_samples": (m or {}).get("n_samples"),
                "n_train": result.get("n_train"),
                "params": result.get("params"),
                "train_seconds": result.get("train_seconds"),
                "gpu_seconds": result.get("gpu_seconds"),
                "world_size": result.get("world_size"),
                "trial_id": ref.trial_id,
                "mlflow_run_id": mlflow_run_id,
                "config_hash": ref.config_hash,
                "code_version": code_version,
                "finished_at": finished_at,
            }
        )
    return rows


def epoch_rows(ref: TrialRef, config: dict[str, Any], epochs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "study": ref.study,
            "phase": ref.phase,
            "variant": ref.variant,
            "trial_id": ref.trial_id,
            "split": ref.split,
            "epoch": e["epoch"],
            "lr": float(config["lr"]),
            "weight_decay": float(config["weight_decay"]),
            "train_loss": _metric(e, "train_loss"),
            **{f"val_{k}": _metric(e.get("val"), k) for k in METRICS},
            "seconds": _metric(e, "seconds"),
            "images_per_s": _metric(e, "images_per_s"),
        }
        for e in epochs
    ]
