"""Plugins: a real out-of-tree package (tests/plugins: Coordinate Attention and the `tinyfolder`
dataset format, declared by entry points) installed with pip into a folder on PYTHONPATH, and a
study that uses it (`resnet18+coord` by entry point, `resnet18+coord8` by import path with kwargs,
`timm:densenet121`, the plugin format) run end to end with the local and the SLURM executors.
Bad plugins stop `attnsweep run` before any job with one line naming the study field."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pandas as pd
import pytest
import yaml
from orchestrate_setup import REPO, run_attnsweep, trial_dirs
from PIL import Image

PLUGIN_SRC = REPO / "tests" / "plugins"
VARIANTS = ["resnet18", "resnet18+coord", "resnet18+coord8", "timm-densenet121"]


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """`pip install` of tests/plugins into a folder (a copy of the source: the build writes beside it);
    on PYTHONPATH, its entry points and modules are found as an installed package's."""
    root = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN_SRC, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(root / "site"), str(root / "src")], check=True,
                   capture_output=True, text=True)
    assert (root / "site" / "attnsweep_coord-0.1.0.dist-info" / "entry_points.txt").is_file()
    return root / "site"


def _tinyfolder(root: Path, n_patients: int = 16, per_patient: int = 3) -> Path:
    """Two classes a small CNN tells apart in one epoch: a bright top half or a bright bottom half."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for p in range(n_patients):
        label = ("top", "bottom")[p % 2]
        for k in range(per_patient):
            img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            rows = slice(0, 16) if label == "top" else slice(16, 32)
            img[rows] += 150
            name = f"p{p:02d}_{k}.png"
            Image.fromarray(img).save(root / name)
            lines.append(f"{name} {label} patient{p:02d}")
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    return root


def _study(tmp_path: Path, executor: dict, **overrides) -> Path:
    study = {
        "name": "plugins",
        "attentions": {"coord8": {"factory": "attnsweep_coord.attn:CoordAttention", "kwargs": {"reduction": 8}}},
        "dataset": {"format": "tinyfolder", "root": str(_tinyfolder(tmp_path / "data"))},
        "image_size": 32,
        "variants": ["resnet18", "resnet18+coord", "resnet18+coord8", "timm:densenet121"],
        "train": {"epochs": 1, "batch_size": 8, "optimizer": "sgd", "schedule": "constant"},
        "search": {"lr": [0.01], "weight_decay": [0.0]},
        "splits": {"val_fraction": 0.25, "test_fraction": 0.25, "search_splits": 0, "repeat_splits": 2},
        "executor": executor,
        "max_concurrent": 1,
        "stats": {"explain_images": 2},
        **overrides,
    }
    path = tmp_path / "plugins.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _env(site: Path, extra: dict | None = None) -> dict:
    return {"PYTHONPATH": str(site), **(extra or {})}


def _check_study(out: Path) -> None:
    rows = pd.read_parquet(out / "results")
    assert sorted(rows["variant"].unique()) == sorted(VARIANTS)
    assert set(rows["status"]) == {"ok"}
    by_variant = rows.drop_duplicates("variant").set_index("variant")
    assert by_variant.loc["timm-densenet121", "backbone"] == "timm:densenet121"
    assert by_variant.loc["resnet18+coord8", "attention"] == "coord8"
    assert set(rows["dataset"]) == {"tinyfolder"}
    assert sorted(rows.loc[rows["phase"] == "repeat", "split"].unique()) == ["repeat-0", "repeat-1"]
    # the study attention travels in the trial configuration (to the job, into its identity)
    cfgs = {d.parent.name: json.loads((d / "config.json").read_text()) for d in trial_dirs(out)}
    assert cfgs["resnet18+coord8"]["attentions"] == {
        "coord8": {"factory": "attnsweep_coord.attn:CoordAttention", "kwargs": {"reduction": 8}}}
    assert cfgs["resnet18"]["attentions"] == {}
    # the report compares each plugin variant with its baseline like a built-in one
    html = (out / "report" / "index.html").read_text()
    for v in VARIANTS:
        assert v in html
    comparisons = pd.read_csv(next((out / "report").rglob("comparisons*.csv")))
    pairs = set(zip(comparisons["variant"], comparisons["baseline"]))
    assert {("resnet18+coord", "resnet18"), ("resnet18+coord8", "resnet18")} <= pairs


@pytest.mark.slow
def test_models_and_dry_run_see_the_plugins(plugin_site, tmp_path):
    study = _study(tmp_path, {"kind": "local", "workers": 1})
    listed = run_attnsweep("models", "--study", str(study), "--json", env=_env(plugin_site))
    assert listed.returncode == 0, listed.stderr
    params = {r["name"]: r["params"] for r in json.loads(listed.stdout)}
    assert set(params) == {"resnet18", "resnet18+coord", "resnet18+coord8", "timm:densenet121"}
    # CoordAttention adds two 1x1 convs back to C per block: more with reduction 8 than 32
    assert params["resnet18"] < params["resnet18+coord"] < params["resnet18+coord8"]
    dry = run_attnsweep("run", str(study), "--dry-run", "--out", str(tmp_path / "out"), env=_env(plugin_site))
    assert dry.returncode == 0, dry.stderr
    for v in VARIANTS:
        assert v in dry.stdout


@pytest.mark.slow
@pytest.mark.parametrize("attentions, variant, message", [
    ({"bad": "no_such_lab.attn:Module"}, "resnet18+bad",
     "attentions.bad: cannot import no_such_lab.attn (ModuleNotFoundError"),
    ({"bad": "attnsweep_coord.attn:not_a_module"}, "resnet18+bad",
     "attentions.bad: attnsweep_coord.attn:not_a_module(64) returned str, not a torch.nn.Module"),
    ({"bad": "attnsweep_coord.attn:Flatten"}, "resnet18+bad",
     "attentions.bad: attnsweep_coord.attn:Flatten must return its input's shape"),
    ({"se": "attnsweep_coord.attn:CoordAttention"}, "resnet18+se", "attentions: se: 'se' is a built-in attention"),
    ({"coord": "attnsweep_coord.attn:CoordAttention"}, "resnet18+coord",
     "attentions: coord: 'coord' is already declared by entry point coord"),
    ({}, "timm:vit_tiny_patch16_224+coord", "cannot place the attention: stage blocks.0 of VisionTransformer"),
])
def test_bad_plugin_stops_before_any_job_with_one_line(plugin_site, tmp_path, attentions, variant, message):
    study = _study(tmp_path, {"kind": "local", "workers": 1}, attentions=attentions, variants=["resnet18", variant])
    out = tmp_path / "out"
    result = run_attnsweep("run", str(study), "--out", str(out), env=_env(plugin_site))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not trial_dirs(out)


def test_bad_dataset_format_plugin_one_line(plugin_site, tmp_path):
    study = _study(tmp_path, {"kind": "local", "workers": 1})
    data = yaml.safe_load(study.read_text())
    data["dataset"]["format"] = "attnsweep_coord.attn"  # a module, but no dataset adapter
    study.write_text(yaml.safe_dump(data))
    result = run_attnsweep("run", str(study), "--dry-run", env=_env(plugin_site))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {study}: dataset: format attnsweep_coord.attn: attnsweep_coord.attn is not a dataset adapter: "
        "it lacks Options (a pydantic model), read, images, fingerprint (docs/extending.md)"]


def test_data_check_takes_a_plugin_format(plugin_site, tmp_path):
    root = _tinyfolder(tmp_path / "data")
    ok = run_attnsweep("data", "check", "tinyfolder", str(root), env=_env(plugin_site))  # by entry point
    assert ok.returncode == 0, ok.stderr
    assert "ok: 48 images, 16 groups, 2 classes, all decoded" in ok.stdout
    (root / "p03_1.png").unlink()
    bad = run_attnsweep("data", "check", "attnsweep_coord.tinyfolder", str(root), env=_env(plugin_site))  # by path
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: {root / 'labels.txt'}:11: image listed but missing (value 'p03_1.png')"]
    unknown = run_attnsweep("data", "check", "tinyfolder", str(root))  # not installed here
    assert unknown.returncode == 2 and "unknown format 'tinyfolder'" in unknown.stderr


@pytest.mark.parametrize("backbone, sites", [
    ("resnet18", 8),  # each residual block
    ("timm:resnet18", 8),  # a timm ResNet: the family attnsweep knows
    ("efficientnet_b0", 16),  # each MBConv block
    ("cnn2", 4),  # each convolution
    ("timm:densenet121", 5),  # the stage outputs of feature_info
    ("timm:convnext_tiny", 4),
])
def test_a_plugin_goes_at_the_sites_of_each_family(plugin_site, monkeypatch, backbone, sites):
    import torch

    from attnsweep.models import count_params, create, register

    monkeypatch.syspath_prepend(str(plugin_site))
    register("coordx", "attnsweep_coord.attn:CoordAttention", {"reduction": 16}, "attentions.coordx")
    with torch.device("meta"):
        model = create(f"{backbone}+coordx", 3, image_size=64)
        assert model(torch.empty(2, 3, 64, 64)).shape == (2, 3)
    placed = [m for m in model.modules() if type(m).__name__ == "CoordAttention"]
    assert len(placed) == sites
    added = sum(p.numel() for m in placed for p in m.parameters())
    assert count_params(f"{backbone}+coordx", 3, 64) - count_params(backbone, 3, 64) == added > 0


@pytest.mark.slow
def test_ddp_trains_an_installed_attention_on_two_ranks(plugin_site, tmp_path):
    """`attnsweep train` with 2 local DDP ranks (gloo): each rank imports the entry point's module."""
    res = run_attnsweep("train", "--model", "cnn2+coord", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
                        "--split", "0", "--dataset", "synthderm", "--dataset-option", "n=160", "--lr", "0.01",
                        "--executor", "local", "--workers", "2", "--out", str(tmp_path), env=_env(plugin_site))
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(Path(res.stdout.strip().splitlines()[-1]).read_text())
    assert result["status"] == "ok" and result["world_size"] == 2


