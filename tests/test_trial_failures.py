"""Infrastructure failures are not results (issue 11, attack 4), at the trial level with real
local jobs: a corrupt `checkpoint.pt` of an unfinished trial is set aside with one warning line
and the trial trains again from scratch to the same numbers; a failure records its kind in
`result.json` (a configuration error is `configuration`)."""
from __future__ import annotations

import json
import logging

import pytest
from survive_setup import hold_env, held, wait_for
from trainer_setup import comparable, data_dir, read_lines, trial_config  # noqa: F401 (fixture)

from attnsweep.pipelines.trial.executors import ExecutorSpec, submit
from attnsweep.pipelines.trial.folder import CHECKPOINT, RESULT
from attnsweep.pipelines.trial.trainer import train

LOCAL = ExecutorSpec(kind="local", workers=1, slurm={"timeout_min": 10})


@pytest.mark.slow
def test_a_corrupt_checkpoint_is_set_aside_and_the_trial_restarts(data_dir, tmp_path, monkeypatch, caplog):  # noqa: F811
    cfg = trial_config(data_dir, epochs=2, checkpoint_every_epochs=1)  # checkpoint.pt holds epoch 1
    reference = train(cfg, tmp_path / "reference")
    hold = tmp_path / "hold"
    for key, value in hold_env(hold).items():
        monkeypatch.setenv(key, value)  # the local job inherits it
    job = submit(cfg, tmp_path / "trial", LOCAL)
    wait_for(lambda: held(hold), "the job to finish epoch 1")
    job.cancel()  # stopped while held
    wait_for(lambda: job.done(), "the job to stop")
    ckpt = tmp_path / "trial" / CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # a truncated copy
    monkeypatch.delenv("ATTNSWEEP_HOLD_AFTER_EPOCH")

    with caplog.at_level(logging.WARNING):
        result = train(cfg, tmp_path / "trial")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unreadable checkpoint" in warnings[0] and "from scratch" in warnings[0], warnings
    assert (tmp_path / "trial" / f"{CHECKPOINT}.corrupt-1").exists()
    assert result["status"] == "ok" and result["metrics"] == reference["metrics"]
    assert [line["epoch"] for line in read_lines(tmp_path / "trial")] == [1, 2]
    assert comparable(read_lines(tmp_path / "trial")) == comparable(read_lines(tmp_path / "reference"))


def test_a_failure_records_its_kind(data_dir, tmp_path):  # noqa: F811
    job = submit(trial_config(data_dir, batch_size=4096), tmp_path / "big", LOCAL)
    assert job.exception() is not None
    result = json.loads((tmp_path / "big" / RESULT).read_text())
    assert result["status"] == "failed" and result["failure"] == "configuration", result
    assert result["error"].startswith("TrialConfigError: batch_size: 4096 is larger than the training set")
