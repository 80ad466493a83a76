"""ImageFolder: one folder per class under the root (`root/<class>/<image>`), as paper 001's skin,
CXR, MRI and CT sets are distributed. Listed with torchvision's own `find_classes`/`make_dataset`.
No metadata file: the group is the file name, or what `group_pattern` (a regex whose first group
is the id, e.g. `^(person\\d+)_` for the Kermany CXR set) extracts from it."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator

from attnsweep.data import csv_images, files
from attnsweep.data.errors import DataError
from attnsweep.data.records import check_inside, finish, map_labels


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_pattern: str | None = None

    @field_validator("group_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                if re.compile(v).groups < 1:
                    raise ValueError(f"needs a capturing group: {v!r}")
            except re.error as e:
                raise ValueError(f"not a regular expression: {e}") from None
        return v


def read(spec):
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = Path(spec.root)
    if not root.is_dir():
        raise DataError("dataset folder not found", file=root)
    try:
        folders, to_idx = find_classes(root)
    except FileNotFoundError:
        raise DataError("no class folders", file=root) from None
    class_map = spec.class_map or {f: f for f in folders}
    samples = make_dataset(root, to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    df = pd.DataFrame({"ref": [Path(p).relative_to(root).as_posix() for p, _ in samples],
                       "label_raw": [folders[i] for _, i in samples]})
    df["row"] = df["ref"]
    check_inside(root, df["ref"], root, df["row"])
    for name in folders:  # an empty folder is a class without images (map_labels names it)
        if name in class_map and name not in set(df["label_raw"]) and class_map[name] is not None:
            raise DataError(f"class {class_map[name]!r} has no images", file=root / name, value=name)
    pattern = spec.opts().group_pattern
    if pattern is None:
        df["group"] = df["ref"]
    else:
        names = df["ref"].map(lambda r: Path(r).name)
        groups = names.str.extract(pattern, expand=False)
        groups = groups.iloc[:, 0] if isinstance(groups, pd.DataFrame) else groups
        if groups.isna().any():
            bad = df["ref"][groups.isna()].iloc[0]
            raise DataError(f"file name does not match group_pattern {pattern!r}", file=root / bad,
                            value=Path(bad).name)
        df["group"] = groups
    df, classes = map_labels(df, class_map, root)
    return finish(df), classes


images = csv_images.images


def fingerprint(spec, records: pd.DataFrame) -> str:
    return files.fingerprint(Path(spec.root), list(records["ref"]))
