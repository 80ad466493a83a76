"""The records table every adapter returns, and the checks they share.

One row per image: `ref` (path relative to the dataset root, or an array reference), `label_raw`,
`label` (class name), `group` (no two roles share one), `patient`, `lesion`, `age`, `sex`, `site`,
`hospital`, `fixed` ("" = in the split pool, "test" = a fixed test set, "ood:<name>" = a fixed OOD
set), `row` (where the image is listed, for messages), plus format-specific columns."""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from attnsweep.data.errors import DataError

COLUMNS = ["ref", "label_raw", "label", "group", "patient", "lesion", "age", "sex", "site", "hospital",
           "fixed", "row"]


def read_csv(path: Path, required: Iterable[str]) -> pd.DataFrame:
    """All columns as text ("" for empty), plus `line`: the 1-based line number in the file."""
    if not path.is_file():
        raise DataError("metadata file not found", file=path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"not a readable CSV: {e}", file=path) from None
    df.columns = [c.strip() for c in df.columns]
    for col in required:
        if col not in df.columns:
            raise DataError(f"missing required column {col!r}; columns are {list(df.columns)}",
                            file=path, row=1, value=col)
    df["line"] = np.arange(2, len(df) + 2)
    return df


def first_nonempty(df: pd.DataFrame, columns: Iterable[str], fallback: pd.Series) -> pd.Series:
    """Per row, the first non-empty value among `columns` (those present), else `fallback`."""
    out = pd.Series([""] * len(df), index=df.index, dtype=object)
    for col in columns:
        if col in df.columns:
            out = out.where(out != "", df[col].astype(str).str.strip())
    return out.where(out != "", fallback.astype(str))


def map_labels(df: pd.DataFrame, class_map: Mapping[str, str | None], file: Path | str,
               row_col: str = "row") -> tuple[pd.DataFrame, list[str]]:
    """Apply `class_map` to `label_raw`: an unmapped value is an error naming its row, a value mapped
    to None is left out, and a class of the map that ends up without images is an error."""
    known = df["label_raw"].isin(list(class_map))
    if not known.all():
        bad = df.loc[~known].iloc[0]
        raise DataError(f"unknown label; known labels are {sorted(class_map)}", file=file,
                        row=bad[row_col], value=bad["label_raw"])
    df = df.assign(label=df["label_raw"].map(class_map))
    df = df[df["label"].notna()].copy()
    classes = list(dict.fromkeys(v for v in class_map.values() if v is not None))
    counts = df["label"].value_counts()
    for name in classes:
        if counts.get(name, 0) == 0:
            raise DataError(f"class {name!r} has no images after mapping the labels", file=file,
                            value=name)
    return df, classes


def check_inside(root: Path, refs: Iterable[str], file: Path | str, rows: Iterable[object]) -> None:
    """Every image path must stay inside the dataset root (no `..`, no absolute path, no symlink out)."""
    base = os.path.realpath(root)
    for ref, row in zip(refs, rows):
        real = os.path.realpath(os.path.join(base, ref))
        if os.path.commonpath([base, real]) != base:
            raise DataError("image path escapes the dataset root", file=file, row=row, value=ref)


def index_images(root: Path, patterns: Iterable[str], file: Path | str) -> dict[str, str]:
    """File stem -> path relative to `root`, for the files matching `patterns` (globs relative to
    root). Two files with one stem are an error: which one the metadata means would be a guess."""
    found: dict[str, str] = {}
    for pattern in patterns:
        for p in sorted(root.glob(pattern)):
            rel = p.relative_to(root).as_posix()
            if p.stem in found and found[p.stem] != rel:
                raise DataError(f"two image files for one id: {found[p.stem]} and {rel}", file=file,
                                value=p.stem)
            found[p.stem] = rel
    return found


def resolve_images(df: pd.DataFrame, ids: pd.Series, index: Mapping[str, str], root: Path,
                   file: Path | str) -> pd.Series:
    """The relative image path of each row's id; a listed id without a file is an error."""
    refs = ids.map(index)
    missing = refs.isna()
    if missing.any():
        i = missing.to_numpy().nonzero()[0][0]
        raise DataError(f"image listed but missing under {root}", file=file,
                        row=int(df["line"].iloc[i]), value=ids.iloc[i])
    return refs.astype(str)


def finish(df: pd.DataFrame, extra: Iterable[str] = ()) -> pd.DataFrame:
    """The standard columns (missing text -> "", missing age -> NaN) and the given extra ones."""
    out = pd.DataFrame(index=df.index)
    for col in COLUMNS:
        if col == "age":
            out[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
        else:
            out[col] = df[col].astype(str) if col in df else ""
    for col in extra:
        out[col] = df[col]
    return out.reset_index(drop=True)
