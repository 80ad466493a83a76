"""The report's run-level details: why each run did not end `ok`, the compute each variant and
phase cost, the training recipe (from `study.yaml`), and the confusion matrices summed over the
repeat splits (from the trial folders' `result.json`, which the Parquet rows do not carry)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from attnsweep.pipelines.report.study_folder import StudyFolder
from attnsweep.pipelines.store import warm_start
from attnsweep.pipelines.trial.failures import trial_failure
from attnsweep.pipelines.trial.study_paths import StudyPaths

HOUR = 3600.0


def _runs(results: pd.DataFrame) -> pd.DataFrame:
    return results.drop_duplicates(["trial_id", "split"])


def trial_result(folder: StudyFolder, phase: str, variant: str, trial_id: str) -> dict | None:
    """A trial folder's `result.json`, None where the folder is not there (a copied study)."""
    try:
        return StudyPaths(folder.out).trial(phase, variant, trial_id).result()
    except (OSError, ValueError):
        return None


def _reason(folder: StudyFolder, run: pd.Series, epochs_run: int) -> str:
    if run["status"] == "diverged":
        return f"non-finite training loss ({epochs_run} of {run['epochs']} epochs recorded)"
    if run["status"] == "stopped":
        who = "ASHA stopped it early" if run["phase"] == "search" else "stopped before its last epoch"
        return f"{who} ({epochs_run} of {run['epochs']} epochs recorded)"
    trial_dir = StudyPaths(folder.out).trial_dir(run["phase"], run["variant"], run["trial_id"])
    if not trial_dir.is_dir():
        return "failed (its trial folder is not in the study folder)"
    kind, error = trial_failure(trial_dir)
    return f"failed ({kind}): {error.splitlines()[-1][:200] if error else 'no error recorded'}"


def not_ok_runs(folder: StudyFolder) -> pd.DataFrame:
    """Every run (trial x split) that did not end `ok`, with its reason, and whether the
    statistics leave it out (diverged or failed anywhere, stopped in the repeat phase; a search
    run stopped by the scheduler is its normal early stop)."""
    runs = _runs(folder.results)
    bad = runs[runs["status"] != "ok"]
    epochs_run = folder.epochs.groupby("trial_id").size() if len(folder.epochs) else pd.Series(dtype=int)
    rank = {v: i for i, v in enumerate(folder.variant_order)}
    bad = bad.assign(_r=bad["variant"].map(rank)).sort_values(["phase", "dataset", "_r", "split"])
    rows = [{"phase": r["phase"], "dataset": r["dataset"], "variant": r["variant"], "split": r["split"],
             "status": r["status"], "left_out": r["phase"] == "repeat" or r["status"] != "stopped",
             "reason": _reason(folder, r, int(epochs_run.get(r["trial_id"], 0))), "trial_id": r["trial_id"]}
            for _, r in bad.iterrows()]
    return pd.DataFrame(rows, columns=["phase", "dataset", "variant", "split", "status", "left_out", "reason",
                                       "trial_id"])


def cost_table(folder: StudyFolder) -> pd.DataFrame:
    """Compute per variant and phase: runs, device-hours (training seconds x ranks; GPU where
    the runs trained on GPUs, else CPU) and the summed wall-clock training hours."""
    runs = _runs(folder.results).assign(
        _device=lambda r: r["train_seconds"].fillna(0) * r["world_size"].fillna(1))
    rows = []
    rank = {v: i for i, v in enumerate(folder.variant_order)}
    for (variant, phase), g in sorted(runs.groupby(["variant", "phase"]),
                                      key=lambda kv: (rank.get(kv[0][0], len(rank)), kv[0][1] != "search")):
        rows.append({"variant": variant, "phase": phase, "runs": len(g),
                     "device": "GPU" if (g["gpu_seconds"].fillna(0) > 0).any() else "CPU",
                     "device_hours": g["_device"].sum() / HOUR, "train_hours": g["train_seconds"].sum() / HOUR})
    return pd.DataFrame(rows, columns=["variant", "phase", "runs", "device", "device_hours", "train_hours"])


def recipe(folder: StudyFolder) -> pd.DataFrame:
    """The training recipe every variant shared, as `study.yaml` recorded it."""
    s = folder.study
    train, search, splits = s.get("train") or {}, s.get("search") or {}, s.get("splits") or {}

    def get(d: dict, key: str, default="(not recorded)"):
        return d.get(key, default) if d else default

    items = {
        "image size": get(s, "image_size"),
        "epochs": get(train, "epochs"),
        "batch size (global)": get(train, "batch_size"),
        "optimizer": get(train, "optimizer"),
        "schedule": get(train, "schedule"),
        "augmentation": get(train, "augmentation"),
        "pretraining": get(train, "pretrained", None) or "none (random init)" if train else "(not recorded)",
        "precision": get(train, "precision"),
        "selection metric (best epoch)": folder.selection_metric,
        "search": (f"{get(search, 'algorithm')}, lr {get(search, 'lr')}, weight decay "
                   f"{get(search, 'weight_decay')}" if search else "(not recorded)"),
        "search warm start": warm_start.described(folder.out),
        "splits (search / repeat)": (f"{get(splits, 'search_splits')} / {get(splits, 'repeat_splits')}"
                                     if splits else "(not recorded)"),
    }
    return pd.DataFrame({"setting": list(items), "value": [str(v) for v in items.values()]})


def summed_confusion(folder: StudyFolder, dataset: str, eval_set: str = "test") -> dict[str, np.ndarray]:
    """variant -> the confusion matrix of `eval_set` summed over its `ok` repeat runs, for the
    variants whose trial folders are there."""
    r = folder.results
    ok = _runs(r[(r["phase"] == "repeat") & (r["status"] == "ok") & (r["dataset"] == dataset)])
    out: dict[str, np.ndarray] = {}
    for v in folder.variant_order:
        for _, run in ok[ok["variant"] == v].iterrows():
            res = trial_result(folder, "repeat", v, run["trial_id"]) or {}
            cm = ((res.get("metrics") or {}).get(eval_set) or {}).get("confusion_matrix")
            if cm:
                out[v] = out.get(v, 0) + np.asarray(cm)
    return out


def class_names(folder: StudyFolder) -> list[str] | None:
    """The class names of the prepared data (`data/manifest.json`), if it is there."""
    try:
        return json.loads((StudyPaths(folder.out).data_dir / "manifest.json").read_text())["class_names"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None

