"""`attnsweep run` refuses what it can tell is wrong before starting Ray or submitting a job: one
line naming the problem, exit status 2, no trial folder."""
from __future__ import annotations

import pytest
from orchestrate_setup import run_attnsweep, shrunk_study

pytestmark = pytest.mark.slow


def test_a_batch_larger_than_the_training_set_is_refused(tmp_path):
    study = shrunk_study(tmp_path, name="bigbatch", train={"epochs": 1, "batch_size": 500})
    out = tmp_path / "out"
    done = run_attnsweep("run", str(study), "--out", str(out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: train.batch_size: 500 is larger than the training set" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (out / "trials").exists()


def test_a_missing_dataset_is_one_line(tmp_path):
    study = shrunk_study(tmp_path, name="nodata", dataset={"format": "ham10000", "root": str(tmp_path / "nowhere")})
    done = run_attnsweep("run", str(study), "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and "nowhere" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_finished_folder_needs_resume(tmp_path):
    study = shrunk_study(tmp_path, name="again")
    out = tmp_path / "out"
    (out / "trials" / "search").mkdir(parents=True)
    done = run_attnsweep("run", str(study), "--out", str(out))
    assert done.returncode == 2 and "pass --resume" in done.stderr


def test_a_variant_too_big_for_the_image_size_is_one_line(tmp_path):
    study = shrunk_study(tmp_path, name="tiny", image_size=16, variants=["cnn2", "cnn3"])
    out = tmp_path / "out"
    done = run_attnsweep("run", str(study), "--out", str(out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: study tiny, cnn3: model cnn3 cannot take 16 px images (stem imagenet): ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (out / "trials").exists()
