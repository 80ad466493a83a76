"""A stand-in for the trainer, for benchmarks and tests of the driver at cluster scale: with
`ATTNSWEEP_TRAINER=attnsweep.pipelines.trial.standin` in the driver's environment (jobs inherit it),
every job writes its trial folder the way the trainer does, through `TrialFolder` (one epoch line
every `ATTNSWEEP_STANDIN_EPOCH_S` seconds, then `result.json`), without torch or data, so hundreds
of jobs fit on one machine while everything around them (submitit, SLURM, the driver, MLflow,
Parquet) is real. Its scores are a smooth function of the configuration, so a search has a best one.
A resumed job goes on after the epochs already written; the test hold (`hold`) applies."""
from __future__ import annotations

import datetime
import math
import os
import time
from pathlib import Path

from attnsweep.pipelines.config.selection import METRICS
from attnsweep.pipelines.config.trial_config import TrialConfig
from attnsweep.pipelines.trial.executors import TRAINER_ENV
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.trial.hold import hold_after_epoch

EPOCH_S_ENV = "ATTNSWEEP_STANDIN_EPOCH_S"


def env(epoch_s: float) -> dict[str, str]:
    """The driver's environment for jobs of the stand-in, one epoch line every `epoch_s` seconds."""
    return {TRAINER_ENV: __name__, EPOCH_S_ENV: str(epoch_s)}


def _metrics(cfg: TrialConfig, epoch: int) -> dict[str, float]:
    """Best near lr 1e-2, better with each epoch, a little different on each split (its seed)."""
    quality = math.exp(-(math.log10(cfg.lr) + 2) ** 2) * (1 - 0.5 ** epoch)
    value = min(0.99, 0.5 + 0.4 * quality + 0.01 * (cfg.seed % 7))
    return {m: (1 - value if m == "loss" else value) for m in METRICS}


def train(cfg: TrialConfig, trial_dir: str | Path) -> dict:
    folder = TrialFolder(trial_dir)
    folder.claim(cfg)
    pace = float(os.environ.get(EPOCH_S_ENV, "1"))
    done = len(folder.epochs())
    for epoch in range(done + 1, cfg.epochs + 1):
        time.sleep(pace)
        folder.append_epoch({"epoch": epoch, "train_loss": 1.0 / epoch, "lr": cfg.lr, "seconds": pace,
                             "images_per_s": 100.0, "val": _metrics(cfg, epoch), "job_id": None})
        hold_after_epoch(folder.path, epoch)
    val = _metrics(cfg, cfg.epochs)
    result = {"status": "ok", "world_size": 1, "cpu_threads": 1, "hosts": [os.uname().nodename],
              "best_epoch": cfg.epochs, "epochs_run": cfg.epochs, "n_train": 100, "params": 1000,
              "train_seconds": pace * cfg.epochs, "gpu_seconds": 0.0, "trial_id": cfg.hash(),
              "ended_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "metrics": {"val": {**val, "n_samples": 20}, "test": {**val, "n_samples": 20}}}
    folder.write_result(result)
    return result
