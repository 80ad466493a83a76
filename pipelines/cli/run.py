"""`attnsweep run STUDY` (the study driver) and `attnsweep export OUT --to FILE.parquet`."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Optional

import typer


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(
    study_file: Path = typer.Argument(..., help="The study file (studies/*.yaml)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="KEY=VALUE overrides of the study, dotted paths: "
                                                    "train.epochs=1 search.trials=2 variants.resnet18+se.train.epochs=5",
                                                    show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: the study's out_dir, else runs/<name>)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="Where trials train: debug | local | slurm."),
    max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent", min=1, help="Training jobs at once across the study."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default sqlite:///<out>/mlflow.db)."),
    resume: bool = typer.Option(False, "--resume", help="Finish a study whose driver stopped; finished trials are not re-run."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and an estimated compute time; run nothing."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the report at the end."),
    allow_failed: bool = typer.Option(False, "--allow-failed", help="Exit 0 although some trials failed (the report lists them)."),
) -> None:
    """Run a study: search and repeat phases of every variant, MLflow, Parquet, report."""
    from attnsweep.pipelines.config.study import StudyError, load_study

    options = {k: v for k, v in {"out_dir": out and str(out), "max_concurrent": max_concurrent,
                                 "tracking_uri": tracking_uri, "executor": executor and {"kind": executor}}.items()
               if v is not None}
    try:
        study = load_study(study_file, overrides or (), options)
    except StudyError as e:
        _fail(str(e))
    if dry_run:
        try:
            print_plan(study)
        except ValueError as e:  # a variant that cannot take the study's image size
            _fail(f"{study_file}: {e}")
        return

    from rich.console import Console

    from attnsweep.data import DataError
    from attnsweep.pipelines.config.compare import StudyChanged
    from attnsweep.pipelines.sweep.lock import StudyLocked
    from attnsweep.pipelines.sweep.orchestrate import StudyExists, run_study
    from attnsweep.pipelines.store.parquet_store import BadResultsFile
    from attnsweep.pipelines.sweep.failed_trials import StudyIncomplete
    from attnsweep.pipelines.sweep.phases import NoEligibleConfig
    from attnsweep.pipelines.trial.failures import describe
    from attnsweep.pipelines.trial.study_paths import StudyPaths
    from attnsweep.pipelines.config.trial_config import TrialConfigError
    from attnsweep.pipelines.store.mlflow_store import TrackingUnavailable, check_tracking

    for field, spec in [("dataset", study.dataset), *((f"ood.{k}", v) for k, v in study.ood.items())]:
        if spec.root is not None and not Path(spec.root).exists():  # before the study folder is touched
            _fail(f"{study_file}: {field}.root: {spec.root} does not exist; fix the path")
    try:
        if study.tracking_uri:
            check_tracking(study.tracking_uri)
    except TrackingUnavailable as e:
        _fail(str(e))
    out_dir = study.output_dir()
    if not out_dir.exists():
        try:
            out_dir.mkdir(parents=True)
        except OSError as e:  # a file on the way (FILE/sub), /proc, no permission
            _fail(f"--out {out_dir}: cannot create the folder ({e.strerror}); pass another --out")
    # Without a terminal (a log file, a SLURM job) rich would wrap at 80 columns.
    console = Console() if Console().is_terminal else Console(width=120, soft_wrap=True)
    try:
        result = run_study(study, resume=resume, console=console, report=not no_report, allow_failed=allow_failed)
    except (StudyExists, StudyLocked, StudyChanged, BadResultsFile, DataError, TrialConfigError,
            TrackingUnavailable) as e:
        _fail(str(e))
    except (NoEligibleConfig, StudyIncomplete) as e:
        _fail(_disk_full(study.output_dir()) or str(e), code=1)
    except OSError as e:  # e.g. a full disk under the driver's own writes
        if e.errno == errno.ENOSPC:
            _fail(_disk_full(study.output_dir(), always=True), code=1)
        _fail(f"{describe(e)}; fix it and run with --resume", code=1)
    except KeyboardInterrupt:
        console.print("interrupted: unfinished trials' jobs were cancelled; `--resume` finishes the study")
        # Everything is on disk and the jobs are stopped; the interpreter's native teardown after
        # an interrupted Ray session took 40 s on a loaded machine, so the driver leaves now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    out_dir = result.out
    console.print(f"\n[bold]{study.name} finished[/]")
    console.print(f"  results (Parquet): {StudyPaths(out_dir).results_dir}   (attnsweep export {out_dir} --to results.parquet)")
    console.print(f"  MLflow store:      {result.tracking_uri}")
    if result.report:
        console.print(f"  report:            {result.report / 'index.html'}  and  {result.report / 'report.md'}")
    from attnsweep.pipelines.store.mlflow_summary import runs_url

    if result.tracking_uri.startswith("sqlite:"):
        console.print(f"  look at the runs:  mlflow ui --backend-store-uri {result.tracking_uri}")
        console.print(f"                     then open {runs_url('http://127.0.0.1:5000', result.experiment_id)}")
    else:
        console.print(f"  look at the runs:  {runs_url(result.tracking_uri, result.experiment_id)}")


def _disk_full(out: Path, always: bool = False) -> str | None:
    """The line for a study that stopped because its disk filled (the driver's own write, or a
    trial recorded as failed with ENOSPC), else None."""
    from attnsweep.pipelines.sweep.failed_trials import failed_trials

    if not always:
        try:
            whys = failed_trials(out)["why"]
        except (OSError, ValueError):
            return None
        if not whys.str.contains("No space left on device").any():
            return None
    return f"no space left on device in {out}; free space and run with --resume"


def export(
    out: Path = typer.Argument(..., help="A study output folder."),
    to: Path = typer.Option(..., "--to", help="The Parquet file to write."),
) -> None:
    """Consolidate a study's result rows (`<out>/results/`) into one Parquet file."""
    from attnsweep.pipelines.store.parquet_store import export as export_rows
    from attnsweep.pipelines.trial.failures import describe

    try:
        n = export_rows(out, to)
    except (FileNotFoundError, ValueError) as e:  # no study folder, a target inside it, a bad results file
        _fail(str(e))
    except OSError as e:  # the target cannot be written (a file named as a folder, /proc, no space)
        _fail(f"--to {to}: cannot write it ({describe(e)})")
    typer.echo(f"{n} rows -> {to}")