def test_resume_comparison_treats_a_mapping_added_later_as_unset():
    from attnsweep.pipelines.config.compare import differences

    assert differences({"train": {"epochs": 1}}, {"attentions": {}, "train": {"epochs": 1, "attentions": {}}}) == []
    assert differences({}, {"attentions": {"coord": "a.b:C"}}) == [("attentions.coord", ANY, "a.b:C")]


@pytest.mark.slow
def test_plugin_study_local_end_to_end(plugin_site, tmp_path):
    study = _study(tmp_path, {"kind": "local", "workers": 1})
    out = tmp_path / "out"
    result = run_attnsweep("run", str(study), "--out", str(out), env=_env(plugin_site), timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_study(out)


@pytest.mark.slurm
@pytest.mark.slow
def test_plugin_study_slurm_end_to_end(plugin_site, slurm_cluster, tmp_path):
    """Every trial a SLURM job on the test cluster; the jobs import the plugin from PYTHONPATH,
    which sbatch passes on from the driver's environment."""
    study = _study(tmp_path, {"kind": "slurm", "slurm": {"cpus_per_task": 1, "mem_gb": 2, "timeout_min": 30}})
    out = tmp_path / "out"
    result = run_attnsweep("run", str(study), "--out", str(out), env=_env(plugin_site, slurm_cluster.env),
                           timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_study(out)
