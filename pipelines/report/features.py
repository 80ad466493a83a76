"""Feature usage (paper 002 Sec. 3.3, Table 3; Reimers et al. 2020, Penzel et al. 2022): a model
*uses* a feature F when the null hypothesis "F is independent of the prediction Y_hat given the true
label Y" is rejected by the majority of the conditional independence tests (`ci_tests`) at alpha.

Reads the study folder only: the result rows pick the repeat trials (the best split of each
variant by the validation metric, or all of them), `config.json` names the model and split,
`best.pt` holds the selected weights, the prepared split's records hold the metadata (F).
Writes `<out>/features/usage.parquet` (one row per variant x split x feature x test) and
`<out>/features/table3.csv`."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import pandas as pd

from attnsweep.pipelines.config.feature_settings import FeatureSettings
from attnsweep.pipelines.report.ci_tests import PARAMS, ci_test, library_version, unavailable
from attnsweep.pipelines.trial.folder import TrialFolder
from attnsweep.pipelines.trial.study_paths import StudyPaths

USAGE_FILE = "usage.parquet"
TABLE_FILE = "table3.csv"
MISSING = {"", "unknown", "nan", "none"}  # besides null: HAM10000 writes `unknown` for sex and site
BATCH = 64


@dataclass(frozen=True)
class Encoded:
    values: np.ndarray  # (n_kept, d) float
    kept: np.ndarray  # bool mask over the input rows: not missing
    encoding: str  # numeric | binary | one_hot | ordinal


def encode_feature(values: pd.Series, categorical: str = "one_hot") -> Encoded:
    """A metadata column as numbers. Missing (null, '', 'unknown') rows are dropped; booleans and
    two-valued text become one 0/1 column; numbers stay one column (continuous or ordinal); other
    text is one-hot or ordinal codes (`categorical`)."""
    s = pd.Series(values).reset_index(drop=True)
    text = s.astype(str).str.strip().str.lower()
    kept = (s.notna() & ~(s.map(lambda v: isinstance(v, str)) & text.isin(MISSING))).to_numpy()
    v = s[kept]
    if pd.api.types.is_bool_dtype(v) or (v.dtype == object and v.map(lambda x: isinstance(x, bool)).all() and len(v)):
        return Encoded(v.astype(float).to_numpy()[:, None], kept, "binary")
    if pd.api.types.is_numeric_dtype(v):
        return Encoded(v.astype(float).to_numpy()[:, None], kept, "numeric")
    cat = v if isinstance(v.dtype, pd.CategoricalDtype) else v.astype(str).astype(
        pd.CategoricalDtype(sorted(v.astype(str).unique())))
    cat = cat.cat.remove_unused_categories()
    if len(cat.cat.categories) <= 2 or categorical == "ordinal":
        return Encoded(cat.cat.codes.to_numpy(float)[:, None], kept, "binary" if len(cat.cat.categories) <= 2 else "ordinal")
    return Encoded(pd.get_dummies(cat).to_numpy(float), kept, "one_hot")


def encode_prediction(probs: np.ndarray, prediction: str) -> np.ndarray:
    """Y_hat: the softmax vector, or the predicted class one-hot."""
    probs = np.asarray(probs, float)
    return probs if prediction == "softmax" else np.eye(probs.shape[1])[probs.argmax(1)]


def _varying(a: np.ndarray) -> np.ndarray:
    """The columns that are not constant (the libraries z-score columns: a constant one is 0/0)."""
    return a[:, a.std(axis=0) > 0]


def feature_usage(feature: pd.Series, probs: np.ndarray, labels: np.ndarray, num_classes: int,
                  settings: FeatureSettings, tests: list[str] | None = None) -> list[dict]:
    """One row per test for H0: feature independent of Y_hat given Y: statistic, p_value,
    rejected (p < alpha), n (tested), n_dropped (missing), encoding, note. Testing nothing (a
    constant feature or prediction) gives p_value NaN and a note instead."""
    tests = list(tests or settings.tests)
    enc = encode_feature(feature, settings.categorical)
    y_hat = encode_prediction(probs, settings.prediction)[enc.kept]
    y = np.eye(num_classes)[np.asarray(labels)[enc.kept]]
    f = enc.values
    n_available = len(f)
    note = ""
    if settings.max_samples and n_available > settings.max_samples:
        pick = np.sort(np.random.default_rng(settings.seed).choice(n_available, settings.max_samples, replace=False))
        f, y_hat, y = f[pick], y_hat[pick], y[pick]
        note = f"random subset of {settings.max_samples} of {n_available}"
    f, y_hat, y = _varying(f), _varying(y_hat), _varying(y)
    if y.shape[1] == 0:
        y = np.zeros((len(f), 1))  # one class only: the condition is empty, the tests are unconditional
    skip = ("the feature is constant" if f.shape[1] == 0 else
            "the prediction is constant" if y_hat.shape[1] == 0 else
            "fewer than 10 rows" if len(f) < 10 else "")
    rows = []
    for test in tests:
        if skip:
            stat, p = float("nan"), float("nan")
        else:
            r = ci_test(test, f, y_hat, y, settings.seed)
            stat, p = r.statistic, r.p_value
        rows.append({"feature": str(feature.name), "encoding": enc.encoding, "test": test, "statistic": stat,
                     "p_value": p, "rejected": bool(p < settings.alpha), "n": len(f),
                     "n_dropped": int((~enc.kept).sum()), "note": skip or note})
    return rows


def majority(rows: pd.DataFrame) -> bool:
    """One feature of one model is used when more than half of the tests that ran reject H0
    (of two tests: both; of three: two)."""
    ran = rows["p_value"].notna()
    return bool(ran.any() and rows.loc[ran, "rejected"].sum() > ran.sum() / 2)


# --- the study folder -----------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    variant: str
    split: str
    trial_id: str
    folder: Path


def _split_index(split: str) -> int:
    return int(split.rsplit("-", 1)[-1])


def select_trials(out: Path, results: pd.DataFrame, metric: str, models: str) -> list[Trial]:
    """Repeat trials with kept selected weights; per variant the one with the best validation
    `metric` (ties: the lower split) or all of them."""
    r = results[(results["phase"] == "repeat") & (results["status"] == "ok")]
    val = r[r["eval_set"] == "val"].set_index("trial_id")[metric]
    trials = []
    for row in r.drop_duplicates("trial_id").itertuples():
        d = StudyPaths(out).trial("repeat", row.variant, row.trial_id)
        if d.best_file.exists() and d.config_file.exists():
            trials.append((row.variant, row.split, row.trial_id, d.path, float(val.get(row.trial_id, np.nan))))
    if models == "best":
        best: dict[str, tuple] = {}
        for t in sorted(trials, key=lambda t: (-np.nan_to_num(t[4], nan=-np.inf), _split_index(t[1]))):
            best.setdefault(t[0], t)
        trials = list(best.values())
    return [Trial(*t[:4]) for t in sorted(trials, key=lambda t: (t[0], _split_index(t[1])))]


def predict(out: Path, trial: Path, eval_set: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, int]:
    """Softmax of the selected weights on `eval_set` of the trial's split -> (probs, labels,
    metadata rows, number of classes). On a GPU when there is one."""
    import torch
    from torch.utils.data import DataLoader

    from attnsweep.data import load_split, make_dataset
    from attnsweep.models import create
    from attnsweep.pipelines.report.study_folder import StudyFolderError
    from attnsweep.pipelines.trial.checkpoint import load as load_weights

    folder = TrialFolder(trial)
    cfg = folder.config()
    data_dir = Path(cfg["data_dir"]) if cfg.get("data_dir") else folder.data_dir
    if not data_dir.exists():  # the study folder moved: its prepared data sits beside the trials
        data_dir = StudyPaths(out).data_dir
    split = load_split(data_dir, cfg["split"])
    if eval_set not in split.sets:
        raise StudyFolderError(f"features.eval_set: {eval_set!r} is not a set of {cfg['split']} "
                               f"(sets: {', '.join(s for s in split.sets if s != 'train')})")
    images = split.sets[eval_set]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = create(cfg["model"], num_classes=len(split.class_names), image_size=cfg["image_size"],
                   stem=cfg.get("stem", "imagenet"), attentions=cfg.get("attentions"))
    model.load_state_dict(load_weights(folder.best_file))
    model.to(device).eval()
    ds = make_dataset(images, "none", split.mean, split.std, train=False, seed=0)
    probs = []
    with torch.no_grad():
        for x, _ in DataLoader(ds, batch_size=BATCH):
            probs.append(torch.softmax(model(x.to(device)).float(), dim=1).cpu().numpy())
    return np.concatenate(probs), images.labels, images.meta, len(split.class_names)


def analyse_study(out: Path | str, settings: FeatureSettings, log=print) -> pd.DataFrame:
    """Run the analysis on the study folder and write `<out>/features/`; returns the rows."""
    from attnsweep.data.atomic import replacing
    from attnsweep.pipelines.report.study_folder import StudyFolderError, load

    out = Path(out)
    folder = load(out)
    missing_libs = unavailable(settings.tests)
    for test, why in missing_libs.items():
        log(f"features: test {test} left out: {why}")
    tests = [t for t in settings.tests if t not in missing_libs]
    if not tests:
        raise StudyFolderError(f"features.tests: none of {settings.tests} can run here")
    trials = select_trials(out, folder.results, folder.settings.metrics[0], settings.models)
    if not trials:
        raise StudyFolderError(f"{out}: no kept repeat checkpoints (trials/repeat/<variant>/<trial_id>/best.pt)")
    rows = []
    for i, t in enumerate(trials, 1):
        start = time.monotonic()
        probs, labels, meta, num_classes = predict(out, t.folder, settings.eval_set)
        absent = [c for c in settings.columns if c not in meta.columns]
        if absent:
            raise StudyFolderError(f"features.columns: {absent} not in the metadata of {settings.eval_set} "
                                   f"(columns: {', '.join(sorted(meta.columns))})")
        for column in settings.columns:
            for r in feature_usage(meta[column], probs, labels, num_classes, settings, tests):
                rows.append({"variant": t.variant, "split": t.split, "trial_id": t.trial_id,
                             "eval_set": settings.eval_set, **r})
        log(f"features: {i}/{len(trials)} {t.variant} {t.split}: {len(settings.columns)} features x "
            f"{len(tests)} tests on {len(labels)} {settings.eval_set} images in {time.monotonic() - start:.0f} s")
    df = pd.DataFrame(rows)
    keys = ["variant", "split", "feature"]
    used = {k: majority(g) for k, g in df.groupby(keys, sort=False)}
    df["used"] = [used[k] for k in zip(*(df[c] for c in keys))]
    df["alpha"] = settings.alpha
    df["prediction"] = settings.prediction
    df["models"] = settings.models
    df["params"] = df["test"].map(lambda t: json.dumps({**PARAMS[t], "seed": settings.seed}, sort_keys=True))
    df["library"] = df["test"].map(library_version)
    table = table3(df, folder.variant_order, settings.columns)
    dest = StudyPaths(out).features_dir
    dest.mkdir(exist_ok=True)
    with replacing(dest / USAGE_FILE) as tmp:
        df.to_parquet(tmp, index=False)
    with replacing(dest / TABLE_FILE) as tmp:
        table.to_csv(tmp)
    return df


def table3(df: pd.DataFrame, order: list[str], columns: list[str]) -> pd.DataFrame:
    """One row per variant, a column per feature: ✓ used / ✗ not used (majority of the tests) for
    one model per variant; `k/m` (used in k of m repeat splits) for several; – not tested."""
    used = df.drop_duplicates(["variant", "split", "feature"])
    tested = used[used["p_value"].notna()]
    cells = {}
    for (variant, feature), g in tested.groupby(["variant", "feature"]):
        k, m = int(g["used"].sum()), len(g)
        cells[(variant, feature)] = ("✓" if k else "✗") if m == 1 else f"{k}/{m}"
    variants = [v for v in order if v in set(df["variant"])] + sorted(set(df["variant"]) - set(order))
    table = pd.DataFrame([[cells.get((v, f), "–") for f in columns] for v in variants],
                         index=pd.Index(variants, name="variant"), columns=columns)
    return table


def read_usage(out: Path | str) -> pd.DataFrame | None:
    path = StudyPaths(out).features_dir / USAGE_FILE
    return pd.read_parquet(path) if path.exists() else None


def report_context(out: Path | str, order: list[str]) -> dict | None:
    """Table 3 for the report: marks with the p-values of each test on hover; None without results."""
    df = read_usage(out)
    if df is None or df.empty:
        return None
    columns = list(dict.fromkeys(df["feature"]))
    table = table3(df, order, columns)
    hover = {}
    for (variant, feature), g in df.groupby(["variant", "feature"]):
        hover[(variant, feature)] = "; ".join(
            f"{r.split} {r.test}: p={r.p_value:.3g}" for r in g.itertuples()) + (f" ({g['note'].iloc[0]})"
                                                                                  if g["note"].iloc[0] else "")
    rows = [{"variant": v, "cells": [{"mark": table.loc[v, f], "title": hover.get((v, f), "")} for f in columns]}
            for v in table.index]
    first = df.iloc[0]
    tests = ", ".join(dict.fromkeys(df["test"]))
    note = (f"H0: feature independent of the prediction ({first['prediction']}) given the true label, on the "
            f"{first['eval_set']} set; tests: {tests}; used (✓) when the majority rejects at p < {first['alpha']:g}. "
            f"Models: {'the best repeat split per variant by validation metric' if first['models'] == 'best' else 'k of m repeat splits'}. "
            f"p-values on hover and in features/usage.parquet.")
    return {"columns": columns, "rows": rows, "note": note}


def settings_from_study(out: Path | str, overrides: dict) -> FeatureSettings:
    """The `features:` section of `<out>/study.yaml` with `overrides` (the command line) on top;
    a problem is one line naming the file or option and the field."""
    import yaml
    from pydantic import ValidationError

    from attnsweep.pipelines.report.study_folder import StudyFolderError

    if not Path(out).is_dir():
        raise StudyFolderError(f"{out}: no such study folder")
    path = StudyPaths(out).study_file
    study = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    section = study.get("features") or {}
    where = "command line" if overrides else str(path)
    if not section and "columns" not in overrides:
        raise StudyFolderError(f"{path}: no `features:` section; name the metadata columns with --columns")
    try:
        return FeatureSettings.model_validate({**section, **overrides})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in ("features", *err["loc"]))
        raise StudyFolderError(f"{where}: {field}: {err['msg']} (got {err.get('input')!r})") from None


def log_features_to_mlflow(out: Path | str, tracking_uri: str, run_id: str) -> None:
    """`<out>/features/` as the `features/` artifact folder of the study's MLflow run."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).log_artifacts(run_id, str(StudyPaths(out).features_dir),
                                                          artifact_path=StudyPaths(out).features_dir.name)


def log_to_study_run(out: Path | str) -> str | None:
    """Log `<out>/features/` to the study's MLflow run (found by its tag, as the driver does);
    returns the tracking URI, or None for a folder without one (no tracking_uri, no mlflow.db)."""
    import yaml

    from attnsweep.pipelines.store.mlflow_store import MlflowStore, default_tracking_uri

    out = Path(out)
    study = yaml.safe_load(StudyPaths(out).study_file.read_text()) or {}
    if not study.get("tracking_uri") and not StudyPaths(out).mlflow_db.exists():
        return None
    uri = study.get("tracking_uri") or default_tracking_uri(out)
    store = MlflowStore(uri, study.get("name") or out.name, out)
    log_features_to_mlflow(out, uri, store.study_run())
    return uri
