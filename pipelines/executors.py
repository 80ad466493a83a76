"""Kept for jobs submitted before the move to `pipelines.trial`: submitit unpickles a queued job's
callable by its module path (`attnsweep.pipelines.executors.TrialJob`)."""
from attnsweep.pipelines.trial.executors import TrialJob  # noqa: F401
