"""Golden-file test: the committed Parquet study `tests/golden/study/` -> `attnsweep report` (the
real CLI, in a subprocess) -> every table CSV equals the committed expected CSV; plus the report's
behaviour on bad input (one-line error, non-zero exit, nothing half-written)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

GOLDEN = Path(__file__).parent / "golden"


def run_report(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnsweep.pipelines.cli", "report", str(out), *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("golden") / "study"
    shutil.copytree(GOLDEN / "study", out)
    proc = run_report(out, "--no-explain")
    assert proc.returncode == 0, proc.stderr
    return out / "report"


def test_tables_match_the_committed_expected_tables(report):
    expected = sorted(p.name for p in (GOLDEN / "expected").glob("*.csv"))
    assert sorted(p.name for p in (report / "tables").glob("*.csv")) == expected
    for name in expected:
        got = pd.read_csv(report / "tables" / name, keep_default_na=False)
        want = pd.read_csv(GOLDEN / "expected" / name, keep_default_na=False)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-12,
                                      obj=name)


def test_expected_comparisons_agree_with_scipy_on_the_raw_rows():
    """The golden file is not just what the code wrote once: recompute one row from the Parquet."""
    res = pd.read_parquet(GOLDEN / "study" / "results")
    pick = res[(res.phase == "repeat") & (res.dataset == "synthderm") & (res.eval_set == "test")]
    a = pick[pick.variant == "resnet18+ela"].sort_values("split").balanced_accuracy.to_numpy()
    b = pick[pick.variant == "resnet18"].sort_values("split").balanced_accuracy.to_numpy()
    want = pd.read_csv(GOLDEN / "expected" / "comparisons.csv")
    row = want[(want.dataset == "synthderm") & (want.eval_set == "test") & (want.metric == "balanced_accuracy")
               & (want.variant == "resnet18+ela")].iloc[0]
    assert row.p_welch == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    assert row["std"] == pytest.approx(a.std(ddof=1), rel=1e-9)
    # the Bayesian correlated t-test: posterior t(n-1, mean d, sqrt((1/n + n_test/n_train) var d)), ROPE 0.01
    d = a - b  # both ordered by split
    scale = np.sqrt((1 / len(d) + 200 / 800) * d.var(ddof=1))
    post = sps.t(len(d) - 1, d.mean(), scale)
    assert row.rope == 0.01
    assert row.prob_worse == pytest.approx(post.cdf(-0.01), abs=1e-9)
    assert row.prob_better == pytest.approx(post.sf(0.01), abs=1e-9)
    assert row.prob_equivalent == pytest.approx(post.cdf(0.01) - post.cdf(-0.01), abs=1e-9)
    assert row.bayes_decision == "worse" and row.prob_worse > 0.95
    # the diverged run is excluded and counted
    ga = want[(want.variant == "resnet18+ga") & (want.dataset == "synthderm")]
    assert set(ga.n) == {4} and set(ga.excluded_runs) == {1}
    assert want.significant.any()


def test_report_files_and_figures(report):
    html = (report / "index.html").read_text()
    md = (report / "report.md").read_text()
    # one self-contained page: every figure and CSV is embedded, nothing is linked beside it
    images = re.findall(r'<img src="([^"]+)" alt="([^"]+)"', html)
    assert images and all(src.startswith("data:image/png;base64,") for src, _ in images)
    assert all(len(src) > 5_000 for src, _ in images)
    assert not re.findall(r'(?:src|href)="(?!data:|#)', html)
    alts = [alt for _, alt in images]
    assert len([a for a in alts if a.startswith("distribution_")]) == 4  # 2 metrics x 2 datasets
    assert "landscape_synthderm.png" in alts and "curves_synthpath.png" in alts
    assert len([a for a in alts if a.startswith("posterior_")]) == 4  # a panel per comparison in each
    assert "P(better)" in html and "P(equiv.)" in html and ">worse<" in html and "| P(better) |" in md
    # the statistics as Parquet: the same table as the CSV, at full precision
    pd.testing.assert_frame_equal(pd.read_parquet(report / "tables" / "comparisons.parquet"),
                                  pd.read_csv(report / "tables" / "comparisons.csv").fillna({"bayes_decision": ""}),
                                  check_dtype=False, rtol=1e-9)
    for _, alt in images:  # report.md links the same figures, which are there
        assert (report / alt).stat().st_size > 5_000 and f"]({alt})" in md
    assert "Nadeau-Bengio corrected resampled t-test, Holm-corrected" in html
    assert "**70.8**↓" in md and "| resnet18+ga | resnet18 |" in md
    assert "| resnet18 | (baseline) |" in md and "(n=5)" in md and "(n=4)" in md
    assert "significant (Nadeau-Bengio corrected resampled t-test, Holm)" in html
    assert ">yes<" in html and ">no<" in html  # significance is never a blank cell
    assert "| selection metric (best epoch) | balanced_accuracy |" in md and "| optimizer | sgd |" in md
    assert "non-finite training loss" in html  # the runs that did not end ok, with their reason
    assert "| resnet18 | search | 16 | GPU |" in md
    assert not list(report.parent.glob(".report-*"))  # no temp folder left behind


@pytest.mark.slow
def test_bad_inputs_fail_in_one_line_and_keep_the_old_report(tmp_path):
    out = tmp_path / "study"
    shutil.copytree(GOLDEN / "study", out)
    # a results file without a column
    broken = out / "results" / "synthderm-search.parquet"
    pd.read_parquet(broken).drop(columns="n_train").to_parquet(broken)
    proc = run_report(out, "--no-explain")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {broken}: missing columns ['n_train']"
    assert not (out / "report").exists() and not list(out.glob(".report-*"))

    shutil.copy(GOLDEN / "study" / "results" / "synthderm-search.parquet", broken)
    assert run_report(out, "--no-explain").returncode == 0
    before = (out / "report" / "tables" / "comparisons.csv").read_text()
    # a bad setting in study.yaml: named with its field; the previous report stays whole
    study = out / "study.yaml"
    study.write_text(study.read_text().replace("alpha: 0.05", "alpha: 2"))
    proc = run_report(out, "--no-explain")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert f"{study}: stats.alpha:" in proc.stderr and "got 2" in proc.stderr
    study.write_text(study.read_text().replace("alpha: 2", "alpha: 0.05\n  baselines: {resnet18+ga: resnet50}"))
    proc = run_report(out, "--no-explain")
    assert proc.returncode == 2
    assert "stats.baselines: 'resnet18+ga' -> 'resnet50': no repeat results for 'resnet50'" in proc.stderr
    assert (out / "report" / "tables" / "comparisons.csv").read_text() == before
    assert not list(out.glob(".report-*"))