def print_plan(study) -> None:
    """The plan (variants x phases x trials x splits x epochs) and its simulated schedule: the
    estimated makespan next to the lower bound (job time / budget), per phase, and what twice the
    budget would buy."""
    from rich.console import Console
    from rich.table import Table

    from attnsweep.pipelines.sweep import estimate

    rows = estimate.phase_work(study)
    n_train = estimate.training_images(study)
    folders = estimate.calibration_folders(study)
    measured = estimate.measured_trainings(folders)
    jobs = {p.variant: estimate.job_estimate(study, p, n_train, measured) for p in rows} if n_train else {}
    table = Table(title=f"{study.name}: plan ({study.dataset_label}, {study.image_size}px, executor "
                        f"{study.executor.kind}, {study.max_concurrent} jobs at once)")
    for col in ("variant", "phase", "configs", "splits", "epochs", "trainings", "GFLOP/img", "est. per job"):
        table.add_column(col, justify="left" if col in ("variant", "phase") else "right")
    for p in rows:
        job = jobs.get(p.variant)
        table.add_row(p.variant, p.phase, str(p.configs), str(p.splits), str(p.epochs), str(p.trainings),
                      f"{p.gflops_per_image:.3g}", _hours(job.seconds if job else None))
    console = Console(width=None if Console().is_terminal else 120)
    console.print(table)
    trainings = sum(p.trainings for p in rows)
    epochs = sum(p.trainings * p.epochs for p in rows)
    console.print(f"{len(study.variant_ids)} variants x {len({p.phase for p in rows})} phases: {trainings} trainings, "
                  f"{epochs} epochs")
    driver, short = estimate.driver_memory_line(study.max_concurrent)
    console.print(f"[yellow]warning: {driver}[/]" if short else driver)
    if not jobs:
        console.print("estimated compute time: unknown (set estimate.train_images in the study)")
        return
    seconds = {v: j.seconds for v, j in jobs.items()}
    sched = estimate.simulate(study, rows, seconds, study.max_concurrent)
    # local jobs share this machine's cores: a wider budget makes each job slower
    wide_study = study.model_copy(update={"max_concurrent": 2 * study.max_concurrent})
    wider = estimate.simulate(wide_study, rows, {p.variant: estimate.job_estimate(wide_study, p, n_train, measured).seconds
                                                 for p in rows}, wide_study.max_concurrent)
    start, report, seen = estimate.driver_seconds(folders)
    phases = ", ".join(f"{phase} ends at {_hours(t)}" for phase, t in sched.phase_end.items())
    console.print(f"estimated compute time: {_hours(start + sched.makespan + report)} wall: jobs "
                  f"{_hours(sched.makespan)} (lower bound {_hours(sched.lower_bound)} = {_hours(sched.job_seconds)} "
                  f"of jobs / {study.max_concurrent}; {sched.occupancy:.0%} of the budget busy; {phases}) + start-up "
                  f"{_hours(start)} + report {_hours(report)} ({'measured' if seen else 'default'})")
    console.print(f"  with max_concurrent {2 * study.max_concurrent}: jobs {_hours(wider.makespan)} "
                  f"(lower bound {_hours(wider.lower_bound)})")
    calibrated = sum(j.calibrated for j in jobs.values())
    console.print(f"  per-job time: {calibrated} of {len(jobs)} variants calibrated on measured trainings "
                  f"({n_train} training images per split)")
    for v, j in jobs.items():
        console.print(f"    {v}: {_hours(j.seconds)} per job, {j.basis}")


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
