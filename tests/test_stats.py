"""Statistics: p-values against scipy, the corrected test against a hand-computed example, Holm
against statsmodels, identical variants never significant, diverged runs excluded and counted; the
Bayesian correlated t-test against a closed form and against baycomp with the same correlation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from attnsweep.pipelines.report.stats import (
    COMPARISON_COLUMNS,
    StatsSettings,
    bayesian_correlated,
    comparisons,
    corrected_resampled,
)


def rows(variant, values, *, backbone=None, eval_set="test", status=None, n_test=200, n_train=800,
         dataset="synth", metric="balanced_accuracy", split_offset=0):
    """Repeat-phase rows of one variant, one per split (only the columns statistics read)."""
    status = status or ["ok"] * len(values)
    return pd.DataFrame({
        "phase": "repeat", "variant": variant, "backbone": backbone or variant.split("+")[0],
        "dataset": dataset, "eval_set": eval_set,
        "split": [f"repeat-{i + split_offset}" for i in range(len(values))],
        "trial_id": [f"{variant}-{i + split_offset}" for i in range(len(values))],
        "status": status, metric: values, "n_samples": n_test, "n_train": n_train,
    })


def test_p_values_equal_scipy_and_diverged_runs_are_excluded():
    rng = np.random.default_rng(0)
    base = 0.75 + 0.02 * rng.standard_normal(10)
    var = 0.73 + 0.02 * rng.standard_normal(10)
    var_status = ["ok"] * 10
    var_status[3] = "diverged"
    var[3] = np.nan
    df = pd.concat([rows("resnet18", base), rows("resnet18+ga", var, status=var_status)])
    t = comparisons(df, StatsSettings())
    assert list(t.columns) == COMPARISON_COLUMNS
    r = t[t.variant == "resnet18+ga"].iloc[0]
    ok = np.delete(var, 3)
    assert r.n == 9 and r.excluded_runs == 1
    assert r["mean"] == pytest.approx(ok.mean(), abs=1e-15)
    assert r["std"] == pytest.approx(ok.std(ddof=1), abs=1e-15)
    assert r["diff"] == pytest.approx(ok.mean() - base.mean(), abs=1e-15)
    assert abs(r.p_welch - sps.ttest_ind(ok, base, equal_var=False).pvalue) < 1e-12
    # paired on the 9 splits both have
    assert abs(r.p_paired - sps.ttest_rel(ok, np.delete(base, 3)).pvalue) < 1e-12
    pooled = np.sqrt((8 * ok.var(ddof=1) + 9 * base.var(ddof=1)) / 17)
    g = (ok.mean() - base.mean()) / pooled * (1 - 3 / (4 * 19 - 9))
    assert r.hedges_g == pytest.approx(g, rel=1e-12)
    # the baseline row: summary only
    b = t[t.variant == "resnet18"].iloc[0]
    assert b.baseline == "resnet18" and b.n == 10 and np.isnan(b.p_corrected) and not b.significant


def test_corrected_resampled_ttest_hand_computed():
    # d = [.02, .02, -.01, .04, .02]: mean .018, var(ddof=1) 320e-6; n_test/n_train = 200/800.
    # se = sqrt((1/5 + 1/4) * 320e-6) = .012, t = 1.5, df = 4.
    # Student t, 4 df: F(t) = 1/2 + 3/8 * u * (1 - t^2 / (12 (1 + t^2/4))), u = t / sqrt(1 + t^2/4)
    # -> u = 1.2, F = 0.5 + 0.375 * 1.2 * 0.88 = 0.896, p = 2 * (1 - F) = 0.208.
    a = np.array([0.80, 0.82, 0.79, 0.85, 0.81])
    b = np.array([0.78, 0.80, 0.80, 0.81, 0.79])
    p, lo, hi = corrected_resampled(a, b, 200 / 800, alpha=0.05)
    assert p == pytest.approx(0.208, abs=1e-12)
    t975 = sps.t.ppf(0.975, 4)
    assert (lo, hi) == pytest.approx((0.018 - t975 * 0.012, 0.018 + t975 * 0.012), abs=1e-12)
    # through the table: n_samples / n_train come from the rows
    df = pd.concat([rows("resnet18", b), rows("resnet18+ga", a)])
    r = comparisons(df, StatsSettings()).set_index("variant").loc["resnet18+ga"]
    assert r.p_corrected == pytest.approx(0.208, abs=1e-12)
    # the correction only widens: the plain paired test is more confident on the same data
    assert r.p_paired < r.p_corrected
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), abs=1e-12)


def _t4_cdf(t):
    """Student t with 4 degrees of freedom, closed form (no scipy)."""
    u = t / np.sqrt(1 + t * t / 4)
    return 0.5 + 3 / 8 * u * (1 - t * t / (12 * (1 + t * t / 4)))


def test_bayesian_correlated_ttest_closed_form():
    # the hand example above: posterior t(4 df, location .018, scale .012); ROPE +-0.01
    a = np.array([0.80, 0.82, 0.79, 0.85, 0.81])
    b = np.array([0.78, 0.80, 0.80, 0.81, 0.79])
    r = bayesian_correlated(a, b, 200 / 800, rope=0.01)
    better = 1 - _t4_cdf((0.01 - 0.018) / 0.012)
    worse = _t4_cdf((-0.01 - 0.018) / 0.012)
    assert r["prob_better"] == pytest.approx(better, abs=1e-12)  # 0.7293
    assert r["prob_worse"] == pytest.approx(worse, abs=1e-12)  # 0.0400
    assert r["prob_equivalent"] == pytest.approx(1 - better - worse, abs=1e-12)
    assert (r["posterior_mean"], r["posterior_scale"], r["posterior_df"]) == pytest.approx((0.018, 0.012, 4))
    assert r["bayes_decision"] == "inconclusive"
    # the ROPE comes from the study, per metric, through the table
    df = pd.concat([rows("resnet18", b), rows("resnet18+ga", a)])
    s = StatsSettings(rope={"balanced_accuracy": 0.03})
    got = comparisons(df, s).set_index("variant").loc["resnet18+ga"]
    assert got.rope == 0.03 and got.prob_better == pytest.approx(1 - _t4_cdf((0.03 - 0.018) / 0.012), abs=1e-12)
    # without a ROPE: two outcomes only
    r0 = bayesian_correlated(a, b, 200 / 800, rope=0.0)
    assert r0["prob_equivalent"] == 0 and r0["prob_better"] == pytest.approx(_t4_cdf(1.5), abs=1e-12)


def test_bayesian_correlated_ttest_equals_baycomp_with_the_same_correlation():
    """baycomp's CorrelatedTTest sets rho = 1/k for `runs` x k-fold CV (n = runs * k scores), so
    its variance factor 1/(k - 1) equals n_test/n_train = 200/800 when k = 5: 10 scores, runs = 2."""
    import baycomp

    rng = np.random.default_rng(7)
    base = 0.75 + 0.02 * rng.standard_normal(10)
    for shift, rope in [(0.004, 0.01), (0.03, 0.01), (-0.02, 0.005), (0.0, 0.02)]:
        var = base + shift + 0.01 * rng.standard_normal(10)
        df = pd.concat([rows("resnet18", base), rows("resnet18+ga", var)])
        got = comparisons(df, StatsSettings(rope=rope)).set_index("variant").loc["resnet18+ga"]
        left, equal, right = baycomp.CorrelatedTTest.probs(base, var, rope=rope, runs=2)  # diff = var - base
        assert (got.prob_worse, got.prob_equivalent, got.prob_better) == pytest.approx((left, equal, right),
                                                                                      abs=1e-12)


def test_identical_variant_is_practically_equivalent():
    values = np.array([0.7, 0.72, 0.69, 0.71, 0.7])
    t = comparisons(pd.concat([rows("resnet18", values), rows("resnet18+ga", values.copy())]), StatsSettings())
    r = t.set_index("variant").loc["resnet18+ga"]
    assert (r.prob_better, r.prob_equivalent, r.prob_worse) == (0.0, 1.0, 0.0)
    assert r.bayes_decision == "equivalent"
    base = t.set_index("variant").loc["resnet18"]
    assert np.isnan(base.prob_better) and base.bayes_decision == ""


def _table(settings):
    rng = np.random.default_rng(1)
    base_r = 0.75 + 0.01 * rng.standard_normal(10)
    base_e = 0.80 + 0.01 * rng.standard_normal(10)
    parts = [rows("resnet18", base_r), rows("efficientnet_b0", base_e)]
    for k, shift in enumerate([0.0, -0.02, 0.015, -0.005]):
        parts.append(rows(f"resnet18+m{k}", base_r + shift + 0.008 * rng.standard_normal(10)))
        parts.append(rows(f"efficientnet_b0+m{k}", base_e - shift + 0.008 * rng.standard_normal(10)))
    for eval_set in ("test", "ood:shifted"):
        for p in parts:
            p = p.copy()
            p["eval_set"] = eval_set
            p["auc_roc"] = p["balanced_accuracy"] + 0.1
            yield p


def test_holm_matches_statsmodels_per_table():
    s = StatsSettings(metrics=["balanced_accuracy", "auc_roc"])
    t = comparisons(pd.concat(_table(s)), s)
    assert len(t) == 2 * 2 * 10  # metrics x eval sets x variants
    for _metric, fam in t.groupby("metric"):
        tested = fam[fam.variant != fam.baseline]
        assert len(tested) == 16
        expect = multipletests(tested.p_corrected, method="holm")[1]
        np.testing.assert_allclose(tested.p_holm, expect, rtol=0, atol=1e-15)
        assert (tested.significant == (expect < 0.05)).all()
    assert t.significant.any() and not t.significant.all()


def test_significance_follows_the_setting():
    welch = StatsSettings(significance="welch", correction="none", alpha=0.01)
    t = comparisons(pd.concat(_table(welch)), welch)
    assert (t.significant == (t.p_welch < 0.01)).all()
    rng = np.random.default_rng(3)
    base = 0.7 + 0.02 * rng.standard_normal(10)
    shifted = base + 0.01 + 0.001 * rng.standard_normal(10)
    df = pd.concat([rows("resnet18", base), rows("resnet18+ga", shifted)])
    # a small consistent shift: the paired test sees it, Welch's does not
    r = {sig: comparisons(df, StatsSettings(significance=sig)).iloc[1] for sig in ("paired", "welch")}
    assert r["paired"].significant and not r["welch"].significant
    # the CI is the deciding test's
    ci = sps.ttest_rel(shifted, base).confidence_interval()
    assert (r["paired"].ci_low, r["paired"].ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    ci = sps.ttest_ind(shifted, base, equal_var=False).confidence_interval()
    assert (r["welch"].ci_low, r["welch"].ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)


@pytest.mark.parametrize("values", [
    np.linspace(0.6, 0.8, 10),  # spread
    np.full(10, 0.7),  # no spread at all
    np.array([0.7, 0.7, 0.7, 0.71, 0.7, 0.7, 0.69, 0.7, 0.7, 0.7]),
])
def test_identical_variant_is_never_significant(values):
    df = pd.concat([rows("resnet18", values), rows("resnet18+ga", values.copy())])
    for sig in ("corrected", "welch", "paired"):
        for corr in ("holm", "none"):
            r = comparisons(df, StatsSettings(significance=sig, correction=corr)).iloc[1]
            assert not r.significant
            assert r.p_welch == r.p_paired == r.p_corrected == 1.0
            assert r["diff"] == 0.0


def test_missing_baseline_and_overrides():
    df = pd.concat([rows("vit_tiny_patch16_224", [0.6, 0.62, 0.61]), rows("resnet18+ga", [0.7, 0.71, 0.69])])
    t = comparisons(df, StatsSettings(), variant_order=["resnet18+ga", "vit_tiny_patch16_224"])
    assert list(t.variant) == ["resnet18+ga", "vit_tiny_patch16_224"]  # the study's order
    ga = t.iloc[0]
    assert ga.baseline == "resnet18" and np.isnan(ga.p_welch) and not ga.significant
    over = comparisons(df, StatsSettings(baselines={"resnet18+ga": "vit_tiny_patch16_224"}))
    assert over.set_index("variant").loc["resnet18+ga"].p_welch < 0.05
    with pytest.raises(ValueError, match="stats.baselines: 'resnet18\\+ga' -> 'resnet50'"):
        comparisons(df, StatsSettings(baselines={"resnet18+ga": "resnet50"}))


def test_diverged_run_without_rows_for_the_set_is_counted():
    base = rows("resnet18", [0.7, 0.72, 0.71, 0.69])
    var = rows("resnet18+ga", [0.7, 0.73, 0.7])
    lost = rows("resnet18+ga", [np.nan], status=["diverged"], eval_set="val", split_offset=3)
    t = comparisons(pd.concat([base, var, lost]), StatsSettings())
    r = t.set_index("variant").loc["resnet18+ga"]
    assert r.n == 3 and r.excluded_runs == 1


def test_settings_reject_bad_values():
    with pytest.raises(ValidationError, match="significance"):
        StatsSettings(significance="bonferroni")
    with pytest.raises(ValidationError, match="metric"):
        StatsSettings.model_validate({"metrics": ["f1"]})
    with pytest.raises(ValidationError, match="alpah"):
        StatsSettings.model_validate({"alpah": 0.1})
    with pytest.raises(ValidationError, match="auc_roc: a ROPE half-width in \\[0, 1\\) of the metric, got 2"):
        StatsSettings.model_validate({"rope": {"auc_roc": 2}})
    with pytest.raises(ValidationError, match="rope"):
        StatsSettings.model_validate({"rope": {"f1": 0.01}})
    s = StatsSettings.model_validate({"rope": {"auc_roc": 0.02}})
    assert (s.rope_for("auc_roc"), s.rope_for("balanced_accuracy")) == (0.02, 0.01)
