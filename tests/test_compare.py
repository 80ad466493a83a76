"""`attnsweep compare`: study folders with real result Parquet (the schema `attnsweep run` writes)
-> mean ranks, Friedman p and Nemenyi CD equal autorank's, Nemenyi p-values scikit-posthocs', the
Bayesian signed-rank probabilities baycomp's as autorank calls it; the page in real Chromium; one-line
errors when the studies share no variants or metrics."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from chromium import chromium, run_chromium
from PIL import Image

from attnsweep.pipelines.report.compare import compare, load_studies
from attnsweep.pipelines.store.parquet_store import RESULTS_DIR
from attnsweep.pipelines.store.results_schema import RESULTS_SCHEMA, to_table

SEED001 = {"skin": 0.80, "cxr": 0.72, "mri": 0.90, "ct": 0.85}  # the four seed001_* datasets
VARIANTS = ["resnet18", "resnet18+se", "resnet18+cbam", "resnet18+gc"]


def write_study(out: Path, dataset: str, level: float, variants: list[str], effects: dict[str, float],
                seed: int, metrics=("balanced_accuracy", "auc_roc"), splits: int = 5) -> Path:
    """A study folder as `attnsweep run` leaves it: study.yaml and one results Parquet per repeat trial."""
    rng = np.random.default_rng(seed)
    (out / RESULTS_DIR).mkdir(parents=True)
    (out / "study.yaml").write_text(yaml.safe_dump({
        "name": f"seed001_{dataset}", "variants": variants, "stats": {"metrics": list(metrics), "rope": 0.01}}))
    for v in variants:
        rows = []
        for k in range(splits):
            ba = float(np.clip(level + effects.get(v, 0.0) + 0.01 * rng.standard_normal(), 0, 1))
            rows.append({
                "study": f"seed001_{dataset}", "phase": "repeat", "variant": v, "backbone": v.split("+")[0],
                "attention": "+".join(v.split("+")[1:]), "dataset": dataset, "eval_set": "test",
                "split": f"repeat-{k}", "seed": 1000 + k, "lr": 0.05, "weight_decay": 1e-4, "batch_size": 64,
                "epochs": 3, "best_epoch": 2, "diverged_epoch": None, "status": "ok", "balanced_accuracy": ba, "accuracy": ba,
                "auc_roc": min(ba + 0.1, 1.0), "loss": 1 - ba, "n_samples": 200, "n_train": 800,
                "params": 11_000_000, "train_seconds": 10.0, "gpu_seconds": 0.0, "world_size": 1,
                "trial_id": f"{v}-r{k}", "mlflow_run_id": None, "config_hash": "c", "code_version": "test",
                "finished_at": datetime(2026, 1, 1, tzinfo=timezone.utc)})
        pq.write_table(to_table(rows, RESULTS_SCHEMA), out / RESULTS_DIR / f"{v}.parquet")
    return out


def seed001_studies(root: Path, datasets: dict[str, float], seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    outs = []
    for i, (d, level) in enumerate(datasets.items()):
        effects = {"resnet18+se": 0.02 + 0.01 * rng.standard_normal(), "resnet18+cbam": 0.01 * rng.standard_normal(),
                   "resnet18+gc": -0.015 + 0.01 * rng.standard_normal()}
        outs.append(write_study(root / f"seed001_{d}", d, level, VARIANTS, effects, seed=100 * seed + i))
    return outs


def run_compare(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnsweep.pipelines.cli", "compare", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_ranks_friedman_and_cd_equal_autorank(tmp_path):
    """autorank needs >= 5 datasets: 7 here (the four seed001 ones and three more)."""
    from autorank import autorank

    datasets = SEED001 | {"derm2": 0.7, "path": 0.8, "fundus": 0.75}
    folders = load_studies(seed001_studies(tmp_path, datasets, seed=3))
    mc = compare(folders, alpha=0.05)[0]
    assert mc.metric == "balanced_accuracy" and list(mc.scores.index) == list(datasets)
    ar = autorank(mc.scores, alpha=0.05, order="descending", force_mode="nonparametric")
    assert ar.omnibus == "friedman" and ar.posthoc == "nemenyi"
    pd.testing.assert_series_equal(mc.mean_ranks.sort_index(), ar.rankdf["meanrank"].sort_index(),
                                   check_names=False, rtol=1e-12)
    assert mc.friedman_p == pytest.approx(ar.pvalue, rel=1e-12)
    assert mc.cd == pytest.approx(ar.cd, rel=1e-12)
    # the scores are the means over each study's repeat splits, read back from its Parquet
    res = folders[0].results
    want = res[res.variant == "resnet18+se"].balanced_accuracy.mean()
    assert mc.scores.loc["skin", "resnet18+se"] == pytest.approx(want, rel=1e-15)


def test_nemenyi_and_signed_rank_equal_the_libraries(tmp_path):
    import baycomp
    import scikit_posthocs as sp
    from autorank import autorank

    datasets = SEED001 | {"derm2": 0.7, "path": 0.8}
    mc = compare(load_studies(seed001_studies(tmp_path, datasets, seed=5)), alpha=0.05)[0]
    nemenyi = sp.posthoc_nemenyi_friedman(mc.scores.to_numpy())
    np.testing.assert_allclose(mc.nemenyi.to_numpy(), nemenyi.to_numpy(), rtol=1e-12)
    # the Bayesian signed-rank test as autorank runs it (baycomp, absolute ROPE, same samples and seed)
    ar = autorank(mc.scores, alpha=0.05, approach="bayesian", rope=0.01, rope_mode="absolute",
                  nsamples=20000, random_state=0)
    for _, r in mc.bayes.iterrows():
        worse, equal, better = baycomp.SignedRankTest.probs(
            mc.scores[r.baseline].to_numpy(), mc.scores[r.variant].to_numpy(), rope=0.01, nsamples=20000,
            random_state=0)
        assert (r.prob_worse, r.prob_equivalent, r.prob_better) == pytest.approx((worse, equal, better), abs=1e-12)
        # autorank fills the upper triangle (rows in rank order): cell [i, j] = P(j < i), P(equal), P(j > i)
        pm = ar.posterior_matrix
        cell = pm.loc[r.baseline, r.variant]
        pair = cell if isinstance(cell, tuple) else tuple(reversed(pm.loc[r.variant, r.baseline]))
        assert pair == pytest.approx((r.prob_worse, r.prob_equivalent, r.prob_better), abs=1e-12)
    assert set(mc.bayes.variant) == {"resnet18+se", "resnet18+cbam", "resnet18+gc"}
    assert (mc.bayes.baseline == "resnet18").all()


class Tables(HTMLParser):
    """Text of every <table class=...> cell, by class; the CD diagram images."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.images = {}, None, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.current = self.tables.setdefault(a.get("class", ""), [])
        if tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag):
        if tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.current is not None and data.strip():
            self.current.append(data.strip())


