"""prepare / load_split / make_dataset: what a trial reads, reuse on resume, detection of a changed
dataset, cache invalidation, a data dir that still loads after a copy, reproducible augmentation."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import time

import numpy as np
import pytest

from attnsweep.data import DataError, DatasetSpec, SplitSpec, load_split, prepare
from attnsweep.data.cache import build, is_current
from test_data_formats import MEDMNIST, copy_ham_sample, needs_ham, needs_medmnist

SYNTH = DatasetSpec(format="synthderm", options={"n": 300, "seed": 1})
SHIFTED = DatasetSpec(format="synthderm", options={"n": 60, "ood": True})
SPLITS = SplitSpec(search_splits=2, repeat_splits=2)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return prepare(SYNTH, SPLITS, 32, out, ood={"shifted": SHIFTED}, workers=1)


def files_with_mtimes(data_dir):
    return {p: p.stat().st_mtime_ns for p in data_dir.rglob("*") if p.is_file()}


def test_load_split_sets_labels_and_normalisation(prepared):
    split = load_split(prepared, "search-1")
    assert split.class_names == ["nevus", "melanoma", "other"] and split.image_size == 32
    assert list(split.sets) == ["train", "val", "test", "ood:shifted"]
    assert [len(split.sets[k]) for k in ("train", "val", "test")] == [210, 30, 60]
    assert split.sets["ood:shifted"].images.shape == (60, 32, 32, 3)
    from attnsweep.data import synthderm

    train = split.sets["train"]
    truth = np.concatenate(list(synthderm.render(0, 300, 32, seed=1)))
    idx = train.meta["image"].to_numpy()
    np.testing.assert_array_equal(np.asarray(train.images), truth[idx])  # the cache holds these images
    names = np.array(split.class_names)
    assert (names[train.labels] == train.meta["label"]).all()
    x = np.asarray(train.images).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(split.mean, x.mean(0), atol=1e-6)  # the training set's own statistics
    np.testing.assert_allclose(split.std, x.std(0), atol=1e-6)
    assert load_split(prepared, "search-0").mean != split.mean  # per split, not per dataset
    assert (split.sets["ood:shifted"].meta["blur"] > 0).all()  # metadata (features) travel with the set


def test_prepare_again_reuses_everything(prepared):
    before = files_with_mtimes(prepared)
    t0 = time.perf_counter()
    assert prepare(SYNTH, SPLITS, 32, prepared.parent, ood={"shifted": SHIFTED}) == prepared
    assert time.perf_counter() - t0 < 5
    assert files_with_mtimes(prepared) == before  # nothing rewritten


def test_another_size_adds_a_cache(tmp_path):
    out = tmp_path / "s"
    prepare(SYNTH, SPLITS, 32, out, workers=1)
    prepare(SYNTH, SPLITS, 48, out, workers=1)
    assert load_split(out / "data", "repeat-0").sets["train"].images.shape[1:] == (48, 48, 3)
    assert sorted(p.name for p in (out / "data" / "cache").glob("*.npy") if ".stats" not in p.name) == [
        "dataset-32.npy", "dataset-48.npy"]


def test_a_different_request_in_the_same_dir_is_refused(prepared):
    with pytest.raises(DataError, match="different splits"):
        prepare(SYNTH, SplitSpec(search_splits=3, repeat_splits=2), 32, prepared.parent, ood={"shifted": SHIFTED})
    with pytest.raises(DataError, match="different datasets"):
        prepare(SYNTH, SPLITS, 32, prepared.parent)


@needs_ham
def test_a_changed_dataset_is_detected(tmp_path):
    root = copy_ham_sample(tmp_path / "ham")
    spec = DatasetSpec(format="ham10000", root=root)
    splits = SplitSpec(search_splits=1, repeat_splits=1, val_fraction=0.2, test_fraction=0.2)
    data_dir = prepare(spec, splits, 24, tmp_path / "study", workers=1)
    victim = next(root.glob("*/*.jpg"))
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))  # touched
    with pytest.raises(DataError, match="dataset changed since its splits were written"):
        prepare(spec, splits, 24, tmp_path / "study", workers=1)
    # the cache on its own: invalidated by the same fingerprint change, rebuilt on request
    cache = data_dir / "cache" / "dataset-24.npy"
    fingerprint = json.loads(cache.with_suffix(".json").read_text())["fingerprint"]
    assert is_current(cache, fingerprint, 24, 35) and not is_current(cache, "other", 24, 35)


def test_cache_rebuilds_when_its_source_changes(tmp_path):
    from attnsweep.data.adapters import adapter

    records, _ = adapter("synthderm").read(SYNTH)
    path = tmp_path / "c.npy"
    assert build(SYNTH, records, 28, path, "fp-1", workers=1)
    assert not build(SYNTH, records, 28, path, "fp-1", workers=1)  # current: kept
    assert build(SYNTH, records, 28, path, "fp-2", workers=1)  # source changed: rebuilt
    assert np.load(path, mmap_mode="r").shape == (300, 28, 28, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.npy", "c.stats.npy"]  # no temp files


def test_copied_data_dir_still_loads(prepared, tmp_path):
    scratch = tmp_path / "node-local" / "data"
    shutil.copytree(prepared, scratch)
    a, b = load_split(prepared, "repeat-1"), load_split(scratch, "repeat-1")
    assert str(b.sets["train"].images.path).startswith(str(scratch))
    np.testing.assert_array_equal(np.asarray(a.sets["test"].images), np.asarray(b.sets["test"].images))


def test_image_view_pickles_by_reference(prepared):
    images = load_split(prepared, "search-0").sets["train"].images
    blob = pickle.dumps(images)
    assert len(blob) < 10_000  # the path and the index, not the pixels
    np.testing.assert_array_equal(pickle.loads(blob)[5], images[5])


def test_load_split_errors(prepared, tmp_path):
    with pytest.raises(DataError, match="unknown split"):
        load_split(prepared, "repeat-9")
    with pytest.raises(DataError, match="not a prepared data dir"):
        load_split(tmp_path, "search-0")
    copy = tmp_path / "study" / "data"
    shutil.copytree(prepared, copy)
    table = copy / "splits.parquet"
    table.write_bytes(table.read_bytes().replace(b"repeat-1", b"repeat-2"))  # a hand-edited manifest
    with pytest.raises(DataError, match="modified since it was written"):
        load_split(copy, "search-0")
    with pytest.raises(DataError, match="modified since it was written"):
        prepare(SYNTH, SPLITS, 32, tmp_path / "study", ood={"shifted": SHIFTED})


def test_real_ham10000_prepare_full(tmp_path):
    """All 10,015 real images decoded once in parallel; splits grouped by lesion; resume is instant."""
    from test_data_formats import HAM

    spec = DatasetSpec(format="ham10000", root=HAM)
    splits = SplitSpec(search_splits=1, repeat_splits=1)
    data_dir = prepare(spec, splits, 32, tmp_path, workers=2)
    assert np.load(data_dir / "cache" / "dataset-32.npy", mmap_mode="r").shape == (10015, 32, 32, 3)
    split = load_split(data_dir, "repeat-0")
    assert sum(len(s) for s in split.sets.values()) == 10015
    lesions = [set(s.meta["lesion"]) for s in split.sets.values()]
    assert not (lesions[0] & lesions[1] or lesions[0] & lesions[2] or lesions[1] & lesions[2])
    assert 0.5 < split.mean[0] < 0.9 and split.mean[0] > split.mean[2]  # skin: red > blue
    t0 = time.perf_counter()
    prepare(spec, splits, 32, tmp_path, workers=2)
    assert time.perf_counter() - t0 < 10


@needs_medmnist
def test_medmnist_official_split_is_every_split(tmp_path):
    """`official_split`: every split trains, selects and tests on MedMNIST's own sets; the default
    (`official_test` only) redraws val from train + val."""
    spec = DatasetSpec(format="medmnist", root=str(MEDMNIST / "breastmnist.npz"), options={"official_split": True})
    official = prepare(spec, SplitSpec(search_splits=1, repeat_splits=2), 28, tmp_path / "official", workers=1)
    redrawn = prepare(DatasetSpec(format="medmnist", root=str(MEDMNIST / "breastmnist.npz")),
                      SplitSpec(search_splits=1, repeat_splits=2), 28, tmp_path / "redrawn", workers=1)
    for name in ("search-0", "repeat-0", "repeat-1"):
        sets = load_split(official, name).sets
        for role, n in (("train", 546), ("val", 78), ("test", 156)):
            assert len(sets[role]) == n and set(sets[role].meta["official_split"]) == {role}, (name, role)
        val = load_split(redrawn, name).sets["val"].meta
        assert (val["official_split"] == "val").sum() < 78  # drawn from train + val
