"""Write-to-temp-then-rename, so a crash never leaves a half-written file under the final name."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yields a temp path beside `path`; on success it is renamed to `path`, on error removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def remove_stale_folders(parent: Path, prefix: str) -> list[Path]:
    """Remove `parent/<prefix><pid>[-*]` folders whose process (`pid`, on this host) is gone: the temp
    folders of a killed process, which no `finally` removed -> what was removed."""
    import re
    import shutil

    import psutil

    removed = []
    for path in parent.glob(f"{prefix}*"):
        m = re.fullmatch(re.escape(prefix) + r"(\d+)(-.*)?", path.name)
        if m and path.is_dir() and not psutil.pid_exists(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


TEMP_NAME = r"\..+\.\d+\.tmp"  # what `replacing` names a temp file: .<name>.<pid>.tmp


def remove_temp_files(folder: Path, recursive: bool = True) -> list[Path]:
    """Remove the temp files `replacing` left in `folder` when its process was killed -> what was
    removed. Only for a folder whose writer is the caller alone now (a trial's job, a study's
    driver under its lock): a live writer's temp file would go too."""
    import re

    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = [p for p in found if re.fullmatch(TEMP_NAME, p.name) and p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
