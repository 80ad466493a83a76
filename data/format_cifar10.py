"""CIFAR-10, python version (paper 004): `cifar-10-batches-py/` with the pickled `data_batch_1..5`,
`test_batch` and `batches.meta`. With `official_test` (default) `test_batch` is the fixed test set
and the five training batches form the pool."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from attnsweep.data import arrays, class_maps, files
from attnsweep.data.errors import DataError
from attnsweep.data.records import finish, map_labels

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    official_test: bool = True


class _ArraysOnly(pickle.Unpickler):
    """The batches are pickles (Python 2, numpy arrays); unpickling can run arbitrary code, so only
    the callables a numpy array needs are allowed. Written here because no library reads them safely."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how protocol-2 pickles from Python 3 store bytes

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """images uint8 [N, 32, 32, 3], labels int64 [N] of one batch file, checked."""
    if not path.is_file():
        raise DataError("CIFAR-10 batch file not found", file=path)
    try:
        with open(path, "rb") as f:
            d = _ArraysOnly(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"not a CIFAR-10 python batch: {e}", file=path) from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataError("missing key b'data' or b'labels'", file=path,
                        value=sorted(d) if isinstance(d, dict) else type(d).__name__)
    data, labels = np.asarray(d[b"data"]), np.asarray(d[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError("data must be uint8 [N, 3072]", file=path, row="data",
                        value=f"{data.dtype} {list(data.shape)}")
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"labels has {len(labels)} entries but data has {len(data)} rows", file=path,
                        row="labels", value=len(labels))
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def read(spec):
    root, official = Path(spec.root), spec.opts().official_test
    parts = []
    for name in BATCHES:
        _, labels = load_batch(root / name)
        parts.append(pd.DataFrame({
            "array_key": name, "array_index": np.arange(len(labels)),
            "ref": [arrays.ref(name, i) for i in range(len(labels))], "label_raw": labels.astype(str),
            "fixed": "test" if name == "test_batch" and official else ""}))
    df = pd.concat(parts, ignore_index=True)
    df["row"] = df["ref"]
    df["group"] = df["ref"]
    df, classes = map_labels(df, spec.class_map or class_maps.CIFAR10, root)
    return finish(df, extra=["array_key", "array_index"]), classes


def images(spec, records: pd.DataFrame, size: int, workers: int = 1):
    root = Path(spec.root)
    needed = records["array_key"].unique()
    yield from arrays.gather({k: load_batch(root / k)[0] for k in needed}, records, size)


def fingerprint(spec, records: pd.DataFrame) -> str:
    return files.fingerprint(Path(spec.root), BATCHES)
