"""Kept for jobs submitted before the move to `pipelines.config`: a queued job's pickled
`TrialConfig` is found by its module path (`attnsweep.pipelines.trial_config.TrialConfig`)."""
from attnsweep.pipelines.config.trial_config import TrialConfig  # noqa: F401
