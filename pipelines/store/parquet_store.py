"""The Parquet datasets of a study folder: `<out>/results/<trial_id>.parquet` and
`<out>/epochs/<trial_id>.parquet`, one file per finished trial, written by the driver only.
Each file is written to a temporary name and renamed, so a crash never leaves a half file and
writing a trial again replaces its rows instead of adding them."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from attnsweep.data.atomic import replacing
from attnsweep.pipelines.store import selection_record
from attnsweep.pipelines.store.results_schema import EPOCHS_SCHEMA, RESULTS_SCHEMA, to_table
from attnsweep.pipelines.trial.study_paths import StudyPaths

RESULTS_DIR, EPOCHS_DIR = "results", "epochs"
SCHEMA_KEY, EXPORT_KIND = b"attnsweep.schema", "results-export"  # the marker in a file's schema metadata


def _write_atomic(table: pa.Table, path: Path) -> Path:
    with replacing(path) as tmp:
        pq.write_table(table, tmp)
    return path


def write_trial(out: Path, trial_id: str, results: list[dict], epochs: list[dict]) -> Path:
    """The epochs file first: the results file is the marker that the trial is recorded."""
    for which, schema, rows, path in ((EPOCHS_DIR, EPOCHS_SCHEMA, epochs, StudyPaths(out).epochs_file(trial_id)),
                                      (RESULTS_DIR, RESULTS_SCHEMA, results, StudyPaths(out).results_file(trial_id))):
        table = to_table(rows, schema)
        _write_atomic(table, path)
        _remember(path, which, table)
    return path


def is_recorded(out: Path, trial_id: str) -> bool:
    return StudyPaths(out).results_file(trial_id).exists()


def run_id(out: Path, trial_id: str) -> str | None:
    """The MLflow run id a recorded trial's rows name (None: not recorded, or recorded while MLflow was down)."""
    path = StudyPaths(out).results_file(trial_id)
    if not path.exists():
        return None
    ids = pq.read_table(path, columns=["mlflow_run_id"]).column("mlflow_run_id").to_pylist()
    return ids[0] if ids else None


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


