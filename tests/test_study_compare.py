"""A study file is fixed once run (issue 11, attack 2): `--resume` with a study that changes a
trial (epochs 1 -> 2) is refused with one line listing the fields, before anything is written;
the fields that feed no trial may change (checked against what builds a TrialConfig)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from orchestrate_setup import run_attnsweep
from survive_setup import one_trial_study

from attnsweep.pipelines.config.compare import NO_TRIAL_FIELDS, StudyChanged, check_resume
from attnsweep.pipelines.config.study import Study, load_study
from attnsweep.pipelines.sweep.orchestrate import write_study_file
from attnsweep.pipelines.sweep.plan import make_trial

CHANGES = {"description": "edited", "executor": {"kind": "slurm", "workers": 2}, "max_concurrent": 7,
           "max_failures": 3, "tracking_uri": "http://elsewhere:5000", "out_dir": "/elsewhere",
           "stats": {"metrics": ["accuracy"]}, "estimate": {"train_images": 5},
           "notify": {"command": "true"}}


def _trials(study: Study) -> list:
    return [make_trial(study, Path("/out"), "repeat", v, s, 0.01, 0.0, None).cfg
            for v in study.variants for s in study.splits.names()]


def test_fields_that_may_change_feed_no_trial(tmp_path):
    study = load_study(one_trial_study(tmp_path))
    assert set(CHANGES) == set(NO_TRIAL_FIELDS)
    for field, value in CHANGES.items():
        changed = Study.model_validate({**study.model_dump(), field: value})
        assert _trials(changed) == _trials(study), field
        assert check_resume(study.model_dump(mode="json"), changed.model_dump(mode="json"), "s") != []
    longer = Study.model_validate({**study.model_dump(), "train": {**study.train.model_dump(), "epochs": 5}})
    assert _trials(longer) != _trials(study)
    with pytest.raises(StudyChanged, match=r"train\.epochs: 2 -> 5"):
        check_resume(study.model_dump(mode="json"), longer.model_dump(mode="json"), "s")


def test_resume_with_an_edited_study_is_refused_before_anything_is_written(tmp_path):
    first = one_trial_study(tmp_path, epochs=1)
    out = tmp_path / "out"
    out.mkdir()
    stored = write_study_file(load_study(first), out)  # what the first run left
    before = stored.read_text()
    edited = yaml.safe_load(first.read_text())
    edited["train"]["epochs"] = 2
    edited["search"]["lr"] = [0.02]
    first.write_text(yaml.safe_dump(edited))
    done = run_attnsweep("run", str(first), "--out", str(out), "--resume")
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    print(f"\nattack 2 (edited study): rc={done.returncode} {line!r}")
    assert "\n" not in line and "search.lr: [0.01] -> [0.02]" in line and "train.epochs: 1 -> 2" in line, line
    assert stored.read_text() == before
    assert sorted(p.name for p in out.iterdir()) == sorted(["study.yaml", "driver.lock"])


def test_the_saved_study_carries_each_variants_resolution(tmp_path):
    """`<out>/study.yaml` holds every variant's merged settings and baseline (`resolved`, what the
    report reads); `--resume` compares the study itself, not that derived section."""
    study = load_study(one_trial_study(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    saved = yaml.safe_load(write_study_file(study, out).read_text())
    assert list(saved["resolved"]) == study.variant_ids
    for v in study.variant_ids:
        assert saved["resolved"][v]["baseline"] == study.baselines()[v]
        assert saved["resolved"][v]["train"] == study.variant(v).train.model_dump(mode="json")
    assert check_resume(saved, study.model_dump(mode="json"), "s") == []
