"""`attnsweep compare OUT1 OUT2 ...`: rank the variants several studies share (Friedman, Nemenyi,
CD diagram, Bayesian signed-rank test) into one HTML page."""
from __future__ import annotations

from pathlib import Path

import typer


def compare(
    outs: list[Path] = typer.Argument(..., help="Study folders (one per dataset) that share variants."),
    out: Path = typer.Option(Path("runs/compare"), "--out", help="Where to write index.html and tables/."),
    alpha: float = typer.Option(0.05, min=0.0, max=1.0, help="Significance level of the Friedman/Nemenyi tests."),
    eval_set: str = typer.Option("test", help="The evaluated set whose scores are ranked."),
    rope: float | None = typer.Option(None, min=0.0, help="ROPE of the Bayesian signed-rank test; default: the "
                                                          "first study's stats.rope of each metric."),
) -> None:
    """Write OUT/index.html and OUT/tables/*.csv comparing the studies' shared variants."""
    from attnsweep.pipelines.report.compare import CompareError, build_comparison

    try:
        path = build_comparison(outs, out, alpha=alpha, eval_set=eval_set, rope=rope)
    except CompareError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"comparison: {path / 'index.html'}")
