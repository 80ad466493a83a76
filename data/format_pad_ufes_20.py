"""PAD-UFES-20: `metadata.csv` (`patient_id`, `lesion_id`, `diagnostic`, `img_id`, `age`, `gender`,
`region`, `fitspatrick`, ...) and the `PAT_*.png` images (`images/`, or its `imgs_part_*/` folders).
`diagnostic` NEV/MEL/ACK/BCC/SCC/SEK -> nevus, melanoma, other; group = patient. Paper 002's OOD set."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from attnsweep.data import class_maps, csv_images

METADATA = "metadata.csv"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[str] = ["*.png", "images/*.png", "images/*/*.png"]


def read(spec):
    df, classes = csv_images.read(
        spec, default_metadata=METADATA, id_col="img_id", required=["patient_id"], label_col="diagnostic",
        group_cols=["patient_id"], patterns=spec.opts().images, key="name",
        class_map=class_maps.PAD_UFES_20,
        fields={"patient": "patient_id", "lesion": "lesion_id", "age": "age", "sex": "gender",
                "site": "region"},
        extra=["fitspatrick", "biopsed"])
    df["sex"] = df["sex"].str.lower()
    return df, classes


images = csv_images.images
fingerprint = csv_images.fingerprint_with(METADATA)
