"""`attnsweep models`: the registered model variants (or a study's) with their parameter counts."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def models(
    num_classes: int = typer.Option(3, "--num-classes", min=2, help="Classes of the classifier head."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    study_file: Optional[Path] = typer.Option(None, "--study", help="List this study's models instead (its "
                                              "attention plugins and timm: backbones, at its image size)."),
) -> None:
    """List every registered variant: backbone, attention modules and parameter count."""
    from attnsweep.models import describe_variants

    names, size = None, None
    if study_file is not None:
        from attnsweep.pipelines.config.study import StudyError, load_study

        try:
            study = load_study(study_file)
        except StudyError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        names = list(dict.fromkeys(study.variant(v).model for v in study.variant_ids))
        size = study.image_size
    try:
        rows = describe_variants(num_classes, size, names)
    except ValueError as e:  # a plugin that cannot be built: one line naming it
        typer.echo(f"error: {study_file}: {e}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"attnsweep model variants ({num_classes} classes)")
    for col, justify in (("name", "left"), ("backbone", "left"), ("attention", "left"), ("params", "right")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r["name"], r["backbone"], "+".join(r["attention"]) or "-", f"{r['params']:,}")
    Console().print(table)
