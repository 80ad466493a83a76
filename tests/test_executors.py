"""The `local` executor: real submitit jobs on this machine. A 2-process DDP trial (gloo), whose
gathered evaluation equals a single process's; a job killed mid-trial and submitted again resumes
after its last finished epoch and ends with exactly the numbers of an uninterrupted run; local jobs
side by side share the cores."""
from __future__ import annotations

from pathlib import Path

import pytest
from trainer_setup import Hold, comparable, data_dir, read_lines, trial_config  # noqa: F401

from attnsweep.data import load_split, make_dataset
from attnsweep.models import create
from attnsweep.pipelines.trial import checkpoint
from attnsweep.pipelines.trial.distributed import Dist
from attnsweep.pipelines.trial.job_env import machine_cpus
from attnsweep.pipelines.config.executor import ExecutorSpec
from attnsweep.pipelines.trial.executors import attach, submit, submit_array
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.trial.trainer import evaluate, train
from attnsweep.pipelines.config.trial_config import TrialConfigError

REPO = Path(__file__).resolve().parents[1]
LOCAL2 = ExecutorSpec(kind="local", workers=2, slurm={"timeout_min": 10})


@pytest.mark.slow
def test_two_rank_ddp_trial_and_exact_gathered_metrics(data_dir, tmp_path):  # noqa: F811
    import torch

    cfg = trial_config(data_dir, epochs=2)
    job = submit(cfg, tmp_path, LOCAL2)
    assert TrialFolder(tmp_path).job_ids() == [job.job_id]
    assert job.exception() is None, job.exception()
    result = TrialFolder(tmp_path).result()
    assert result["status"] == "ok" and result["world_size"] == 2 and len(result["hosts"]) == 2
    assert result["cpu_threads"] == max(1, machine_cpus() // 2)  # the two ranks share the cores
    assert [line["epoch"] for line in read_lines(tmp_path)] == [1, 2]

    # The selected weights evaluated by one process: the same metrics as the 2 ranks gathered.
    split = load_split(data_dir, cfg.split)
    model = create(cfg.model, len(split.class_names), image_size=cfg.image_size)
    model.load_state_dict(checkpoint.load(TrialFolder(tmp_path).best_file))
    one = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), host="127.0.0.1")
    for name, metrics in result["metrics"].items():
        ds = make_dataset(split.sets[name], "none", split.mean, split.std, train=False, seed=cfg.seed)
        single = evaluate(model, ds, one, cfg.batch_size // 2, None, torch.preserve_format, 3)
        for k in ("confusion_matrix", "n_samples", "accuracy", "balanced_accuracy", "per_class_recall"):
            assert metrics[k] == single[k], (name, k)
        assert metrics["loss"] == pytest.approx(single["loss"], rel=1e-6)
        assert metrics["auc_roc"] == pytest.approx(single["auc_roc"], rel=1e-6)


@pytest.mark.slow
def test_killed_job_resubmitted_resumes_after_last_epoch(data_dir, tmp_path, monkeypatch):  # noqa: F811
    cfg = trial_config(data_dir, epochs=5)  # checkpoints every 10 minutes: none is due at epoch 2
    reference = train(cfg, tmp_path / "reference")
    one = ExecutorSpec(kind="local", workers=1, slurm={"timeout_min": 10})

    hold = Hold(tmp_path / "hold", after_epoch=2).apply(monkeypatch)  # the job waits after epoch 2
    first = submit(cfg, tmp_path / "trial", one)
    hold.wait("trial", first)
    assert attach(tmp_path / "trial", one) is None  # another driver cannot hold a local job: it stops it
    assert first.state != "RUNNING"
    assert checkpoint.load(TrialFolder(tmp_path / "trial").checkpoint_file)["epoch"] == 2  # written at the cancel
    assert [line["epoch"] for line in read_lines(tmp_path / "trial")] == [1, 2]

    second = submit(cfg, tmp_path / "trial", one)  # it starts at epoch 3: the hold is behind it
    assert second.exception() is None, second.exception()
    lines = read_lines(tmp_path / "trial")
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    assert [line["job_id"] for line in lines] == [first.job_id] * 2 + [second.job_id] * 3
    # Model, optimizer, scheduler and random states were restored: the numbers are unchanged.
    assert comparable(lines) == comparable(read_lines(tmp_path / "reference"))
    assert TrialFolder(tmp_path / "trial").result()["metrics"] == reference["metrics"]
    assert TrialFolder(tmp_path / "trial").job_ids() == [first.job_id, second.job_id]


def test_bad_batch_for_the_world_size_fails_before_submission(data_dir, tmp_path):  # noqa: F811
    with pytest.raises(TrialConfigError, match=r"^batch_size: 1 is smaller than the world size 2$"):
        submit(trial_config(data_dir, batch_size=1), tmp_path, LOCAL2)
    with pytest.raises(TrialConfigError, match=r"^batch_size: 15 is not divisible by the world size 2$"):
        submit(trial_config(data_dir, batch_size=15), tmp_path, LOCAL2)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_local_jobs_side_by_side_share_the_cores(data_dir, tmp_path):  # noqa: F811
    one = ExecutorSpec(kind="local", workers=1, slurm={"timeout_min": 10})
    dirs = [tmp_path / "a", tmp_path / "b"]
    jobs = submit_array([trial_config(data_dir, epochs=1, seed=s) for s in (0, 1)], dirs, one)
    alone = submit(trial_config(data_dir, epochs=1), tmp_path / "alone", one, jobs_at_once=1)
    for job in (*jobs, alone):
        assert job.exception() is None, job.exception()
    threads = [TrialFolder(d).result()["cpu_threads"] for d in (*dirs, tmp_path / "alone")]
    assert threads == [max(1, machine_cpus() // 2)] * 2 + [machine_cpus()]


def test_a_local_job_has_no_time_limit_unless_the_study_sets_one(tmp_path):
    """A workstation has no queue limit (issue 25, attack 9): submitit would checkpoint and requeue a
    local job at `executor.slurm.timeout_min`, the SLURM default, and fail it at the fourth time."""
    from attnsweep.pipelines.config.executor import LOCAL_NO_TIMEOUT_MIN
    from attnsweep.pipelines.trial.executors import make_executor

    assert make_executor(ExecutorSpec(kind="local", workers=1), tmp_path / "a").parameters["timeout_min"] \
        == LOCAL_NO_TIMEOUT_MIN
    set_here = ExecutorSpec(kind="local", workers=1, slurm={"timeout_min": 30})
    assert make_executor(set_here, tmp_path / "b").parameters["timeout_min"] == 30
