"""Study files: every shipped study validates and passes `--dry-run`; a bad one fails with one line
that names the file and the field, and exit status 2; the plan gives every variant the same
repeat splits and seeds (paired tests) and keeps search and repeat seeds apart."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from attnsweep.pipelines.cli import app
from attnsweep.pipelines.sweep.plan import config_hash, make_trial, phase_splits
from attnsweep.pipelines.config.study import StudyError, load_study

STUDIES = sorted((Path(__file__).resolve().parents[1] / "studies").glob("*.yaml"))
PAPER_STUDIES = {"seed000_ham10000", "seed000_ham10000_pretrained", "seed000_ham10000_transformers", "seed001_skin", "seed001_cxr", "seed001_mri", "seed001_ct", "seed002_isic",
                 "seed002_camelyon17", "seed004_cifar10"}


def test_the_paper_and_demo_studies_are_shipped():
    names = {p.stem for p in STUDIES}
    assert PAPER_STUDIES | {"demo", "demo_slurm"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_study_passes_dry_run(path):
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    study = load_study(path)
    assert f"{study.name}: plan" in result.output
    assert "estimated compute time:" in result.output
    assert "unknown" not in result.output.split("estimated compute time:")[1]  # every study sizes itself
    assert "lower bound" in result.output and "per-job time:" in result.output
    for variant in study.variant_ids:
        assert variant in result.output
    n = sum(study.variant(v).search.n_configs() * study.splits.search_splits + study.splits.repeat_splits
            for v in study.variant_ids)
    assert f"{n} trainings" in result.output


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(image_size=16, variants=["cnn2", "cnn3"]), "model cnn3 cannot take 16 px images (stem imagenet): "),
    (lambda d: d.update(variants=["efficientnet_b0"]) or d["train"].update(stem="small"),
     "stem: 'small' is for ResNets; efficientnet_b0 is of the efficientnet family"),
])
def test_a_variant_that_cannot_take_the_image_size_fails_the_dry_run_in_one_line(tmp_path, edit, message):
    path = _write(tmp_path, DEMO, edit)
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2 and f"error: {path}: {message}" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def _write(tmp_path: Path, base: Path, edit) -> Path:
    data = yaml.safe_load(base.read_text())
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


DEMO = next(p for p in STUDIES if p.stem == "demo")


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["variants"].append("resnet18+nonsense"), "variants"),
    (lambda d: d["variants"].append("resnet18"), "variants"),
    (lambda d: d["search"].update(lr={"low": 0.1, "high": 0.01}), "search.lr"),
    (lambda d: d["search"].update(algorithm="grid"), "search"),
    (lambda d: d["search"].update(lr=[0.1, 0.01]), "search"),
    (lambda d: d["search"].update(algorithm="grid", lr=[0.0, 0.1]), "search"),
    (lambda d: d["train"].update(optimizer="adam"), "train.optimizer"),
    (lambda d: d["train"].update(epochs=0), "train.epochs"),
    (lambda d: d.update(unknown_key=1), "unknown_key"),
    (lambda d: d["splits"].update(search_splits=0), "splits.search_splits"),
    (lambda d: d["splits"].update(repeat_splits=0), "splits.repeat_splits"),
    (lambda d: d["dataset"].update(format="dicom"), "dataset.format"),
    (lambda d: d["executor"].update(kind="cloud"), "executor.kind"),
    (lambda d: d.update(stats={"baselines": {"resnet18+se": "resnet50"}}), "stats.baselines"),
    (lambda d: d.update(name="my study"), "name"),
    (lambda d: d.update(max_concurrent=1), "max_concurrent"),
    # per-variant settings: the variant and the field
    (lambda d: d["variants"].append({"id": "se_adamw", "model": "resnet18+se", "train": {"optimizer": "adam"}}),
     "variants.se_adamw.train.optimizer"),
    (lambda d: d["variants"].append({"id": "se2", "model": "resnet18+se", "search": {"lr": {"low": 1, "high": 0.1}}}),
     "variants.se2.search.lr"),
    (lambda d: d["variants"].append({"id": "se3", "model": "resnet18+se", "executor": {"workers": 0}}),
     "variants.se3.executor.workers"),
    (lambda d: d["variants"].append({"id": "se4", "model": "resnet18+se", "executor": {"kind": "slurm"}}),
     "variants.se4.executor.kind"),
    (lambda d: d["variants"].append({"id": "se5", "model": "resnet18+se", "baseline": "resnet50"}),
     "variants.se5.baseline"),
    (lambda d: d["variants"].append({"id": "se6", "model": "resnet18+nonsense"}), "se6.model"),
    (lambda d: d["variants"].append({"id": "vit (21k)", "model": "resnet18"}), "id"),
    (lambda d: d["variants"].append({"id": "se7", "model": "resnet18+se"}), "variants.se7: trains resnet18+se"),
    (lambda d: d["variants"].append({"id": "resnet18+se", "model": "resnet18", "train": {"seed": 3}}), "listed twice"),
])
def test_a_bad_study_is_one_line_naming_file_and_field(tmp_path, edit, field):
    path = _write(tmp_path, DEMO, edit)
    with pytest.raises(StudyError) as err:
        load_study(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and field in message
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2 and message in result.output


def test_unreadable_study_files(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nvariants: [resnet18\n")
    with pytest.raises(StudyError, match=r"broken\.yaml:\d+: not valid YAML"):
        load_study(broken)
    with pytest.raises(StudyError, match="no such study file"):
        load_study(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(StudyError, match="expected a mapping"):
        load_study(tmp_path / "list.yaml")


def test_command_line_overrides_are_validated(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["run", str(DEMO), "--dry-run", "--executor", "slurm", "--max-concurrent", "7"])
    assert ok.exit_code == 0 and "executor slurm, 7 jobs at once" in ok.output
    bad = runner.invoke(app, ["run", str(DEMO), "--dry-run", "--executor", "cloud"])
    assert bad.exit_code == 2 and "command line: executor.kind" in bad.output


def test_dataset_roots_are_relative_to_the_study_file(tmp_path):
    study = load_study(next(p for p in STUDIES if p.stem == "seed000_ham10000"))
    assert study.dataset.root == (DEMO.parent / "../../shared/data/ham10000").resolve()


def test_plan_pairs_variants_and_separates_phases(tmp_path):
    study = load_study(DEMO)
    data_dir = tmp_path / "data"  # TrialConfig only records it
    repeat = {v: [make_trial(study, tmp_path, "repeat", v, s, 0.01, 0.0, data_dir) for s in phase_splits(study, "repeat")]
              for v in study.variants}
    search = [make_trial(study, tmp_path, "search", "resnet18", s, 0.01, 0.0, data_dir) for s in phase_splits(study, "search")]
    a, b = repeat["resnet18"], repeat["resnet18+se"]
    assert [t.cfg.split for t in a] == [f"repeat-{i}" for i in range(study.splits.repeat_splits)]
    assert [t.cfg.seed for t in a] == [t.cfg.seed for t in b]  # the same split and seed for every variant
    assert len({t.cfg.seed for t in a + search}) == len(a) + len(search)  # no seed shared by two splits
    assert len({t.ref.trial_id for t in a + b + search}) == len(a + b + search)
    assert {t.ref.config_hash for t in search} == {config_hash(search[0].cfg)}  # one configuration, two splits
    assert a[0].ref.dir == tmp_path / "trials" / "repeat" / "resnet18" / a[0].ref.trial_id
    again = make_trial(study, tmp_path, "repeat", "resnet18", "repeat-0", 0.01, 0.0, data_dir)
    assert again.ref.trial_id == a[0].ref.trial_id  # stable: what --resume relies on


def test_small_stem_reaches_the_trials_and_old_trial_ids_stay(tmp_path):
    import hashlib
    import json

    study = load_study(DEMO)
    small = type(study).model_validate({**study.model_dump(), "image_size": 28,
                                        "train": {**study.train.model_dump(), "stem": "small"}})
    default = make_trial(study, tmp_path, "repeat", "resnet18+se", "repeat-0", 0.01, 0.0, None)
    trial = make_trial(small, tmp_path, "repeat", "resnet18+se", "repeat-0", 0.01, 0.0, None)
    assert (default.cfg.stem, trial.cfg.stem) == ("imagenet", "small")
    at_28 = type(study).model_validate({**study.model_dump(), "image_size": 28})
    assert trial.ref.trial_id != make_trial(at_28, tmp_path, "repeat", "resnet18+se", "repeat-0", 0.01, 0.0,
                                            None).ref.trial_id
    # the id of a default-stem trial without study attentions is what it was before `stem` and
    # `attentions` existed: resumed studies keep their folders
    before = json.dumps(default.cfg.model_dump(mode="json", exclude={"stem", "attentions"}), sort_keys=True)
    assert default.ref.trial_id == hashlib.sha256(before.encode()).hexdigest()[:16]


def test_per_variant_settings_merge_over_the_study_and_name_their_baseline(tmp_path):
    def edit(d):
        d["variants"] = [
            "resnet18", "resnet18+se",
            {"id": "resnet18+se_adamw", "model": "resnet18+se", "train": {"optimizer": "adamw", "schedule": "constant"},
             "search": {"lr": {"low": 1e-4, "high": 1e-2}}, "executor": {"slurm": {"gpus_per_node": 2}}},
            {"id": "resnet18_in1k", "model": "resnet18", "train": {"pretrained": "imagenet-1k"}},
            {"id": "resnet18+ga_in1k", "model": "resnet18+ga", "train": {"pretrained": "imagenet-1k"}},
            {"id": "resnet18+ga", "model": "resnet18+ga", "baseline": "resnet18+se"},
        ]
    study = load_study(_write(tmp_path, DEMO, edit))
    v = study.variant("resnet18+se_adamw")
    assert (v.model, v.train.optimizer, v.train.schedule, v.train.epochs) == ("resnet18+se", "adamw", "constant",
                                                                              study.train.epochs)
    assert v.search.lr.high == 1e-2 and v.search.weight_decay == study.search.weight_decay
    assert v.executor.slurm.gpus_per_node == 2 and v.executor.kind == study.executor.kind
    assert study.variant("resnet18+se").train == study.train  # no override: the study's own settings
    # default: the backbone's plain variant with the same pretraining; or the one it names
    assert study.baselines() == {"resnet18": "resnet18", "resnet18+se": "resnet18", "resnet18+se_adamw": "resnet18",
                                 "resnet18_in1k": "resnet18_in1k", "resnet18+ga_in1k": "resnet18_in1k",
                                 "resnet18+ga": "resnet18+se"}
    # the id names the trial folder; the model is what is trained
    trial = make_trial(study, tmp_path, "repeat", "resnet18+se_adamw", "repeat-0", 0.001, 0.0, tmp_path)
    assert trial.ref.dir.parent.name == "resnet18+se_adamw" and trial.cfg.model == "resnet18+se"
    assert (trial.ref.backbone, trial.ref.attention) == ("resnet18", ("se",))
    assert trial.cfg.optimizer == "adamw"


def test_paper_tables_as_studies():
    isic = load_study(next(p for p in STUDIES if p.stem == "seed002_isic"))
    assert len(isic.variant_ids) == 14
    assert isic.variant("vit_tiny_in21k").train.pretrained == "imagenet-21k"
    assert isic.variant("vit_tiny_patch16_224").train.pretrained == "imagenet-1k"
    table3 = load_study(next(p for p in STUDIES if p.stem == "seed000_ham10000_transformers"))
    for vid, wd in (("vit_base_patch16_224", 0.0), ("deit_small_patch16_224", 0.05), ("convit_tiny", 0.05)):
        v = table3.variant(vid)
        assert (v.train.optimizer, v.train.schedule, v.search.lr, v.search.weight_decay) == (
            "adamw", "constant", [3e-5, 3e-6, 3e-7], [wd])
    assert table3.variant("resnet50").train.optimizer == "sgd"
    table2 = load_study(next(p for p in STUDIES if p.stem == "seed000_ham10000_pretrained"))
    assert table2.train.pretrained == "imagenet-1k" and table2.search.lr == [0.01, 0.001, 0.0001]
    assert table2.splits.repeat_splits == 3 and set(table2.baselines().values()) == {"resnet50"}