@pytest.fixture(scope="module")
def four_studies(tmp_path_factory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("compare")
    outs = seed001_studies(root, SEED001, seed=1)
    proc = run_compare(*outs, "--out", root / "cmp")
    assert proc.returncode == 0, proc.stderr
    return outs, root / "cmp"


def test_the_four_seed001_studies_in_chromium(four_studies, tmp_path):
    import scikit_posthocs as sp
    from scipy import stats as sps

    chromium()
    _, page = four_studies
    scores = pd.read_csv(page / "tables" / "scores_balanced_accuracy.csv").set_index("dataset")
    assert list(scores.index) == list(SEED001) and list(scores.columns) == VARIANTS
    summary = pd.read_csv(page / "tables" / "summary.csv").set_index("metric")
    fr = sps.friedmanchisquare(*scores.T.to_numpy())
    assert summary.loc["balanced_accuracy", "friedman_p"] == pytest.approx(fr.pvalue, rel=1e-9)
    nemenyi = pd.read_csv(page / "tables" / "nemenyi_balanced_accuracy.csv").set_index("variant")
    np.testing.assert_allclose(nemenyi.to_numpy(), sp.posthoc_nemenyi_friedman(scores.to_numpy()).to_numpy(),
                               rtol=1e-9)
    # rendered: not blank, and the DOM holds the CD diagrams and the tables
    shot = tmp_path / "shot.png"
    proc = run_chromium(tmp_path, "--window-size=1400,1000", "--hide-scrollbars", f"--screenshot={shot}",
                        (page / "index.html").as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert 0.005 < (px < 100).mean() < 0.5 and px.std() > 20
    proc = run_chromium(tmp_path, "--dump-dom", (page / "index.html").as_uri())
    dom = Tables()
    dom.feed(proc.stdout)
    cds = [a for a in dom.images if a.get("class") == "cd-diagram"]
    assert [a["data-metric"] for a in cds] == ["balanced_accuracy", "auc_roc"]
    assert all(a["src"].startswith("data:image/png;base64,") and len(a["src"]) > 5_000 for a in cds)
    assert "seed001_skin" in dom.tables["studies"] and "resnet18+gc" in dom.tables["ranks"]
    assert "mean rank" in dom.tables["ranks"] and "resnet18+se" in dom.tables["signed-rank"]
    # the diagram itself: scikit-posthocs draws dark labels on white, not an empty axis
    png = page / "cd_balanced_accuracy.png"
    assert (np.asarray(Image.open(png).convert("L")) < 100).mean() > 0.005


@pytest.mark.slow
def test_studies_that_share_nothing_fail_in_one_line(tmp_path):
    a = write_study(tmp_path / "a", "skin", 0.8, ["resnet18", "resnet18+se"], {}, seed=0)
    b = write_study(tmp_path / "b", "cxr", 0.7, ["densenet121", "densenet121+se"], {}, seed=1)
    c = write_study(tmp_path / "c", "mri", 0.9, ["resnet18", "resnet18+se"], {}, seed=2, metrics=("accuracy",))
    dest = tmp_path / "cmp"
    cases = [
        ((a, b), "the studies share no variants with test balanced_accuracy results"),
        ((a, c), "the studies share no metric"),
        ((a,), "needs at least two study folders, got 1"),
        ((a, tmp_path / "missing"), "no such study folder"),
    ]
    for outs, message in cases:
        proc = run_compare(*outs, "--out", dest)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert not dest.exists() and not list(tmp_path.glob(".compare-*"))
    assert f"{a}: resnet18, resnet18+se" in run_compare(a, b, "--out", dest).stderr
