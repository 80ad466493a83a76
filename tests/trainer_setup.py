"""Shared settings of the trainer and executor tests: a tiny synthderm dataset (prepared once per
test module), a trial config small enough for a few seconds of CPU per epoch, and `Hold`, which
stops a job at a known epoch so a test kills, cancels or preempts it there, not by timing."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from attnsweep.data import DatasetSpec, SplitSpec, prepare
from attnsweep.pipelines.config.trial_config import TrialConfig
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.trial.hold import AFTER_EPOCH_ENV, DIR_ENV

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


class Hold:
    """The trainer's test-only hold (pipelines/trial/hold.py): a job started with `env` (in the
    environment of the test, of a driver, or exported by sbatch) writes `<trial>.held` in `folder`
    after epoch `after_epoch`'s files and waits there until the test releases it."""

    def __init__(self, folder: Path, after_epoch: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.after_epoch = folder, after_epoch
        self.env = {AFTER_EPOCH_ENV: str(after_epoch), DIR_ENV: str(folder)}

    def apply(self, monkeypatch) -> Hold:
        """Hold the jobs this test process submits from now on (they inherit its environment)."""
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        return self

    def held(self) -> list[str]:
        """Trial folder names held now (not released yet)."""
        return sorted(p.stem for p in self.folder.glob("*.held") if not self._release(p.stem).exists())

    def wait(self, name: str | None = None, job=None, alive=None, timeout_s: float = 600) -> str:
        """Until the trial folder `name` (or any trial, by default) is held -> its name. Fails at
        once when the submitit `job` ended or `alive()` (e.g. a driver's) turns false."""
        deadline = time.monotonic() + timeout_s
        while not (held := [n for n in self.held() if name in (None, n)]):
            if job is not None and job.done():
                raise AssertionError(f"job {job.job_id} ended before its hold at epoch {self.after_epoch}: "
                                     f"{job.exception()}")
            assert alive is None or alive(), f"ended before a trial was held after epoch {self.after_epoch}"
            assert time.monotonic() < deadline, f"no trial held after epoch {self.after_epoch} in {timeout_s} s"
            time.sleep(0.2)
        return held[0]

    def release(self, *names: str) -> None:
        for name in names:
            self._release(name).touch()

    def _release(self, name: str) -> Path:
        return self.folder / f"{name}.release"
