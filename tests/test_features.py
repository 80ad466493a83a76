"""The feature-usage analysis on synthetic predictions, where the truth is exact: Y_hat is built
from the label Y (and, for a used feature, from F too), so H0 "F independent of Y_hat given Y"
holds or fails by construction. The real tests of causal-learn and tigramite run on them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from attnsweep.pipelines.config.feature_settings import ALL_TESTS
from attnsweep.pipelines.report import ci_tests
from attnsweep.pipelines.report.features import (
    FeatureSettings,
    encode_feature,
    encode_prediction,
    feature_usage,
    majority,
)

C = 3
TESTS = [t for t in ALL_TESTS if t not in ci_tests.unavailable(ALL_TESTS)]
DEMO_TEST_SET = 80  # studies/demo.yaml: 400 images, test_fraction 0.2


def synthetic(n: int, seed: int, dependence: float = 0.0, label_tied: bool = True):
    f, probs, y = ci_tests.synthetic_predictions(n, seed, dependence, label_tied, C)
    return pd.Series(f, name="f"), probs, y


def test_the_three_tests_are_installed():
    # causal-learn is a dependency; tigramite comes with the `features` extra (installed here)
    assert TESTS == ["kci", "rcot", "cmiknn"], ci_tests.unavailable(ALL_TESTS)


@pytest.mark.parametrize("label_tied", [False, True], ids=["random column", "label-tied column"])
def test_an_unused_feature_is_rejected_at_about_the_nominal_rate(label_tied):
    """Fast version of bench/feature_usage.py (100 draws): 5 draws at alpha 0.01, where a test
    rejecting twice or more would have probability 0.001 if calibrated."""
    settings = FeatureSettings(columns=["f"])
    rejections = {t: 0 for t in TESTS}
    for seed in range(5):
        for r in feature_usage(*synthetic(150, seed, label_tied=label_tied), C, settings):
            assert r["n"] == 150 and r["n_dropped"] == 0 and r["note"] == ""
            rejections[r["test"]] += r["rejected"]
    assert all(k <= 1 for k in rejections.values()), rejections


def test_conditioning_on_the_label_is_what_makes_the_label_tied_column_unused():
    """The same data without the condition: the feature and the prediction are dependent
    (through the label), so every test rejects; the conditional tests above do not."""
    f, probs, y = synthetic(200, 0, label_tied=True)
    z = np.random.default_rng(1).normal(size=(200, 1))  # an unrelated condition
    for test in TESTS:
        assert ci_tests.ci_test(test, f.to_numpy()[:, None], probs, z).p_value < 0.01, test


@pytest.mark.parametrize("prediction, dependence", [("softmax", 1.5), ("class", 3.0)])
def test_a_feature_the_prediction_depends_on_is_detected_at_the_demo_size(prediction, dependence):
    settings = FeatureSettings(columns=["f"], prediction=prediction)
    for seed in range(3):
        rows = pd.DataFrame(feature_usage(*synthetic(DEMO_TEST_SET, seed, dependence), C, settings))
        assert rows["rejected"].all(), rows[["test", "p_value"]].to_dict("records")
        assert majority(rows)


def test_class_predictions_are_one_hot_of_the_argmax():
    probs = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    assert (encode_prediction(probs, "class") == [[0, 1, 0], [1, 0, 0]]).all()
    assert (encode_prediction(probs, "softmax") == probs).all()


def test_majority_of_the_tests_that_ran():
    def rows(*ps):
        p = pd.Series(ps, dtype=float)
        return pd.DataFrame({"p_value": p, "rejected": p < 0.01})

    assert majority(rows(0.001, 0.002, 0.5)) and not majority(rows(0.001, 0.5, 0.5))
    assert not majority(rows(0.001, 0.5)) and majority(rows(0.001, 0.002))  # of two: both
    assert majority(rows(0.001, 0.002, np.nan)) and not majority(rows(np.nan, np.nan, np.nan))


def test_missing_values_are_dropped_and_counted():
    s = pd.Series([30.0, np.nan, 45.0, 50.0, np.nan], name="age")
    enc = encode_feature(s)
    assert enc.encoding == "numeric" and enc.values.ravel().tolist() == [30.0, 45.0, 50.0]
    assert enc.kept.tolist() == [True, False, True, True, False]
    sex = encode_feature(pd.Series(["male", "unknown", "female", "", "male"]))
    assert sex.encoding == "binary" and sex.values.ravel().tolist() == [1.0, 0.0, 1.0]
    assert sex.kept.sum() == 3


def test_categorical_columns_one_hot_or_ordinal():
    site = pd.Series(["back", "face", "trunk", "face", "unknown"])
    one_hot = encode_feature(site)
    assert one_hot.encoding == "one_hot" and one_hot.values.shape == (4, 3)
    assert (one_hot.values.sum(1) == 1).all()
    ordinal = encode_feature(pd.Series(pd.Categorical(["low", "high", "mid"], ["low", "mid", "high"], ordered=True)),
                             "ordinal")
    assert ordinal.encoding == "ordinal" and ordinal.values.ravel().tolist() == [0.0, 2.0, 1.0]
    assert encode_feature(pd.Series([True, False, True])).encoding == "binary"


def test_a_categorical_feature_with_missing_values_runs_every_test():
    rng = np.random.default_rng(0)
    _, probs, y = synthetic(150, 0)
    site = pd.Series(rng.choice(["back", "face", "trunk", "unknown", None], 150), name="site")
    rows = feature_usage(site, probs, y, C, FeatureSettings(columns=["site"]))
    assert [r["test"] for r in rows] == TESTS
    assert all(r["n"] + r["n_dropped"] == 150 and r["n_dropped"] > 0 and 0 <= r["p_value"] <= 1 for r in rows)


def test_constant_feature_and_subsampling_are_noted():
    f, probs, y = synthetic(120, 0)
    rows = feature_usage(pd.Series(np.ones(120), name="c"), probs, y, C, FeatureSettings(columns=["c"], tests=["rcot"]))
    assert np.isnan(rows[0]["p_value"]) and not rows[0]["rejected"] and rows[0]["note"] == "the feature is constant"
    rows = feature_usage(f, probs, y, C, FeatureSettings(columns=["f"], tests=["rcot"], max_samples=50))
    assert rows[0]["n"] == 50 and rows[0]["note"] == "random subset of 50 of 120"


def test_results_are_reproducible():
    data = synthetic(100, 3, dependence=0.5)
    s = FeatureSettings(columns=["f"])
    assert feature_usage(*data, C, s) == feature_usage(*data, C, s)


def test_a_missing_library_leaves_its_test_out(monkeypatch):
    monkeypatch.setitem(ci_tests._MODULE, "cmiknn", "tigramite_not_installed.cmiknn")
    missing = ci_tests.unavailable(ALL_TESTS)
    assert list(missing) == ["cmiknn"] and "pip install attnsweep[features]" in missing["cmiknn"]


def test_settings_are_validated():
    with pytest.raises(ValidationError, match="tests"):
        FeatureSettings(columns=["age"], tests=["chsic"])
    with pytest.raises(ValidationError, match="listed twice"):
        FeatureSettings(columns=["age", "age"])
    with pytest.raises(ValidationError, match="alpha"):
        FeatureSettings(columns=["age"], alpha=1.5)