def study_name(out: Path) -> str | None:
    """The study's name from `<out>/study.yaml` (written by the driver), None without one."""
    try:
        data = yaml.safe_load(StudyPaths(out).study_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return str(data["name"]) if isinstance(data, dict) and data.get("name") else None


def _kind(path: Path) -> str | None:
    """The `attnsweep.schema` marker of a Parquet file (`results`, `epochs`, `results-export`)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError) as e:
        raise BadResultsFile(f"{path}: not a readable Parquet file ({e})") from None
    kind = metadata.get(SCHEMA_KEY)
    return kind.decode() if kind is not None else None


# path -> (its identity, kind, table read as the schema). The driver reads the whole results folder
# at each search's end (hundreds of files at a cluster's scale, on a shared file system); a file is
# only ever replaced by a rename (`_write_atomic`), never changed in place, so one whose inode, size
# and mtime are unchanged is not read again.
_read_before: dict[tuple[Path, str], tuple[tuple[int, int, int], str | None, pa.Table | None]] = {}


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _remember(path: Path, which: str, table: pa.Table) -> None:
    """A file this process has just written, as `study_tables` reads it (the driver writes every
    trial's rows, then reads them all at each search's end)."""
    _read_before[(path, which)] = (_identity(path), which, table)


def _kind_and_table(path: Path, which: str, schema: pa.Schema) -> tuple[str | None, pa.Table | None]:
    """The file's kind marker, and its table unless it is marked as another kind."""
    try:
        identity = _identity(path)
    except OSError as e:
        raise BadResultsFile(f"{path}: not a readable Parquet file ({e})") from None
    before = _read_before.get((path, which))
    if before is not None and before[0] == identity:
        return before[1], before[2]
    kind = _kind(path)
    table = read_checked(path, schema) if kind is None or kind == which else None
    _read_before[(path, which)] = (identity, kind, table)
    return kind, table


def study_tables(out: Path, which: str = RESULTS_DIR, name: str | None = None) -> tuple[list[pa.Table], list[str]]:
    """The tables of the result files of this study in `<out>/results` (or `epochs`), and one line
    per file left out: one marked as another kind (an export, `attnsweep export`), or whose rows
    belong to another study than `name` (default: `<out>/study.yaml`'s). A file that is damaged
    or of another schema, or that repeats rows of another file, is a `BadResultsFile`: results
    must never be counted twice or silently dropped."""
    schema = RESULTS_SCHEMA if which == RESULTS_DIR else EPOCHS_SCHEMA
    name = name or study_name(out)
    tables, skipped, seen = [], [], {}
    for path in files(_folder(out, which)):
        kind, table = _kind_and_table(path, which, schema)
        if table is None:
            skipped.append(f"{path} (a {kind} file, not written by the driver)")
            continue
        studies = set(table.column("study").to_pylist())
        if name is not None and table.num_rows and studies != {name}:
            skipped.append(f"{path} (rows of study {', '.join(sorted(map(str, studies)))}, not {name})")
            continue
        key_columns = ["trial_id", "split", "eval_set"] if which == RESULTS_DIR else ["trial_id", "split", "epoch"]
        for key in zip(*(table.column(c).to_pylist() for c in key_columns)):
            if key in seen and seen[key] != path:
                raise BadResultsFile(f"{path}: repeats rows of {seen[key]} (trial {key[0]}); a copy or an export "
                                     f"does not belong in {_folder(out, which)}: move it out")
            seen[key] = path
        tables.append(table)
    return tables, skipped


def check(out: Path) -> list[str]:
    """Every result file of `results/` and `epochs/` is readable, of the schema and counted once
    (`BadResultsFile`) -> one line per file left out (see `study_tables`)."""
    return [line for which in (RESULTS_DIR, EPOCHS_DIR) for line in study_tables(out, which)[1]]


def read(out: Path, which: str = RESULTS_DIR, columns: list[str] | None = None, where=None) -> pa.Table:
    """All rows of this study in `<out>/results` (or `epochs`); an empty table with the schema when
    none yet. `columns` and `where` (a `pyarrow.compute` expression) keep only what is needed."""
    schema = RESULTS_SCHEMA if which == RESULTS_DIR else EPOCHS_SCHEMA
    tables, _ = study_tables(out, which)
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if where is not None:
        table = table.filter(where)
    return table.select(columns) if columns else table


def _folder(out: Path, which: str) -> Path:
    return StudyPaths(out).results_dir if which == RESULTS_DIR else StudyPaths(out).epochs_dir


def inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def export(out: Path, dest: Path) -> int:
    """Consolidate `<out>/results` into one Parquet file (temp + rename) -> number of rows. The file
    is marked `results-export`, and may not be written inside the study folder. The driver's
    choices (`selection/*.json`, variant -> record) travel in its schema metadata under
    `attnsweep.selection`."""
    if not StudyPaths(out).results_dir.is_dir():
        raise FileNotFoundError(f"{StudyPaths(out).results_dir}: no results folder (is {out} a study output folder?)")
    if inside(dest, out):
        raise ValueError(f"--to {dest}: inside the study folder {out}, whose results/ holds only what the driver "
                         f"writes; export to a path outside it")
    if dest.is_dir():
        raise ValueError(f"--to {dest}: is a folder; name the Parquet file to write")
    check(out)
    table = read(out).sort_by([("phase", "ascending"), ("variant", "ascending"), ("split", "ascending"),
                               ("eval_set", "ascending")])
    chosen = json.dumps(selection_record.read_all(out), allow_nan=False)
    metadata = {**(table.schema.metadata or {}), SCHEMA_KEY: EXPORT_KIND.encode(), b"attnsweep.selection": chosen.encode()}
    _write_atomic(table.replace_schema_metadata(metadata), dest)
    return table.num_rows
