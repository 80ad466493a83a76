"""HAM10000: `HAM10000_metadata.csv` (the 7-column Kaggle or 8-column Dataverse version) and the
`ISIC_*.jpg` images in folders directly under the root (`HAM10000_images_part_1/`, `..._2/`, or any
other, e.g. a downscaled copy). 7 classes by `dx`; group = `lesion_id`."""
from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from attnsweep.data import class_maps, csv_images

METADATA = "HAM10000_metadata.csv"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[str] = ["*.jpg", "*/*.jpg"]  # globs, relative to the root, where images are
    # a seeded random share of the lesions (all their images), for a study sized to a small machine
    lesion_fraction: float = Field(1.0, gt=0, le=1)
    subset_seed: int = Field(0, ge=0)


def read(spec):
    records, classes = _read_all(spec)
    opts = spec.opts()
    if opts.lesion_fraction < 1:
        groups = np.sort(records["group"].unique())
        keep = np.random.default_rng(opts.subset_seed).choice(
            groups, max(1, round(opts.lesion_fraction * len(groups))), replace=False)
        records = records[records["group"].isin(keep)].reset_index(drop=True)
    return records, classes


def _read_all(spec):
    return csv_images.read(
        spec, default_metadata=METADATA, id_col="image_id", required=["lesion_id"], label_col="dx",
        group_cols=["lesion_id"], patterns=spec.opts().images, key="stem", class_map=class_maps.HAM10000,
        fields={"lesion": "lesion_id", "age": "age", "sex": "sex", "site": "localization",
                "hospital": "dataset"},
        extra=["image_id", "dx_type"])


images = csv_images.images
fingerprint = csv_images.fingerprint_with(METADATA)
