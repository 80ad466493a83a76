"""The trainer in this process (one rank, CPU): the trial folder, determinism, selection, resume
from a checkpoint whose metrics line was not yet written, checkpoints every K epochs and the
re-run of the epochs after the last one, the requeue signal's checkpoint, divergence, the requeue
signal held during a checkpoint write."""
from __future__ import annotations

import json
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
    # Killed after checkpoint.pt was written: its metrics line is missing, and the new best weights
    # are still staged under their epoch's name (best.pt holds others); a stale staged file of a
    # checkpoint that was never written lies beside them.
    metrics = cut / METRICS
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:-1]))
    (cut / RESULT).unlink()
    (cut / BEST).rename(cut / f"best-epoch{done['best_epoch']}.pt")
    torch.save(torch.load(cut / CHECKPOINT, weights_only=True)["model"], cut / BEST)
    torch.save({"w": torch.zeros(1)}, cut / "best-epoch99.pt")

    resumed = train(cfg, cut)
    assert metrics.read_text() == (folder / METRICS).read_text()
    assert resumed["ended_at"] > done["ended_at"]  # the resumed job ended later, with the same result
    assert {k: v for k, v in resumed.items() if k != "ended_at"} == {k: v for k, v in done.items() if k != "ended_at"}
    best, expected = (torch.load(d / BEST, weights_only=True) for d in (cut, folder))
    assert best.keys() == expected.keys() and all(torch.equal(best[k], expected[k]) for k in best)
    assert not list(cut.glob("best-epoch*.pt"))


def test_checkpoints_every_k_epochs_and_a_resume_reruns_the_epochs_after_the_last(data_dir, tmp_path,  # noqa: F811
                                                                                   monkeypatch):
    """checkpoint_every_epochs=2 over 5 epochs: checkpoint.pt after epochs 2, 4 and 5 (the last).
    A kill after epoch 3 (its line written, the last checkpoint epoch 2's): resume truncates
    metrics.jsonl to epoch 2 and re-runs epoch 3, so every epoch is there once, with the numbers
    of an uninterrupted run."""
    cfg = trial_config(data_dir, epochs=5, checkpoint_every_epochs=2, checkpoint_every_minutes=None)
    folder, killed = tmp_path / "trial", tmp_path / "killed"
    saved: list[int] = []
    real_save = checkpoint.save

    def save(path, state):
        if path.name == CHECKPOINT:
            saved.append(state["epoch"])
            assert "best_model" not in state  # best.pt is referenced, not copied
            if state["epoch"] == 4:  # the folder as a kill after epoch 3 leaves it
                shutil.copytree(folder, killed)
        real_save(path, state)

    monkeypatch.setattr(checkpoint, "save", save)
    reference = train(cfg, folder)
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert saved == [2, 4, 5]
    lines = read_lines(killed)
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert checkpoint.load(killed / CHECKPOINT)["epoch"] == 2
    with (killed / METRICS).open("w") as f:  # epoch 3's line changed (it must be re-run) and a torn line
        f.write("".join(json.dumps(x) + "\n" for x in [*lines[:2], {**lines[2], "train_loss": -1.0}]))
        f.write('{"epoch": 4, "trai')

    resumed = train(cfg, killed)
    assert comparable(read_lines(killed)) == comparable(read_lines(folder))
    assert (resumed["metrics"], resumed["best_epoch"]) == (reference["metrics"], reference["best_epoch"])


def test_the_requeue_signal_writes_the_last_finished_epochs_state(data_dir, tmp_path, monkeypatch):  # noqa: F811
    """No checkpoint is due before the last epoch; the requeue signal after epoch 2 (submitit calls
    TrialJob.checkpoint -> write_pending_checkpoint) writes epoch 2's state, kept in memory, so the
    requeued job resumes after epoch 2 and ends with the numbers of an uninterrupted run."""
    from attnsweep.pipelines.trial import trainer

    cfg = trial_config(data_dir, epochs=4, checkpoint_every_minutes=None)
    folder, requeued = tmp_path / "trial", tmp_path / "requeued"

    def signal_after(trial_dir, epoch):
        if epoch == 2:
            assert not (folder / CHECKPOINT).exists()
            trainer.write_pending_checkpoint()  # what the signal handler runs
            shutil.copytree(folder, requeued)  # the folder as the requeued job finds it

    monkeypatch.setattr(trainer, "hold_after_epoch", signal_after)
    reference = train(cfg, folder)
    assert checkpoint.load(requeued / CHECKPOINT)["epoch"] == 2
    monkeypatch.undo()
    resumed = train(cfg, requeued)
    assert comparable(read_lines(requeued)) == comparable(read_lines(folder))
    assert (resumed["metrics"], resumed["best_epoch"]) == (reference["metrics"], reference["best_epoch"])


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


@pytest.mark.slow
def test_compile_runs_the_same_training_step(data_dir, tmp_path):  # noqa: F811
    """`compile: true` on the CPU (inductor, C++): the trial runs and learns what the eager run does
    (its kernels and its dropout generator differ, so the numbers agree as trainings, not bit for bit).
    Minutes of compiling."""
    eager = train(trial_config(data_dir, epochs=1), tmp_path / "eager")
    compiled = train(trial_config(data_dir, epochs=1, compile=True), tmp_path / "compiled")
    assert compiled["status"] == "ok"
    line, expected = read_lines(tmp_path / "compiled")[0], read_lines(tmp_path / "eager")[0]
    # inductor draws dropout masks from its own generator, so the runs agree as trainings, not to rounding
    assert line["train_loss"] == pytest.approx(expected["train_loss"], rel=0.15)
    assert compiled["metrics"]["val"]["loss"] == pytest.approx(eager["metrics"]["val"]["loss"], rel=0.15)
