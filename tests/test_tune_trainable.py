"""The Tune trainable starts its trial's jobs at its first step, never in `setup`: Tune may construct
an actor for a trial and discard it when a cached actor frees up first (`reuse_actors`), and such an
actor's `setup` once stopped the job that the reused actor had just started for the same trial."""
from __future__ import annotations

from orchestrate_setup import shrunk_study

from attnsweep.pipelines.config.study import load_study
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
