"""Camelyon17-WILDS: `metadata.csv` (`patient`, `node`, `x_coord`, `y_coord`, `tumor`, `slide`,
`center`, `split`) and `patches/patient_PPP_node_N/patch_patient_PPP_node_N_x_X_y_Y.png`.

WILDS trains on hospitals 0, 3, 4 and tests out of distribution on hospital 2 (hospital 1 is its
OOD validation set). So: the pool is `id_centers`; each of `ood_centers` is a fixed OOD set
`ood:center<C>` that no split draws from; other hospitals are left out. Group = patient."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from attnsweep.data import class_maps, csv_images
from attnsweep.data.errors import DataError
from attnsweep.data.records import check_inside, finish, map_labels, read_csv

METADATA = "metadata.csv"
INT_COLUMNS = ["node", "x_coord", "y_coord", "center", "slide"]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id_centers: list[int] = [0, 3, 4]
    ood_centers: list[int] = [2]

    @model_validator(mode="after")
    def _disjoint(self) -> Options:
        if set(self.id_centers) & set(self.ood_centers):
            raise ValueError(f"id_centers and ood_centers overlap: {self.id_centers} / {self.ood_centers}")
        return self


def read(spec):
    o = spec.opts()
    root, path = Path(spec.root), spec.metadata_path(METADATA)
    df = read_csv(path, ["patient", *INT_COLUMNS, "tumor"])
    for col in ["patient", *INT_COLUMNS]:
        bad = ~df[col].str.fullmatch(r"\d+")
        if bad.any():  # also what keeps a crafted row from building a path out of the root
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{col} must be a non-negative integer", file=path,
                            row=int(df["line"].iloc[i]), value=df[col].iloc[i])
    center = df["center"].astype(int)
    df = df[center.isin(o.id_centers + o.ood_centers)].copy()
    center = df["center"].astype(int)
    df["fixed"] = np.where(center.isin(o.ood_centers), "ood:center" + df["center"], "")
    folder = "patient_" + df["patient"] + "_node_" + df["node"]
    df["ref"] = ("patches/" + folder + "/patch_" + folder + "_x_" + df["x_coord"] + "_y_"
                 + df["y_coord"] + ".png")
    check_inside(root, df["ref"], path, df["line"])
    exists = np.fromiter((Path(root, r).is_file() for r in df["ref"]), bool, len(df))
    if not exists.all():
        i = int(np.flatnonzero(~exists)[0])
        raise DataError(f"image listed but missing under {root}", file=path,
                        row=int(df["line"].iloc[i]), value=df["ref"].iloc[i])
    df["row"], df["label_raw"] = df["line"], df["tumor"].str.strip()
    df["group"] = df["patient"] = "patient_" + df["patient"]
    df["hospital"] = "center" + df["center"]
    df = df.rename(columns={"split": "wilds_split"}) if "split" in df else df
    df, classes = map_labels(df, spec.class_map or class_maps.CAMELYON17, path)
    return finish(df, extra=[c for c in ("node", "slide", "center", "wilds_split") if c in df]), classes


images = csv_images.images
fingerprint = csv_images.fingerprint_with(METADATA)
