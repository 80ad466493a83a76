"""Copy a prepared data dir to node-local scratch (`$SLURM_TMPDIR`, else `$TMPDIR`), so a trial's
epochs read the cache from a local disk instead of the shared file system. The trainer decides
when; this does it safely: only the files of the current image size, into a temp folder that is
renamed when complete, and an existing complete copy (same manifest) is reused."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def scratch_root() -> Path | None:
    for var in ("SLURM_TMPDIR", "TMPDIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return None


def copy_to_scratch(data_dir: str | Path, dest_root: str | Path | None = None) -> Path:
    """The data dir's copy under `dest_root` (default `scratch_root()`); `data_dir` itself when
    there is no scratch. Safe when several ranks of a node call it at once."""
    data_dir = Path(data_dir)
    dest_root = Path(dest_root) if dest_root is not None else scratch_root()
    if dest_root is None:
        return data_dir
    manifest_text = (data_dir / "manifest.json").read_text()
    dest = dest_root / f"attnsweep-data-{hashlib.sha256(manifest_text.encode()).hexdigest()[:16]}"
    if (dest / "manifest.json").is_file():
        return dest
    m = json.loads(manifest_text)
    caches = m["sizes"][str(m["image_size"])]["caches"].values()
    files = [m["splits"]["file"], *(d["records"] for d in m["datasets"].values())]
    files += [f for c in caches for f in (c, c.replace(".npy", ".stats.npy"), c.replace(".npy", ".json"))]
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".attnsweep-data-", dir=dest_root))
    try:
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(data_dir / rel, tmp / rel)
        shutil.copy2(data_dir / "manifest.json", tmp / "manifest.json")  # last: marks the copy complete
        try:
            tmp.rename(dest)
        except OSError:  # another rank finished first
            if not (dest / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
