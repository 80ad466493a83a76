"""The trainer in this process (one rank, CPU): the trial folder, determinism, selection, resume
from a checkpoint whose metrics line was not yet written, divergence, the requeue signal held
during a checkpoint write."""
from __future__ import annotations

import math
import os
import shutil
import signal
import sys

import pytest
import torch
from trainer_setup import comparable, data_dir, read_lines, trial_config  # noqa: F401 (fixture)

from attnsweep.pipelines.trial import checkpoint
from attnsweep.pipelines.trial.folder import BEST, CHECKPOINT, CONFIG, METRICS, RESULT, TrialFolder, uninterrupted
from attnsweep.pipelines.trial.trainer import lr_scheduler, train


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):  # noqa: F811
    """A finished 3-epoch trial: (config, folder, result)."""
    cfg, folder = trial_config(data_dir), tmp_path_factory.mktemp("finished")
    return cfg, folder, train(cfg, folder)


def test_trial_folder_selection_and_determinism(finished, tmp_path):
    cfg, folder, a = finished
    b = train(cfg, tmp_path / "b")

    for name in (CONFIG, METRICS, CHECKPOINT, BEST, RESULT):
        assert (folder / name).is_file(), name
    assert TrialFolder(folder).result() == a
    assert a["status"] == "ok" and a["world_size"] == 1 and a["epochs_run"] == 3 and len(a["hosts"]) == 1
    assert set(a["metrics"]) == {"val", "test"}
    for m in a["metrics"].values():
        n_classes = len(m["per_class_recall"])
        assert n_classes == 3 and sum(map(sum, m["confusion_matrix"])) == m["n_samples"]
        assert 0 <= m["balanced_accuracy"] <= 1 and m["loss"] > 0

    lines = read_lines(folder)
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    # multistep at 50 % of 3 epochs: x 0.1 from epoch 3 on
    assert [line["lr"] for line in lines] == pytest.approx([0.01, 0.01, 0.001])
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

    ckpt = torch.load(folder / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["best_epoch"] == a["best_epoch"]

    # A finished folder is not trained again.
    before = (folder / METRICS).read_text()
    assert train(cfg, folder) == a
    assert (folder / METRICS).read_text() == before


def test_resume_completes_what_a_kill_after_the_checkpoint_left_out(finished, tmp_path):
    cfg, folder, done = finished
    cut = tmp_path / "cut"
    shutil.copytree(folder, cut)
    # Killed after checkpoint.pt was written: its metrics line is missing, and best.pt holds weights
    # the checkpoint does not know (here: the last epoch's, written by a run that was then killed).
    metrics = cut / METRICS
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:-1]))
    (cut / RESULT).unlink()
    torch.save(torch.load(cut / CHECKPOINT, weights_only=True)["model"], cut / BEST)

    resumed = train(cfg, cut)
    assert metrics.read_text() == (folder / METRICS).read_text()
    assert resumed == done
    best, expected = (torch.load(d / BEST, weights_only=True) for d in (cut, folder))
    assert best.keys() == expected.keys() and all(torch.equal(best[k], expected[k]) for k in best)


def test_a_config_cannot_reuse_another_trials_folder(finished, data_dir):  # noqa: F811
    _, folder, _ = finished
    with pytest.raises(ValueError, match="holds another configuration") as err:
        train(trial_config(data_dir, lr=0.02), folder)
    assert "\n" not in str(err.value)


def test_nan_loss_ends_the_trial_as_diverged(data_dir, tmp_path):  # noqa: F811
    result = train(trial_config(data_dir, lr=1e6, schedule="constant"), tmp_path)
    assert result["status"] == "diverged"
    assert result["metrics"] == {}
    assert result["epochs_run"] < 3
    assert TrialFolder(tmp_path).result()["status"] == "diverged"
    assert len(read_lines(tmp_path)) == result["epochs_run"]  # only finite epochs are lines


@pytest.mark.parametrize("settings, expected", [
    # paper 000: SGD lr 0.1, x0.1 every 30 epochs, 100 epochs
    (dict(lr=0.1, schedule="step", step_size=30, gamma=0.1), {1: 0.1, 30: 0.1, 31: 0.01, 61: 1e-3, 91: 1e-4}),
    # paper 001: lr 0.05, x0.1 at 30, 60 and 90 % of the epochs
    (dict(lr=0.05, schedule="multistep", milestones=(0.3, 0.6, 0.9)), {30: 0.05, 31: 5e-3, 61: 5e-4, 91: 5e-5}),
    (dict(lr=0.1, schedule="cosine"), {1: 0.1, 51: 0.05, 100: 0.1 * (1 - math.cos(math.pi / 100)) / 2}),
    (dict(lr=0.1, schedule="constant"), {1: 0.1, 100: 0.1}),
])
def test_paper_schedules(data_dir, settings, expected):  # noqa: F811
    cfg = trial_config(data_dir, epochs=100, **settings)
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=cfg.lr, momentum=cfg.momentum)
    scheduler = lr_scheduler(cfg, optimizer)
    lrs = {}
    for epoch in range(1, 101):  # the lr an epoch trains with; the trainer steps after each epoch
        lrs[epoch] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    assert {e: lrs[e] for e in expected} == pytest.approx(expected)


def test_the_requeue_signal_waits_for_a_checkpoint_write(tmp_path):
    """submitit's USR2 handler calls sys.exit wherever the signal lands; inside torch.save that
    turned a requeue into a failed job (seen in CI). The write finishes, then the handler runs."""
    def exit_like_submitit(signum, frame):
        sys.exit(-1)

    previous = signal.signal(signal.SIGUSR2, exit_like_submitit)
    state, written = {"w": torch.randn(500, 500)}, []
    try:
        with pytest.raises(SystemExit), uninterrupted():
            os.kill(os.getpid(), signal.SIGUSR2)
            with uninterrupted():  # nested: the signal is still held, and runs once
                checkpoint.save(tmp_path / "state.pt", state)
            written.append(True)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert written == [True]
    assert torch.equal(checkpoint.load(tmp_path / "state.pt")["w"], state["w"])
    assert signal.getsignal(signal.SIGUSR2) is previous
