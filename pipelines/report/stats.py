"""Statistics over the repeat phase: each variant against its baseline, per dataset, evaluated set
and metric (mean +- std, Welch / paired / corrected resampled t-tests, Holm, Hedges' g, CI, and the
Bayesian correlated t-test's probabilities of better / practically equivalent / worse).

Reads result rows (the `<out>/results/` schema), nothing else. The settings (`stats:` of a study)
are `config.stats_settings.StatsSettings`."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.meta_analysis import effectsize_smd
from statsmodels.stats.multitest import multipletests

from attnsweep.pipelines.config.stats_settings import StatsSettings

TEST_NAMES = {
    "corrected": "Nadeau-Bengio corrected resampled t-test",
    "welch": "Welch's t-test",
    "paired": "paired t-test",
}

COMPARISON_COLUMNS = [
    "dataset", "eval_set", "metric", "variant", "baseline", "n", "mean", "std", "baseline_mean",
    "baseline_std", "diff", "p_welch", "p_paired", "p_corrected", "p_holm", "rope", "prob_better",
    "prob_equivalent", "prob_worse", "bayes_decision", "hedges_g", "ci_low", "ci_high", "significant",
    "excluded_runs", "posterior_mean", "posterior_scale", "posterior_df",
]
# Benavoli et al. (2017): a probability of at least this decides (better / equivalent / worse).
DECISION_PROB = 0.95
BAYES_COLUMNS = ["rope", "prob_better", "prob_equivalent", "prob_worse", "bayes_decision", "posterior_mean",
                 "posterior_scale", "posterior_df"]


def _no_difference(a: np.ndarray, b: np.ndarray) -> bool:
    """Both samples constant and equal: t is 0/0 (scipy gives nan); there is no evidence of a
    difference, so p = 1 (an identical variant must never come out significant)."""
    return np.ptp(a) == 0 and np.ptp(b) == 0 and a[0] == b[0]


def welch(a: np.ndarray, b: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Welch's t-test as paper 002 uses it -> (p, ci_low, ci_high) of mean(a) - mean(b)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    if _no_difference(a, b):
        return 1.0, 0.0, 0.0
    res = sps.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(1 - alpha)
    return float(res.pvalue), float(ci.low), float(ci.high)


def paired(a: np.ndarray, b: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Paired t-test on the splits both samples share (aligned a[i] <-> b[i])."""
    if len(a) < 2:
        return math.nan, math.nan, math.nan
    if np.all(a == b):
        return 1.0, 0.0, 0.0
    res = sps.ttest_rel(a, b)
    ci = res.confidence_interval(1 - alpha)
    return float(res.pvalue), float(ci.low), float(ci.high)


def corrected_resampled(
    a: np.ndarray, b: np.ndarray, test_train_ratio: float, alpha: float
) -> tuple[float, float, float]:
    """Nadeau & Bengio (2003) corrected resampled t-test on paired differences d = a - b over J
    random splits: t = mean(d) / sqrt((1/J + n_test/n_train) * var(d, ddof=1)), df = J - 1.
    Random splits share training data, so the plain paired test underestimates the variance.
    Written by hand: neither scipy nor statsmodels has it."""
    d = np.asarray(a, float) - np.asarray(b, float)
    j = len(d)
    if j < 2:
        return math.nan, math.nan, math.nan
    if np.all(d == 0):
        return 1.0, 0.0, 0.0
    se = math.sqrt((1.0 / j + test_train_ratio) * d.var(ddof=1))
    mean = float(d.mean())
    if se == 0:  # a constant non-zero difference: as scipy does for the paired test
        return 0.0, mean, mean
    t = mean / se
    p = 2.0 * sps.t.sf(abs(t), j - 1)
    half = sps.t.ppf(1 - alpha / 2, j - 1) * se
    return float(p), mean - half, mean + half


