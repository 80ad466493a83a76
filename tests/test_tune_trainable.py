"""The Tune trainable starts its trial's jobs at its first step, never in `setup`: Tune may construct
an actor for a trial and discard it when a cached actor frees up first (`reuse_actors`), and such an
actor's `setup` once stopped the job that the reused actor had just started for the same trial.
And it submits them only once the study's gate grants them (a trial is admitted ahead of the budget,
so that its actor starts while the jobs before it run)."""
from __future__ import annotations

import json

from orchestrate_setup import shrunk_study

from attnsweep.pipelines.config.executor import ExecutorSpec
from attnsweep.pipelines.config.study import load_study
from attnsweep.pipelines.sweep import tune_trainable
from attnsweep.pipelines.sweep.budget import Gate
from attnsweep.pipelines.sweep.tune_trainable import SplitsTrainable


def test_an_actor_that_never_steps_submits_and_stops_nothing(tmp_path):
    study = load_study(shrunk_study(tmp_path))
    variant = study.variant_ids[0]
    out = tmp_path / "out"
    # What Tune's actor constructor runs (Trainable.__init__ -> setup), without a Ray actor around it.
    actor = object.__new__(SplitsTrainable)
    actor.setup({"lr": 0.01, "weight_decay": 0.0}, study=study, phase="search", variant=variant, out=str(out),
                data_dir=str(tmp_path / "data"), executor=study.variant(variant).executor)
    actor.reset_config({"lr": 0.03, "weight_decay": 0.0})  # a reused actor given the next trial
    actor.cleanup()  # Tune discards it
    assert not (out / "trials").exists()  # no trial folder claimed, no job submitted or stopped
    assert actor.config_to_run == {"lr": 0.03, "weight_decay": 0.0} and actor.epoch == 0


def test_an_admitted_trial_submits_its_jobs_only_once_the_gate_grants_them(tmp_path, monkeypatch):
    # Budget 1, lookahead 1: trial "running" holds the budget; trial "ahead" is admitted, so Tune
    # starts its actor, whose first step waits for the grant file; the grant comes when "running" ends.
    study = load_study(shrunk_study(tmp_path))
    variant = study.variant_ids[0]
    out, grants = tmp_path / "out", tmp_path / "grants"
    grants.mkdir()
    gate = Gate(1, {variant: variant}, [variant], grants=grants, lookahead=1)
    assert gate.try_acquire(variant, "repeat", 1, "running") and gate.try_acquire(variant, "repeat", 1, "ahead")

    waits = []

    def wait(seconds):  # the trainable's poll: end the running trial on the second one
        waits.append(list(out.glob("trials/*/*/*/jobs.json")))
        if len(waits) == 2:
            gate.release(variant, "repeat", "running")

    monkeypatch.setattr(tune_trainable.time, "sleep", wait)
    monkeypatch.setattr(SplitsTrainable, "trial_id", "ahead")  # what Tune's trial info says in an actor
    actor = object.__new__(SplitsTrainable)
    actor.setup({"lr": 0.01, "weight_decay": 0.0, "split": "repeat-0"}, study=study, phase="repeat", variant=variant,
                out=str(out), data_dir=str(tmp_path / "data"), executor=ExecutorSpec(kind="debug"), grants=str(grants))
    actor._start()
    assert len(waits) == 2 and waits == [[], []]  # nothing submitted while it waited
    (jobs,) = out.glob("trials/repeat/*/*/jobs.json")
    assert [r["kind"] for r in json.loads(jobs.read_text())] == ["debug"]  # submitted once granted
    assert gate.used == 1 and (grants / "ahead").exists()
