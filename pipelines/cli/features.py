"""`attnsweep features OUT`: which metadata features the selected models use (paper 002 Table 3)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def features(
    out: Path = typer.Argument(..., help="The study folder (holds results/, trials/, data/, study.yaml)."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Metadata columns, comma-separated (default: the study's features.columns)."),
    tests: Optional[str] = typer.Option(None, "--tests", help="Comma-separated of kci, rcot, cmiknn (default: all three)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Significance level per test (default 0.01)."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Random subset above this many rows (default 1000)."),
    models: Optional[str] = typer.Option(None, "--models", help="best (one split per variant) | all (every repeat split)."),
    prediction: Optional[str] = typer.Option(None, "--prediction", help="softmax | class."),
    eval_set: Optional[str] = typer.Option(None, "--eval-set", help="test | val | ood:<name>."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log OUT/features/ to the study's MLflow run."),
) -> None:
    """Test H0 "feature independent of the prediction given the label" for each model and feature;
    write OUT/features/usage.parquet and table3.csv and print Table 3."""
    from attnsweep.pipelines.report.features import analyse_study, log_to_study_run, settings_from_study, table3
    from attnsweep.pipelines.report.study_folder import StudyFolderError, load
    from attnsweep.pipelines.trial.study_paths import StudyPaths

    split = lambda v: [x.strip() for x in v.split(",") if x.strip()]  # noqa: E731
    overrides = {k: v for k, v in {
        "columns": split(columns) if columns else None, "tests": split(tests) if tests else None,
        "alpha": alpha, "max_samples": max_samples, "models": models, "prediction": prediction,
        "eval_set": eval_set}.items() if v is not None}
    try:
        settings = settings_from_study(out, overrides)
        rows = analyse_study(out, settings, log=lambda m: typer.echo(m, err=True))
    except StudyFolderError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    table = table3(rows, load(out).variant_order, settings.columns)
    typer.echo(f"Table 3: feature usage ({', '.join(dict.fromkeys(rows['test']))}; majority at p < {settings.alpha:g})")
    typer.echo(table.to_string())
    typer.echo(f"written: {StudyPaths(out).features_dir}")
    if not mlflow:
        typer.echo("not logged to MLflow (--no-mlflow)")
        return
    uri = log_to_study_run(out)
    typer.echo(f"logged to the study's MLflow run: {uri}" if uri else "not logged to MLflow (no tracking store)")
