"""`check`: validate a dataset the way `prepare` would read it, and count what is there."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from attnsweep.data.adapters import adapter
from attnsweep.data.spec import DatasetSpec

DECODE_SIZE = 16  # every image is decoded (that finds corrupt files); small keeps it fast


@dataclass
class CheckReport:
    records: pd.DataFrame
    class_names: list[str]

    def table(self) -> pd.DataFrame:
        """Per class: images and groups, in total and per set (pool, fixed test, OOD)."""
        r = self.records.assign(set=self.records["fixed"].replace("", "pool"))
        rows = []
        for name in self.class_names:
            sub = r[r["label"] == name]
            row = {"class": name, "images": len(sub), "groups": sub["group"].nunique()}
            for s in sorted(r["set"].unique()):
                row[f"{s} images"] = int((sub["set"] == s).sum())
            rows.append(row)
        return pd.DataFrame(rows)


def check(spec: DatasetSpec, decode: bool = True, workers: int = 1) -> CheckReport:
    """Read and validate `spec` (raises `DataError` naming file, row and value); with `decode`, also
    decode every image once."""
    mod = adapter(spec.format)
    records, classes = mod.read(spec)
    if decode:
        for _ in mod.images(spec, records, DECODE_SIZE, workers):
            pass
    return CheckReport(records, classes)
