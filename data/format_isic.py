"""ISIC archive export: `metadata.csv` (`isic_id`, `diagnosis`, `patient_id`, `lesion_id`,
`age_approx`, `sex`, `anatom_site_general`, `attribution`, ...) and `ISIC_*.jpg` images. Mapped to
paper 002's three classes (nevus, melanoma, other); group = patient, else lesion, else image."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from attnsweep.data import class_maps, csv_images

METADATA = "metadata.csv"


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[str] = ["*.jpg", "*/*.jpg"]
    label_column: str = "diagnosis"  # newer exports: e.g. diagnosis_3, with a matching class_map
    group_by: list[str] = ["patient_id", "lesion_id"]  # first non-empty wins


def read(spec):
    o = spec.opts()
    return csv_images.read(
        spec, default_metadata=METADATA, id_col="isic_id", required=[], label_col=o.label_column,
        group_cols=o.group_by, patterns=o.images, key="stem", class_map=class_maps.ISIC,
        fields={"patient": "patient_id", "lesion": "lesion_id", "age": "age_approx", "sex": "sex",
                "site": "anatom_site_general", "hospital": "attribution"},
        extra=["isic_id", "diagnosis_confirm_type", "fitzpatrick_skin_type"])


images = csv_images.images
fingerprint = csv_images.fingerprint_with(METADATA)
