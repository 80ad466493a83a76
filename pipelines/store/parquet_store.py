"""The Parquet datasets of a study folder: `<out>/results/<trial_id>.parquet` and
`<out>/epochs/<trial_id>.parquet`, one file per finished trial, written by the driver only.
Each file is written to a temporary name and renamed, so a crash never leaves a half file and
writing a trial again replaces its rows instead of adding them."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from attnsweep.data.atomic import replacing
from attnsweep.pipelines.store import selection_record
from attnsweep.pipelines.store.results_schema import EPOCHS_SCHEMA, RESULTS_SCHEMA, to_table
from attnsweep.pipelines.trial.study_paths import StudyPaths



def _write_atomic(table: pa.Table, path: Path) -> Path:
    with replacing(path) as tmp:
        pq.write_table(table, tmp)
    return path


def write_trial(out: Path, trial_id: str, results: list[dict], epochs: list[dict]) -> Path:
    """The epochs file first: the results file is the marker that the trial is recorded."""
    _write_atomic(to_table(epochs, EPOCHS_SCHEMA), StudyPaths(out).epochs_file(trial_id))
    return _write_atomic(to_table(results, RESULTS_SCHEMA), StudyPaths(out).results_file(trial_id))


def is_recorded(out: Path, trial_id: str) -> bool:
    return StudyPaths(out).results_file(trial_id).exists()


def forget_trial(out: Path, trial_id: str) -> None:
    """Remove a trial's rows (the results file, the recorded marker, first), so it is recorded again."""
    StudyPaths(out).results_file(trial_id).unlink(missing_ok=True)
    StudyPaths(out).epochs_file(trial_id).unlink(missing_ok=True)


class BadResultsFile(ValueError):
    """A Parquet file in a study's `results/` or `epochs/` that is unreadable or of another schema;
    the message (one line) names the file."""


def read_checked(path: Path, schema: pa.Schema) -> pa.Table:
    """One Parquet file, read and cast to `schema` (`BadResultsFile` when it cannot be)."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise BadResultsFile(f"{path}: not a readable Parquet file ({e})") from None
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
    paths = StudyPaths(out)
    for folder, schema in ((paths.results_dir, RESULTS_SCHEMA), (paths.epochs_dir, EPOCHS_SCHEMA)):
        for f in files(folder):
            read_checked(f, schema)


def read(out: Path, which: str = "results", columns: list[str] | None = None, where=None) -> pa.Table:
    """All rows of `<out>/results` (or `epochs`); an empty table with the schema when none yet.
    `columns` and `where` (a `pyarrow.compute` expression) read only what is needed."""
    schema = RESULTS_SCHEMA if which == "results" else EPOCHS_SCHEMA
    folder = StudyPaths(out).results_dir if which == "results" else StudyPaths(out).epochs_dir
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return schema.empty_table().select(columns) if columns else schema.empty_table()
    return ds.dataset([str(f) for f in files], schema=schema, format="parquet").to_table(columns=columns, filter=where)


def export(out: Path, dest: Path) -> int:
    """Consolidate `<out>/results` into one Parquet file (temp + rename) -> number of rows. The
    driver's choices (`selection/*.json`, variant -> record) travel in its schema metadata under
    `attnsweep.selection`."""
    if not StudyPaths(out).results_dir.is_dir():
        raise FileNotFoundError(f"{StudyPaths(out).results_dir}: no results folder (is {out} a study output folder?)")
    check(out)
    table = read(out).sort_by([("phase", "ascending"), ("variant", "ascending"), ("split", "ascending"),
                               ("eval_set", "ascending")])
    chosen = json.dumps(selection_record.read_all(out), allow_nan=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"attnsweep.selection": chosen.encode()})
    _write_atomic(table, dest)
    return table.num_rows
