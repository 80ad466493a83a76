"""The embedded synthetic dermoscopy set (see `synthderm`): generated, no files."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from attnsweep.data import class_maps, synthderm
from attnsweep.data.records import finish, map_labels

NEEDS_ROOT = False  # generated: no dataset folder
GENERATOR_VERSION = 2  # bump when rendering changes: invalidates every synthderm cache


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(2000, ge=3)
    seed: int = Field(0, ge=0)
    ood: bool = False
    bias_strength: float = Field(0.5, ge=0, le=1)
    label_noise: float = Field(0.1, ge=0, lt=2 / 3)


def read(spec) -> tuple[pd.DataFrame, list[str]]:
    o = spec.opts()
    md = synthderm.metadata(o.n, o.seed, o.ood, o.bias_strength, o.label_noise)
    df = md.rename(columns={"label": "label_raw"})
    df["ref"] = [f"synthderm[{i}]" for i in md["image"]]
    df["row"] = df["ref"]
    df["group"] = df["ref"]  # one image per lesion
    df["hospital"] = "ood" if o.ood else "id"
    df, classes = map_labels(df, spec.class_map or class_maps.SYNTHDERM, "synthderm")
    extra = [c for c in synthderm.FEATURES if c not in ("label", "age", "sex")]
    return finish(df, extra=["image", *extra]), classes


def images(spec, records: pd.DataFrame, size: int, workers: int = 1) -> Iterator[np.ndarray]:
    o = spec.opts()
    idx = records["image"].to_numpy()
    # records may be a subset in any order: render the covering range, then pick
    if len(idx) and (np.diff(idx) == 1).all():
        yield from synthderm.render(int(idx[0]), int(idx[-1]) + 1, size, o.seed, o.ood,
                                    o.bias_strength, o.label_noise)
        return
    full = np.concatenate(list(synthderm.render(0, o.n, size, o.seed, o.ood, o.bias_strength, o.label_noise)))
    yield full[idx]


def fingerprint(spec, records: pd.DataFrame) -> str:
    blob = json.dumps({"v": GENERATOR_VERSION, **spec.opts().model_dump(),
                       "class_map": spec.class_map}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
