"""MedMNIST `.npz` (any 2D single-label set, any size: `pneumoniamnist.npz`, `dermamnist_64.npz`):
keys `{train,val,test}_{images,labels}`. With `official_test` (default) the official test set is
the fixed test set of every split and train + val form the pool; with `official_split` every split
is the official train/val/test split (the MedMNIST benchmark's), and repeats differ only in their
seed. The official part of each image stays in the records as `official_split`. `root` is the folder (with `metadata:` the file) or the file itself."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from attnsweep.data import arrays, class_maps, files
from attnsweep.data.errors import DataError
from attnsweep.data.records import finish, map_labels

PARTS = ("train", "val", "test")
KEYS = [f"{p}_{k}" for p in PARTS for k in ("images", "labels")]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    official_test: bool = True
    official_split: bool = False  # the official val set too: nothing is drawn


def npz_path(spec) -> Path:
    root = Path(spec.root)
    if spec.metadata:
        return root / spec.metadata
    if root.suffix == ".npz":
        return root
    raise DataError("medmnist needs the .npz file: give it as the root or as metadata", file=root)


def load(path: Path) -> dict[str, np.ndarray]:
    """The six arrays, checked: all keys present, images uint8 [N,H,W(,C)], labels [N] or [N,1]."""
    if not path.is_file():
        raise DataError("npz file not found", file=path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"not a readable npz: {e}", file=path) from None
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise DataError(f"missing key {missing[0]}; keys are {sorted(data)}, expected {KEYS}",
                        file=path, row=missing[0])
    for part in PARTS:
        img, lab = data[f"{part}_images"], data[f"{part}_labels"]
        if img.dtype != np.uint8 or img.ndim not in (3, 4) or (img.ndim == 4 and img.shape[3] not in (1, 3)):
            raise DataError("images must be uint8 [N, H, W] or [N, H, W, 1|3]", file=path,
                            row=f"{part}_images", value=f"{img.dtype} {list(img.shape)}")
        if lab.ndim == 2 and lab.shape[1] == 1:
            lab = data[f"{part}_labels"] = lab[:, 0]
        if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
            raise DataError("labels must be integer [N] or [N, 1] (multi-label sets are not supported)",
                            file=path, row=f"{part}_labels", value=f"{lab.dtype} {list(lab.shape)}")
        if len(lab) != len(img):
            raise DataError(f"{part}_labels has {len(lab)} entries but {part}_images has {len(img)}",
                            file=path, row=f"{part}_labels", value=len(lab))
    return data


def read(spec):
    path = npz_path(spec)
    data = load(path)
    flag = path.stem.split("_")[0]
    class_map = spec.class_map or class_maps.MEDMNIST.get(flag)
    if class_map is None:
        raise DataError(f"no class table for MedMNIST set {flag!r}; give class_map in the study",
                        file=path, value=flag)
    parts = []
    for part in PARTS:
        lab = data[f"{part}_labels"]
        key = f"{part}_images"
        parts.append(pd.DataFrame({
            "array_key": key, "array_index": np.arange(len(lab)),
            "ref": [arrays.ref(key, i) for i in range(len(lab))],
            "label_raw": lab.astype(str), "official_split": part,
            "fixed": _fixed_role(part, spec.opts())}))
    df = pd.concat(parts, ignore_index=True)
    df["row"] = df["ref"]
    df["group"] = flag + ":" + df["ref"]  # MedMNIST carries no patient ids
    df, classes = map_labels(df, class_map, path)
    return finish(df, extra=["array_key", "array_index", "official_split"]), classes


def _fixed_role(part: str, opts: Options) -> str:
    if opts.official_split:
        return part
    return "test" if part == "test" and opts.official_test else ""


def images(spec, records: pd.DataFrame, size: int, workers: int = 1):
    yield from arrays.gather(load(npz_path(spec)), records, size)


def fingerprint(spec, records: pd.DataFrame) -> str:
    path = npz_path(spec)
    return files.fingerprint(path.parent, [path.name])
