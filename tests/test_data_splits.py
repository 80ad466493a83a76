"""Splits: grouped (no lesion/patient in two roles), stratified (class shares as in the pool), the
study's fractions, fixed test/OOD sets never drawn from, disjoint search/repeat seeds, reproducible."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnsweep.data import DataError, DatasetSpec, SplitSpec
from attnsweep.data.adapters import adapter
from attnsweep.data.splits import fold_count, make_splits, split_seed
from test_data_formats import HAM, MEDMNIST, needs_ham, needs_medmnist, write_camelyon


def roles_per_group(records: pd.DataFrame, table: pd.DataFrame) -> pd.Series:
    joined = records.iloc[table["index"]].assign(role=table["role"].to_numpy(), split=table["split"].to_numpy())
    return joined.groupby(["split", "group"])["role"].nunique()


@pytest.mark.slow
@needs_ham
def test_ham10000_ten_splits_grouped_and_stratified():
    """The issue's check on the real metadata: 10 splits, no lesion_id in two roles, every role's
    class shares within 1 percentage point of the pool's."""
    records, _ = adapter("ham10000").read(DatasetSpec(format="ham10000", root=HAM))
    spec = SplitSpec(search_splits=0, repeat_splits=10, val_fraction=0.1, test_fraction=0.2)
    table = make_splits(records, spec, workers=2)
    assert sorted(table["split"].unique()) == sorted(f"repeat-{i}" for i in range(10))
    assert (roles_per_group(records, table) == 1).all()
    pool = records["label"].value_counts(normalize=True)
    for (split, role), rows in table.groupby(["split", "role"]):
        share = records["label"].iloc[rows["index"]].value_counts(normalize=True)
        assert (share.reindex(pool.index, fill_value=0) - pool).abs().max() < 0.01, (split, role)
    sizes = table[table["split"] == "repeat-0"]["role"].value_counts(normalize=True)
    assert abs(sizes["test"] - 0.2) < 0.01 and abs(sizes["val"] - 0.1) < 0.01
    # each split covers the pool exactly once, and the splits differ from each other
    for _, rows in table.groupby("split"):
        assert sorted(rows["index"]) == list(range(len(records)))
    tests = [set(r["index"]) for _, r in table[table["role"] == "test"].groupby("split")]
    assert max(len(a & b) / len(a) for i, a in enumerate(tests) for b in tests[i + 1:]) < 0.35


def synth_records(n=600, seed=0):
    records, _ = adapter("synthderm").read(DatasetSpec(format="synthderm", options={"n": n, "seed": seed}))
    return records


def test_search_and_repeat_seeds_are_disjoint_and_reproducible():
    search = {split_seed(7, f"search-{i}") for i in range(50)}
    repeat = {split_seed(7, f"repeat-{i}") for i in range(50)}
    assert len(search) == len(repeat) == 50 and not search & repeat
    records = synth_records()
    spec = SplitSpec(search_splits=2, repeat_splits=2, seed=7)
    a, b = make_splits(records, spec), make_splits(records, spec)
    pd.testing.assert_frame_equal(a, b)  # the same for every variant and every call
    pd.testing.assert_frame_equal(a, make_splits(records, spec, workers=2))  # and in parallel
    assert not a[a.split == "search-0"]["role"].equals(a[a.split == "repeat-0"]["role"])
    other = make_splits(records, SplitSpec(search_splits=2, repeat_splits=2, seed=8))
    assert not other[other.split == "search-0"]["role"].equals(a[a.split == "search-0"]["role"])


def test_groups_with_many_images_stay_together():
    records = synth_records(900)
    records["group"] = "patient-" + (np.arange(900) // 6).astype(str)  # 6 images per patient
    table = make_splits(records, SplitSpec(search_splits=3, repeat_splits=0))
    assert (roles_per_group(records, table) == 1).all()


def test_fold_count_makes_the_fractions_whole():
    assert fold_count(0.1, 0.2) == 10
    assert fold_count(0.15, 0.15) == 20
    assert fold_count(0.25, 0.0) == 4
    assert fold_count(1 / 3 + 1e-9, 0.1) == 30


@needs_medmnist
def test_official_test_set_is_fixed_and_never_drawn():
    records, _ = adapter("medmnist").read(DatasetSpec(format="medmnist", root=MEDMNIST / "breastmnist.npz"))
    table = make_splits(records, SplitSpec(search_splits=1, repeat_splits=3))
    official_test = set(np.flatnonzero(records["official_split"] == "test"))
    for _, rows in table.groupby("split"):
        assert set(rows.loc[rows.role == "test", "index"]) == official_test
        assert set(rows.loc[rows.role.isin(["train", "val"]), "index"]).isdisjoint(official_test)
        val = (rows.role == "val").sum() / rows.role.isin(["train", "val"]).sum()
        assert abs(val - 0.1) < 0.02  # the validation fraction of the pool


def test_wilds_ood_hospital_is_outside_the_pool(tmp_path):
    root = write_camelyon(tmp_path / "camelyon17_v1.0")
    records, _ = adapter("camelyon17").read(DatasetSpec(format="camelyon17", root=root))
    table = make_splits(records, SplitSpec(search_splits=1, repeat_splits=1, val_fraction=1 / 3,
                                           test_fraction=1 / 3))
    joined = records.iloc[table["index"]].assign(role=table["role"].to_numpy())
    assert set(joined.loc[joined.hospital == "center2", "role"]) == {"ood:center2"}
    assert set(joined.loc[joined.hospital != "center2", "role"]) == {"train", "val", "test"}
    assert (roles_per_group(records, table) == 1).all()


def test_a_pool_too_small_for_the_fractions_is_an_error():
    records = synth_records(12)
    with pytest.raises(DataError, match="too few for 20 folds"):
        make_splits(records, SplitSpec(val_fraction=0.15, test_fraction=0.15))
