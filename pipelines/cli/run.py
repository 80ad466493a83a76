"""`attnsweep run STUDY` (the study driver) and `attnsweep export OUT --to FILE.parquet`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(
    study_file: Path = typer.Argument(..., help="The study file (studies/*.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: the study's out_dir, else runs/<name>)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="Where trials train: debug | local | slurm."),
    max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent", min=1, help="Tune trials at once."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default sqlite:///<out>/mlflow.db)."),
    resume: bool = typer.Option(False, "--resume", help="Finish a study whose driver stopped; finished trials are not re-run."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and an estimated compute time; run nothing."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the report at the end."),
) -> None:
    """Run a study: search and repeat phases of every variant, MLflow, Parquet, report."""
    from pydantic import ValidationError

    from attnsweep.pipelines.config.study import StudyError, load_study
    from attnsweep.pipelines.config.errors import one_line

    try:
        study = load_study(study_file)
        update = {k: v for k, v in {"out_dir": out, "max_concurrent": max_concurrent, "tracking_uri": tracking_uri}.items()
                  if v is not None}
        if executor is not None:
            update["executor"] = study.executor.model_copy(update={"kind": executor}).model_dump()
        study = type(study).model_validate({**study.model_dump(), **update})
    except StudyError as e:
        _fail(str(e))
    except ValidationError as e:
        _fail(one_line(e, "command line"))
    if dry_run:
        try:
            print_plan(study)
        except ValueError as e:  # a variant that cannot take the study's image size
            _fail(f"{study_file}: {e}")
        return

    from rich.console import Console

    from attnsweep.data import DataError
    from attnsweep.pipelines.sweep.orchestrate import StudyExists, run_study
    from attnsweep.pipelines.sweep.phases import NoEligibleConfig
    from attnsweep.pipelines.config.trial_config import TrialConfigError

    # Without a terminal (a log file, a SLURM job) rich would wrap at 80 columns.
    console = Console() if Console().is_terminal else Console(width=120, soft_wrap=True)
    try:
        result = run_study(study, resume=resume, console=console, report=not no_report)
    except (StudyExists, DataError, TrialConfigError) as e:
        _fail(str(e))
    except NoEligibleConfig as e:
        _fail(str(e), code=1)
    except KeyboardInterrupt:
        console.print("interrupted: unfinished trials' jobs were cancelled; `--resume` finishes the study")
        raise typer.Exit(130) from None
    out_dir = result.out
    console.print(f"\n[bold]{study.name} finished[/]")
    console.print(f"  results (Parquet): {out_dir / 'results'}   (attnsweep export {out_dir} --to results.parquet)")
    console.print(f"  MLflow store:      {result.tracking_uri}")
    if result.report:
        console.print(f"  report:            {result.report / 'index.html'}  and  {result.report / 'report.md'}")
    if result.tracking_uri.startswith("sqlite:"):
        console.print(f"  look at the runs:  mlflow ui --backend-store-uri {result.tracking_uri}")
    else:
        console.print(f"  look at the runs:  open {result.tracking_uri} (experiment {study.name})")


def export(
    out: Path = typer.Argument(..., help="A study output folder."),
    to: Path = typer.Option(..., "--to", help="The Parquet file to write."),
) -> None:
    """Consolidate a study's result rows (`<out>/results/`) into one Parquet file."""
    from attnsweep.pipelines.store.parquet_store import export as export_rows

    try:
        n = export_rows(out, to)
    except FileNotFoundError as e:
        _fail(str(e))
    typer.echo(f"{n} rows -> {to}")


def print_plan(study) -> None:
    """The plan (variants x phases x trials x splits x epochs) and its estimated compute time."""
    from rich.console import Console
    from rich.table import Table

    from attnsweep.pipelines.sweep import estimate
    rows = estimate.phase_work(study)
    images = estimate.pool_images(study)
    table = Table(title=f"{study.name}: plan ({study.dataset_label}, {study.image_size}px, executor "
                        f"{study.executor.kind}, {study.max_concurrent} trials at once)")
    for col in ("variant", "phase", "configs", "splits", "epochs", "trainings", "GFLOP/img", "est. wall"):
        table.add_column(col, justify="left" if col in ("variant", "phase") else "right")
    wall = 0.0
    for p in rows:
        seconds = estimate.phase_wall_seconds(study, p, images) if images else None
        wall += seconds or 0.0
        table.add_row(p.variant, p.phase, str(p.configs), str(p.splits), str(p.epochs), str(p.trainings),
                      f"{p.gflops_per_image:.3g}", _hours(seconds))
    console = Console(width=None if Console().is_terminal else 120)
    console.print(table)
    trainings = sum(p.trainings for p in rows)
    epochs = sum(p.trainings * p.epochs for p in rows)
    console.print(f"{len(study.variants)} variants x {len({p.phase for p in rows})} phases: {trainings} trainings, "
                  f"{epochs} epochs")
    if images:
        kind = estimate.device_kind(study)
        tflops = study.estimate.tflops or estimate.default_rank_tflops(study)
        console.print(f"estimated compute time: {_hours(wall)} wall ({images} images, {tflops:g} TFLOP/s per {kind} "
                      f"rank x {study.executor.world_size} ranks)")
    else:
        console.print("estimated compute time: unknown (set estimate.train_images in the study)")


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
