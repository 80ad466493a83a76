"""`attnsweep data check`: every bad input gives exit code 2 and one line naming the file, the row
(or key) and the value; a clean dataset gives exit 0 and its counts. `prepare` on a bad input
writes nothing."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from attnsweep.data import DataError, DatasetSpec, SplitSpec, prepare
from attnsweep.pipelines.cli import app
from test_data_formats import (HAM, MEDMNIST, copy_ham_sample, needs_ham, needs_medmnist, write_camelyon,
                               write_cifar, write_imagefolder, write_isic, write_pad)


def check(*args: str):
    return CliRunner().invoke(app, ["data", "check", *map(str, args), "--workers", "1"])


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def edit_csv(path, line: int, column: str, value: str) -> str:
    """Set one field of a CSV (line numbers as in an editor: the header is line 1); returns the old value."""
    rows = [r.split(",") for r in path.read_text().splitlines()]
    j = rows[0].index(column)
    old, rows[line - 1][j] = rows[line - 1][j], value
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return old


@pytest.fixture
def ham(tmp_path):
    if not (HAM / "sample").is_dir():
        pytest.skip(f"real HAM10000 sample not found at {HAM / 'sample'}")
    return copy_ham_sample(tmp_path / "ham")


def test_clean_dataset_passes_with_counts(ham):
    result = check("ham10000", ham)
    assert result.exit_code == 0, result.output
    assert "ok: 35 images, 34 groups, 7 classes, all decoded" in result.stdout
    assert "mel" in result.stdout and "vasc" in result.stdout


def test_corrupt_image(ham):
    victim = next((ham / "HAM10000_images_part_1").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:300])  # truncated JPEG
    line = assert_one_line_error(check("ham10000", ham), victim.name, "cannot decode image", "metadata row")
    row = int(line.split("metadata row ")[1].split(")")[0])
    assert victim.stem in (ham / "HAM10000_metadata.csv").read_text().splitlines()[row - 1]
    garbage = next((ham / "HAM10000_images_part_2").glob("*.jpg"))
    garbage.write_bytes(b"not an image at all")
    assert_one_line_error(check("ham10000", ham), "cannot decode image")


def test_image_listed_but_missing(ham):
    csv = ham / "HAM10000_metadata.csv"
    image_id = csv.read_text().splitlines()[4].split(",")[1]
    next(ham.glob(f"*/{image_id}.jpg")).unlink()
    assert_one_line_error(check("ham10000", ham), "HAM10000_metadata.csv:5:", "missing", repr(image_id))


def test_unknown_label_value(ham):
    csv = ham / "HAM10000_metadata.csv"
    edit_csv(csv, 7, "dx", "keratosis")
    assert_one_line_error(check("ham10000", ham), "HAM10000_metadata.csv:7:", "unknown label", "'keratosis'")


def test_csv_without_a_required_column(ham):
    csv = ham / "HAM10000_metadata.csv"
    edit_csv(csv, 1, "dx", "diagnosis")
    assert_one_line_error(check("ham10000", ham), "HAM10000_metadata.csv:1:", "missing required column", "'dx'")


def test_class_empty_after_mapping(ham):
    csv = ham / "HAM10000_metadata.csv"
    rows = csv.read_text().splitlines()
    csv.write_text("\n".join(r for r in rows if ",df," not in r) + "\n")
    assert_one_line_error(check("ham10000", ham), "HAM10000_metadata.csv", "no images after mapping", "'df'")


def test_image_path_that_escapes_the_root(ham, tmp_path):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(next(ham.glob("*/*.jpg")).read_bytes())
    csv = ham / "HAM10000_metadata.csv"
    edit_csv(csv, 3, "image_id", "../../outside")
    assert_one_line_error(check("ham10000", ham), "HAM10000_metadata.csv:3:", "escapes the dataset root",
                          "'../../outside'")
    # a symlinked image that points out of the root is caught too
    root = write_imagefolder(tmp_path / "folder")
    (root / "normal" / "person9_link.jpeg").symlink_to(outside)
    assert_one_line_error(check("imagefolder", root), "escapes the dataset root", "person9_link.jpeg")


@needs_medmnist
def test_mismatched_npz_keys(tmp_path):
    with np.load(MEDMNIST / "breastmnist.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "breastmnist.npz", **{k: v for k, v in arrays.items() if k != "val_labels"})
    assert_one_line_error(check("medmnist", tmp_path / "breastmnist.npz"), "breastmnist.npz:val_labels:",
                          "missing key")
    arrays["test_labels"] = arrays["test_labels"][:-3]
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    assert_one_line_error(check("medmnist", tmp_path / "breastmnist.npz"), "breastmnist.npz:test_labels:",
                          "153 entries", "156", "(value 153)")


def test_bad_inputs_in_the_other_formats(tmp_path):
    root = write_camelyon(tmp_path / "camelyon17_v1.0")
    edit_csv(root / "metadata.csv", 4, "x_coord", "../3328")
    assert_one_line_error(check("camelyon17", root), "metadata.csv:4:", "x_coord", "'../3328'")
    root = write_isic(tmp_path / "isic")
    edit_csv(root / "metadata.csv", 2, "diagnosis", "naevus")
    assert_one_line_error(check("isic", root), "metadata.csv:2:", "unknown label", "'naevus'")
    root = write_pad(tmp_path / "pad")
    next((root / "images").rglob("PAT_1_102_2.png")).unlink()  # data line 3 of the CSV
    assert_one_line_error(check("pad_ufes_20", root), "metadata.csv:4:", "missing", "'PAT_1_102_2.png'")
    root = write_cifar(tmp_path / "cifar-10-batches-py")
    (root / "test_batch").unlink()
    assert_one_line_error(check("cifar10", root), "test_batch", "not found")
    assert_one_line_error(check("imagefolder", tmp_path / "nowhere"), "nowhere", "not found")
    assert_one_line_error(check("ham10001", tmp_path), "unknown format", "'ham10001'")


def test_bad_option_is_one_line(tmp_path):
    root = write_camelyon(tmp_path / "camelyon17_v1.0")
    assert_one_line_error(check("camelyon17", root, "-o", "ood_centers=[0]"), "overlap")
    assert check("camelyon17", root, "-o", "ood_centers=[1, 2]").exit_code == 0


def test_prepare_on_bad_input_writes_nothing(ham, tmp_path):
    victim = sorted((ham / "HAM10000_images_part_2").glob("*.jpg"))[-1]
    victim.write_bytes(victim.read_bytes()[:500])
    out = tmp_path / "study"
    spec = DatasetSpec(format="ham10000", root=ham)
    with pytest.raises(DataError, match=victim.name):
        prepare(spec, SplitSpec(search_splits=1, repeat_splits=0, val_fraction=0.2, test_fraction=0.2), 32, out,
                workers=2)
    left = [p for p in out.rglob("*") if p.is_file()]
    assert left == [], left  # no manifest, no split files, no cache, no temp files


@needs_ham
def test_real_ham10000_passes_through_the_installed_command():
    """The issue's acceptance check, as a user runs it: a separate process, the process pool."""
    env = {**os.environ, "COLUMNS": "120"}
    out = subprocess.run([sys.executable, "-m", "attnsweep.pipelines.cli", "data", "check", "ham10000", str(HAM)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "ok: 10015 images, 7470 groups, 7 classes, all decoded" in out.stdout
