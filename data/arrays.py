"""Images stored as arrays (MedMNIST npz, CIFAR-10 batches): gather by reference and resize."""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd
from PIL import Image

CHUNK = 1024


def ref(key: str, i: int) -> str:
    return f"{key}[{i}]"


def to_rgb(img: np.ndarray, size: int) -> np.ndarray:
    """[H, W] or [H, W, C] uint8 -> [size, size, 3], resized like the file formats (bilinear)."""
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.shape[:2] != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    return img


def gather(arrays: Mapping[str, np.ndarray], records: pd.DataFrame, size: int) -> Iterator[np.ndarray]:
    """uint8 chunks [k, size, size, 3] of the records' `key[index]` references, in order."""
    keys, idx = records["array_key"].to_numpy(), records["array_index"].to_numpy()
    for lo in range(0, len(records), CHUNK):
        yield np.stack([to_rgb(arrays[k][i], size) for k, i in zip(keys[lo:lo + CHUNK], idx[lo:lo + CHUNK])])
