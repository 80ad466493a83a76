"""The `attnsweep` command line. Each sub-command lives in the module that owns the concept;
this file only wires them together. Heavy imports (torch, ray, mlflow) happen inside commands
so `attnsweep --help` stays fast."""
from __future__ import annotations

import typer

from attnsweep.pipelines.cli import compare as cli_compare
from attnsweep.pipelines.cli import data as cli_data
from attnsweep.pipelines.cli import features as cli_features
from attnsweep.pipelines.cli import models as cli_models
from attnsweep.pipelines.cli import report as cli_report
from attnsweep.pipelines.cli import run as cli_run
from attnsweep.pipelines.cli import status as cli_status
from attnsweep.pipelines.cli import train as cli_train
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Statistically sound sweeps of attention modules for medical image classification.",
)
app.command("models")(cli_models.models)
app.command("report")(cli_report.report)
app.command("compare")(cli_compare.compare)
app.command("features")(cli_features.features)
app.command("run")(cli_run.run)
app.command("export")(cli_run.export)
app.command("status")(cli_status.status)
app.command("train")(cli_train.train)
app.add_typer(cli_data.app, name="data")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
