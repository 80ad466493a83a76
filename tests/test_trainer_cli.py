"""`attnsweep train`: one trial end to end (prints its result.json), and bad trial configs that
fail before anything is submitted, with one line naming the field and a non-zero exit."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnsweep.pipelines.cli import app
from attnsweep.pipelines.trial.folder import RESULT, TrialFolder

TINY = ["--model", "cnn2", "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--split", "0"]
SYNTH = ["--dataset", "synthderm", "--dataset-option", "n=160"]


def test_train_prints_the_result_path(tmp_path):
    res = CliRunner().invoke(app, ["train", *TINY, *SYNTH, "--lr", "0.01", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    path = Path(res.stdout.strip().splitlines()[-1])
    result = TrialFolder(path.parent).result()
    assert path.is_relative_to(tmp_path / "trials" / "train" / "cnn2")
    assert result["status"] == "ok" and result["world_size"] == 1 and result["best_epoch"] == 1
    assert set(result["metrics"]) == {"val", "test"}
    assert len(TrialFolder(path.parent).jobs()) == 1


@pytest.mark.parametrize("args, field", [
    (["--model", "resnet18+nosuchattention", *SYNTH], "model"),
    (["--dataset", "ham10000:/no/such/folder"], "dataset.root"),
    (["--executor", "local", "--workers", "2", "--batch-size", "1", *SYNTH], "batch_size"),
    (["--lr", "-1", *SYNTH], "lr"),
    (["--milestones", "0.9,0.3", *SYNTH], "milestones"),
    (["--sbatch", "exclusive", *SYNTH], "--sbatch"),
    (["--executor", "cloud", *SYNTH], "kind"),
    # options generated from TrialConfig and SlurmResources: the models' own checks
    (["--momentum", "1", *SYNTH], "momentum"),
    (["--selection-metric", "f1", *SYNTH], "selection_metric"),
    (["--max-requeues", "-1", *SYNTH], "max_requeues"),
])
def test_bad_config_fails_before_submission_with_one_line(tmp_path, args, field):
    res = CliRunner().invoke(app, ["train", *TINY, *args, "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], res.stderr
    assert not (tmp_path / "trials").exists()  # nothing was submitted


def test_a_job_that_raises_is_recorded_as_failed(tmp_path):
    # The training set's size is known only once the data is prepared: the job itself fails.
    res = CliRunner().invoke(app, ["train", *TINY, *SYNTH, "--batch-size", "512", "--out", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "trial failed: TrialConfigError: batch_size: 512 is larger than the training set" in res.stderr
    (result_path,) = (tmp_path / "trials").glob(f"train/cnn2/*/{RESULT}")
    assert TrialFolder(result_path.parent).result()["status"] == "failed"
