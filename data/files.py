"""Images stored as files (JPEG/PNG): decode + resize, in parallel, and the listing fingerprint that
tells when the files changed."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from attnsweep.data.errors import DataError

CHUNK = 64  # images per task: large enough to amortise the inter-process copy


def decode(path: Path, size: int, row: object = None) -> np.ndarray:
    """One image as uint8 [size, size, 3] RGB, resized to a square (as paper 000 resizes)."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale >= size (fast)
            im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.array(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        where = "" if row is None else f" (metadata row {row})"
        raise DataError(f"cannot decode image{where}: {e}", file=path) from None


def _decode_chunk(args: tuple[str, Sequence[str], Sequence[object], int]) -> np.ndarray:
    root, refs, rows, size = args
    return np.stack([decode(Path(root, r), size, row) for r, row in zip(refs, rows)])


def decode_all(root: Path, refs: Sequence[str], rows: Sequence[object], size: int,
               workers: int) -> Iterator[np.ndarray]:
    """uint8 chunks [k, size, size, 3] in `refs` order; `workers` > 1 decodes in a process pool."""
    tasks = [(str(root), refs[i:i + CHUNK], rows[i:i + CHUNK], size) for i in range(0, len(refs), CHUNK)]
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_decode_chunk, tasks)
        return
    # forkserver: a clean child even when the caller has threads (Ray, torch); fork could deadlock.
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        yield from pool.map(_decode_chunk, tasks)


def fingerprint(root: Path, refs: Sequence[str], *extra_files: Path) -> str:
    """sha256 over (path, size, mtime) of every image and the content of the metadata files: cheap
    (no image is read) and changes when a file is added, removed, replaced or touched."""
    h = hashlib.sha256()
    for f in extra_files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    for ref in refs:
        st = os.stat(os.path.join(root, ref))
        h.update(f"{ref}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
