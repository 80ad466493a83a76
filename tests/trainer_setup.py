"""Shared settings of the trainer and executor tests: a tiny synthderm dataset (prepared once per
test module) and a trial config small enough for a few seconds of CPU per epoch."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from attnsweep.data import DatasetSpec, SplitSpec, prepare
from attnsweep.pipelines.config.trial_config import TrialConfig
from attnsweep.pipelines.trial.folder import TrialFolder

SYNTH = DatasetSpec(format="synthderm", options={"n": 240})
SPLITS = SplitSpec(search_splits=1, repeat_splits=1)
IMAGE_SIZE = 32
MODEL = "cnn2"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return prepare(SYNTH, SPLITS, IMAGE_SIZE, tmp_path_factory.mktemp("trainer-data"))


def trial_config(data_dir: Path, **overrides) -> TrialConfig:
    base = dict(model=MODEL, dataset=SYNTH, splits=SPLITS, split="search-0", image_size=IMAGE_SIZE,
                epochs=3, lr=0.01, weight_decay=1e-4, batch_size=16, schedule="multistep",
                milestones=(0.5,), data_dir=data_dir, seed=0)
    return TrialConfig(**{**base, **overrides})


def read_lines(trial_dir: Path) -> list[dict]:
    return TrialFolder(trial_dir).epochs()


def comparable(lines: list[dict]) -> list[dict]:
    """Metric lines without what legitimately differs between two runs (time, job)."""
    return [{k: v for k, v in line.items() if k not in ("seconds", "images_per_s", "job_id")} for line in lines]


def wait_for_epoch(trial_dir: Path, epoch: int, job, timeout_s: float = 120) -> None:
    """Poll metrics.jsonl (as the orchestrator does) until `epoch` is finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(line["epoch"] >= epoch for line in read_lines(trial_dir)):
            return
        if job.done():
            raise AssertionError(f"job {job.job_id} ended before epoch {epoch}: {job.exception()}")
        time.sleep(0.2)
    raise AssertionError(f"epoch {epoch} not reached in {timeout_s} s")
