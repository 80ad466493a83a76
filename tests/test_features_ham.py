"""The feature-usage analysis on real metadata: a HAM10000 subset (real images, real age / sex /
localization with their gaps), a small CNN trained one epoch by the real trainer, then the
analysis on its test predictions: missing values are dropped and counted, `sex` is one 0/1 column,
`site` one-hot, and every test returns a p-value. (No ground truth: what the model uses is not known.)"""
from __future__ import annotations

import pandas as pd
import pytest
from features_setup import HAM, ham_subset, trained_study

from attnsweep.data import DatasetSpec
from attnsweep.pipelines.report.features import FeatureSettings, analyse_study


@pytest.mark.slow
def test_runs_on_real_metadata_with_gaps_and_categories(tmp_path):
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 not found at {HAM}")
    root = ham_subset(tmp_path / "root", per_class=15)
    spec = DatasetSpec(format="ham10000", root=root, options={"images": ["images/*.jpg"]})
    features = {"columns": ["age", "sex", "site"]}
    out = trained_study(tmp_path / "ham", spec, ["cnn2"], features, epochs=1, test_fraction=0.3)
    rows = analyse_study(out, FeatureSettings(**features))
    test_meta = pd.read_parquet(out / "results").query("eval_set == 'test'")
    assert set(rows["test"]) == {"kci", "rcot", "cmiknn"}
    assert (rows["n"] + rows["n_dropped"] == test_meta["n_samples"].iloc[0]).all()
    by_feature = rows.drop_duplicates("feature").set_index("feature")
    assert by_feature.loc[["age", "sex", "site"], "encoding"].tolist() == ["numeric", "binary", "one_hot"]
    assert rows.groupby("feature")["n_dropped"].first().sum() > 0  # the gaps reached the test set
    assert rows["p_value"].between(0, 1).all()
    assert (out / "features" / "table3.csv").exists()
