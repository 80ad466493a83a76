"""The Parquet datasets of a study folder: `<out>/results/<trial_id>.parquet` and
`<out>/epochs/<trial_id>.parquet`, one file per finished trial, written by the driver only.
Each file is written to a temporary name and renamed, so a crash never leaves a half file and
writing a trial again replaces its rows instead of adding them."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from attnsweep.data.atomic import replacing
from attnsweep.pipelines.store.results_schema import ADDED_COLUMNS, EPOCHS_SCHEMA, RESULTS_SCHEMA, to_table

RESULTS_DIR, EPOCHS_DIR = "results", "epochs"


def _write_atomic(table: pa.Table, path: Path) -> Path:
    with replacing(path) as tmp:
        pq.write_table(table, tmp)
    return path


def write_trial(out: Path, trial_id: str, results: list[dict], epochs: list[dict]) -> Path:
    """The epochs file first: the results file is the marker that the trial is recorded."""
    _write_atomic(to_table(epochs, EPOCHS_SCHEMA), out / EPOCHS_DIR / f"{trial_id}.parquet")
    return _write_atomic(to_table(results, RESULTS_SCHEMA), out / RESULTS_DIR / f"{trial_id}.parquet")


def is_recorded(out: Path, trial_id: str) -> bool:
    return (out / RESULTS_DIR / f"{trial_id}.parquet").exists()


def forget_trial(out: Path, trial_id: str) -> None:
    """Remove a trial's rows (the results file, the recorded marker, first), so it is recorded again."""
    (out / RESULTS_DIR / f"{trial_id}.parquet").unlink(missing_ok=True)
    (out / EPOCHS_DIR / f"{trial_id}.parquet").unlink(missing_ok=True)


class BadResultsFile(ValueError):
    """A Parquet file in a study's `results/` or `epochs/` that is unreadable or of another schema;
    the message (one line) names the file."""


def read_checked(path: Path, schema: pa.Schema) -> pa.Table:
    """One Parquet file, read and cast to `schema` (`BadResultsFile` when it cannot be)."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise BadResultsFile(f"{path}: not a readable Parquet file ({e})") from None
    for name in ADDED_COLUMNS:  # written by an older version: null, not an error
        if name in schema.names and name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise BadResultsFile(f"{path}: missing columns {missing}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise BadResultsFile(f"{path}: column types do not match the schema ({e})") from None


def files(folder: Path) -> list[Path]:
    """The Parquet files of a folder; temp files of an in-flight write (`.`, `_`) are skipped, as pyarrow does."""
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_"))) if folder.is_dir() else []


def check(out: Path) -> None:
    """Every file of `results/` and `epochs/` is readable and of the schema (`BadResultsFile`)."""
    for which, schema in ((RESULTS_DIR, RESULTS_SCHEMA), (EPOCHS_DIR, EPOCHS_SCHEMA)):
        for f in files(out / which):
            read_checked(f, schema)


def read(out: Path, which: str = RESULTS_DIR, columns: list[str] | None = None, where=None) -> pa.Table:
    """All rows of `<out>/results` (or `epochs`); an empty table with the schema when none yet.
    `columns` and `where` (a `pyarrow.compute` expression) read only what is needed."""
    schema = RESULTS_SCHEMA if which == RESULTS_DIR else EPOCHS_SCHEMA
    folder = out / which
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return schema.empty_table().select(columns) if columns else schema.empty_table()
    return ds.dataset([str(f) for f in files], schema=schema, format="parquet").to_table(columns=columns, filter=where)


def export(out: Path, dest: Path) -> int:
    """Consolidate `<out>/results` into one Parquet file (temp + rename) -> number of rows."""
    if not (out / RESULTS_DIR).is_dir():
        raise FileNotFoundError(f"{out / RESULTS_DIR}: no results folder (is {out} a study output folder?)")
    check(out)
    table = read(out).sort_by([("phase", "ascending"), ("variant", "ascending"), ("split", "ascending"),
                               ("eval_set", "ascending")])
    _write_atomic(table, dest)
    return table.num_rows
