"""`attnsweep report OUT`: statistics, tables, figures and explanations of a study folder ->
`<out>/report/` (`index.html`, one self-contained file with its figures and CSVs embedded, so it
also shows as an MLflow artifact; `report.md` with the PNGs beside it; `tables/*.csv`). Reads only the
study folder. The folder is built under a temporary name and swapped in at the end, so a failed
report never leaves a half-written one."""
from __future__ import annotations

import base64
import html
import math
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import jinja2
import pandas as pd

from attnsweep.data.atomic import remove_stale_folders
from attnsweep.pipelines.report import details
from attnsweep.pipelines.report import plots as report_plots
from attnsweep.pipelines.report.features import report_context as feature_report_context
from attnsweep.pipelines.report.study_folder import StudyFolder, load
from attnsweep.pipelines.report.tables import (
    baselines,
    build_tables,
    cell_group_text,
    table2_cells,
    write_tables,
)
from attnsweep.pipelines.report.stats import TEST_NAMES, StatsSettings, caption
from attnsweep.pipelines.trial.study_paths import StudyPaths

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("attnsweep.pipelines.report", "templates"),
    autoescape=jinja2.select_autoescape(["html.j2"]),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def fmt(v) -> str:
    if v is None or v is pd.NA:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4g}"
    return str(v)


def _display(df: pd.DataFrame) -> pd.DataFrame:
    return df.apply(lambda col: col.map(fmt)) if len(df) else df


def md_escape(text: object) -> str:
    """Text from user data (dataset, class and variant names) for `report.md`: Markdown passes raw
    HTML through, so `<`, `>`, `&` become entities, and a `|` would split a table cell."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


ENV.filters["md"] = md_escape


def md_table(df: pd.DataFrame) -> str:
    # pandas' to_markdown needs the optional `tabulate`; a pipe table is three lines
    if df.empty:
        return "(none)"
    d = _display(df)
    lines = ["| " + " | ".join(md_escape(c) for c in d.columns) + " |", "|" + "---|" * len(d.columns)]
    lines += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in d.astype(str).itertuples(index=False)]
    return "\n".join(lines)


def html_table(df: pd.DataFrame) -> dict:
    """Columns and rows for the template's table macro; numeric columns are right-aligned."""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in df.columns]
    return {"columns": [(c, n) for c, n in zip(df.columns, numeric)],
            "rows": [list(zip(r, numeric)) for r in _display(df).astype(str).values.tolist()]}


def _comparisons_display(comp: pd.DataFrame, settings: StatsSettings) -> pd.DataFrame:
    """The tested rows, compact: the CI in one column, Holm named, significance as yes/no with
    the deciding test named."""
    tested = comp[comp["variant"] != comp["baseline"]].copy()
    tested["CI"] = [f"{fmt(lo)} .. {fmt(hi)}" for lo, hi in zip(tested["ci_low"], tested["ci_high"])]
    holm = ", Holm" if settings.correction == "holm" else ""
    significant = f"significant ({TEST_NAMES[settings.significance]}{holm})"
    tested = tested.rename(columns={"p_holm": "p (Holm)", "excluded_runs": "left out", "significant": significant,
                                    "prob_better": "P(better)", "prob_equivalent": "P(equiv.)",
                                    "prob_worse": "P(worse)", "bayes_decision": "Bayes"})
    return tested[["metric", "dataset", "eval_set", "variant", "baseline", "n", "mean", "std", "diff",
                   "p_welch", "p_paired", "p_corrected", "p (Holm)", "rope", "P(better)", "P(equiv.)", "P(worse)",
                   "Bayes", "hedges_g", "CI", significant, "left out"]]


