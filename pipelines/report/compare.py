"""`attnsweep compare OUT1 OUT2 ...`: one comparison of the variants several studies share, each
study (dataset) one block (Demšar 2006): the mean test score per variant and dataset, its ranks,
the Friedman test, the Nemenyi post-hoc test with its critical difference (CD) and a CD diagram,
and the Bayesian signed-rank test (Benavoli et al. 2014) of each variant against its baseline
across the datasets. Writes `<out>/index.html` (self-contained, like the study report) and
`<out>/tables/*.csv`; reads only the study folders."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from attnsweep.pipelines.report.study_folder import StudyFolder, StudyFolderError, load
from attnsweep.pipelines.report.tables import baselines

SIGNED_RANK_SAMPLES = 20000  # Monte Carlo draws of the Dirichlet process (baycomp's default is 50000)


class CompareError(ValueError):
    """The studies cannot be compared; the message (one line) says why."""


@dataclass
class MetricComparison:
    metric: str
    scores: pd.DataFrame  # dataset x variant: mean over the repeat splits
    ranks: pd.DataFrame  # dataset x variant: 1 = best, ties averaged
    friedman_stat: float
    friedman_p: float
    cd: float
    nemenyi: pd.DataFrame  # variant x variant p-values
    bayes: pd.DataFrame  # variant vs baseline: Bayesian signed-rank probabilities
    rope: float

    @property
    def mean_ranks(self) -> pd.Series:
        return self.ranks.mean().sort_values()


def load_studies(outs: list[Path]) -> list[StudyFolder]:
    if len(outs) < 2:
        raise CompareError(f"compare: needs at least two study folders, got {len(outs)}")
    if len({p.resolve() for p in outs}) < len(outs):
        raise CompareError("compare: a study folder is given twice")
    try:
        return [load(p) for p in outs]
    except StudyFolderError as e:
        raise CompareError(str(e)) from None


def _repeat_means(folder: StudyFolder, metric: str, eval_set: str) -> pd.DataFrame:
    """dataset x variant: the mean of `metric` over the usable repeat runs on `eval_set`."""
    r = folder.results
    ok = r[(r["phase"] == "repeat") & (r["status"] == "ok") & (r["eval_set"] == eval_set) & r[metric].notna()]
    return ok.groupby(["dataset", "variant"])[metric].mean().unstack("variant")


def score_matrix(folders: list[StudyFolder], metric: str, eval_set: str = "test") -> pd.DataFrame:
    """One row per (study, dataset), labelled by the dataset (by `study/dataset` where two studies
    share a dataset label); the columns: the variants every row has a score for, in the first
    study's order."""
    parts = []
    for f in folders:
        m = _repeat_means(f, metric, eval_set)
        m.index = pd.MultiIndex.from_product([[f.name], m.index], names=["study", "dataset"])
        parts.append(m)
    scores = pd.concat(parts)
    labels = scores.index.get_level_values("dataset")
    dup = labels.duplicated(keep=False)
    scores.index = [f"{s}/{d}" if dup[i] else d for i, (s, d) in enumerate(scores.index)]
    order = [v for f in folders for v in f.variant_order]
    shared = [v for v in dict.fromkeys(order) if v in scores and scores[v].notna().all()]
    return scores[shared]


def shared_metrics(folders: list[StudyFolder]) -> list[str]:
    first = folders[0].settings.metrics
    return [m for m in first if all(m in f.settings.metrics for f in folders[1:])]


def critical_difference(alpha: float, k: int, n: int) -> float:
    """Nemenyi's CD for k variants on n datasets: q_alpha(k, inf) sqrt(k (k+1) / (12 n)), with q the
    studentized range quantile (statsmodels' qsturng, as autorank). By hand: scikit-posthocs gives
    the pairwise p-values but not the CD, and autorank needs at least 5 datasets."""
    from statsmodels.stats.libqsturng import qsturng

    return float(qsturng(1 - alpha, k, np.inf) * math.sqrt(k * (k + 1) / (12 * n)))


