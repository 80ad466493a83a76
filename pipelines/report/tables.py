"""The report's tables, as pandas frames built from a `StudyFolder` (paper 002's Tables 1, 2 and 5,
the comparisons behind Table 2, the search landscape, run facts and the runs left out). Each frame
is written to `report/tables/<name>.csv`; the HTML and Markdown render the same frames."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from attnsweep.pipelines.config import selection
from attnsweep.pipelines.report import details, stats
from attnsweep.pipelines.report.study_folder import StudyFolder, StudyFolderError
from attnsweep.pipelines.store.results_schema import SCHEMA_VERSION
from attnsweep.pipelines.trial.study_paths import StudyPaths

# all metrics the study can compare are "higher is better" fractions, shown in percent as paper 002
PERCENT = 100.0
CSV_FLOAT = "%.10g"


def baselines(folder: StudyFolder) -> dict[str, str]:
    return {v: folder.baselines[v] for v in folder.variant_order}


def _runs(results: pd.DataFrame) -> pd.DataFrame:
    """One row per run (trial x split): result rows repeat the run's facts for each evaluated set."""
    return results.drop_duplicates(["trial_id", "split"])


def params_table(folder: StudyFolder) -> pd.DataFrame:
    """Table 1: parameters per variant and the relative change to its baseline."""
    known = folder.results.dropna(subset=["params"])  # a run that failed early has no count
    params = known.groupby("variant")["params"].agg(lambda s: int(s.mode().iloc[0]))
    base = baselines(folder)
    rows = []
    for v in folder.variant_order:
        p, pb = params.get(v), params.get(base[v])
        rows.append({
            "variant": v, "baseline": base[v], "params": p,
            "params_m": p / 1e6 if p is not None else None,
            "change_pct": PERCENT * (p / pb - 1) if p is not None and pb else None,
        })
    return pd.DataFrame(rows, columns=["variant", "baseline", "params", "params_m", "change_pct"]).astype(
        {"params": "Int64", "params_m": "float64", "change_pct": "float64"})


@dataclass
class Cell:
    """One Table-2 entry: a variant's mean +- std on one evaluated set."""

    mean: float
    std: float
    n: int
    significant: bool
    better: bool
    excluded: int

    def text(self, bold: tuple[str, str] = ("", "")) -> str:
        if self.n == 0:
            return "n/a"
        mean = f"{PERCENT * self.mean:.1f}"
        if self.significant:
            mean = f"{bold[0]}{mean}{bold[1]}{'↑' if self.better else '↓'}"
        std = f"{PERCENT * self.std:.2f}" if self.n > 1 else "-"
        flag = f" †{self.excluded}" if self.excluded else ""
        return f"{mean} ± {std}{flag}"


def table2_cells(comp: pd.DataFrame, metric: str, order: list[str]) -> dict[str, dict[str, list[Cell]]]:
    """variant -> dataset -> cells (test first, then each OOD set), for one metric."""
    part = comp[comp["metric"] == metric]
    out: dict[str, dict[str, list[Cell]]] = {}
    for v in order:
        for dataset, rows in part[part["variant"] == v].groupby("dataset", sort=True):
            out.setdefault(v, {})[dataset] = [
                Cell(r["mean"], r["std"], int(r["n"]), bool(r["significant"]), r["diff"] > 0,
                     int(r["excluded_runs"]))
                for _, r in rows.set_index("eval_set").loc[stats.eval_set_order(rows["eval_set"])].iterrows()
            ]
    return out


def cell_group_text(cells: list[Cell], bold: tuple[str, str] = ("", "")) -> str:
    """`test (ood1; ood2)` as in paper 002's Table 2."""
    head, ood = cells[0].text(bold), "; ".join(c.text(bold) for c in cells[1:])
    return f"{head} ({ood})" if ood else head


def results_table(comp: pd.DataFrame, metric: str, order: list[str]) -> pd.DataFrame:
    """Table 2: mean +- std (percent) per variant and dataset, OOD in parentheses; a significant
    difference to the baseline gets an arrow (better/worse), † counts the runs left out."""
    cells = table2_cells(comp, metric, order)
    datasets = sorted(comp["dataset"].unique())
    return pd.DataFrame(
        [{"variant": v} | {d: cell_group_text(cells[v][d]) if d in cells[v] else "" for d in datasets}
         for v in order if v in cells]
    )


def search_landscape(folder: StudyFolder) -> pd.DataFrame:
    """Mean validation value of the selection metric per search configuration (over the search
    splits); `metric` names it."""
    r, metric = folder.results, folder.selection_metric
    s = r[(r["phase"] == "search") & (r["eval_set"] == "val") & r[metric].notna()]
    land = (s.groupby(["dataset", "variant", "lr", "weight_decay"])[metric]
            .agg(val_mean="mean", n="count").reset_index())
    land.insert(4, "metric", metric)
    rank = land["variant"].map({v: i for i, v in enumerate(folder.variant_order)})
    return (land.assign(_r=rank).sort_values(["dataset", "_r", "lr", "weight_decay"])
            .drop(columns="_r").reset_index(drop=True))


BEST_HPARAMS_COLUMNS = ["dataset", "variant", "lr", "weight_decay", "selection_metric", "search_score",
                        "search_configs", "chosen_by"]


