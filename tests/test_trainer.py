"""The trainer in this process (one rank, CPU): the trial folder, determinism, selection, resume
from a checkpoint whose metrics line was not yet written, divergence."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from trainer_setup import comparable, data_dir, read_lines, trial_config  # noqa: F401 (fixture)

from attnsweep.pipelines.trainer import BEST, CHECKPOINT, CONFIG, METRICS, RESULT, train


def test_trial_folder_selection_and_determinism(data_dir, tmp_path):  # noqa: F811
    cfg = trial_config(data_dir)
    a = train(cfg, tmp_path / "a")
    b = train(cfg, tmp_path / "b")

    for name in (CONFIG, METRICS, CHECKPOINT, BEST, RESULT):
        assert (tmp_path / "a" / name).is_file(), name
    assert json.loads((tmp_path / "a" / RESULT).read_text()) == a
    assert a["status"] == "ok" and a["world_size"] == 1 and a["epochs_run"] == 3 and len(a["hosts"]) == 1
    assert set(a["metrics"]) == {"val", "test"}
    for m in a["metrics"].values():
        n_classes = len(m["per_class_recall"])
        assert n_classes == 3 and sum(map(sum, m["confusion_matrix"])) == m["n_samples"]
        assert 0 <= m["balanced_accuracy"] <= 1 and m["loss"] > 0

    lines = read_lines(tmp_path / "a")
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert [line["lr"] for line in lines] == pytest.approx([0.01, 0.01, 0.001])  # multistep at 50 % of 3 epochs -> epoch 3
    assert all(line["images_per_s"] > 0 and line["seconds"] > 0 for line in lines)

    # Same config and seed on CPU: the same numbers, epoch by epoch and at the end.
    assert comparable(lines) == comparable(read_lines(tmp_path / "b"))
    assert a["metrics"] == b["metrics"]

    # Selection: the first epoch with the highest validation balanced accuracy; its weights are
    # best.pt, so the final validation metrics are that epoch's.
    scores = [line["val"]["balanced_accuracy"] for line in lines]
    assert a["best_epoch"] == scores.index(max(scores)) + 1
    best_line = lines[a["best_epoch"] - 1]["val"]
    for k in ("balanced_accuracy", "accuracy", "loss"):
        assert a["metrics"]["val"][k] == best_line[k]

    ckpt = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["best_epoch"] == a["best_epoch"]

    # A finished folder is not trained again.
    before = (tmp_path / "a" / METRICS).read_text()
    assert train(cfg, tmp_path / "a") == a
    assert (tmp_path / "a" / METRICS).read_text() == before


def test_resume_appends_the_line_of_a_checkpointed_epoch_exactly_once(data_dir, tmp_path):  # noqa: F811
    cfg = trial_config(data_dir, epochs=2)
    done = train(cfg, tmp_path / "done")
    # A kill between writing checkpoint.pt and appending its metrics line: the line is missing.
    shutil.copytree(tmp_path / "done", tmp_path / "cut")
    metrics = tmp_path / "cut" / METRICS
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:-1]))
    (tmp_path / "cut" / RESULT).unlink()

    resumed = train(cfg, tmp_path / "cut")
    assert metrics.read_text() == (tmp_path / "done" / METRICS).read_text()
    assert resumed == done


def test_a_config_cannot_reuse_another_trials_folder(data_dir, tmp_path):  # noqa: F811
    train(trial_config(data_dir, epochs=1), tmp_path)
    try:
        train(trial_config(data_dir, epochs=1, lr=0.02), tmp_path)
    except ValueError as err:
        assert "another configuration" in str(err) and "\n" not in str(err)
    else:
        raise AssertionError("a second config trained into the first one's folder")


def test_nan_loss_ends_the_trial_as_diverged(data_dir, tmp_path):  # noqa: F811
    result = train(trial_config(data_dir, lr=1e6, schedule="constant"), tmp_path)
    assert result["status"] == "diverged"
    assert result["metrics"] == {}
    assert result["epochs_run"] < 3
    assert json.loads((tmp_path / RESULT).read_text())["status"] == "diverged"
    assert len(read_lines(tmp_path)) == result["epochs_run"]  # only finite epochs are lines
