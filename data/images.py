"""`ImageView`: rows of a memory-mapped image cache, without copying them."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class ImageView:
    """The images `index` of the uint8 [N, H, W, 3] cache at `path`, as a read-only array-like:
    `len`, `shape`, `view[i]` (one image, a copy), `view[a:b]` / `view[idx]`, `np.asarray(view)`.
    Pickles as (path, index), so a DataLoader worker re-opens the map instead of copying it."""

    def __init__(self, path: str | Path, index: np.ndarray):
        self.path = Path(path)
        self.index = np.asarray(index, np.int64)
        self._open()

    def _open(self) -> None:
        self._array = np.load(self.path, mmap_mode="r")

    @property
    def array_len(self) -> int:
        return len(self._array)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self._array.shape[1:])

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> np.ndarray:
        return np.array(self._array[self.index[key]])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.array(self._array[self.index])
        return out if dtype is None else out.astype(dtype)

    def __getstate__(self) -> dict:
        return {"path": self.path, "index": self.index}

    def __setstate__(self, state: dict) -> None:
        self.path, self.index = state["path"], state["index"]
        self._open()

    def __repr__(self) -> str:
        return f"ImageView({self.path.name}, shape={self.shape})"
