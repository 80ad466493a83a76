"""HAM10000: `HAM10000_metadata.csv` (the 7-column Kaggle or 8-column Dataverse version) and the
`ISIC_*.jpg` images in folders directly under the root (`HAM10000_images_part_1/`, `..._2/`, or any
other, e.g. a downscaled copy). 7 classes by `dx`; group = `lesion_id`."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from attnsweep.data import class_maps, csv_images

METADATA = "HAM10000_metadata.csv"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[str] = ["*.jpg", "*/*.jpg"]  # globs, relative to the root, where images are


def read(spec):
    return csv_images.read(
        spec, default_metadata=METADATA, id_col="image_id", required=["lesion_id"], label_col="dx",
        group_cols=["lesion_id"], patterns=spec.opts().images, key="stem", class_map=class_maps.HAM10000,
        fields={"lesion": "lesion_id", "age": "age", "sex": "sex", "site": "localization",
                "hospital": "dataset"},
        extra=["image_id", "dx_type"])


images = csv_images.images
fingerprint = csv_images.fingerprint_with(METADATA)