def best_hparams(folder: StudyFolder, landscape: pd.DataFrame) -> pd.DataFrame:
    """Table 5: each variant's configuration as the driver chose it (`selection/<variant>.json`:
    its metric and score), also while the repeat phase has not run. A folder without the record
    (copied, or without a search) shows the configuration its repeat rows used."""
    r = folder.results
    rows = []
    for dataset in sorted(r["dataset"].unique()):
        for v in folder.variant_order:
            rep = r[(r["phase"] == "repeat") & (r["dataset"] == dataset) & (r["variant"] == v)]
            land = landscape[(landscape["dataset"] == dataset) & (landscape["variant"] == v)]
            record = folder.selection.get(v)
            if record is not None:
                chosen = record["chosen"]
                rows.append({"dataset": dataset, "variant": v, "lr": chosen["lr"], "weight_decay": chosen["weight_decay"],
                             "selection_metric": record["metric"], "search_score": chosen["score"],
                             "search_configs": len(record["configurations"]), "chosen_by": "driver"})
            elif len(rep):
                lr, wd = rep.groupby(["lr", "weight_decay"]).size().idxmax()
                hit = land[(land["lr"] == lr) & (land["weight_decay"] == wd)]["val_mean"]
                rows.append({"dataset": dataset, "variant": v, "lr": lr, "weight_decay": wd,
                             "selection_metric": folder.selection_metric,
                             "search_score": selection.score(hit.iloc[0], folder.selection_metric) if len(hit)
                             else float("nan"),
                             "search_configs": len(land), "chosen_by": "repeat rows"})
    return pd.DataFrame(rows, columns=BEST_HPARAMS_COLUMNS)


def left_out_runs(folder: StudyFolder) -> pd.DataFrame:
    """Runs without usable results, which the statistics exclude: diverged or failed in any phase,
    stopped in the repeat phase (in the search a stop is the scheduler's normal early stop)."""
    bad = details.not_ok_runs(folder)
    return bad[bad["left_out"].astype(bool)][["phase", "dataset", "variant", "split", "status", "trial_id", "reason"]
                                ].reset_index(drop=True)


def _span(times: pd.Series) -> str:
    times = times.dropna()
    return f"{times.min():%Y-%m-%d %H:%M} .. {times.max():%Y-%m-%d %H:%M} UTC" if len(times) else "-"


def run_facts(folder: StudyFolder) -> pd.DataFrame:
    runs = _runs(folder.results)
    status = runs["status"].value_counts()
    facts = {
        "study": folder.name,
        "study file": "study.yaml" if StudyPaths(folder.out).study_file.exists() else "missing",
        "code version": ", ".join(sorted(runs["code_version"].dropna().unique())),
        "results schema": SCHEMA_VERSION,
        "variants": str(runs["variant"].nunique()),
        "datasets": ", ".join(sorted(runs["dataset"].unique())),
        "search trials": str(runs.loc[runs["phase"] == "search", "trial_id"].nunique()),
        "repeat trials": str(runs.loc[runs["phase"] == "repeat", "trial_id"].nunique()),
        "runs (trial x split)": str(len(runs)),
        "diverged runs": str(status.get("diverged", 0)),
        "failed runs": str(status.get("failed", 0)),
        "stopped runs": str(status.get("stopped", 0)),
        "GPU-seconds": f"{runs['gpu_seconds'].sum():.0f}",
        "train seconds": f"{runs['train_seconds'].sum():.0f}",
        "world sizes": ", ".join(str(w) for w in sorted(runs["world_size"].dropna().unique())),
        "finished": _span(runs["finished_at"]),
        "significance": stats.caption(folder.settings),
    }
    return pd.DataFrame({"fact": list(facts), "value": list(facts.values())})


def build_tables(folder: StudyFolder) -> dict[str, pd.DataFrame]:
    """Every table of the report, by CSV name."""
    order = folder.variant_order
    try:
        comp = stats.comparisons(folder.results, folder.settings, order, folder.baselines)
    except ValueError as e:  # a setting that does not fit the results, e.g. an unknown baseline
        raise StudyFolderError(f"{StudyPaths(folder.out).study_file}: {e}") from None
    landscape = search_landscape(folder)
    tables = {"comparisons": comp, "params": params_table(folder)}
    for metric in folder.settings.metrics:
        tables[f"results_{metric}"] = results_table(comp, metric, order)
    tables |= {
        "best_hparams": best_hparams(folder, landscape),
        "search_landscape": landscape,
        "left_out_runs": left_out_runs(folder),
        "runs_not_ok": details.not_ok_runs(folder),
        "cost": details.cost_table(folder),
        "run_facts": run_facts(folder),
    }
    return tables


FORMULA_START = ("=", "+", "@", "\t", "\r")  # what a spreadsheet runs as a formula (OWASP CSV injection)


def csv_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula get a leading `'`; the csv module
    quotes commas, quotes and newlines."""
    text = [c for c in table.columns if pd.api.types.is_object_dtype(table[c]) or pd.api.types.is_string_dtype(table[c])]
    guard = lambda v: f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_START) else v  # noqa: E731
    return table.assign(**{c: table[c].map(guard) for c in text}) if text else table


def write_tables(tables: dict[str, pd.DataFrame], folder: Path) -> None:
    """Every table as CSV; the statistics (`comparisons`) also as Parquet, typed and at full precision."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        csv_safe(table).to_csv(folder / f"{name}.csv", index=False, float_format=CSV_FLOAT)
    if "comparisons" in tables:
        tables["comparisons"].to_parquet(folder / "comparisons.parquet", index=False)
