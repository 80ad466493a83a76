"""A test-only hold: tests stop a job at the moment they need instead of racing the clock.

With `ATTNSWEEP_HOLD_AFTER_EPOCH=N` and `ATTNSWEEP_HOLD_DIR=D` in the job's environment, rank 0 of a
trial, once epoch N's metrics line (and its checkpoint, if due) is written, creates
`D/<trial folder name>.held` and waits until `D/<trial folder name>.release` exists. While it waits, signals (scancel, the
requeue signal, SIGTERM) act as they would between two epochs. Without the variables it does nothing."""
from __future__ import annotations

import os
import time
from pathlib import Path

AFTER_EPOCH_ENV, DIR_ENV = "ATTNSWEEP_HOLD_AFTER_EPOCH", "ATTNSWEEP_HOLD_DIR"


def hold_after_epoch(trial_dir: Path, epoch: int) -> None:
    after, folder = os.environ.get(AFTER_EPOCH_ENV), os.environ.get(DIR_ENV)
    if after is None or folder is None or epoch != int(after):
        return
    folder_path = Path(folder)
    (folder_path / f"{trial_dir.name}.held").write_text(str(os.getpid()))
    release = folder_path / f"{trial_dir.name}.release"
    while not release.exists():
        time.sleep(0.05)  # a test-only wait; time.sleep lets signal handlers run