def bayesian_correlated(a: np.ndarray, b: np.ndarray, test_train_ratio: float, rope: float) -> dict:
    """Bayesian correlated t-test (Corani & Benavoli 2015) on paired differences d = a - b over J
    random splits: the posterior of the mean difference is Student t with J - 1 degrees of freedom,
    location mean(d) and scale sqrt((1/J + rho/(1-rho)) var(d, ddof=1)). Random splits correlate as
    rho = n_test/(n_test + n_train), so rho/(1-rho) = n_test/n_train (Nadeau-Bengio), the factor
    of `corrected_resampled`. baycomp's CorrelatedTTest fixes rho = 1/k (k-fold cross-validation),
    so the variance is computed here and baycomp's `Posterior` gives the three probabilities."""
    from baycomp.single import Posterior

    d = np.asarray(a, float) - np.asarray(b, float)
    j = len(d)
    out = dict.fromkeys(BAYES_COLUMNS, math.nan) | {"rope": rope, "bayes_decision": ""}
    if j < 2:
        return out
    var = (1.0 / j + test_train_ratio) * d.var(ddof=1)
    post = Posterior(float(d.mean()), var, j - 1, rope)
    probs = post.probs()
    worse, equivalent, better = probs if rope > 0 else (probs[0], 0.0, probs[1])
    decided = [name for name, p in (("better", better), ("equivalent", equivalent), ("worse", worse))
               if p >= DECISION_PROB]
    return out | {"prob_better": float(better), "prob_equivalent": float(equivalent), "prob_worse": float(worse),
                  "bayes_decision": decided[0] if decided else "inconclusive", "posterior_mean": float(d.mean()),
                  "posterior_scale": math.sqrt(var), "posterior_df": float(j - 1)}


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Bias-corrected standardised mean difference (Hedges' g) of a - b, pooled sd (ddof=1)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    if pooled == 0:
        return math.nan  # undefined without spread
    g, _ = effectsize_smd(a.mean(), a.std(ddof=1), len(a), b.mean(), b.std(ddof=1), len(b))
    return float(g)


def _usable(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    return rows[(rows["status"] == "ok") & rows[metric].notna()]


def compare_one(
    rows: pd.DataFrame, base_rows: pd.DataFrame, metric: str, settings: StatsSettings
) -> dict:
    """One variant vs its baseline on one dataset / evaluated set (repeat-phase rows of each)."""
    ok, base_ok = _usable(rows, metric), _usable(base_rows, metric)
    a, b = ok[metric].to_numpy(float), base_ok[metric].to_numpy(float)
    shared = ok.merge(base_ok, on="split", suffixes=("", "_b"))
    pa_, pb_ = shared[metric].to_numpy(float), shared[f"{metric}_b"].to_numpy(float)
    ratio = float((shared["n_samples"] / shared["n_train"]).mean()) if len(shared) else math.nan
    p_w, *ci_w = welch(a, b, settings.alpha)
    p_p, *ci_p = paired(pa_, pb_, settings.alpha)
    p_c, *ci_c = corrected_resampled(pa_, pb_, ratio, settings.alpha)
    bayes = bayesian_correlated(pa_, pb_, ratio, settings.rope_for(metric))
    ci = {"welch": ci_w, "paired": ci_p, "corrected": ci_c}[settings.significance]
    return {
        "n": len(a),
        "mean": a.mean() if len(a) else math.nan,
        "std": a.std(ddof=1) if len(a) > 1 else math.nan,
        "baseline_mean": b.mean() if len(b) else math.nan,
        "baseline_std": b.std(ddof=1) if len(b) > 1 else math.nan,
        "diff": a.mean() - b.mean() if len(a) and len(b) else math.nan,
        "p_welch": p_w,
        "p_paired": p_p,
        "p_corrected": p_c,
        "hedges_g": hedges_g(a, b),
        "ci_low": ci[0],
        "ci_high": ci[1],
    } | bayes


def _summary_only(rows: pd.DataFrame, metric: str) -> dict:
    """The baseline's own row: its summary, no test."""
    ok = _usable(rows, metric)
    a = ok[metric].to_numpy(float)
    out = dict.fromkeys((c for c in COMPARISON_COLUMNS[5:] if c not in ("significant", "excluded_runs")), math.nan)
    out["bayes_decision"] = ""
    out.update(
        n=len(a),
        mean=a.mean() if len(a) else math.nan,
        std=a.std(ddof=1) if len(a) > 1 else math.nan,
        baseline_mean=a.mean() if len(a) else math.nan,
        baseline_std=a.std(ddof=1) if len(a) > 1 else math.nan,
        diff=0.0 if len(a) else math.nan,
    )
    return out


def eval_set_order(eval_sets: Sequence[str]) -> list[str]:
    """test first, then the OOD sets by name; `val` is for selection, never compared."""
    return sorted((e for e in set(eval_sets) if e != "val"), key=lambda e: (e != "test", e))


def comparisons(
    results: pd.DataFrame, settings: StatsSettings, variant_order: Sequence[str] = (),
    baselines: dict[str, str] | None = None,
) -> pd.DataFrame:
    """The comparisons table: one row per (dataset, eval_set, metric, variant) over the repeat
    phase, with the columns of `COMPARISON_COLUMNS`. Baselines get their own row (no test).
    Holm runs over every test of one metric (one Table-2-style table). `baselines`: variant ->
    baseline as the study resolved it (`StudyFolder.baselines`); else `settings.baselines`, then
    the variant's backbone."""
    rep = results[results["phase"] == "repeat"]
    backbone = rep.groupby("variant")["backbone"].first().to_dict()
    order = list(dict.fromkeys([v for v in variant_order if v in backbone] + sorted(backbone)))
    for v, base in settings.baselines.items():
        if v in backbone and base not in backbone:
            raise ValueError(f"stats.baselines: {v!r} -> {base!r}: no repeat results for {base!r}")
    out = []
    for metric in settings.metrics:
        for dataset in sorted(rep["dataset"].unique()):
            ds = rep[rep["dataset"] == dataset]
            for eval_set in eval_set_order(ds["eval_set"].unique()):
                es = ds[ds["eval_set"] == eval_set]
                for variant in order:
                    rows = es[es["variant"] == variant]
                    if rows.empty:
                        continue
                    # a run that diverged may have no row for this set: count its trials overall
                    trials = ds.loc[ds["variant"] == variant, "trial_id"].nunique()
                    excluded = trials - _usable(rows, metric)["trial_id"].nunique()
                    base = (baselines or settings.baselines).get(variant, backbone[variant])
                    base_rows = es[es["variant"] == base]
                    if base == variant:
                        stats = _summary_only(rows, metric)
                    elif base_rows.empty:  # baseline not in this study / set: no test possible
                        stats = _summary_only(rows, metric) | {
                            "baseline_mean": math.nan, "baseline_std": math.nan, "diff": math.nan}
                    else:
                        stats = compare_one(rows, base_rows, metric, settings)
                    out.append({"dataset": dataset, "eval_set": eval_set, "metric": metric,
                                "variant": variant, "baseline": base, "excluded_runs": excluded} | stats)
    table = pd.DataFrame(out, columns=[c for c in COMPARISON_COLUMNS if c != "significant"])
    table["p_holm"] = math.nan
    for _, idx in table.groupby("metric").groups.items():
        p = table.loc[idx, f"p_{settings.significance}"]
        tested = p.dropna().index
        if len(tested):
            table.loc[tested, "p_holm"] = multipletests(p[tested], method="holm")[1]
    deciding = table["p_holm"] if settings.correction == "holm" else table[f"p_{settings.significance}"]
    table.insert(COMPARISON_COLUMNS.index("significant"), "significant",
                 (deciding < settings.alpha).fillna(False).astype(bool))
    return table[COMPARISON_COLUMNS]


def caption(settings: StatsSettings) -> str:
    """How significance was decided, for table captions."""
    how = "Holm-corrected across this table" if settings.correction == "holm" else "uncorrected"
    return f"{TEST_NAMES[settings.significance]}, {how}, p < {settings.alpha:g}"
