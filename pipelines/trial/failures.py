"""What kind of failure ended a trial. Only a failure of the configuration itself (a shape error,
a batch larger than the training set, a `TrialConfigError`) is a result: it would fail again the
same way. Everything the configuration does not decide is `infrastructure` and is retried by
`--resume`: a full disk or another I/O error (OSError), a lost peer rank (torch.distributed), and
a job that ended without writing a result at all (a lost node, the OOM killer, SIGKILL). A CUDA
out-of-memory error is `configuration`: the batch, model and precision decide it on a GPU type,
so a retry on the same kind of GPU would fail again. An unreadable checkpoint never ends a trial:
the trainer sets it aside and starts again."""
from __future__ import annotations

from pathlib import Path

from attnsweep.pipelines.trial.folder import TrialFolder

INFRASTRUCTURE, CONFIGURATION = "infrastructure", "configuration"


def failure_kind(err: BaseException) -> str:
    import torch.distributed

    if isinstance(err, (OSError, MemoryError, torch.distributed.DistError)):
        return INFRASTRUCTURE
    return CONFIGURATION


def describe(err: BaseException) -> str:
    """`Type: message`, on one line (an OSError keeps its strerror, e.g. No space left on device)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def trial_failure(trial_dir: Path) -> tuple[str, str]:
    """(kind, why) of a trial that ended `failed`, from its `result.json`; a trial without one
    was killed from outside (node lost, OOM killer, disk full before the write): infrastructure."""
    try:
        result = TrialFolder(trial_dir).result()
    except (OSError, ValueError):
        result = None
    if result is None:
        return INFRASTRUCTURE, "the job ended without writing a result (node lost, killed, out of memory or disk)"
    if result.get("status") != "failed":
        return INFRASTRUCTURE, f"the job ended without a final result (status {result.get('status')})"
    return result.get("failure", CONFIGURATION), str(result.get("error") or "")
