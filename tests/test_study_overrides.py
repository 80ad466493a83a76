"""`attnsweep run STUDY KEY=VALUE ...`: overrides merged into the study file, validated like it,
saved in `<out>/study.yaml` and compared on `--resume` like an edit of the file."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from attnsweep.pipelines.cli import app
from attnsweep.pipelines.config.compare import StudyChanged, check_resume
from attnsweep.pipelines.config.study import StudyError, load_study
from attnsweep.pipelines.sweep.orchestrate import write_study_file

DEMO = Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"


def test_overrides_set_study_and_variant_fields(tmp_path):
    study = load_study(DEMO, ["train.epochs=1", "search.trials=2", "variants.resnet18+se.train.epochs=5",
                              "variants.resnet18+se.search.lr={low: 0.01, high: 0.05}"])
    assert study.train.epochs == 1 and study.search.trials == 2
    assert study.variant("resnet18").train.epochs == 1
    se = study.variant("resnet18+se")
    assert se.train.epochs == 5 and (se.search.lr.low, se.search.lr.high) == (0.01, 0.05)
    assert se.search.trials == 2  # the study's search, merged under the variant's override
    assert study.variant_ids == ["resnet18", "resnet18+se", "resnet18+ga"]  # order kept


def test_overrides_of_a_variant_given_as_a_mapping(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["variants"] = ["resnet18", {"id": "se.v2", "model": "resnet18+se", "train": {"epochs": 2, "seed": 3}}]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    study = load_study(path, ["variants[se.v2].train.epochs=4"])
    assert study.variant("se.v2").train.epochs == 4 and study.variant("se.v2").train.seed == 3
    assert load_study(path, ["variants=[resnet18]"]).variant_ids == ["resnet18"]


@pytest.mark.parametrize("args, expected", [
    (["train.epoch=1"], "demo.yaml + command line: train.epoch: Extra inputs are not permitted"),
    (["train.epochs=x"], "demo.yaml + command line: train.epochs: Input should be a valid integer (got 'x')"),
    (["variants.resnet18+se.train.epochs=0"], "command line: variants.resnet18+se.train.epochs: Input should be "
                                              "greater than or equal to 1"),
    (["variants.vgg.train.epochs=1"], "demo.yaml: variants.vgg: not a variant of the study (its variants: "
                                      "resnet18, resnet18+se, resnet18+ga)"),
    (["train.epochs"], "override 'train.epochs': expected KEY=VALUE"),
    (["search.lr=[0.1,"], "demo.yaml: overrides search.lr=[0.1,:"),
])
def test_a_bad_override_is_one_line(tmp_path, args, expected):
    with pytest.raises(StudyError) as err:
        load_study(DEMO, args)
    assert expected in str(err.value) and "\n" not in str(err.value)
    res = CliRunner().invoke(app, ["run", str(DEMO), *args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {err.value}", res.output
    assert not (tmp_path / "out").exists()


def test_the_saved_study_holds_the_overrides_and_resume_compares_them(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stored = write_study_file(load_study(DEMO, ["train.epochs=1", "search.trials=2"]), out)
    saved = yaml.safe_load(stored.read_text())
    assert saved["train"]["epochs"] == 1 and saved["search"]["trials"] == 2
    same = load_study(DEMO, ["train.epochs=1", "search.trials=2", "max_concurrent=3"])
    assert check_resume(saved, same.model_dump(mode="json"), str(stored)) == ["max_concurrent"]
    with pytest.raises(StudyChanged, match=r"train\.epochs: 1 -> 3"):
        check_resume(saved, load_study(DEMO, ["train.epochs=3", "search.trials=2"]).model_dump(mode="json"),
                     str(stored))
    with pytest.raises(StudyChanged, match=r"train\.epochs: 1 -> 3"):  # the file without the override
        check_resume(saved, load_study(DEMO, ["search.trials=2"]).model_dump(mode="json"), str(stored))