def rank_tests(scores: pd.DataFrame, alpha: float) -> tuple[pd.DataFrame, float, float, float, pd.DataFrame]:
    """(ranks, Friedman statistic, Friedman p, Nemenyi CD, Nemenyi p-values) of a dataset x variant
    score matrix; higher scores rank first. Friedman needs 3 variants (nan below)."""
    import scikit_posthocs as sp

    ranks = scores.rank(axis=1, ascending=False)
    k, n = scores.shape[1], scores.shape[0]
    stat = p = math.nan
    if k >= 3:
        res = sps.friedmanchisquare(*scores.T.to_numpy())
        stat, p = float(res.statistic), float(res.pvalue)
    nemenyi = sp.posthoc_nemenyi_friedman(scores.to_numpy())
    nemenyi.index = nemenyi.columns = scores.columns
    return ranks, stat, p, critical_difference(alpha, k, n), nemenyi


def signed_rank_table(scores: pd.DataFrame, base: dict[str, str], rope: float, seed: int = 0) -> pd.DataFrame:
    """Bayesian signed-rank test (baycomp) of each variant against its baseline over the datasets:
    P(variant better by more than the ROPE), P(within it), P(worse)."""
    import baycomp

    rows = []
    for v in scores.columns:
        b = base.get(v, v)
        if b == v or b not in scores:
            continue
        worse, equivalent, better = baycomp.SignedRankTest.probs(
            scores[b].to_numpy(float), scores[v].to_numpy(float), rope=rope, nsamples=SIGNED_RANK_SAMPLES,
            random_state=seed) if rope > 0 else _without_rope(scores[b], scores[v], seed)
        rows.append({"variant": v, "baseline": b, "datasets": len(scores), "mean_diff": float((scores[v] - scores[b]).mean()),
                     "rope": rope, "prob_better": float(better), "prob_equivalent": float(equivalent),
                     "prob_worse": float(worse)})
    return pd.DataFrame(rows, columns=["variant", "baseline", "datasets", "mean_diff", "rope", "prob_better",
                                       "prob_equivalent", "prob_worse"])


def _without_rope(b: pd.Series, v: pd.Series, seed: int) -> tuple[float, float, float]:
    import baycomp

    worse, better = baycomp.SignedRankTest.probs(b.to_numpy(float), v.to_numpy(float), rope=0,
                                                 nsamples=SIGNED_RANK_SAMPLES, random_state=seed)
    return worse, 0.0, better


def compare(folders: list[StudyFolder], alpha: float = 0.05, eval_set: str = "test",
            rope: float | None = None) -> list[MetricComparison]:
    """Every metric the studies share, over the variants they share; `rope`: None takes each
    metric's ROPE from the first study's `stats:`."""
    metrics = shared_metrics(folders)
    if not metrics:
        listing = "; ".join(f"{f.out}: {', '.join(f.settings.metrics)}" for f in folders)
        raise CompareError(f"compare: the studies share no metric ({listing})")
    base = baselines(folders[0])
    out = []
    for metric in metrics:
        scores = score_matrix(folders, metric, eval_set)
        if scores.shape[1] < 2:
            listing = "; ".join(f"{f.out}: {', '.join(_repeat_means(f, metric, eval_set).columns) or 'none'}"
                                for f in folders)
            raise CompareError(f"compare: the studies share no variants with {eval_set} {metric} results "
                               f"(at least two are needed; {listing})")
        ranks, stat, p, cd, nemenyi = rank_tests(scores, alpha)
        width = folders[0].settings.rope_for(metric) if rope is None else rope
        out.append(MetricComparison(metric, scores, ranks, stat, p, cd, nemenyi,
                                    signed_rank_table(scores, base, width), width))
    return out


