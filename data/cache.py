"""The decoded image cache: every image of a dataset decoded and resized once to the study's size,
in a uint8 `.npy` file [N, S, S, 3] that trials memory-map.

Beside it: `<cache>.stats.npy` (per-image channel sums and sums of squares, for the training-set
mean/std of any split without reading the images again) and `<cache>.json` (the source fingerprint
and size it was built from). A cache whose fingerprint differs is rebuilt; every file is written to
a temp name and renamed, the `.json` last, so a crash leaves no cache that looks valid."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from attnsweep.data.atomic import replacing, write_text
from attnsweep.data.spec import DatasetSpec


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def is_current(path: Path, fingerprint: str, size: int, n: int) -> bool:
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file() and path.with_suffix(".stats.npy").is_file()):
        return False
    return json.loads(meta.read_text()) == {"fingerprint": fingerprint, "size": size, "n": n}


def build(spec: DatasetSpec, records: pd.DataFrame, size: int, path: Path, fingerprint: str,
          workers: int | None = None, label: str = "") -> bool:
    """Build the cache at `path` unless it is current. Returns True when it was (re)built."""
    from attnsweep.data.adapters import adapter

    n = len(records)
    if is_current(path, fingerprint, size, n):
        return False
    path.with_suffix(".json").unlink(missing_ok=True)  # stale from here until rebuilt
    stats = np.zeros((n, 6), np.float64)  # per image: sum R, G, B, sum of squares R, G, B
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with replacing(path) as tmp, replacing(path.with_suffix(".stats.npy")) as stats_tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        i = 0
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task(f"decoding {label or spec.format} at {size}px", total=n)
            for chunk in adapter(spec.format).images(spec, records, size, workers or default_workers()):
                arr[i:i + len(chunk)] = chunk
                x = chunk.reshape(len(chunk), -1, 3).astype(np.float64) / 255.0
                stats[i:i + len(chunk), :3], stats[i:i + len(chunk), 3:] = x.sum(1), (x * x).sum(1)
                i += len(chunk)
                progress.advance(task, len(chunk))
        if i != n:
            raise RuntimeError(f"{spec.format} adapter produced {i} images for {n} records")
        arr.flush()
        del arr
        with open(stats_tmp, "wb") as f:
            np.save(f, stats)
        # leaving the contexts renames the stats, then the cache; the .json comes last
    write_text(path.with_suffix(".json"), json.dumps({"fingerprint": fingerprint, "size": size, "n": n}))
    return True


def mean_std(stats: np.ndarray, index: np.ndarray, size: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0..1 scale) over the images `index`, from the per-image sums."""
    s = stats[index].sum(0)
    count = len(index) * size * size
    mean = s[:3] / count
    std = np.sqrt(np.maximum(s[3:] / count - mean * mean, 0))
    return mean.tolist(), std.tolist()
