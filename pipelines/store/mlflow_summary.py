"""What the MLflow UI shows of a study beyond the raw runs: the aggregate of a parent run's
children (so the runs table compares variants without expanding anything), the dataset identity
(`log_input`), the git commit, and the URL that opens the experiment on its runs."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from attnsweep.pipelines.config.selection import METRICS

# MLflow 3.x UIs whose "workflow switch" is off read this experiment tag to pick the experiment
# page (runs or GenAI traces). MLflow >= 3.5 ignores it: the page follows the `workflowType` URL
# parameter (else the browser's last choice, by default GenAI), so `runs_url` carries it.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def runs_url(server: str, experiment_id: str) -> str:
    """The experiment's runs table in the MLflow UI at `server` (http://host:port)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def metric_name(eval_set: str, metric: str, stat: str) -> str:
    """`test_balanced_accuracy_mean`; `ood:shifted` -> `ood_shifted_...` (MLflow keys have no ':')."""
    return f"{eval_set.replace(':', '_')}_{metric}_{stat}"


def parent_summary(rows: pd.DataFrame) -> dict[str, float]:
    """Aggregate of a parent's child runs (their result rows): per evaluated set and metric the
    mean, std (ddof 1) and n over the runs that ended `ok`, and how many runs did not."""
    summary: dict[str, float] = {}
    ok = rows[rows["status"] == "ok"]
    for eval_set, g in ok.groupby("eval_set"):
        for metric in METRICS:
            values = g[metric].dropna()
            if values.empty:
                continue
            summary[metric_name(eval_set, metric, "mean")] = float(values.mean())
            if len(values) > 1:
                summary[metric_name(eval_set, metric, "std")] = float(values.std(ddof=1))
        summary[f"{eval_set.replace(':', '_')}_n"] = float(len(g.drop_duplicates(["trial_id", "split"])))
    runs = rows.drop_duplicates(["trial_id", "split"])
    summary["runs_not_ok"] = float((runs["status"] != "ok").sum())
    return summary


def parent_title(variant: str, phase: str, summary: dict[str, float], metric: str) -> str:
    """The parent's run name with its headline aggregate, e.g. `resnet18+se repeat | test
    balanced_accuracy 0.712 ± 0.013 (n=5)`: the UI's default runs table shows names but no metric
    columns, so this is what compares the variants at first sight."""
    eval_set = "test" if phase == "repeat" else "val"
    mean = summary.get(metric_name(eval_set, metric, "mean"))
    if mean is None:
        return f"{variant} {phase}"
    std = summary.get(metric_name(eval_set, metric, "std"))
    spread = f" ± {std:.3f}" if std is not None else ""
    label = "best " if phase == "search" else ""
    return f"{variant} {phase} | {label}{eval_set} {metric} {mean:.3f}{spread} (n={summary[f'{eval_set}_n']:.0f})"


def dataset_digest(data_dir: Path) -> str:
    """The prepared data's identity: the content fingerprints of its datasets and the split table."""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    key = json.dumps({"fingerprints": manifest["fingerprints"], "splits": manifest["splits"]["sha256"]},
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def dataset_input(data_dir: Path, name: str, split: str):
    """The MLflow dataset entry of one trial: the prepared data (digest, location, sizes) and the
    split it trained on."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    manifest = json.loads((data_dir / "manifest.json").read_text())
    profile = {"split": split, "image_size": manifest.get("image_size"),
               "images": {k: v["n"] for k, v in manifest.get("datasets", {}).items()}}
    dataset = Dataset(name=name, digest=dataset_digest(data_dir), source_type="local",
                      source=json.dumps({"uri": str(data_dir.resolve())}), profile=json.dumps(profile))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", split)])


def git_commit() -> str | None:
    """The full commit of the installed code (`mlflow.source.git.commit`), None outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def source_tags(commit: str | None) -> dict[str, Any]:
    return {"mlflow.source.git.commit": commit} if commit else {}
