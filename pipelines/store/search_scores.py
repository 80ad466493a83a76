"""A search's scores and its choice, from the recorded rows (`<out>/results/`): one row per
configuration, and the best one, which the repeat phase trains. The driver (`sweep.phases`) and
`attnsweep status` use this one rule."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from attnsweep.pipelines.config import selection
from attnsweep.pipelines.store import parquet_store


class NoEligibleConfig(RuntimeError):
    """Every search configuration of a variant diverged, failed or was stopped."""


def _val_rows(out: Path, phase: str, variant: str, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    rows = parquet_store.read(out).to_pandas() if rows is None else rows
    return rows[(rows["phase"] == phase) & (rows["variant"] == variant) & (rows["eval_set"] == "val")]


def config_scores(out: Path, variant: str, n_splits: int, metric: str = selection.DEFAULT,
                  rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per fully recorded search configuration: lr, weight_decay, its score for the
    search (`selection.search_score` of `metric`; None when a split failed), and whether it may
    be chosen (every split `ok`). `rows`: the study's rows when already read."""
    val = _val_rows(out, "search", variant, rows)
    records = []
    for _, g in val.groupby("config_hash"):
        if g["split"].nunique() < n_splits:
            continue  # still in flight
        statuses = set(g["status"])
        if "failed" in statuses:
            score = None
        else:
            score = selection.search_score([None if pd.isna(v) else float(v) for v in g[metric]], metric,
                                           diverged="diverged" in statuses)
        records.append({"lr": float(g["lr"].iloc[0]), "weight_decay": float(g["weight_decay"].iloc[0]),
                     "score": score, "eligible": statuses == {"ok"}})
    return pd.DataFrame(records, columns=["lr", "weight_decay", "score", "eligible"])


def best_config(out: Path, variant: str, n_splits: int, metric: str = selection.DEFAULT,
                rows: pd.DataFrame | None = None) -> dict[str, float]:
    """The highest search score (mean validation `metric` at each split's selected epoch) among
    the configurations whose every split finished `ok`; diverged, failed and stopped ones never
    win. A tie goes to the smaller lr, then the smaller weight decay (deterministic across resumes)."""
    scores = config_scores(out, variant, n_splits, metric, rows)
    ok = scores[scores["eligible"]]
    if ok.empty:
        raise NoEligibleConfig(f"{variant}: no search configuration finished ok on every split (see "
                               f"{out / 'results'}); nothing to repeat")
    best = ok.sort_values(["score", "lr", "weight_decay"], ascending=[False, True, True]).iloc[0]
    return {"lr": float(best["lr"]), "weight_decay": float(best["weight_decay"])}
