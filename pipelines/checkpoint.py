"""Atomic files of a trial folder and the training state saved in `checkpoint.pt`.

Every file is written to a temporary name in the same folder and renamed, so a job killed at any
moment leaves either the old file or the new one, never half of one. Checkpoints hold only tensors,
numbers, strings and containers, so they load with `torch.load(..., weights_only=True)`."""
from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from attnsweep.data.atomic import replacing


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    with replacing(path) as tmp, tmp.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())  # on a node crash, the rename must not overtake the data


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, allow_nan=False).encode()))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save(path: Path, state: dict[str, Any]) -> None:
    _atomic_write(path, lambda f: torch.save(state, f))


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """This process's random states (torch CPU and CUDA, numpy, Python), in a weights_only-safe form."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])