def _tables(results: list[MetricComparison]) -> dict[str, pd.DataFrame]:
    """The CSVs: per metric the scores, ranks (with the mean rank row), Nemenyi p-values and the
    Bayesian signed-rank table; and one summary row per metric."""
    tables: dict[str, pd.DataFrame] = {}
    summary = []
    for mc in results:
        ranks = pd.concat([mc.ranks, mc.ranks.mean().to_frame("mean rank").T])
        tables[f"scores_{mc.metric}"] = mc.scores.rename_axis("dataset").reset_index()
        tables[f"ranks_{mc.metric}"] = ranks.rename_axis("dataset").reset_index()
        tables[f"nemenyi_{mc.metric}"] = mc.nemenyi.rename_axis("variant").reset_index()
        tables[f"signed_rank_{mc.metric}"] = mc.bayes
        summary.append({"metric": mc.metric, "datasets": mc.scores.shape[0], "variants": mc.scores.shape[1],
                        "friedman_chi2": mc.friedman_stat, "friedman_p": mc.friedman_p, "nemenyi_cd": mc.cd,
                        "best": mc.mean_ranks.index[0], "best_mean_rank": float(mc.mean_ranks.iloc[0])})
    tables["summary"] = pd.DataFrame(summary)
    return tables


def build_comparison(outs: list[Path], dest: Path, alpha: float = 0.05, eval_set: str = "test",
                     rope: float | None = None) -> Path:
    """Compare the study folders `outs` into `dest/` (index.html, tables/*.csv, cd_*.png), built
    under a temporary name and swapped in, so a failure leaves no half-written folder."""
    import shutil

    from attnsweep.data.atomic import remove_stale_folders
    from attnsweep.pipelines.report import build
    from attnsweep.pipelines.report import plots as report_plots

    folders = load_studies(outs)
    results = compare(folders, alpha, eval_set, rope)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for prefix in (".compare-", ".compare-old-"):
        remove_stale_folders(dest.parent, prefix)
    tmp = build.scratch(dest.parent, ".compare-")
    try:
        tables = _tables(results)
        (tmp / "tables").mkdir()
        for name, table in tables.items():
            table.to_csv(tmp / "tables" / f"{name}.csv", index=False, float_format="%.10g")
        sections = []
        for mc in results:
            fig = f"cd_{mc.metric}.png"
            report_plots.cd_diagram(mc.mean_ranks, mc.nemenyi, mc.cd, alpha,
                                    f"{mc.metric} ({eval_set}): mean ranks over {mc.scores.shape[0]} datasets",
                                    tmp / fig)
            ranks = pd.concat([mc.ranks, mc.ranks.mean().to_frame("mean rank").T])[mc.mean_ranks.index]
            sections.append({
                "metric": mc.metric, "figure": fig, "rope": mc.rope,
                "friedman": (f"Friedman χ² = {build.fmt(mc.friedman_stat)}, p = {build.fmt(mc.friedman_p)}"
                             if not math.isnan(mc.friedman_p) else "Friedman test: needs at least 3 variants"),
                "cd": build.fmt(mc.cd),
                "scores": build.html_table(mc.scores[mc.mean_ranks.index].rename_axis("dataset").reset_index()),
                "ranks": build.html_table(ranks.rename_axis("dataset").reset_index()),
                "nemenyi": build.html_table(mc.nemenyi.loc[mc.mean_ranks.index, mc.mean_ranks.index]
                                            .rename_axis("variant").reset_index()),
                "bayes": build.html_table(mc.bayes),
            })
        studies = pd.DataFrame([{"study": f.name, "folder": str(f.out), "datasets": ", ".join(
            sorted(f.results["dataset"].unique())), "variants": len(f.variant_order)} for f in folders])
        (tmp / "index.html").write_text(build.ENV.get_template("compare.html.j2").render(
            studies=build.html_table(studies), summary=build.html_table(tables["summary"]), sections=sections,
            eval_set=eval_set, alpha=alpha, csv_names=list(tables),
            img=lambda name: build.data_uri(tmp / name, "image/png"),
            csv=lambda name: build.data_uri(tmp / "tables" / f"{name}.csv", "text/csv")))
        return build.swap_in(tmp, dest, ".compare-old-")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
