"""A study folder of any size written through the trial-folder API and the Parquet writer (no
training): what `attnsweep status` reads, for its tests and its bench (bench/status.py)."""
from __future__ import annotations

import datetime
from pathlib import Path

import yaml

from attnsweep.pipelines.config.study import Study
from attnsweep.pipelines.store import parquet_store
from attnsweep.pipelines.store.result_rows import epoch_rows, result_rows
from attnsweep.pipelines.sweep.plan import make_trial, phase_splits
from attnsweep.pipelines.trial.folder import write_json

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def write_trial(study: Study, out: Path, phase: str, variant: str, split: str, lr: float, status: str | None,
                score: float = 0.5, job_id: str = "1", kind: str = "local", minutes: float = 10.0):
    """One trial folder: its config, one job, one epoch line, and (with `status`) its result and rows."""
    trial = make_trial(study, out, phase, variant, split, lr, 0.0, out / "data", probe_model=False)
    folder = trial.ref.folder
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.claim(trial.cfg)
    folder.record_job(job_id, kind, folder.submitit_dir, 1)
    jobs = folder.jobs()
    jobs[-1]["submitted_at"] = T0.isoformat()  # a fixed clock: job-hours are known
    write_json(folder.jobs_file, jobs)
    epoch = {"epoch": 1, "train_loss": 1.0, "lr": lr, "seconds": 60 * minutes * 0.8, "images_per_s": 10.0,
             "val": {"balanced_accuracy": score, "accuracy": score, "auc_roc": 0.7, "loss": 0.5}}
    folder.append_epoch(epoch)
    if status is None:
        return trial
    metrics = {"balanced_accuracy": score, "accuracy": score, "auc_roc": 0.7, "loss": 0.5, "n_samples": 20}
    result = {"status": status, "world_size": 1, "best_epoch": 1, "epochs_run": 1, "n_train": 60, "params": 1000,
              "train_seconds": 1.0, "gpu_seconds": 0.0, "cpu_threads": 1,
              "metrics": {} if status == "failed" else {"val": metrics, "test": metrics},
              "ended_at": (T0 + datetime.timedelta(minutes=minutes)).isoformat()}
    folder.write_result(result)
    config = trial.cfg.model_dump(mode="json")
    parquet_store.write_trial(out, trial.ref.trial_id,
                              result_rows(trial.ref, config, result, ["val", "test"], None, "test"),
                              epoch_rows(trial.ref, config, folder.epochs()))
    return trial


def write_study(study: Study, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.yaml").write_text(yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))


def study_folder(study: Study, out: Path, search_done: int, repeats_done: int, running: int = 0) -> Path:
    """Every variant: `search_done` configurations finished on every search split (lr 0.01, 0.02, ...;
    the last one scores best), `repeats_done` repeat splits finished with the best one, and
    `running` more repeat splits with a job and no result."""
    write_study(study, out)
    for v in study.variant_ids:
        lrs = [0.01 * (i + 1) for i in range(search_done)]
        for i, lr in enumerate(lrs):
            for split in phase_splits(study, "search"):
                write_trial(study, out, "search", v, split, lr, "ok", score=0.5 + 0.01 * i)
        repeats = phase_splits(study, "repeat")
        for j, split in enumerate(repeats[:repeats_done + running]):
            write_trial(study, out, "repeat", v, split, lrs[-1], "ok" if j < repeats_done else None)
    return out
