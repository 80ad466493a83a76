"""Tracebacks where one line belongs (issue 11, attack 6): each bad input below ends with exit 2,
one line naming the file, field or value, no pydantic internals, and nothing half-written; the
temp folders a killed report build left are removed by the next build."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from orchestrate_setup import run_attnsweep
from survive_setup import one_trial_study
from test_data_formats import write_image, write_imagefolder
from typer.testing import CliRunner

from attnsweep.pipelines.cli import app

GOLDEN = Path(__file__).parent / "golden"


def one_line(result, code: int = 2) -> str:
    err = result.stderr
    assert (result.exit_code if hasattr(result, "exit_code") else result.returncode) == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "function-after" not in err and "list[float]" not in err, err
    return lines[0]


def edited(tmp_path: Path, edit) -> Path:
    path = one_trial_study(tmp_path)
    study = yaml.safe_load(path.read_text())
    edit(study)
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s["search"].update(lr=-1), "search.lr: expected a log-uniform range {low: .., high: ..} or a list "
                                          "of values, got -1"),
    (lambda s: s["search"].update(lr={"low": 0.1, "high": 0.01}), "search.lr: low must be below high"),
    (lambda s: s["search"].update(lr={"low": -1, "high": 0.01}), "search.lr.low: Input should be greater than 0"),
    (lambda s: s["train"].update(epochs=True), "train.epochs: Input should be a valid integer (got True)"),
    (lambda s: s["splits"].update(repeat_splits=True), "splits.repeat_splits: Input should be a valid integer"),
    (lambda s: s.update(name="a" * 300), "name: at most 100 characters, got 300"),
])
def test_bad_study_values_are_one_line(tmp_path, edit, expected):
    study = edited(tmp_path, edit)
    res = CliRunner().invoke(app, ["run", str(study), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    line = one_line(res)
    assert str(study) in line and expected in line, line
    assert not (tmp_path / "out").exists()


def test_out_naming_a_file_is_one_line(tmp_path):
    study, file = one_trial_study(tmp_path), tmp_path / "a-file"
    file.write_text("mine")
    res = run_attnsweep("run", str(study), "--out", str(file))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"{file}: --out names a file, not a folder" in res.stderr and file.read_text() == "mine"


@pytest.mark.slow
def test_a_small_dataset_names_its_truncated_image_not_sklearn(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", per_class=2)
    victim = sorted((root / "normal").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])
    study = edited(tmp_path, lambda s: s.update(dataset={"format": "imagefolder", "root": str(root)}))
    res = run_attnsweep("run", str(study), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert victim.name in res.stderr and "cannot decode image" in res.stderr, res.stderr
    write_image(victim, 1)  # repaired: now the split sizes are the problem, said in one line too
    shutil.rmtree(tmp_path / "out")
    res = run_attnsweep("run", str(study), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "too few for" in res.stderr and "n_splits" not in res.stderr, res.stderr


@pytest.fixture
def golden_copy(tmp_path) -> Path:
    out = tmp_path / "study"
    shutil.copytree(GOLDEN / "study", out)
    return out


def test_export_refuses_truncated_and_foreign_parquet(golden_copy, tmp_path):
    dest = tmp_path / "all.parquet"
    foreign = golden_copy / "results" / "zz-notes.parquet"
    pd.DataFrame({"x": [1, 2]}).to_parquet(foreign)
    res = CliRunner().invoke(app, ["export", str(golden_copy), "--to", str(dest)])
    assert res.exit_code == 2 and f"{foreign}: missing columns" in one_line(res) and not dest.exists()
    foreign.unlink()
    victim = sorted((golden_copy / "results").glob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    res = CliRunner().invoke(app, ["export", str(golden_copy), "--to", str(dest)])
    assert res.exit_code == 2 and f"{victim}: not a readable Parquet file" in one_line(res) and not dest.exists()


def test_resume_refuses_a_truncated_results_file(tmp_path):
    study, out = one_trial_study(tmp_path), tmp_path / "out"
    (out / "results").mkdir(parents=True)
    victim = out / "results" / "0123.parquet"
    shutil.copy(sorted((GOLDEN / "study" / "results").glob("*.parquet"))[0], victim)
    victim.write_bytes(victim.read_bytes()[:200])
    res = run_attnsweep("run", str(study), "--out", str(out), "--resume")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"{victim}: not a readable Parquet file" in res.stderr
    assert not (out / "study.yaml").exists() and not (out / "data").exists()


def test_report_removes_the_temp_folders_of_a_killed_build(golden_copy):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    stale = [golden_copy / f".report-{dead.pid}-abc", golden_copy / f".report-old-{dead.pid}-def"]
    live = golden_copy / f".report-{os.getpid()}-ghi"  # another build still running (this process)
    for folder in (*stale, live):
        (folder / "tables").mkdir(parents=True)
    res = CliRunner().invoke(app, ["report", str(golden_copy), "--no-explain"])
    assert res.exit_code == 0, res.output
    assert not any(f.exists() for f in stale) and live.exists()
    assert sorted(p.name for p in golden_copy.glob(".report-*")) == [live.name]
