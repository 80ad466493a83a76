"""`attnsweep report OUT`: statistics, tables, figures and explanations of a finished study."""
from __future__ import annotations

from pathlib import Path

import typer


def report(
    out: Path = typer.Argument(..., help="The study folder (holds results/, epochs/, study.yaml)."),
    explain: bool = typer.Option(True, "--explain/--no-explain",
                                 help="Grad-CAM / attention maps from the kept repeat checkpoints."),
) -> None:
    """Write OUT/report/: index.html (PNGs beside it), report.md and tables/*.csv."""
    from attnsweep.pipelines.report.build import build_report
    from attnsweep.pipelines.report.study_folder import StudyFolderError

    try:
        path = build_report(out, explain=explain)
    except StudyFolderError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"report: {path / 'index.html'}")
