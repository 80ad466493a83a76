"""From a study to its trials: the `TrialConfig` of one configuration on one split, its id and
folder, and the plan of the whole study (what `--dry-run` prints). The driver, the report and
`--dry-run` all build trials here, so they agree on every id and folder.

Names used throughout: a *trial* is one configuration trained on one split (one trainer run, one
trial folder, one MLflow child run, one row per evaluated set); a *Tune trial* is one
configuration as Ray Tune sees it (search: the trials of all search splits in lockstep; repeat:
one trial); a *rank* is one process of a trial's job (DDP). The *plan* is the trials a study
trains."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from attnsweep.pipelines.store.result_rows import TrialRef
from attnsweep.pipelines.config.study import Study
from attnsweep.pipelines.config.trial_config import MODEL_PROBED, TrialConfig
from attnsweep.pipelines.trial.study_paths import StudyPaths


def phase_splits(study: Study, phase: str) -> list[str]:
    n = study.splits.search_splits if phase == "search" else study.splits.repeat_splits
    return [f"{phase}-{i}" for i in range(n)]


def trial_config(study: Study, variant: str, split: str, lr: float, weight_decay: float,
                 data_dir: Path | None, probe_model: bool = False) -> TrialConfig:
    """`probe_model=True` builds the model at the study's image size to check it fits: the
    driver's preflight does it once per variant, in a process of its own (it imports torch and
    timm, which the driver never holds)."""
    # Each split its own seed, the same for every variant (paired comparisons); search and repeat
    # splits never share one.
    v = study.variant(variant)
    seed = v.train.seed + study.splits.names().index(split)
    return TrialConfig.model_validate({
        **v.train.model_dump(), "seed": seed, "model": v.model, "dataset": study.dataset, "ood": study.ood,
        "splits": study.splits, "split": split, "image_size": study.image_size, "lr": lr,
        "weight_decay": weight_decay, "data_dir": data_dir,
    }, context={MODEL_PROBED: not probe_model})


def config_hash(cfg: TrialConfig) -> str:
    """The hyper-parameter configuration, the same for all splits it is trained on."""
    shared = cfg.identity("split", "seed")
    return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Trial:
    """One configuration on one split: one trainer run, one folder, one MLflow child run."""

    cfg: TrialConfig
    ref: TrialRef


def make_trial(study: Study, out: Path, phase: str, variant: str, split: str, lr: float, weight_decay: float,
               data_dir: Path | None, probe_model: bool = False) -> Trial:
    from attnsweep.models import parse_name

    cfg = trial_config(study, variant, split, lr, weight_decay, data_dir, probe_model)
    backbone, attention = parse_name(cfg.model)
    trial_id = cfg.hash()
    ref = TrialRef(study=study.name, phase=phase, variant=variant, backbone=backbone, attention=tuple(attention),
                   dataset=study.dataset_label, split=split, trial_id=trial_id, config_hash=config_hash(cfg),
                   dir=StudyPaths(out).trial_dir(phase, variant, trial_id))
    return Trial(cfg, ref)


def tune_trials(study: Study, out: Path, phase: str, variant: str, params: dict, data_dir: Path | None) -> list[Trial]:
    """The trials of one Tune trial: a search configuration on every search split, or the chosen
    configuration on one repeat split (`params["split"]`)."""
    splits = phase_splits(study, "search") if phase == "search" else [params["split"]]
    return [make_trial(study, out, phase, variant, s, params["lr"], params["weight_decay"], data_dir)
            for s in splits]
