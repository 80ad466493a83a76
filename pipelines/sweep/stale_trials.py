"""Trials trained on splits the study no longer has. Deleting `<out>/data` and resuming prepares
the data again, and a changed dataset splits differently: the trials of the old splits must not
be mixed with new ones. `<out>/splits.sha256` holds the hash of the split manifest the study's
trials were trained on (`data.prepare` writes it into `manifest.json`); when the prepared data has
another, every trial, its rows and its MLflow runs are stale: the folders move aside and the
trials are trained again."""
from __future__ import annotations

import json
from pathlib import Path

from attnsweep.data.atomic import write_text
from attnsweep.pipelines.store.mlflow_store import MlflowStore, unavailable
from attnsweep.pipelines.trial.study_paths import StudyPaths


def set_aside_stale_trials(out: Path, data_dir: Path, store: MlflowStore) -> str | None:
    """Move the trials, results and epochs of other splits to `<out>/stale-<hash>/` and delete
    their MLflow runs -> one line saying so, None when the splits are those of the trials. A study
    folder from before this marker takes the current splits as its trials'."""
    current = json.loads((data_dir / "manifest.json").read_text())["splits"]["sha256"]
    paths = StudyPaths(out)
    marker = paths.splits_file
    trained = marker.read_text().strip() if marker.exists() else None
    if trained in (None, current):
        if trained is None:
            write_text(marker, current + "\n")
        return None
    trial_ids = sorted(t.path.name for t in paths.iter_trials())
    aside = out / f"stale-{trained[:12]}"
    aside.mkdir(exist_ok=True)
    for folder in (paths.trials_dir, paths.results_dir, paths.epochs_dir):  # a driver killed midway moves the rest next time
        if folder.exists():
            target, n = aside / folder.name, 1
            while target.exists():
                target, n = aside / f"{folder.name}-{n}", n + 1
            folder.rename(target)
    for trial_id in trial_ids:
        try:
            store.discard_child(trial_id)
        except unavailable():  # the runs stay, tagged with the old trial; the rows say what counts
            break
    write_text(marker, current + "\n")
    return (f"the data was split again (splits {trained[:12]} -> {current[:12]}): {len(trial_ids)} trial(s) "
            f"trained on the old splits were moved to {aside} and are trained again")
