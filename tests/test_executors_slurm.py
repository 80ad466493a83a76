"""The `slurm` executor on the real local SLURM test cluster (slurm/testcluster/): a job array of
two trials, a 2-node DDP job with its ranks on different nodes, scancel then resubmit, and
submitit's requeue on the preemption signal and on the time limit."""
from __future__ import annotations

import time

import pytest
import submitit
from trainer_setup import Hold, data_dir, read_lines, trial_config  # noqa: F401

from attnsweep.pipelines.config.executor import ExecutorSpec
from attnsweep.pipelines.trial.executors import attach, job_name, submit, submit_array
from attnsweep.pipelines.trial.folder import BEST, CHECKPOINT, CONFIG, JOBS, METRICS, RESULT, TrialFolder

pytestmark = pytest.mark.slurm


def _use(cluster, monkeypatch):
    for key, value in cluster.env.items():  # submitit runs sbatch/sacct/scancel with os.environ
        monkeypatch.setenv(key, value)
    # submitit caches job states by job id, process-wide; each test cluster numbers from 1 again
    submitit.SlurmJob.watcher.clear()


def _slurm(cluster, **resources) -> ExecutorSpec:
    return ExecutorSpec(kind="slurm", slurm={"partition": cluster.partition, "timeout_min": 10, **resources})


