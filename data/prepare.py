"""`prepare`: read and validate the datasets, write the split manifest and the decoded caches once per
study; `load_split`: what a trial reads back.

Layout of the data dir (`<out>/data/`), all paths in `manifest.json` relative to it, so the folder
can be copied (e.g. to node-local scratch) and still loads:

    manifest.json              request, source fingerprints, classes, sizes, split hash, mean/std
    splits.parquet             split, role (train | val | test | ood:<name>), dataset, index
    images/<dataset>.parquet   one row per image: label, group and all metadata (`attnsweep.data.records`)
    cache/<dataset>-<size>.npy decoded uint8 [N, size, size, 3] (+ .stats.npy, .json)

`<dataset>` is `dataset` for the study's dataset and `ood-<name>` for each OOD set. `manifest.json` is
written last; a second `prepare` with the same request reuses everything, one whose dataset changed
or whose request differs fails (the finished trials were trained on the old splits)."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from attnsweep.data import cache
from attnsweep.data.adapters import adapter
from attnsweep.data.atomic import replacing, write_text
from attnsweep.data.errors import DataError
from attnsweep.data.images import ImageView
from attnsweep.data.spec import DatasetSpec, SplitSpec
from attnsweep.data.splits import make_splits

MANIFEST_VERSION = 1


@dataclass
class ImageSet:
    """Images of one role: `images` uint8 [N, H, W, 3] (a lazy view of the memory-mapped cache;
    `np.asarray(images)` copies), `labels` int64 [N], `meta` the records rows (metadata, features)."""

    images: ImageView
    labels: np.ndarray
    meta: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class SplitData:
    """One split: `sets` has keys `train`, `val`, `test` and `ood:<name>`; `mean`/`std` are per
    channel on a 0..1 scale, of the training set (paper 000's normalisation)."""

    split: str
    class_names: list[str]
    sets: dict[str, ImageSet]
    mean: list[float]
    std: list[float]
    image_size: int


def _spec_json(spec: DatasetSpec) -> dict:
    d = spec.model_dump(mode="json")
    if spec.root is not None:
        d["root"] = str(Path(spec.root).resolve())  # same dataset from another working directory
    return d


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_all(datasets: Mapping[str, DatasetSpec]) -> tuple[dict[str, pd.DataFrame], list[str], dict[str, str]]:
    """Records of every dataset, their fingerprints, and the class names (of the study's dataset;
    an OOD set must use the same names)."""
    records, fingerprints, classes = {}, {}, []
    for key, spec in datasets.items():
        recs, names = adapter(spec.format).read(spec)
        if key == "dataset":
            classes = names
        else:
            unknown = sorted(set(recs["label"]) - set(classes))
            if unknown:
                raise DataError(f"OOD set {key.removeprefix('ood-')} has class {unknown[0]!r}, which the "
                                f"dataset does not; its classes are {classes}", value=unknown[0])
            recs["fixed"] = "ood:" + key.removeprefix("ood-")
        recs["y"] = recs["label"].map({c: i for i, c in enumerate(classes)}).astype(np.int64)
        records[key] = recs
        body = json.dumps(_spec_json(spec), sort_keys=True) + adapter(spec.format).fingerprint(spec, recs)
        fingerprints[key] = hashlib.sha256(body.encode()).hexdigest()
    return records, classes, fingerprints


def _check_previous(manifest_path: Path, request: dict, fingerprints: dict) -> dict | None:
    if not manifest_path.is_file():
        return None
    old = json.loads(manifest_path.read_text())
    if old.get("request") != request:
        diff = next(k for k in request if old.get("request", {}).get(k) != request[k])
        raise DataError(f"{manifest_path.parent} was prepared for a different {diff}; use a new out dir "
                        "(or delete this data dir to re-split)", file=manifest_path, value=diff)
    changed = [k for k in fingerprints if old["fingerprints"].get(k) != fingerprints[k]]
    if changed:
        raise DataError(f"{changed[0]} changed since its splits were written (files added, removed or "
                        "modified); finished trials used the old splits. Use a new out dir, or delete "
                        "this data dir to re-split", file=manifest_path, value=changed[0])
    _check_splits_file(manifest_path.parent, old)
    return old


def _check_splits_file(data_dir: Path, manifest: dict) -> Path:
    path = data_dir / manifest["splits"]["file"]
    if not path.is_file() or _sha256_file(path) != manifest["splits"]["sha256"]:
        raise DataError("the split manifest is missing or was modified since it was written",
                        file=path, value=manifest["splits"]["sha256"][:12])
    return path


def prepare(dataset: DatasetSpec, splits: SplitSpec, image_size: int, out_dir: str | Path,
            ood: Mapping[str, DatasetSpec] | None = None, workers: int | None = None) -> Path:
    """Prepare the data of a study once; returns the data dir `<out_dir>/data/`.

    Reads and validates every dataset (any bad input raises `DataError` before a file is written),
    splits the dataset's pool (`SplitSpec`; fixed test and OOD sets are never drawn from), decodes
    every image once into a uint8 cache at `image_size` (`workers` processes, default all cores),
    and stores the training-set mean/std of every split. Idempotent: a second call with the same
    arguments reuses what is there; a changed dataset or different request raises `DataError`;
    another `image_size` adds a cache and switches the manifest to it. Never leaves a half file."""
    if not 8 <= image_size <= 1024:
        raise ValueError(f"image_size must be in 8..1024, got {image_size}")
    ood = dict(ood or {})
    data_dir = Path(out_dir) / "data"
    manifest_path = data_dir / "manifest.json"
    datasets = {"dataset": dataset, **{f"ood-{k}": v for k, v in ood.items()}}
    records, classes, fingerprints = _read_all(datasets)
    fixed_ood = {f for f in records["dataset"]["fixed"] if f.startswith("ood:")}
    clash = fixed_ood & {f"ood:{k}" for k in ood}
    if clash:
        raise DataError(f"OOD name {sorted(clash)[0]} is also a fixed set of the dataset; rename it")
    request = {"datasets": {k: _spec_json(v) for k, v in datasets.items()},
               "splits": splits.model_dump(mode="json"), "version": MANIFEST_VERSION}
    old = _check_previous(manifest_path, request, fingerprints)

    # caches first: a corrupt image found while decoding leaves no manifest and no split files, and is
    # named before a split-size problem of the same (small) dataset
    caches, stats = {}, {}
    for key, spec in datasets.items():
        rel = f"cache/{key}-{image_size}.npy"
        cache.build(spec, records[key], image_size, data_dir / rel, fingerprints[key], workers, label=key)
        caches[key] = rel
        stats[key] = np.load(data_dir / rel.replace(".npy", ".stats.npy"))
    if old is None:
        table = make_splits(records["dataset"], splits, workers or cache.default_workers()).assign(dataset="dataset")
        for key in datasets:
            if key != "dataset":
                n = len(records[key])
                table = pd.concat([table, pd.DataFrame({
                    "split": np.repeat(splits.names(), n), "role": "ood:" + key.removeprefix("ood-"),
                    "index": np.tile(np.arange(n), len(splits.names())), "dataset": key})], ignore_index=True)
        for key, recs in records.items():
            with replacing(data_dir / "images" / f"{key}.parquet") as tmp:
                recs.to_parquet(tmp, index=False)
        with replacing(data_dir / "splits.parquet") as tmp:
            table[["split", "role", "dataset", "index"]].to_parquet(tmp, index=False)
    else:
        table = pd.read_parquet(data_dir / "splits.parquet")
    norm = {}
    for name in splits.names():
        train = table[(table["split"] == name) & (table["role"] == "train")]
        mean, std = cache.mean_std(stats["dataset"], train["index"].to_numpy(), image_size)
        norm[name] = {"mean": mean, "std": std}

    sizes = dict((old or {}).get("sizes", {}))
    sizes[str(image_size)] = {"caches": caches, "normalisation": norm}
    manifest = {
        "request": request, "fingerprints": fingerprints, "class_names": classes,
        "image_size": image_size, "sizes": sizes,
        "datasets": {k: {"records": f"images/{k}.parquet", "n": len(r)} for k, r in records.items()},
        "splits": {"file": "splits.parquet", "sha256": _sha256_file(data_dir / "splits.parquet"),
                   "names": splits.names()},
    }
    if old != manifest:
        write_text(manifest_path, json.dumps(manifest, indent=1))
    return data_dir


def load_split(data_dir: str | Path, split: str) -> SplitData:
    """The sets of one split (`search-0`, `repeat-3`, ...) from a prepared data dir: images are
    memory-mapped, not read. Raises `DataError` when the dir is not prepared or was modified."""
    data_dir = Path(data_dir)
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise DataError("not a prepared data dir (no manifest.json); run prepare first", file=data_dir)
    m = json.loads(manifest_path.read_text())
    if split not in m["splits"]["names"]:
        raise DataError(f"unknown split; prepared splits are {m['splits']['names']}", file=manifest_path,
                        value=split)
    size = m["image_size"]
    at_size = m["sizes"][str(size)]
    table = pd.read_parquet(_check_splits_file(data_dir, m), filters=[("split", "==", split)])
    sets: dict[str, ImageSet] = {}
    records = {key: pd.read_parquet(data_dir / m["datasets"][key]["records"]) for key in table["dataset"].unique()}
    for (role, key), rows in table.groupby(["role", "dataset"], sort=False):
        recs = records[key]
        index = rows["index"].to_numpy()
        images = ImageView(data_dir / at_size["caches"][key], index)
        if images.array_len != len(recs):
            raise DataError(f"cache has {images.array_len} images, records {len(recs)}",
                            file=data_dir / at_size["caches"][key])
        meta = recs.iloc[index].reset_index(drop=True)
        sets[role] = ImageSet(images, np.array(meta["y"], dtype=np.int64), meta)  # writable (torch)
    norm = at_size["normalisation"][split]
    order = ["train", "val", "test"]
    sets = dict(sorted(sets.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 3, kv[0])))
    return SplitData(split, m["class_names"], sets, norm["mean"], norm["std"], size)