def _results_context(folder: StudyFolder, comp: pd.DataFrame, order: list[str]) -> list[dict]:
    base = baselines(folder)
    out = []
    for metric in folder.settings.metrics:
        cells = table2_cells(comp, metric, order)
        datasets = sorted(comp["dataset"].unique())
        rows = []
        for v in order:
            if v not in cells:
                continue
            row_cells = []
            for d in datasets:
                cs = cells[v].get(d)
                n = f" (n={cs[0].n})" if cs else ""  # runs behind the test value
                row_cells.append({
                    "html": cell_group_text(cs, ("<b>", "</b>")).replace("↑", '<span class="up">↑</span>')
                    .replace("↓", '<span class="down">↓</span>') + f'<span class="n">{n}</span>' if cs else "",
                    "md": cell_group_text(cs, ("**", "**")) + n if cs else "",
                    "sig": bool(cs) and any(c.significant for c in cs),
                })
            is_baseline = base[v] == v
            rows.append({"variant": v, "baseline": "(baseline)" if is_baseline else base[v],
                         "is_baseline": is_baseline, "cells": row_cells})
        out.append({"metric": metric, "datasets": datasets, "rows": rows})
    return out


def _slug(name: str) -> str:
    """A dataset label as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def scratch(out: Path, prefix: str) -> Path:
    # not tempfile.mkdtemp: its 0700 mode would make the report unreadable to the user's group;
    # the pid in the name lets a later build remove what a killed one left (remove_stale_folders)
    path = out / f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def swap_in(tmp: Path, final: Path, old_prefix: str) -> Path:
    """`tmp` becomes `final`; an existing `final` stays whole until then, and is removed after."""
    if final.exists():
        old = scratch(final.parent, old_prefix)
        final.rename(old / final.name)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return final


def _figures(folder: StudyFolder, tables: dict[str, pd.DataFrame], into: Path) -> dict[str, list[str]]:
    r, order, comp = folder.results, folder.variant_order, tables["comparisons"]
    base = baselines(folder)
    datasets = sorted(r["dataset"].unique())
    figs: dict[str, list[str]] = {"distribution_figures": [], "posterior_figures": [], "landscape_figures": [],
                                  "curve_figures": [], "confusion_figures": []}
    usable = r[(r["phase"] == "repeat") & (r["status"] == "ok")]
    for metric in folder.settings.metrics:
        for d in datasets:
            if usable.loc[usable["dataset"] == d, metric].notna().any():
                name = f"distribution_{metric}_{_slug(d)}.png"
                report_plots.distribution_plot(r, comp, metric, d, order, base, into / name)
                figs["distribution_figures"].append(name)
            name = f"posterior_{metric}_{_slug(d)}.png"
            if report_plots.posterior_plot(comp, metric, d, into / name):
                figs["posterior_figures"].append(name)
    land = tables["search_landscape"]
    for d in datasets:
        if (land["dataset"] == d).any():
            name = f"landscape_{_slug(d)}.png"
            report_plots.landscape_plot(land, d, order, into / name)
            figs["landscape_figures"].append(name)
        name = f"curves_{_slug(d)}.png"
        if report_plots.curves_plot(folder.epochs, r, d, order, into / name, folder.selection_metric):
            figs["curve_figures"].append(name)
        matrices = details.summed_confusion(folder, d)
        if matrices:
            name = f"confusion_{_slug(d)}.png"
            report_plots.confusion_plot(matrices, details.class_names(folder), d, into / name)
            figs["confusion_figures"].append(name)
    return figs


def data_uri(path: Path, mime: str) -> str:
    """A file as a data: URI, so `index.html` needs nothing beside it (an MLflow artifact view
    shows the page alone; relative links there lead nowhere)."""
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _explanations(folder: StudyFolder, into: Path, enabled: bool) -> dict:
    if not enabled:
        return {"explanation_figures": [], "explanation_note": "Explanations were not requested (--no-explain)."}
    from attnsweep.pipelines.report.explain import explain_study

    figures, note = explain_study(folder, into)
    return {"explanation_figures": figures, "explanation_note": note}


def render(folder: StudyFolder, tables: dict[str, pd.DataFrame], into: Path, explain: bool = True) -> None:
    """Write figures, `index.html` and `report.md` into `into` (tables are written separately)."""
    order = folder.variant_order
    facts = dict(zip(tables["run_facts"]["fact"], tables["run_facts"]["value"]))
    generic = ("params", "best_hparams", "runs_not_ok", "cost", "run_facts")
    context = {
        "name": folder.name,
        "facts_line": (f"{facts['variants']} variants on {facts['datasets']}; {facts['repeat trials']} repeat "
                       f"and {facts['search trials']} search trials; {facts['diverged runs']} diverged, "
                       f"{facts['failed runs']} failed; code {facts['code version']}; "
                       f"{facts['GPU-seconds']} GPU-seconds."),
        "caption": caption(folder.settings),
        "ci_level": f"{100 * (1 - folder.settings.alpha):g}",
        "results_tables": _results_context(folder, tables["comparisons"], order),
        "has_not_ok": not tables["runs_not_ok"].empty,
        "selection_metric": folder.selection_metric,
        "csv_names": list(tables),
        **_figures(folder, tables, into),
        **_explanations(folder, into, explain),
        "feature_usage": feature_report_context(folder.out, order),
    }
    comp = _comparisons_display(tables["comparisons"], folder.settings)
    recipe = details.recipe(folder)
    html_tables = {k: html_table(tables[k]) for k in generic} | {
        "comparisons": [(m, html_table(c.drop(columns="metric"))) for m, c in comp.groupby("metric", sort=False)],
        "recipe": html_table(recipe)}
    (into / "index.html").write_text(ENV.get_template("report.html.j2").render(
        **context, tables=html_tables, img=lambda name: data_uri(into / name, "image/png"),
        csv=lambda name: data_uri(into / "tables" / f"{name}.csv", "text/csv")))
    md = {k: md_table(tables[k]) for k in generic} | {"comparisons": md_table(comp), "recipe": md_table(recipe)}
    (into / "report.md").write_text(ENV.get_template("report.md.j2").render(**context, md=md))


def build_report(out: Path | str, explain: bool = True) -> Path:
    """Build `<out>/report/` from the study folder; returns its path."""
    out = Path(out)
    folder = load(out)
    for prefix in (".report-", ".report-old-"):
        remove_stale_folders(out, prefix)
    tmp = scratch(out, ".report-")
    try:
        tables = build_tables(folder)
        write_tables(tables, tmp / "tables")
        render(folder, tables, tmp, explain)
        return swap_in(tmp, StudyPaths(out).report_dir, ".report-old-")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


BAYES_METRICS = {"prob_better": "p_better", "prob_equivalent": "p_equivalent", "prob_worse": "p_worse"}


def comparison_metrics(comp: pd.DataFrame) -> dict[str, float]:
    """The Bayesian probabilities of every tested comparison as MLflow metrics, e.g.
    `bayes/synthderm/test/balanced_accuracy/resnet18_se/p_better` (MLflow keys allow no '+' or ':')."""
    out = {}
    for _, r in comp[comp["prob_better"].notna()].iterrows():
        head = "/".join(re.sub(r"[^\w.\- ]", "_", str(p))
                        for p in ("bayes", r["dataset"], r["eval_set"], r["metric"], r["variant"]))
        out |= {f"{head}/{key}": float(r[col]) for col, key in BAYES_METRICS.items()}
    return out


def log_report_to_mlflow(out_dir: Path | str, tracking_uri: str, run_id: str) -> None:
    """Log `<out>/report/` as the `report/` artifact folder of the study's MLflow parent run, and
    the Bayesian probabilities of its comparisons as that run's metrics."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    report = StudyPaths(out_dir).report_dir
    if not (report / "index.html").exists():
        raise FileNotFoundError(f"{report}: no report to log (run `attnsweep report {out_dir}` first)")
    client = MlflowClient(tracking_uri=tracking_uri)
    client.log_artifacts(run_id, str(report), artifact_path="report")
    metrics = comparison_metrics(pd.read_parquet(report / "tables" / "comparisons.parquet"))
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, 0) for k, v in sorted(metrics.items())]
    for i in range(0, len(items), 1000):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=items[i:i + 1000])
