"""`attnsweep data synth`: PNG images and a metadata.csv a person can open; all or nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from attnsweep.data import synthderm
from attnsweep.pipelines.cli import app


def synth(*args: str):
    return CliRunner().invoke(app, ["data", "synth", *map(str, args)])


def test_writes_pngs_and_metadata(tmp_path):
    out = tmp_path / "derm"
    result = synth("--n", 70, "--size", 48, "--out", out, "--ood", "--seed", 2, "--grid", tmp_path / "grid.png")
    assert result.exit_code == 0, result.output
    md = pd.read_csv(out / "metadata.csv")
    assert len(md) == 70 and {"label", "asymmetry", "border", "color", "structure", "irregularity", "skin_tone",
                               "patch", "hair", "ruler", "vignette", "blur", "file"} <= set(md.columns)
    expect = synthderm.metadata(70, seed=2, ood=True)
    assert md["label"].tolist() == expect["label"].tolist()
    img = np.asarray(Image.open(out / md["file"][69]))
    first = list(synthderm.render(64, 70, 48, seed=2, ood=True))[0][-1]
    np.testing.assert_array_equal(img, first)  # lossless: the PNG is the generator's image
    assert Image.open(tmp_path / "grid.png").size[0] > 400
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left
    assert "images/s" in result.stdout


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    result = synth("--n", 5, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "exists and is not empty" in result.stderr
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["keep.txt"]
    assert synth("--n", 5, "--size", 20, "--out", tmp_path / "y").exit_code == 2  # below 28 px
