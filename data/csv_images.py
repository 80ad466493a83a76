"""The shared reader of the "metadata CSV + image folder(s)" formats (HAM10000, ISIC, PAD-UFES-20)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from attnsweep.data import files
from attnsweep.data.errors import DataError
from attnsweep.data.records import (check_inside, finish, first_nonempty, index_images, map_labels,
                                    read_csv, resolve_images)


def read(spec, *, default_metadata: str, id_col: str, label_col: str, required: Sequence[str],
         group_cols: Sequence[str],
         patterns: Sequence[str], key: str, fields: Mapping[str, str], class_map: Mapping,
         extra: Sequence[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """Records of a metadata CSV whose `id_col` names an image file under `spec.root`.

    `key`: "stem" when the id has no extension (HAM10000, ISIC), "name" when it is the file name
    (PAD-UFES-20). `required`: further columns that must exist. `fields`: standard column -> CSV
    column (age, sex, site, hospital, ...).
    The group is the first non-empty of `group_cols`, else the image id."""
    root = Path(spec.root)
    path = spec.metadata_path(default_metadata)
    df = read_csv(path, [id_col, label_col, *required])
    ids = df[id_col].str.strip()
    dup = ids.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{id_col} listed twice", file=path, row=int(df["line"].iloc[i]), value=ids.iloc[i])
    looks_like_path = ids.str.contains(r"[/\\]|^\.\.?$", regex=True)
    if looks_like_path.any():
        i = int(np.flatnonzero(looks_like_path.to_numpy())[0])
        check_inside(root, [ids.iloc[i]], path, [int(df["line"].iloc[i])])
        raise DataError(f"{id_col} must be a file {key}, not a path", file=path,
                        row=int(df["line"].iloc[i]), value=ids.iloc[i])
    index = index_images(root, patterns, path)
    if key == "name":
        index = {Path(rel).name: rel for rel in index.values()}
    df["ref"] = resolve_images(df, ids, index, root, path)
    check_inside(root, df["ref"], path, df["line"])
    df["row"] = df["line"]
    df["label_raw"] = df[label_col].str.strip()
    df["group"] = first_nonempty(df, group_cols, ids)
    for std, col in fields.items():
        df[std] = df[col].str.strip() if col in df else ""
    df, classes = map_labels(df, spec.class_map or class_map, path)
    return finish(df, extra=[c for c in extra if c in df]), classes


def images(spec, records: pd.DataFrame, size: int, workers: int = 1) -> Iterator[np.ndarray]:
    yield from files.decode_all(Path(spec.root), list(records["ref"]), list(records["row"]), size, workers)


def fingerprint_with(default_metadata: str):
    def fingerprint(spec, records: pd.DataFrame) -> str:
        return files.fingerprint(Path(spec.root), list(records["ref"]), spec.metadata_path(default_metadata))
    return fingerprint
