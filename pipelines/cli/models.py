"""`attnsweep models`: the registered model variants with their parameter counts."""
from __future__ import annotations

import json

import typer


def models(
    num_classes: int = typer.Option(3, "--num-classes", min=2, help="Classes of the classifier head."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List every registered variant: backbone, attention modules and parameter count."""
    from attnsweep.models import describe_variants

    rows = describe_variants(num_classes)
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
