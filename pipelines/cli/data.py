"""`attnsweep data`: validate a dataset on disk (`check`) and write the synthetic set (`synth`)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Datasets: validate one on disk, write the synthetic set.")



def _on_disk_formats() -> list[str]:
    """The formats `check` validates: every registered one with a dataset folder (not synthderm)."""
    from attnsweep.data.adapters import formats, needs_root

    return [f for f in formats() if needs_root(f)]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _parse_options(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--option {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


@app.command("check")
def check(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="A dataset format (built-in: ham10000, isic, "
                              "pad_ufes_20, camelyon17, medmnist, cifar10, imagefolder; installed ones; or an "
                              "adapter module's import path)."),
    root: Path = typer.Argument(..., help="The dataset folder (medmnist: the folder or the .npz)."),
    metadata: str = typer.Option(None, "--metadata", help="Metadata file, relative to ROOT or absolute "
                                 "(default: the format's published name; medmnist: the .npz)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Format option KEY=VALUE (YAML value)."),
    decode: bool = typer.Option(True, "--decode/--no-decode", help="Decode every image (finds corrupt files)."),
    workers: int = typer.Option(0, "--workers", min=0, help="Decoding processes (0: all cores)."),
) -> None:
    """Validate a dataset and print its counts per class and group; exit 0 when clean, 2 with a
    one-line error naming the file, row and value otherwise."""
    from pydantic import ValidationError
    from rich.console import Console
    from rich.table import Table

    from attnsweep.data import DataError, DatasetSpec
    from attnsweep.data.cache import default_workers
    from attnsweep.data.check import check as run_check
    from attnsweep.pipelines.config.errors import one_line
    from attnsweep.plugins import PluginError

    try:
        known = _on_disk_formats()
        if fmt not in known and "." not in fmt:
            _fail(f"FORMAT: unknown format {fmt!r}; known: {', '.join(known)}, or an adapter module's import path")
    except PluginError as e:
        _fail(str(e))
    try:
        spec = DatasetSpec(format=fmt, root=root, metadata=metadata, options=_parse_options(option))
        report = run_check(spec, decode=decode, workers=workers or default_workers())
    except ValidationError as e:
        _fail(one_line(e, fmt))
    except DataError as e:
        _fail(str(e))
    table = report.table()
    rich_table = Table(title=f"{fmt} at {root}")
    for col in table.columns:
        rich_table.add_column(str(col), justify="left" if col == "class" else "right")
    for row in table.itertuples(index=False):
        rich_table.add_row(*(str(v) for v in row))
    Console().print(rich_table)
    r = report.records
    typer.echo(f"ok: {len(r)} images, {r['group'].nunique()} groups, {len(report.class_names)} classes"
               + (", all decoded" if decode else ""))


@app.command("synth")
def synth(
    n: int = typer.Option(..., "--n", min=1, help="Number of images."),
    size: int = typer.Option(64, "--size", min=28, max=224, help="Image size in pixels."),
    out: Path = typer.Option(..., "--out", help="Output folder (must not exist or be empty)."),
    ood: bool = typer.Option(False, "--ood", help="The shifted-acquisition (OOD) variant."),
    seed: int = typer.Option(0, "--seed", min=0),
    bias_strength: float = typer.Option(0.5, "--bias-strength", min=0, max=1),
    label_noise: float = typer.Option(0.1, "--label-noise", min=0, max=0.66),
    grid: Path = typer.Option(None, "--grid", help="Also write a PNG grid of the first images here."),
) -> None:
    """Write synthderm as PNG images (images/NNNNNN.png) plus metadata.csv (every feature, label)."""
    import time

    import numpy as np
    from PIL import Image

    from attnsweep.data import synthderm

    if out.exists() and any(out.iterdir()):
        _fail(f"--out: {out} exists and is not empty")
    md = synthderm.metadata(n, seed, ood, bias_strength, label_noise)
    md.insert(1, "file", [f"images/{i:06d}.png" for i in md["image"]])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # renamed when complete
    try:
        (tmp / "images").mkdir()
        first, i, render_s = [], 0, 0.0
        t0 = time.perf_counter()
        for chunk in synthderm.render(0, n, size, seed, ood, bias_strength, label_noise):
            render_s += time.perf_counter() - t0
            for img in chunk:
                Image.fromarray(img).save(tmp / md["file"][i], compress_level=1)
                i += 1
            if len(first) < 32:
                first.extend(chunk[: 32 - len(first)])
            t0 = time.perf_counter()
        md.to_csv(tmp / "metadata.csv", index=False)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if grid is not None:
        from attnsweep.data.grid import save_grid

        save_grid(np.stack(first), md.head(len(first)), grid)
    typer.echo(f"wrote {n} images ({size}px{', OOD' if ood else ''}) and metadata.csv to {out}; "
               f"generated at {n / max(render_s, 1e-9):.0f} images/s")
