"""A full disk is an infrastructure failure, not a result (issue 11, attack 3), with a real tmpfs:
the study folder on a 30 MB tmpfs (a checkpoint does not fit) -> the run ends non-zero saying
"No space left on device" and records the trial as an infrastructure failure; after the disk is
enlarged, `--resume` retries the trial and finishes with one trial, one MLflow run, no duplicate."""
from __future__ import annotations

import json
import subprocess

import pytest
from orchestrate_setup import run_attnsweep
from survive_setup import counts, one_trial_study

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_fails_as_infrastructure_and_resume_retries(tmp_path, small_disk):
    study, out = one_trial_study(tmp_path, epochs=1), small_disk / "out"
    full = run_attnsweep("run", str(study), "--out", str(out))
    said = full.stdout + full.stderr
    assert full.returncode == 1, said[-3000:]
    assert "No space left on device" in said, said[-3000:]
    assert "file write failed" not in said
    before = counts(out)
    assert before["running_runs"] == 0, before  # the failed phases' parent runs ended too
    (trial,) = (out / "trials").glob("*/*/*/config.json")
    result_path = trial.parent / "result.json"
    if result_path.exists():  # written once the failed checkpoint's temp file was removed
        result = json.loads(result_path.read_text())
        assert result["status"] == "failed" and result["failure"] == "infrastructure", result
        assert "No space left on device" in result["error"]

    subprocess.run(["mount", "-o", "remount,size=800m", str(small_disk)], check=True)
    resumed = run_attnsweep("run", str(study), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = counts(out)
    print(f"\nattack 3 (disk full): rc={full.returncode}, "
          f"{[line for line in said.splitlines() if 'No space left' in line][-1]!r}; before: {before}; "
          f"after --resume (rc={resumed.returncode}): {after}")
    assert json.loads(result_path.read_text())["status"] == "ok"
    assert after["trainings"] == 1 and after["rows"] == 2 and after["trial_runs"] == 1 and after["duplicates"] == 0
    assert after["epochs"] == 1
