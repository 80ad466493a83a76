"""One driver per study folder (issue 11, attack 1), with real drivers and local jobs: while a
driver runs (its trial held after epoch 1 by the hold hook), a second driver, `run` or
`run --resume`, is refused with one line naming the holder and submits nothing; once the first
driver is SIGKILLed its lock is stale: `run` points at `--resume`, and `--resume` takes it over and
finishes the study (fields no trial depends on edited) with one training, one job per driver, no duplicate row or MLflow run."""
from __future__ import annotations

import json
import socket

import pytest
import yaml
from orchestrate_setup import Driver, run_attnsweep
from survive_setup import counts, hold_env, held, one_trial_study, wait_for

from attnsweep.pipelines.trial.study_paths import StudyPaths

pytestmark = pytest.mark.slow


def test_second_driver_refused_and_stale_lock_taken_over_by_resume(tmp_path):
    study, out, hold = one_trial_study(tmp_path), tmp_path / "out", tmp_path / "hold"
    log = tmp_path / "first.log"
    first = Driver("run", str(study), "--out", str(out), env=hold_env(hold), log=log)
    try:
        wait_for(lambda: held(hold), "the first driver's trial to finish epoch 1", first, log)
        for args in (["--resume"], []):
            second = run_attnsweep("run", str(study), "--out", str(out), *args)
            assert second.returncode == 2, second.stdout + second.stderr
            line = second.stderr.strip()
            assert "\n" not in line and "another driver is running this study" in line, line
            assert f"host {socket.gethostname()}, pid {first.proc.pid}" in line, line
        assert counts(out)["jobs"] == 1  # the refused drivers submitted nothing
        assert json.loads(StudyPaths(out).driver_file.read_text())["pid"] == first.proc.pid
        first.kill()  # the driver dies; its lock record stays behind, stale
    finally:
        first.cleanup()

    fresh = run_attnsweep("run", str(study), "--out", str(out))
    assert fresh.returncode == 2 and "pass --resume" in fresh.stderr, fresh.stderr
    edited = yaml.safe_load(study.read_text())  # fields no trial depends on may change on --resume
    edited.update(max_concurrent=edited["max_concurrent"] + 1, description="edited")
    study.write_text(yaml.safe_dump(edited))
    resumed = run_attnsweep("run", str(study), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    said = next(line for line in resumed.stdout.splitlines() if line.startswith("changed since the study last ran"))
    assert "no trial depends on them:" in said and "description" in said and "max_concurrent" in said, said
    assert f"taking over the lock of a driver that is gone (host {socket.gethostname()}, pid {first.proc.pid}" \
        in resumed.stdout
    assert not StudyPaths(out).driver_file.exists()
    c = counts(out)
    print(f"\nattack 1 (two drivers): second driver rc=2 '{line}'; after --resume: {c}")
    assert c["trainings"] == 1 and c["jobs"] == 2 and c["epochs"] == 2 and c["duplicates"] == 0
    assert c["rows"] == 2 and c["trial_runs"] == 1  # val + test rows of the one trial
