"""`tinyfolder`: images in one folder with a `labels.txt` of `<file> <label> <patient>` lines (a
format attnsweep does not know). An adapter module, the contract of attnsweep's built-in ones
(attnsweep.data.adapters): `Options`, `read`, `images`, `fingerprint`."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from attnsweep.data import DataError
from attnsweep.data.files import decode_all, fingerprint as files_fingerprint
from attnsweep.data.records import check_inside, finish, map_labels

LABELS = "labels.txt"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_by_patient: bool = True  # False: every image its own group


def read(spec) -> tuple[pd.DataFrame, list[str]]:
    """The records table: one row per listed image; bad input is a DataError naming file, line, value."""
    root = Path(spec.root)
    path = spec.metadata_path(LABELS)
    if not path.is_file():
        raise DataError("labels file not found", file=path)
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3:
            raise DataError("expected `<file> <label> <patient>`", file=path, row=line_no, value=line)
        name, label, patient = fields
        if not (root / name).is_file():
            raise DataError("image listed but missing", file=path, row=line_no, value=name)
        rows.append({"ref": name, "label_raw": label, "patient": patient, "row": line_no})
    if not rows:
        raise DataError("no images listed", file=path)
    df = pd.DataFrame(rows)
    check_inside(root, df["ref"], path, df["row"])
    df["group"] = df["patient"] if spec.opts().group_by_patient else df["ref"]
    labels = list(dict.fromkeys(df["label_raw"]))
    df, classes = map_labels(df, spec.class_map or {x: x for x in labels}, path)
    return finish(df), classes


def images(spec, records: pd.DataFrame, size: int, workers: int = 1):
    yield from decode_all(Path(spec.root), list(records["ref"]), list(records["row"]), size, workers)


def fingerprint(spec, records: pd.DataFrame) -> str:
    return files_fingerprint(Path(spec.root), list(records["ref"]), spec.metadata_path(LABELS))