def _wait_until_ended(cluster, job, timeout_s: float = 60) -> str:
    """Until the job has left the queue (its processes ended: a cancelled job is CANCELLED at once,
    but its steps live on until SIGKILL) and accounting, which lags, has its final state; returns it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queued = cluster.run("squeue", "-h", "-j", job.job_id, "-o", "%T").stdout.strip()
        if not queued and job.watcher.is_done(job.job_id, mode="force"):
            return job.watcher.get_state(job.job_id, mode="cache")
        time.sleep(0.5)
    raise AssertionError(f"job {job.job_id} has not ended after {timeout_s} s")


def _finish_with_requeues(cluster, job, timeout_s: float = 240) -> None:
    """Wait for the job to end. SLURM holds a requeued job for 120 s (BeginTime); start it at once
    as an admin would, so the test is not 2 minutes per requeue."""
    deadline = time.monotonic() + timeout_s
    # done means its outcome file too: between a requeue and the next run `sacct` may already list
    # the job as ended (seen once in CI), with no outcome yet
    while not (job.done() and job.paths.result_pickle.exists()) and time.monotonic() < deadline:
        if cluster.run("squeue", "-h", "-j", job.job_id, "-o", "%r").stdout.strip() == "BeginTime":
            cluster.run("scontrol", "update", f"JobId={job.job_id}", "StartTime=now")
        time.sleep(0.5)
    assert job.exception() is None, job.exception()


def _runs(cluster, job_id: str) -> int:
    """How many times the job started (a requeued job has one sacct record per run)."""
    out = cluster.run("sacct", "-n", "-X", "--duplicates", "-j", job_id, "-o", "JobID").stdout
    return len(out.split())


def test_array_of_two_splits_writes_both_trial_folders(slurm_cluster, monkeypatch, data_dir, tmp_path):  # noqa: F811
    _use(slurm_cluster, monkeypatch)
    spec = _slurm(slurm_cluster)
    splits = ("search-0", "repeat-0")
    cfgs = [trial_config(data_dir, epochs=2, split=split) for split in splits]
    jobs = submit_array(cfgs, [tmp_path / split for split in splits], spec)
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_0", f"{array_id}_1"]  # one SLURM job array
    for job, split in zip(jobs, splits):
        trial = tmp_path / split
        assert TrialFolder(trial).job_ids() == [job.job_id]
        assert job.exception() is None, job.exception()
        for name in (CONFIG, METRICS, CHECKPOINT, BEST, RESULT, JOBS):
            assert (trial / name).is_file(), name
        assert (tmp_path / "submitit" / f"{job.job_id}_0_log.out").is_file()
        result = TrialFolder(trial).result()
        assert result["status"] == "ok" and result["epochs_run"] == 2 and result["world_size"] == 1
        assert _wait_until_ended(slurm_cluster, job) == "COMPLETED"
        assert attach(trial, spec) is None  # finished: nothing to re-attach to
    # Different splits, different data: the two trials learned different things.
    assert TrialFolder(tmp_path / splits[0]).result()["metrics"] != \
        TrialFolder(tmp_path / splits[1]).result()["metrics"]


def test_two_node_trial_has_ranks_on_both_nodes(slurm_cluster_2nodes, monkeypatch, data_dir, tmp_path):  # noqa: F811
    cluster = slurm_cluster_2nodes
    _use(cluster, monkeypatch)
    job = submit(trial_config(data_dir, epochs=1), tmp_path, _slurm(cluster, nodes=2, tasks_per_node=1))
    assert job.exception() is None, job.exception()
    result = TrialFolder(tmp_path).result()
    assert result["status"] == "ok" and result["world_size"] == 2
    assert sorted(result["hosts"]) == sorted(cluster.node_addrs.values())  # rank 0 and 1 on different nodes


def test_scancel_then_resubmit_resumes_after_the_last_finished_epoch(slurm_cluster, monkeypatch, data_dir,  # noqa: F811
                                                                     tmp_path):
    _use(slurm_cluster, monkeypatch)
    hold = Hold(tmp_path.parent / f"{tmp_path.name}-hold", after_epoch=2).apply(monkeypatch)  # sbatch exports it
    spec, cfg = _slurm(slurm_cluster), trial_config(data_dir, epochs=4, checkpoint_every_epochs=1)
    first = submit(cfg, tmp_path, spec)
    hold.wait(tmp_path.name, first)
    assert attach(tmp_path, spec).job_id == first.job_id  # still running: a driver can re-attach
    first.cancel()  # submitit ignores SIGTERM: the held job dies by SIGKILL after KillWait
    assert _wait_until_ended(slurm_cluster, first).startswith("CANCELLED")
    assert [line["epoch"] for line in read_lines(tmp_path)] == [1, 2]

    second = submit(cfg, tmp_path, spec)  # it starts at epoch 3: the hold is behind it
    assert second.exception() is None, second.exception()
    lines = read_lines(tmp_path)
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4]  # none repeated, none missing
    assert [line["job_id"] for line in lines] == [first.job_id] * 2 + [second.job_id] * 2
    assert TrialFolder(tmp_path).job_ids() == [first.job_id, second.job_id]


def test_preempted_job_is_requeued_and_finishes(slurm_cluster, monkeypatch, data_dir, tmp_path):  # noqa: F811
    _use(slurm_cluster, monkeypatch)
    hold = Hold(tmp_path.parent / f"{tmp_path.name}-hold", after_epoch=1).apply(monkeypatch)
    job = submit(trial_config(data_dir, epochs=3), tmp_path, _slurm(slurm_cluster))
    hold.wait(tmp_path.name, job)  # never released: only the requeue gets it past epoch 1
    job._interrupt()  # what a preempting scheduler sends: SIGTERM, then submitit's USR2
    _finish_with_requeues(slurm_cluster, job)
    assert _runs(slurm_cluster, job.job_id) == 2
    lines = read_lines(tmp_path)
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert TrialFolder(tmp_path).result()["status"] == "ok"
    assert TrialFolder(tmp_path).job_ids() == [job.job_id] and {line["job_id"] for line in lines} == {job.job_id}  # same id


def test_job_at_its_time_limit_is_requeued_and_finishes(slurm_cluster, monkeypatch, data_dir, tmp_path):  # noqa: F811
    _use(slurm_cluster, monkeypatch)
    # The job is held after epoch 1 and never released: only the time limit's signal ends that run.
    # SLURM sends it at one of its periodic checks (every 30 s) once less than `signal_delay_s` is
    # left: with 2 min and 30 s, 60..90 s into a run. The requeued run resumes after epoch 1 and
    # finishes. (A run signalled before its epoch 1 is done starts over and is held again.)
    hold = Hold(tmp_path.parent / f"{tmp_path.name}-hold", after_epoch=1).apply(monkeypatch)
    spec = _slurm(slurm_cluster, timeout_min=2, signal_delay_s=30, max_requeues=10)
    job = submit(trial_config(data_dir, epochs=3), tmp_path / "trial", spec)
    _finish_with_requeues(slurm_cluster, job, timeout_s=900)
    assert hold.held() == ["trial"]  # a run was held after epoch 1 and never released: the signal freed it
    assert _runs(slurm_cluster, job.job_id) >= 2
    lines = read_lines(tmp_path / "trial")
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert TrialFolder(tmp_path / "trial").result()["status"] == "ok"


def test_squeue_names_the_job_after_study_variant_phase_and_split(slurm_cluster, monkeypatch, data_dir,  # noqa: F811
                                                                  tmp_path):
    _use(slurm_cluster, monkeypatch)
    hold = Hold(tmp_path / "hold", after_epoch=1).apply(monkeypatch)  # the job waits while squeue is read
    name = job_name("demo slurm", "resnet18+se", "repeat", "repeat-0")
    assert name == "demo_slurm/resnet18+se/repeat/repeat-0"
    trial = tmp_path / "trial"
    job = submit(trial_config(data_dir, epochs=2), trial, _slurm(slurm_cluster), name=name)
    hold.wait("trial", job)
    # the README's format string
    listed = slurm_cluster.run("squeue", "-h", "-j", job.job_id, "-o", "%.18i %.50j %.8T").stdout.split()
    assert listed == [job.job_id, name, "RUNNING"]
    hold.release("trial")
    assert job.exception() is None, job.exception()
