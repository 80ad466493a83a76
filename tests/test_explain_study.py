"""Explanations end to end on a real study folder: the real data layer prepares synthderm, the real
trainer trains the demo study's variants for one epoch on one repeat split (keeping `best.pt`), the
tracking layer's row builders and Parquet writer record them; then `attnsweep report` draws the
Table-4 grid from those checkpoints."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from attnsweep.data import DatasetSpec, SplitSpec, prepare
from attnsweep.models import parse_name
from attnsweep.pipelines.report.explain import explain_variant
from attnsweep.pipelines.store.parquet_store import write_trial
from attnsweep.pipelines.report.study_folder import load
from attnsweep.pipelines.store.result_rows import TrialRef, epoch_rows, result_rows
from attnsweep.pipelines.config.study import load_study
from attnsweep.pipelines.trial.trainer import train
from attnsweep.pipelines.config.trial_config import TrialConfig

pytestmark = pytest.mark.slow

DEMO = load_study(Path(__file__).parents[1] / "studies" / "demo.yaml")
SIZE = 64  # ResNet's last stage is 2x2 at 64 px (1x1 at the demo's 32 px)
N_MEAN = 6


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explain") / "study"
    spec = DatasetSpec(format="synthderm", options={"n": 120, "seed": 0})
    splits = SplitSpec(val_fraction=0.2, test_fraction=0.25, search_splits=1, repeat_splits=1, seed=0)
    data_dir = prepare(spec, splits, SIZE, out)
    for variant in DEMO.variants:
        cfg = TrialConfig(model=variant, dataset=spec, splits=splits, split="repeat-0", image_size=SIZE,
                          epochs=1, lr=0.01, batch_size=16, data_dir=data_dir)
        trial_id = f"{variant}-repeat-0"
        folder = out / "trials" / "repeat" / variant / trial_id
        result = train(cfg, folder)
        backbone, attention = parse_name(variant)
        ref = TrialRef("explain", "repeat", variant, backbone, tuple(attention), "synthderm", "repeat-0",
                       trial_id, cfg.hash(), folder)
        config = ref.folder.config()
        write_trial(out, trial_id, result_rows(ref, config, result, ["val", "test"], None, "test"),
                    epoch_rows(ref, config, ref.folder.epochs()))
    (out / "study.yaml").write_text(yaml.safe_dump(
        {"name": "explain", "variants": DEMO.variants, "stats": {"explain_images": N_MEAN}}))
    return out


def test_maps_from_the_kept_checkpoints(study):
    folder = load(study)
    for variant in DEMO.variants:
        trial = study / "trials" / "repeat" / variant / f"{variant}-repeat-0"
        explained, images, names = explain_variant(folder, trial, N_MEAN)
        assert len(set(names)) == len(names) == 3  # synthderm: one image per class
        assert images.shape == (len(names), SIZE, SIZE, 3)
        methods = {e.method: e for e in explained}
        assert set(methods) == ({"Grad-CAM", "GA map"} if "ga" in parse_name(variant)[1] else {"Grad-CAM"})
        for e in explained:
            assert e.per_class.shape == (len(names), SIZE, SIZE) and e.per_class.dtype == np.uint8
            assert e.mean.shape == (SIZE, SIZE) and e.mean.dtype == np.uint8
            assert e.n == N_MEAN and e.mean.max() == 255  # the mean map varies over the image


def test_report_draws_the_explanation_grid(study):
    proc = subprocess.run([sys.executable, "-m", "attnsweep.pipelines.cli", "report", str(study)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = study / "report"
    grid = Image.open(report / "explanations.png")
    # rows: inputs + Grad-CAM per variant + GA per +ga variant; wider than tall per row of 4 columns
    n_rows = 1 + len(DEMO.variants) + sum("ga" in parse_name(v)[1] for v in DEMO.variants)
    assert grid.height > 100 * n_rows
    html = (report / "index.html").read_text()
    assert '<img src="data:image/png;base64,' in html and 'alt="explanations.png"' in html  # embedded
    assert "split repeat-0" in html
    # one split, one run per variant: statistics are undefined, not an error
    comp = (report / "tables" / "comparisons.csv").read_text()
    assert all(v in comp for v in DEMO.variants)


def test_a_broken_checkpoint_is_one_line_naming_the_trial(study, tmp_path):
    broken = tmp_path / "study"
    shutil.copytree(study, broken, ignore=shutil.ignore_patterns("report"))
    trial = broken / "trials" / "repeat" / "resnet18" / "resnet18-repeat-0"
    (trial / "best.pt").write_bytes(b"not a checkpoint")
    proc = subprocess.run([sys.executable, "-m", "attnsweep.pipelines.cli", "report", str(broken)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"error: {trial}: explanations failed (")
    assert not (broken / "report").exists() and not list(broken.glob(".report-*"))
